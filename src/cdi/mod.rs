//! CDI specs: build one from discovery (install time), write it where Podman
//! and Docker read it, list and validate the specs on a host. Versioning and
//! validation are the CNCF `container-device-interface` crate's; this module
//! decides content, names and ownership.

mod build;
mod model;
mod names;
mod registry;
mod validate;
mod version;
mod write;

pub use build::{build_spec, HookSettings, SpecInput};
pub use model::{ContainerEdits, Device, DeviceNode, Hook, Mount, Spec};
pub use names::{is_device_name, Kind, KindError};
pub use registry::{scan, SpecFile, DEFAULT_SPEC_DIRS};
pub use validate::{validate_file, Finding, Severity};
pub use version::{minimum_version, PODMAN_43_MAX_VERSION};
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
