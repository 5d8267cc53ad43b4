//! gpuwarden: share NVIDIA GPUs between containers safely.
//!
//! Install time: [`inventory`] -> [`discover`] -> [`cdi`] writes a CDI spec.
//! Container start: OCI state + config -> [`config`] profile -> [`policy`] ->
//! [`budget`] against the [`ledger`] -> a verdict, through the [`hook`]s.

pub mod access;
pub mod broker;
pub mod budget;
pub mod cdi;
pub mod clock;
pub mod config;
pub mod discover;
pub mod doctor;
pub mod fsutil;
pub mod hook;
pub mod install;
pub mod inventory;
pub mod launch;
pub mod live;
pub mod loader;
pub mod names;
pub mod logging;
pub mod ledger;
pub mod mps;
pub mod oci;
pub mod policy;
pub mod proc;
pub mod queue;
pub mod rewrite;
pub mod shim;
pub mod watch;
pub mod watched;
pub mod size;
pub mod status;
pub mod text;
pub mod users;
