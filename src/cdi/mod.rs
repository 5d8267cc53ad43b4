//! CDI specs: build one from discovery (install time), write it where Podman
//! and Docker read it, list the specs on a host. Versioning and validation
//! are the CNCF `container-device-interface` crate's, in the admin CLI (the
//! runtime side does not link that crate); this module decides content,
//! names and ownership.

mod build;
mod coexist;
pub mod inject;
mod model;
mod registry;
mod write;
pub mod yaml;
pub mod check;

pub use build::{build_spec, MpsMounts, SpecInput};
pub use coexist::{find_toolkit, leave_to_others, toolkit_names, Owner};
pub use model::{ContainerEdits, Device, DeviceNode, Hook, Mount, Spec};
pub use crate::names::{is_device_name, Kind, KindError};
pub use registry::{is_spec_file, scan, SpecFile, DEFAULT_SPEC_DIRS};
pub use write::{install, render, Format, InstallError};

/// The spec-level env entry that marks a spec as written by gpuwarden. An env
/// entry rather than an annotation, because annotations need cdiVersion 0.6.0.
pub const OWNER_ENV: &str = "GPUWARDEN_CDI";

/// The env entry that names a profile device's profile for the hooks.
pub const PROFILE_ENV: &str = "GPUWARDEN_PROFILE";

/// The value of [`OWNER_ENV`] for this build.
pub fn owner_marker() -> String {
    format!("{OWNER_ENV}=gpuwarden/{}", env!("CARGO_PKG_VERSION"))
}
