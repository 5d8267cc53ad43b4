//! The profile rewrite of a container's config: MPS limits in the env,
//! capabilities cut to the profile's set, a read-only root, no new
//! privileges. Podman's precreate hook calls it, and so will the Docker shim.
//! A container may ask for less than its profile through annotations, never
//! more.

use std::collections::BTreeSet;

use crate::config::{Config, Profile};
use crate::host::mps;
use crate::oci::ContainerConfig;
use crate::model::Share;

pub const THREADS_ANNOTATION: &str = "gpuwarden.io/threads";
pub const PINNED_ANNOTATION: &str = "gpuwarden.io/pinned-memory";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("{0}")]
    TwoProfiles(String),
    #[error("unknown profile {name:?}: known profiles are {known} (gpuwarden config show)")]
    UnknownProfile { name: String, known: String },
    #[error("profile {profile} needs a GPU, and the container has no /dev/nvidiaN: start it with --device nvidia.com/gpu={profile}")]
    NoGpu { profile: String },
    #[error("annotation {key}={value:?}: {why}")]
    BadAnnotation { key: &'static str, value: String, why: String },
    #[error("annotation {key} asks {asked}, more than profile {profile} allows ({allowed}): a container may ask for less, never more")]
    AskedTooMuch { key: &'static str, asked: String, allowed: String, profile: String },
}

/// The whole share of `profile`: what a container of it holds unless it asks for less.
pub fn profile_share(profile: &Profile) -> Share {
    Share { threads: profile.threads.get(), pinned: profile.pinned_memory.size() }
}

/// The share a container asks for within `profile`.
pub fn requested_share(cfg: &ContainerConfig, profile_name: &str, profile: &Profile) -> Result<Share, RewriteError> {
    let mut share = profile_share(profile);
    if let Some(v) = cfg.annotation(THREADS_ANNOTATION) {
        let asked: u32 = v.trim().trim_end_matches('%').parse().ok().filter(|t| (1..=100).contains(t)).ok_or_else(|| {
            RewriteError::BadAnnotation { key: THREADS_ANNOTATION, value: v.into(), why: "not a percentage from 1 to 100".into() }
        })?;
        if asked > share.threads {
            return Err(RewriteError::AskedTooMuch {
                key: THREADS_ANNOTATION,
                asked: format!("{asked}%"),
                allowed: format!("{}%", share.threads),
                profile: profile_name.into(),
            });
        }
        share.threads = asked;
    }
    if let Some(v) = cfg.annotation(PINNED_ANNOTATION) {
        let bad = |why: String| RewriteError::BadAnnotation { key: PINNED_ANNOTATION, value: v.into(), why };
        let asked: crate::base::size::ByteSize = v.parse().map_err(|e: crate::base::size::SizeError| bad(e.to_string()))?;
        let asked = crate::config::PinnedMemory::new(asked).map_err(bad)?.size();
        if asked > share.pinned {
            return Err(RewriteError::AskedTooMuch {
                key: PINNED_ANNOTATION,
                asked: asked.to_string(),
                allowed: share.pinned.to_string(),
                profile: profile_name.into(),
            });
        }
        share.pinned = asked;
    }
    Ok(share)
}

/// The profile `cfg` asks for, looked up in `config`; `None` for a container
/// that names no profile.
pub fn governing_profile<'c>(cfg: &ContainerConfig, config: &'c Config) -> Result<Option<(String, &'c Profile)>, RewriteError> {
    let Some(name) = cfg.profile_name().map_err(RewriteError::TwoProfiles)? else { return Ok(None) };
    let profile = config
        .profile(name)
        .ok_or_else(|| RewriteError::UnknownProfile { name: name.into(), known: config.profile_names().join(", ") })?;
    Ok(Some((name.to_string(), profile)))
}

