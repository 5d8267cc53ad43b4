//! The Docker runtime shim: what Podman gets from CDI and the precreate hook,
//! done to the bundle's `config.json` before the real runtime starts.
//!
//! On `create`, a container that asks for a GPU (through the env NVIDIA's
//! runtime reads, or gpuwarden's profile variable) gets the CDI edits of its
//! devices, unless the engine injected them already (Docker 25+ with CDI),
//! then the one profile rewrite the precreate hook applies. Admission then
//! runs as the spec's createRuntime hook, under runc, as with Podman. Any
//! other command, and any container without a GPU request, is untouched.

mod args;

pub use args::{ArgsError, Invocation, ShimOptions};

use std::path::{Path, PathBuf};

use crate::cdi::inject::{self, HostNodes, InjectError, Specs};
use crate::oci::{OWNER_ENV, PROFILE_ENV};
use crate::hookcall::{HookCall, Settings};
use crate::oci::{ConfigError, ContainerConfig};

/// The env NVIDIA's container runtime reads the devices from.
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// The CDI kind unqualified device names belong to.
pub const DEFAULT_KIND: &str = "nvidia.com/gpu";

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error("the container names two profiles: {PROFILE_ENV}={asked} in its env and {PROFILE_ENV}={device} from device {VISIBLE_DEVICES_ENV}={devices}")]
    TwoProfiles { asked: String, device: String, devices: String },
    #[error(transparent)]
    Precreate(#[from] crate::hook::PrecreateError),
    #[error(transparent)]
    Write(#[from] crate::base::fsutil::AtomicWriteError),
}

/// The CDI devices a config asks for: `NVIDIA_VISIBLE_DEVICES` as NVIDIA's
/// runtime reads it (`all`, indexes, UUIDs, or qualified CDI names as in its
/// CDI mode; `none`, `void` or empty for none), else the profile device of
/// `GPUWARDEN_PROFILE`.
pub fn requested_devices(cfg: &ContainerConfig) -> Vec<String> {
    let qualify = |d: &str| if d.contains('=') { d.to_string() } else { format!("{DEFAULT_KIND}={d}") };
    match cfg.env(VISIBLE_DEVICES_ENV).map(str::trim) {
        Some("" | "none" | "void") => Vec::new(),
        Some(list) => list.split(',').map(str::trim).filter(|d| !d.is_empty()).map(qualify).collect(),
        None => cfg.env(PROFILE_ENV).filter(|p| !p.is_empty()).map(qualify).into_iter().collect(),
    }
}

/// Where the shim finds what it needs.
pub struct ShimEnv<'a> {
    pub settings: Settings<'a>,
    pub cdi_dirs: Vec<PathBuf>,
    pub host_nodes: HostNodes<'a>,
    /// How precreate adds admission to a profile container that lacks it.
    pub admission: HookCall,
    pub launcher: Option<PathBuf>,
}

/// What `prepare` did to the bundle.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// No GPU request: config.json was not touched.
    Untouched,
    /// config.json was rewritten (devices injected by the shim when `injected`).
    Rewritten { injected: bool },
}

