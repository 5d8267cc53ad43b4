//! `gpuwarden-hook precreate`: Podman's precreate stage. The proposed
//! config on stdin, the config to use on stdout: the profile applied for a
//! profile container, the driver's libraries placed where the image's loader
//! finds them for a container with gpuwarden's spec, the input byte for byte
//! for any other.
//!
//! It runs for every container on the host, so gpuwarden's configuration is
//! read only for containers that name a profile: a broken config.toml must
//! not stop containers that have nothing to do with GPUs. When the profile
//! cannot be applied (a bad annotation, an unknown profile, a broken
//! config.toml, a musl image), it does not fail, since Podman would drop the
//! reason: the config goes through untouched but for the reason and the
//! admission hook, which refuses with it where the user sees it.

use std::path::Path;

use crate::hookcall::{HookCall, Settings, REFUSAL_ANNOTATION};
use crate::host::discover::CONTAINER_LIB_DIR;
use crate::host::loader::{self, Loader};
use crate::oci::{ConfigError, ContainerConfig};
use crate::profile::rewrite::apply_profile;

#[derive(Debug, thiserror::Error)]
pub enum PrecreateError {
    #[error("no config on stdin: `gpuwarden-hook precreate` is run by Podman, which writes the proposed config.json there")]
    Empty,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What precreate reads beside its stdin.
pub struct PrecreateEnv<'a> {
    /// Loads gpuwarden's configuration; called only for a container that names a profile.
    pub settings: Settings<'a>,
    /// How such a container's admission hooks are called when it has none.
    pub admission: &'a HookCall,
    /// The launcher on the host, for a profile container that lacks its mount.
    pub launcher: Option<&'a Path>,
    /// The dynamic loader of the container's image; asked only for a GPU container.
    pub loader: &'a dyn Fn(&ContainerConfig) -> Loader,
}

/// The loader of the image at the config's `root.path`, relative paths
/// taken from `bundle` (Podman gives an absolute one, Docker's shim `rootfs`).
pub fn image_loader(cfg: &ContainerConfig, bundle: &Path) -> Loader {
    match cfg.root_path() {
        Some(root) => loader::look(&bundle.join(root)),
        None => Loader::Unknown { why: "the config names no root.path".into() },
    }
}

