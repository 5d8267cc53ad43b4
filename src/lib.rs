//! gpuwarden: share NVIDIA GPUs between containers safely.
//!
//! The library in layers, bottom first; a module imports only the layers
//! below its own (`tests/layering.rs` holds the table and enforces it):
//!
//! - [`base`]: time, text, sizes, names, files and locks, users, processes.
//! - [`model`]: the shared vocabulary (a share, who asks, a reservation).
//! - [`config`]: config.toml, its profiles, budget and every default path.
//! - [`oci`]: the container's config and the hook state.
//! - [`hookcall`]: how a runtime calls gpuwarden's hooks.
//! - [`host`]: what the machine has (GPUs, driver files, MPS, the watchdog's view).
//! - [`profile`]: a profile applied to a container, and conformance to it.
//! - [`ledger`]: who holds what, and who waits.
//! - [`admission`]: whether a container's share fits.
//! - [`hook`]: the OCI hook stages; [`broker`]: admission for rootless users.
//! - [`cdi`]: the CDI spec; [`shim`]: Docker's runtime shim.
//! - [`admin`]: the administrator's side (install, doctor, watchdog, status).
//!
//! Install time: [`host::inventory`] -> [`host::discover`] -> [`cdi`] writes a
//! spec. Container start: precreate applies the [`profile`]; createRuntime
//! runs [`admission::admit`] against the [`ledger`]; poststop releases.

pub mod base;
pub mod model;
pub mod config;
pub mod oci;
pub mod hookcall;
pub mod host;
pub mod profile;
pub mod ledger;
pub mod admission;
pub mod hook;
pub mod broker;
pub mod cdi;
pub mod shim;
pub mod admin;