/// Rewrites `bundle/config.json` for the container it describes.
pub fn prepare(bundle: &Path, env: &ShimEnv) -> Result<Prepared, ShimError> {
    let path = bundle.join("config.json");
    let input = std::fs::read(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let origin = path.display().to_string();
    let mut cfg = ContainerConfig::parse(&input, &origin)?;
    let devices = requested_devices(&cfg);
    let engine_injected = cfg.env(OWNER_ENV).is_some();
    if devices.is_empty() && !engine_injected && cfg.profile_name().ok().flatten().is_none() {
        return Ok(Prepared::Untouched);
    }
    let injected = !engine_injected && !devices.is_empty();
    if injected {
        let asked = cfg.env(PROFILE_ENV).map(str::to_owned);
        let specs = Specs::load(&env.cdi_dirs);
        inject::apply(&mut cfg, &specs.edits(&devices)?, env.host_nodes)?;
        if let (Some(asked), Some(device)) = (asked, cfg.env(PROFILE_ENV)) {
            if asked != device {
                let devices = cfg.env(VISIBLE_DEVICES_ENV).unwrap_or_default().to_string();
                return Err(ShimError::TwoProfiles { asked, device: device.to_string(), devices });
            }
        }
    }
    // containerd's shim has mounted bundle/rootfs before it calls the runtime's create.
    let loader = |c: &ContainerConfig| crate::hook::image_loader(c, bundle);
    let hook_env = crate::hook::PrecreateEnv { settings: env.settings, admission: &env.admission, launcher: env.launcher.as_deref(), loader: &loader };
    let out = crate::hook::precreate(&cfg.to_json(), &hook_env)?;
    let mode = std::fs::metadata(&path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777).unwrap_or(0o644);
    crate::base::fsutil::write_atomic(&path, &out, mode)?;
    Ok(Prepared::Rewritten { injected })
}

/// One line in runc's JSON log format: containerd's shim reads a failed
/// runtime's error from the `--log` file, not from stderr, and `docker run`
/// shows its `msg`.
pub fn log_line(msg: &str, unix_seconds: u64) -> String {
    let line = serde_json::json!({"level": "error", "msg": msg, "time": crate::base::clock::rfc3339(unix_seconds)});
    format!("{line}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hookcall::REFUSAL_ANNOTATION;

    fn cfg(env: &[&str]) -> ContainerConfig {
        ContainerConfig::parse(serde_json::json!({"process": {"env": env, "args": ["sh"]}, "root": {"path": "rootfs"}}).to_string().as_bytes(), "t").unwrap()
    }

    #[test]
    fn devices_come_from_nvidia_env_or_the_profile() {
        assert_eq!(requested_devices(&cfg(&["NVIDIA_VISIBLE_DEVICES=all"])), ["nvidia.com/gpu=all"]);
        assert_eq!(requested_devices(&cfg(&["NVIDIA_VISIBLE_DEVICES=0, GPU-1234"])), ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-1234"]);
        assert_eq!(requested_devices(&cfg(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui"])), ["nvidia.com/gpu=comfyui"]);
        assert_eq!(requested_devices(&cfg(&["GPUWARDEN_PROFILE=blender"])), ["nvidia.com/gpu=blender"]);
        assert_eq!(requested_devices(&cfg(&["NVIDIA_VISIBLE_DEVICES=0", "GPUWARDEN_PROFILE=blender"])), ["nvidia.com/gpu=0"], "the profile then comes from the env");
        for none in ["none", "void", ""] {
            assert!(requested_devices(&cfg(&[&format!("NVIDIA_VISIBLE_DEVICES={none}"), "GPUWARDEN_PROFILE=x"])).is_empty());
        }
        assert!(requested_devices(&cfg(&["PATH=/bin"])).is_empty());
    }

    const SPEC: &str = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [GPUWARDEN_CDI=gpuwarden/0.1.0]\n\
devices:\n- name: comfyui\n  containerEdits:\n    env: [GPUWARDEN_PROFILE=comfyui]\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]\n    hooks: [{hookName: createRuntime, path: /usr/bin/gpuwarden-hook, args: [gpuwarden-hook, admit]}, {hookName: poststop, path: /usr/bin/gpuwarden-hook, args: [gpuwarden-hook, release]}]\n\
- name: '0'\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]\n";

    struct Bundle {
        dir: tempfile::TempDir,
        specs: tempfile::TempDir,
    }

    impl Bundle {
        fn new(config: &ContainerConfig) -> Bundle {
            let b = Bundle { dir: tempfile::tempdir().unwrap(), specs: tempfile::tempdir().unwrap() };
            std::fs::write(b.dir.path().join("config.json"), config.to_json()).unwrap();
            std::fs::write(b.specs.path().join("gpuwarden.yaml"), SPEC).unwrap();
            b
        }

        fn prepare(&self) -> Result<Prepared, ShimError> {
            let settings = || Ok(Config::default());
            let env = ShimEnv {
                settings: &settings,
                cdi_dirs: vec![self.specs.path().to_path_buf()],
                host_nodes: &inject::stat_node,
                admission: HookCall { path: "/usr/bin/gpuwarden-hook".into(), options: Default::default() },
                launcher: None,
            };
            prepare(self.dir.path(), &env)
        }

        fn config(&self) -> ContainerConfig {
            ContainerConfig::from_bundle(self.dir.path()).unwrap()
        }
    }

    #[test]
    fn a_profile_request_gets_the_device_and_the_profile() {
        let b = Bundle::new(&cfg(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui"]));
        assert_eq!(b.prepare().unwrap(), Prepared::Rewritten { injected: true });
        let c = b.config();
        assert_eq!(c.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"));
        assert!(c.root_readonly() && c.no_new_privileges());
        let v: serde_json::Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["linux"]["devices"][0], serde_json::json!({"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 3}), "numbers from the host node");
        assert_eq!(c.hooks("createRuntime").len(), 1, "the spec's admission, not a second one");
        assert_eq!(c.args()[0], crate::hookcall::LAUNCHER_PATH);
    }

    #[test]
    fn a_container_without_a_gpu_request_is_not_touched() {
        let b = Bundle::new(&cfg(&["PATH=/bin"]));
        let before = std::fs::read(b.dir.path().join("config.json")).unwrap();
        assert_eq!(b.prepare().unwrap(), Prepared::Untouched);
        assert_eq!(std::fs::read(b.dir.path().join("config.json")).unwrap(), before);
    }

    #[test]
    fn what_the_engine_injected_is_not_injected_again() {
        let mut engine = cfg(&["GPUWARDEN_CDI=gpuwarden/0.1.0", "GPUWARDEN_PROFILE=comfyui"]);
        engine.replace_in(&["linux"], "devices", "path", serde_json::json!({"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}));
        let b = Bundle::new(&engine);
        assert_eq!(b.prepare().unwrap(), Prepared::Rewritten { injected: false });
        let c = b.config();
        assert_eq!(c.annotation(REFUSAL_ANNOTATION), None);
        let v: serde_json::Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["linux"]["devices"].as_array().unwrap().len(), 1, "no device added by the shim");
        assert!(c.root_readonly());
        assert_eq!(c.hooks("createRuntime").len(), 1, "precreate adds admission where the engine's config lacks it");
    }

    #[test]
    fn a_plain_device_with_a_profile_env_is_governed() {
        let b = Bundle::new(&cfg(&["NVIDIA_VISIBLE_DEVICES=0", "GPUWARDEN_PROFILE=blender"]));
        b.prepare().unwrap();
        let c = b.config();
        assert_eq!(c.env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("50"));
        assert_eq!(c.hooks("createRuntime").len(), 1);
    }

    #[test]
    fn refusals_leave_the_config_alone_or_go_to_admission() {
        let b = Bundle::new(&cfg(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=sdxl"]));
        let before = std::fs::read(b.dir.path().join("config.json")).unwrap();
        let e = b.prepare().unwrap_err().to_string();
        assert!(e.starts_with("unresolvable CDI devices nvidia.com/gpu=sdxl"), "{e}");
        assert_eq!(std::fs::read(b.dir.path().join("config.json")).unwrap(), before, "nothing changed");

        let b = Bundle::new(&cfg(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui", "GPUWARDEN_PROFILE=blender"]));
        assert!(b.prepare().unwrap_err().to_string().contains("names two profiles"));

        let mut c = cfg(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui"]);
        c.set_annotation("gpuwarden.io/threads", "60");
        let b = Bundle::new(&c);
        b.prepare().unwrap();
        assert!(b.config().annotation(REFUSAL_ANNOTATION).unwrap().contains("more than profile comfyui allows"), "admission refuses with the reason");
    }

    #[test]
    fn the_log_line_is_what_containerd_reads() {
        let line = log_line("gpuwarden: refused \"x\"", 1_795_000_000);
        assert_eq!(line, "{\"level\":\"error\",\"msg\":\"gpuwarden: refused \\\"x\\\"\",\"time\":\"2026-11-18T11:06:40Z\"}\n");
    }
}
