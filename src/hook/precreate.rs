//! `gpuwarden hook precreate`: Podman's precreate stage. The proposed
//! config on stdin, the config to use on stdout: the profile applied for a
//! profile container, the input byte for byte for any other.

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
}

/// The config Podman should use.
pub fn precreate(input: &[u8], config: &Config) -> Result<Vec<u8>, PrecreateError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(PrecreateError::Empty);
    }
    let mut cfg = ContainerConfig::parse(input, "the config on stdin")?;
    match apply_profile(&mut cfg, config)? {
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

    #[test]
    fn other_containers_pass_through_byte_for_byte() {
        let input = b"{ \"process\" : {\"env\": [\"A=1\"]},\n  \"zz\": [1,2] }";
        assert_eq!(precreate(input, &Config::default()).unwrap(), input.to_vec());
    }

    #[test]
    fn profile_containers_come_back_rewritten() {
        let out = precreate(&podman_like().to_json(), &Config::default()).unwrap();
        let cfg = ContainerConfig::parse(&out, "out").unwrap();
        assert_eq!(cfg.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"));
        assert!(cfg.root_readonly());
    }

    #[test]
    fn bad_stdin_is_named() {
        assert!(matches!(precreate(b"", &Config::default()), Err(PrecreateError::Empty)));
        let e = precreate(b"{nope", &Config::default()).unwrap_err().to_string();
        assert!(e.starts_with("the config on stdin is not an OCI config"), "{e}");
    }
}
