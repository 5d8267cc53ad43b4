//! What this machine has: its GPUs ([`inventory`]) and what runs on them now
//! ([`live`]), NVIDIA's driver files ([`discover`]) and how a container's
//! loader finds them ([`loader`]), the MPS control daemon ([`mps`]), and the
//! watchdog's published view ([`watched`]). Install time and the hot path
//! both read them; none of them knows about profiles, the ledger or
//! admission.

pub mod discover;
pub mod inventory;
pub mod live;
pub mod loader;
pub mod mps;
pub mod watched;
