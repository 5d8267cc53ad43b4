//! `cdi validate`: the CDI specification's checks (`gpuwarden::cdi::check`),
//! what they leave out (host paths that are gone, versions Podman 4.3 drops),
//! by file and field.

mod validate;

pub use validate::{validate_file, Severity};
