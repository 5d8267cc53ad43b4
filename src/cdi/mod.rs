//! CDI specs, at install time: build one from discovery and generate the
//! whole spec a host gets (`generate`: what others define left to them, the
//! lowest `cdiVersion` its content needs), write it where Podman and Docker
//! read it, list and check the specs on a host (`check`: the specification's
//! rules, gpuwarden's own; the CNCF crate is a test oracle only), and inject
//! one into an OCI config for the Docker runtime shim (`inject`).

mod build;
mod coexist;
mod generate;
pub mod inject;
mod model;
mod registry;
mod write;
pub mod yaml;
pub mod check;

pub use build::{build_spec, MpsMounts, SpecInput};
pub use generate::{generate, minimum_version, Generated, Placement};
pub use coexist::{find_toolkit, leave_to_others, toolkit_names, Owner};
pub use model::{ContainerEdits, Device, DeviceNode, Hook, Mount, Spec};
pub use crate::base::names::{is_device_name, Kind, KindError};
pub use registry::{is_spec_file, scan, SpecFile, DEFAULT_SPEC_DIRS};
pub use write::{install, render, Format, InstallError};

pub use crate::oci::{owner_marker, OWNER_ENV, PROFILE_ENV};

/// Where `gpuwarden cdi generate`, `install` and the refresh unit write gpuwarden's spec.
pub const DEFAULT_SPEC: &str = "/etc/cdi/gpuwarden.yaml";