/// The config Podman should use.
pub fn precreate(input: &[u8], env: &PrecreateEnv) -> Result<Vec<u8>, PrecreateError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(PrecreateError::Empty);
    }
    let mut cfg = ContainerConfig::parse(input, "the config on stdin")?;
    let profile = cfg.profile_name().map(|p| p.map(str::to_owned));
    // A container that names a profile, or two, is governed: admission decides.
    let governed = !matches!(profile, Ok(None));
    if !governed && !loader::has_spec_libraries(&cfg) {
        return Ok(input.to_vec());
    }
    let image = (env.loader)(&cfg);
    tracing::debug!("the image's loader: {image:?}");
    let applied = match profile {
        Ok(None) => Ok(None),
        Ok(Some(_)) => match (image.refusal(), (env.settings)()) {
            (Some(why), _) => Err(why),
            (None, Ok(config)) => apply_profile(&mut cfg, &config).map_err(|e| e.to_string()),
            (None, Err(e)) => Err(crate::base::text::one_line(&e)),
        },
        Err(two_profiles) => Err(two_profiles),
    };
    match applied {
        Ok(None) => {}
        Ok(Some(profile)) => {
            tracing::debug!("applied profile {profile:?}");
            cfg.remove_annotation(REFUSAL_ANNOTATION);
            if let Some(host) = env.launcher {
                crate::profile::launch::ensure_mounted(&mut cfg, host);
            }
        }
        Err(reason) => {
            tracing::info!("cannot apply the profile, admission will refuse: {reason}");
            // Nothing of a half-done rewrite goes through.
            cfg = ContainerConfig::parse(input, "the config on stdin")?;
            cfg.set_annotation(REFUSAL_ANNOTATION, &reason);
        }
    }
    let placed = loader::place_libraries(&mut cfg, image.library_dir(CONTAINER_LIB_DIR).as_deref());
    tracing::debug!("driver libraries: {placed:?}");
    if governed {
        env.admission.ensure_in(&mut cfg);
    }
    Ok(cfg.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hookcall::ADMIT_STAGE;
    use crate::oci::tests_support::podman_like;

    fn defaults() -> Result<Config, crate::config::ConfigError> {
        Ok(Config::default())
    }

    fn broken() -> Result<Config, crate::config::ConfigError> {
        Config::parse("[budget\n", std::path::Path::new("/etc/gpuwarden/config.toml"))
    }

    fn call() -> HookCall {
        HookCall { path: "/usr/bin/gpuwarden-hook".into(), options: Default::default() }
    }

    fn debian() -> Loader {
        Loader::Glibc { system_dirs: ["/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/", "/lib/", "/usr/lib/"].map(String::from).to_vec() }
    }

    fn fedora() -> Loader {
        Loader::Glibc { system_dirs: vec!["/lib64/".into(), "/usr/lib64/".into()] }
    }

    /// precreate on `input` with `settings`, in an image whose loader is `image`.
    fn precreate_in(input: &[u8], settings: Settings, image: Loader) -> Result<Vec<u8>, PrecreateError> {
        let admission = call();
        let loader = move |_: &ContainerConfig| image.clone();
        precreate(input, &PrecreateEnv { settings, admission: &admission, launcher: None, loader: &loader })
    }

    fn run(input: &[u8], settings: Settings) -> ContainerConfig {
        run_in(input, settings, debian())
    }

    fn run_in(input: &[u8], settings: Settings, image: Loader) -> ContainerConfig {
        ContainerConfig::parse(&precreate_in(input, settings, image).unwrap(), "out").unwrap()
    }

    /// A config as gpuwarden's spec leaves it, for the profile device or, without `profile`, for device `0`.
    fn from_spec(profile: bool) -> Vec<u8> {
        with(|v| {
            let env = v["process"]["env"].as_array_mut().unwrap();
            env.push(crate::oci::owner_marker().into());
            env.push(format!("TRITON_LIBCUDA_PATH={CONTAINER_LIB_DIR}").into());
            if !profile {
                env.retain(|e| !e.as_str().unwrap().starts_with("GPUWARDEN_PROFILE="));
            }
            v["mounts"] = serde_json::json!([{"destination": format!("{CONTAINER_LIB_DIR}/libcuda.so.1"), "type": "bind", "source": "/drv/libcuda.so.535.261.03", "options": ["ro", "bind"]}]);
        })
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&podman_like().to_json()).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn other_containers_pass_through_byte_for_byte() {
        let input = b"{ \"process\" : {\"env\": [\"A=1\"]},\n  \"zz\": [1,2] }";
        assert_eq!(precreate_in(input, &defaults, fedora()).unwrap(), input.to_vec());
        assert_eq!(precreate_in(input, &broken, fedora()).unwrap(), input.to_vec(), "a broken config.toml stops only profile containers");
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
        assert!(matches!(precreate_in(b"", &defaults, debian()), Err(PrecreateError::Empty)));
        let e = precreate_in(b"{nope", &defaults, debian()).unwrap_err().to_string();
        assert!(e.starts_with("the config on stdin is not an OCI config"), "{e}");
    }

    #[test]
    fn the_libraries_go_where_the_images_loader_looks() {
        let moved = run_in(&from_spec(true), &defaults, fedora());
        assert_eq!(moved.mounts()[0].0, "/usr/lib64/libcuda.so.1");
        assert_eq!(moved.env("TRITON_LIBCUDA_PATH"), Some("/usr/lib64"));
        assert_eq!(moved.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"), "and the profile applied");
        let kept = run_in(&from_spec(true), &defaults, debian());
        assert_eq!(kept.mounts()[0].0, "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
        let static_image = run_in(&from_spec(true), &defaults, Loader::Absent);
        assert_eq!(static_image.mounts()[0].0, "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "a busybox image starts as before");
        assert_eq!(static_image.annotation(REFUSAL_ANNOTATION), None);
    }

    #[test]
    fn a_plain_device_container_gets_its_libraries_placed_but_no_admission() {
        let cfg = run_in(&from_spec(false), &broken, fedora());
        assert_eq!(cfg.mounts()[0].0, "/usr/lib64/libcuda.so.1", "no config.toml is read for it");
        assert!(cfg.hooks(ADMIT_STAGE).is_empty() && !cfg.root_readonly());
    }

    #[test]
    fn a_musl_image_is_refused_in_one_line_for_a_profile_container() {
        let cfg = run_in(&from_spec(true), &defaults, Loader::Musl);
        let reason = cfg.annotation(REFUSAL_ANNOTATION).unwrap();
        assert!(reason.starts_with("the image's dynamic loader is musl's (/lib/ld-musl-x86_64.so.1, as in Alpine)"), "{reason}");
        assert!(!reason.contains('\n') && cfg.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").is_none());
        assert_eq!(cfg.hooks(ADMIT_STAGE).len(), 1, "admission refuses with it");
    }

    #[test]
    fn the_image_is_looked_at_only_for_gpu_containers() {
        let admission = call();
        let asked = std::cell::Cell::new(0);
        let loader = |_: &ContainerConfig| {
            asked.set(asked.get() + 1);
            debian()
        };
        let env = PrecreateEnv { settings: &defaults, admission: &admission, launcher: None, loader: &loader };
        precreate(br#"{"process":{"env":["A=1"]},"mounts":[{"destination":"/usr/lib/x86_64-linux-gnu/libfoo.so.1"}]}"#, &env).unwrap();
        assert_eq!(asked.get(), 0, "no gpuwarden spec, no profile: no look");
        precreate(&from_spec(false), &env).unwrap();
        precreate(&podman_like().to_json(), &env).unwrap();
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn a_relative_root_is_the_bundles() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bundle.path().join("rootfs/lib")).unwrap();
        std::fs::write(bundle.path().join("rootfs/lib/ld-musl-x86_64.so.1"), b"").unwrap();
        let cfg = ContainerConfig::parse(br#"{"root":{"path":"rootfs"}}"#, "t").unwrap();
        assert_eq!(image_loader(&cfg, bundle.path()), Loader::Musl);
        assert!(matches!(image_loader(&ContainerConfig::parse(b"{}", "t").unwrap(), bundle.path()), Loader::Unknown { .. }));
    }
}
