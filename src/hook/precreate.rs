//! `gpuwarden-hook precreate`: Podman's precreate stage. The proposed
//! config on stdin, the config to use on stdout: the profile applied for a
//! profile container, the input byte for byte for any other.
//!
//! It runs for every container on the host, so gpuwarden's configuration is
//! read only for containers that name a profile: a broken config.toml must
//! not stop containers that have nothing to do with GPUs. When the profile
//! cannot be applied (a bad annotation, an unknown profile, a broken
//! config.toml), it does not fail, since Podman would drop the reason: the
//! config goes through untouched but for the reason and the admission hook,
//! which refuses with it where the user sees it.

use super::{HookCall, Settings, REFUSAL_ANNOTATION};
use crate::oci::{ConfigError, ContainerConfig};
use crate::rewrite::apply_profile;

#[derive(Debug, thiserror::Error)]
pub enum PrecreateError {
    #[error("no config on stdin: `gpuwarden-hook precreate` is run by Podman, which writes the proposed config.json there")]
    Empty,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The config Podman should use. `settings` loads gpuwarden's configuration
/// and is called only for a container that names a profile; `admission` is
/// how such a container's admission hooks are called when it has none, and
/// `launcher` where the launcher is on the host, for one that lacks its mount.
pub fn precreate(input: &[u8], settings: Settings, admission: &HookCall, launcher: Option<&std::path::Path>) -> Result<Vec<u8>, PrecreateError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(PrecreateError::Empty);
    }
    let mut cfg = ContainerConfig::parse(input, "the config on stdin")?;
    let applied = match cfg.profile_name() {
        Ok(None) => return Ok(input.to_vec()),
        Ok(Some(_)) => match settings() {
            Ok(config) => apply_profile(&mut cfg, &config).map_err(|e| e.to_string()),
            Err(e) => Err(crate::text::one_line(&e)),
        },
        Err(two_profiles) => Err(two_profiles),
    };
    match applied {
        Ok(profile) => {
            tracing::debug!("applied profile {profile:?}");
            cfg.remove_annotation(REFUSAL_ANNOTATION);
            if let Some(host) = launcher {
                crate::launch::ensure_mounted(&mut cfg, host);
            }
        }
        Err(reason) => {
            tracing::info!("cannot apply the profile, admission will refuse: {reason}");
            // Nothing of a half-done rewrite goes through.
            cfg = ContainerConfig::parse(input, "the config on stdin")?;
            cfg.set_annotation(REFUSAL_ANNOTATION, &reason);
        }
    }
    admission.ensure_in(&mut cfg);
    Ok(cfg.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hook::ADMIT_STAGE;
    use crate::oci::tests_support::podman_like;

    fn defaults() -> Result<Config, crate::config::ConfigError> {
        Ok(Config::default())
    }

    fn broken() -> Result<Config, crate::config::ConfigError> {
        Config::parse("[budget\n", std::path::Path::new("/etc/gpuwarden/config.toml"))
    }

    fn call() -> HookCall {
        HookCall { path: "/usr/bin/gpuwarden-hook".into(), options: Vec::new() }
    }

    fn run(input: &[u8], settings: Settings) -> ContainerConfig {
        ContainerConfig::parse(&precreate(input, settings, &call(), None).unwrap(), "out").unwrap()
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&podman_like().to_json()).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn other_containers_pass_through_byte_for_byte() {
        let input = b"{ \"process\" : {\"env\": [\"A=1\"]},\n  \"zz\": [1,2] }";
        assert_eq!(precreate(input, &defaults, &call(), None).unwrap(), input.to_vec());
        assert_eq!(precreate(input, &broken, &call(), None).unwrap(), input.to_vec(), "a broken config.toml stops only profile containers");
    }

    #[test]
    fn profile_containers_come_back_rewritten_with_admission() {
        let cfg = run(&podman_like().to_json(), &defaults);
        assert_eq!(cfg.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"));
        assert!(cfg.root_readonly());
        assert_eq!(cfg.annotation(REFUSAL_ANNOTATION), None);
        assert_eq!(cfg.hooks(ADMIT_STAGE).len(), 1);
    }

    #[test]
    fn what_cannot_be_applied_goes_through_untouched_with_the_reason() {
        let cases: [(Vec<u8>, Settings, &str); 5] = [
            (with(|v| v["annotations"] = serde_json::json!({"gpuwarden.io/threads": "60"})), &defaults, "asks 60%, more than profile comfyui allows (25%)"),
            (with(|v| v["annotations"] = serde_json::json!({"gpuwarden.io/pinned-memory": "lots"})), &defaults, "annotation gpuwarden.io/pinned-memory=\"lots\""),
            (with(|v| v["process"]["env"][1] = "GPUWARDEN_PROFILE=sdxl".into()), &defaults, "unknown profile \"sdxl\""),
            (podman_like().to_json(), &broken, "config /etc/gpuwarden/config.toml:1:8"),
            (with(|v| v["annotations"] = serde_json::json!({"gpuwarden.io/profile": "blender"})), &defaults, "names two profiles"),
        ];
        for (input, settings, want) in cases {
            let cfg = run(&input, settings);
            let reason = cfg.annotation(REFUSAL_ANNOTATION).unwrap_or_else(|| panic!("no reason recorded for {want}"));
            assert!(reason.contains(want), "{reason}");
            assert!(!reason.contains('\n'), "{reason}");
            assert!(!cfg.root_readonly() && cfg.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").is_none(), "nothing applied");
            assert_eq!(cfg.hooks(ADMIT_STAGE).len(), 1, "admission runs and refuses");
        }
    }

    #[test]
    fn a_refusal_a_container_brought_itself_is_replaced_by_the_verdict() {
        let cfg = run(&with(|v| v["annotations"] = serde_json::json!({"gpuwarden.io/refusal": "forged"})), &defaults);
        assert_eq!(cfg.annotation(REFUSAL_ANNOTATION), None);
    }

    #[test]
    fn bad_stdin_is_named() {
        assert!(matches!(precreate(b"", &defaults, &call(), None), Err(PrecreateError::Empty)));
        let e = precreate(b"{nope", &defaults, &call(), None).unwrap_err().to_string();
        assert!(e.starts_with("the config on stdin is not an OCI config"), "{e}");
    }
}