/// Applies the governing profile to `cfg`. Returns the profile name, or `None`
/// (and leaves `cfg` untouched) for a container without one.
pub fn apply_profile(cfg: &mut ContainerConfig, config: &Config) -> Result<Option<String>, RewriteError> {
    let Some((name, profile)) = governing_profile(cfg, config)? else { return Ok(None) };
    let share = requested_share(cfg, &name, profile)?;
    let gpus = cfg.gpu_minors().len();
    if gpus == 0 {
        return Err(RewriteError::NoGpu { profile: name });
    }
    cfg.set_env(mps::THREADS_ENV, &share.threads.to_string());
    cfg.set_env(mps::PINNED_ENV, &mps::pinned_limit_value(gpus, share.pinned));
    cfg.set_env(mps::PIPE_ENV, &config.mps.pipe_directory.display().to_string());
    if config.mps.enabled {
        // What the CDI profile device mounts; a profile named by annotation alone gets it here.
        let (pipe, shm) = (config.mps.pipe_directory.display().to_string(), config.mps.shm_directory.display().to_string());
        cfg.ensure_bind_mount(&pipe, &pipe, true);
        cfg.ensure_bind_mount("/dev/shm", &shm, false);
    }
    // MPS ordinals follow CUDA's enumeration; PCI order makes it the order of the nodes.
    cfg.set_env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    let keep: BTreeSet<String> = profile.capabilities.iter().map(|c| c.to_string()).collect();
    cfg.retain_capabilities(&keep);
    cfg.set_root_readonly();
    cfg.set_no_new_privileges();
    // The workload starts through the launcher, which applies the Landlock rules (once).
    let args = cfg.args();
    let workload = crate::profile::launch::workload(&args).map_or_else(|| args.clone(), <[String]>::to_vec);
    cfg.set_args(&crate::profile::launch::command(profile, config, &workload));
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tests_support::podman_like;

    fn with_annotations(pairs: &[(&str, &str)]) -> ContainerConfig {
        let mut v: serde_json::Value = serde_json::from_slice(&podman_like().to_json()).unwrap();
        for (k, val) in pairs {
            v["annotations"][*k] = serde_json::Value::String(val.to_string());
        }
        ContainerConfig::parse(&serde_json::to_vec(&v).unwrap(), "t").unwrap()
    }

    #[test]
    fn the_profile_sets_mps_limits_and_hardening() {
        let mut cfg = podman_like();
        assert_eq!(apply_profile(&mut cfg, &Config::default()).unwrap().as_deref(), Some("comfyui"));
        assert_eq!(cfg.env(mps::THREADS_ENV), Some("25"));
        assert_eq!(cfg.env(mps::PINNED_ENV), Some("0=3G"));
        assert_eq!(cfg.env(mps::PIPE_ENV), Some("/run/gpuwarden/mps/pipe"));
        assert!(cfg.root_readonly() && cfg.no_new_privileges());
        assert!(cfg.capability_sets().iter().all(|(_, caps)| caps.is_empty()), "{:?}", cfg.capability_sets());
        assert_eq!(cfg.mounts(), [("/run/gpuwarden/mps/pipe", "/run/gpuwarden/mps/pipe"), ("/dev/shm", "/run/gpuwarden/mps/shm")]);
        apply_profile(&mut cfg, &Config::default()).unwrap();
        assert_eq!(cfg.mounts().len(), 2, "mounts already there are not added twice");
    }

    #[test]
    fn a_container_may_ask_for_less_never_more() {
        let mut cfg = with_annotations(&[(THREADS_ANNOTATION, "10"), (PINNED_ANNOTATION, "1.5GiB")]);
        apply_profile(&mut cfg, &Config::default()).unwrap();
        assert_eq!(cfg.env(mps::THREADS_ENV), Some("10"));
        assert_eq!(cfg.env(mps::PINNED_ENV), Some("0=1536MB"));
        let e = apply_profile(&mut with_annotations(&[(THREADS_ANNOTATION, "60")]), &Config::default()).unwrap_err();
        assert!(e.to_string().contains("asks 60%, more than profile comfyui allows (25%)"), "{e}");
        let e = apply_profile(&mut with_annotations(&[(PINNED_ANNOTATION, "4G")]), &Config::default()).unwrap_err();
        assert!(e.to_string().contains("asks 4.0 GiB"), "{e}");
        let e = apply_profile(&mut with_annotations(&[(PINNED_ANNOTATION, "lots")]), &Config::default()).unwrap_err();
        assert!(matches!(e, RewriteError::BadAnnotation { .. }), "{e}");
    }

    #[test]
    fn a_container_without_profile_is_untouched() {
        let mut cfg = ContainerConfig::parse(br#"{"process":{"env":["A=1"]},"x":1}"#, "t").unwrap();
        let before = cfg.clone();
        assert_eq!(apply_profile(&mut cfg, &Config::default()).unwrap(), None);
        assert_eq!(cfg, before);
    }

    #[test]
    fn unknown_profiles_and_gpu_less_containers_are_refused() {
        let mut cfg = ContainerConfig::parse(br#"{"process":{"env":["GPUWARDEN_PROFILE=sdxl"]}}"#, "t").unwrap();
        let e = apply_profile(&mut cfg, &Config::default()).unwrap_err().to_string();
        assert!(e.contains("unknown profile \"sdxl\": known profiles are blender, comfyui"), "{e}");
        let mut cfg = ContainerConfig::parse(br#"{"process":{"env":["GPUWARDEN_PROFILE=blender"]}}"#, "t").unwrap();
        let e = apply_profile(&mut cfg, &Config::default()).unwrap_err().to_string();
        assert!(e.contains("--device nvidia.com/gpu=blender"), "{e}");
    }
}
