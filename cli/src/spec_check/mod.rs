//! `cdi validate` and the version `cdi generate` writes: the CDI
//! specification's checks (`gpuwarden::cdi::check`), what they leave out
//! (host paths that are gone, versions Podman 4.3 drops), by file and field.

mod validate;
mod version;

pub use validate::{validate_file, Severity};
pub use version::minimum_version;
