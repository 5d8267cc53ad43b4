//! `gpuwarden hook precreate`: Podman's precreate stage. The proposed
//! config on stdin, the config to use on stdout: the profile applied for a
//! profile container, the input byte for byte for any other.
//!
//! It runs for every container on the host, so gpuwarden's configuration is
//! read only for containers that name a profile: a broken config.toml must
//! not stop containers that have nothing to do with GPUs.

use crate::config::Config;
use crate::oci::{ConfigError, ContainerConfig};
use crate::rewrite::{apply_profile, RewriteError};

#[derive(Debug, thiserror::Error)]
pub enum PrecreateError {
    #[error("no config on stdin: `gpuwarden hook precreate` is run by Podman, which writes the proposed config.json there")]
    Empty,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Rewrite(#[from] RewriteError),
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
}

/// The config Podman should use; `settings` loads gpuwarden's configuration
/// and is called only for a container that names a profile.
pub fn precreate(input: &[u8], settings: &dyn Fn() -> Result<Config, crate::config::ConfigError>) -> Result<Vec<u8>, PrecreateError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(PrecreateError::Empty);
    }
    let mut cfg = ContainerConfig::parse(input, "the config on stdin")?;
    if cfg.profile_name().map_err(RewriteError::TwoProfiles)?.is_none() {
        return Ok(input.to_vec());
    }
    let config = settings()?;
    match apply_profile(&mut cfg, &config)? {
        Some(profile) => {
            tracing::debug!("applied profile {profile}");
            Ok(cfg.to_json())
        }
        None => Ok(input.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tests_support::podman_like;

    fn defaults() -> Result<Config, crate::config::ConfigError> {
        Ok(Config::default())
    }

    fn broken() -> Result<Config, crate::config::ConfigError> {
        Config::parse("[budget\n", std::path::Path::new("/etc/gpuwarden/config.toml"))
    }

    #[test]
    fn other_containers_pass_through_byte_for_byte() {
        let input = b"{ \"process\" : {\"env\": [\"A=1\"]},\n  \"zz\": [1,2] }";
        assert_eq!(precreate(input, &defaults).unwrap(), input.to_vec());
    }

    #[test]
    fn a_broken_configuration_stops_only_profile_containers() {
        let input = br#"{"process":{"env":["A=1"]}}"#;
        assert_eq!(precreate(input, &broken).unwrap(), input.to_vec());
        let e = precreate(&podman_like().to_json(), &broken).unwrap_err().to_string();
        assert!(e.starts_with("config /etc/gpuwarden/config.toml:1:8"), "{e}");
    }

    #[test]
    fn profile_containers_come_back_rewritten() {
        let out = precreate(&podman_like().to_json(), &defaults).unwrap();
        let cfg = ContainerConfig::parse(&out, "out").unwrap();
        assert_eq!(cfg.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"));
        assert!(cfg.root_readonly());
    }

    #[test]
    fn bad_stdin_is_named() {
        assert!(matches!(precreate(b"", &defaults), Err(PrecreateError::Empty)));
        let e = precreate(b"{nope", &defaults).unwrap_err().to_string();
        assert!(e.starts_with("the config on stdin is not an OCI config"), "{e}");
    }
}
