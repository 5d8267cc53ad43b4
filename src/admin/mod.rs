//! The administrator's side, run by `gpuwarden`, never at a container's
//! start: installing ([`install`]) and checking ([`doctor`]) a host, the
//! watchdog ([`watch`]) and `gpuwarden status` ([`status`]). It may use
//! every layer below.

pub mod doctor;
pub mod install;
pub mod status;
pub mod watch;
