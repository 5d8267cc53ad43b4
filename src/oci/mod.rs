//! What the runtime hands a hook: the OCI state on stdin and the bundle's
//! `config.json`. The config is kept as JSON, not as `oci-spec`'s types, so a
//! rewrite keeps fields this version of gpuwarden does not know.

mod config;
mod env;
mod state;

pub use config::{ConfigError, ContainerConfig, PROFILE_ANNOTATION};
pub use env::{owner_marker, OWNER_ENV, PROFILE_ENV};
pub use state::{short_id, HookState, StateError};

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::config::tests::podman_like;
}
