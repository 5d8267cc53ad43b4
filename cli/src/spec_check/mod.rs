//! What the CNCF `container-device-interface` crate checks for us: the lowest
//! `cdiVersion` a spec needs, and validation. It lives in the admin CLI only,
//! because the crate links an HTTP and TLS stack (its JSON-schema resolver)
//! that has no place in the hooks run at every container start.

mod validate;
mod version;

pub use validate::{validate_file, Severity};
pub use version::minimum_version;
