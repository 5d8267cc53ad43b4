//! The Docker runtime shim without Docker: its CDI injection against the CNCF
//! crate's on the spec generated from NVIDIA's real packages, and the binary
//! with a stand-in runtime that records what it was given.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gpuwarden::cdi::inject::{apply, stat_node, Specs};
use gpuwarden::oci::ContainerConfig;

/// A config.json as Docker 20.10 writes it, trimmed to what CDI edits touch.
const DOCKER_CONFIG: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=0123456789ab"], "cwd": "/"},
  "root": {"path": "/var/lib/docker/overlay2/x/merged"},
  "hostname": "0123456789ab",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/shm", "type": "bind", "source": "/var/lib/docker/containers/x/mounts/shm", "options": ["rbind", "rprivate"]},
    {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/docker/containers/x/hosts", "options": ["rbind", "rprivate"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]},
    "namespaces": [{"type": "mount"}, {"type": "pid"}]
  }
}"#;

/// The spec `gpuwarden cdi generate` writes from the real driver packages.
fn generated_spec(dir: &Path) -> PathBuf {
    let fixture = driver_fixture();
    let config = write(dir, "config.toml", &format!("inventory = \"builtin:rtx4070\"\n[mps]\npipe_directory = \"{d}/pipe\"\nlog_directory = \"{d}/log\"\nshm_directory = \"{d}/shm\"\n", d = dir.display()));
    let specs = dir.join("cdi");
    std::fs::create_dir_all(&specs).unwrap();
    let o = gpuwarden(
        &["--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", specs.join("gpuwarden.yaml").to_str().unwrap()],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    specs
}

/// CDI's reference library (Go) orders mounts by depth after adding them;
/// the Rust crate leaves that out, so its result is ordered here the same way.
fn sort_by_depth(v: &mut serde_json::Value) {
    let depth = |m: &serde_json::Value| m["destination"].as_str().unwrap_or("").split('/').filter(|p| !p.is_empty()).count().max(1);
    if let Some(list) = v["mounts"].as_array_mut() {
        list.sort_by_key(depth);
    }
}

/// Both results through oci-spec's types, so that field order and absent
/// defaults do not count.
fn normalized(json: &[u8]) -> serde_json::Value {
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(json).unwrap();
    serde_json::to_value(&spec).unwrap()
}

#[test]
fn injection_matches_the_cncf_crate_on_the_generated_spec() {
    if !is_root() {
        skip("injection_matches_the_cncf_crate_on_the_generated_spec", "the driver fixture's device nodes need mknod (root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let specs_dir = generated_spec(dir.path());
    let specs = Specs::load(std::slice::from_ref(&specs_dir));
    let cache = container_device_interface::cache::new_cache(vec![
        container_device_interface::spec_dirs::with_spec_dirs(&[specs_dir.to_str().unwrap()]),
        container_device_interface::cache::with_auto_refresh(false),
    ]);
    let requests: [&[&str]; 4] = [&["nvidia.com/gpu=comfyui"], &["nvidia.com/gpu=blender"], &["nvidia.com/gpu=0", "nvidia.com/gpu=comfyui"], &["nvidia.com/gpu=all"]];
    for names in requests {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut ours = ContainerConfig::parse(DOCKER_CONFIG.as_bytes(), "docker").unwrap();
        apply(&mut ours, &specs.edits(&names).unwrap(), &stat_node).unwrap();
        let ours = normalized(&ours.to_json());

        let mut theirs: oci_spec::runtime::Spec = serde_json::from_str(DOCKER_CONFIG).unwrap();
        cache.lock().unwrap().inject_devices(Some(&mut theirs), names.clone()).unwrap();
        let mut theirs = serde_json::to_value(&theirs).unwrap();
        sort_by_depth(&mut theirs);

        for field in ["/process/env", "/linux/devices", "/linux/resources/devices", "/mounts", "/hooks"] {
            assert_eq!(ours.pointer(field), theirs.pointer(field), "{field} for {names:?}");
        }
        assert!(ours["linux"]["devices"].as_array().unwrap().len() >= 5, "the GPU and the control nodes: {}", ours["linux"]["devices"]);
        assert_eq!(ours, theirs, "the whole config for {names:?}");
    }
}

/// A stand-in runtime that records its arguments and the config it was given.
struct Runtime {
    dir: tempfile::TempDir,
}

impl Runtime {
    fn new() -> Runtime {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("runc");
        std::fs::write(&script, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/args\n[ -f bundle/config.json ] && cp bundle/config.json {d}/seen.json\nexit 0\n", d = dir.path().display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("bundle")).unwrap();
        Runtime { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// Runs the shim in this folder with `args` after its own options.
    fn shim(&self, specs: &Path, config: &str, args: &[&str]) -> Output {
        let runc = self.dir.path().join("runc");
        let mut all = vec!["--gpuwarden-runtime", runc.to_str().unwrap(), "--gpuwarden-config", config, "--gpuwarden-cdi-dir", specs.to_str().unwrap()];
        all.extend_from_slice(args);
        Command::new(dist("gpuwarden-runtime")).args(&all).current_dir(self.dir.path()).env_remove("GPUWARDEN_CONFIG").output().unwrap()
    }

    fn args(&self) -> Option<Vec<String>> {
        Some(std::fs::read_to_string(self.dir.path().join("args")).ok()?.lines().map(str::to_owned).collect())
    }
}

fn config_with_env(env: &[&str]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
    for e in env {
        v["process"]["env"].as_array_mut().unwrap().push((*e).into());
    }
    serde_json::to_vec(&v).unwrap()
}

/// A folder with the generated spec and its config, and a stand-in runtime;
/// `None` (said loudly) without root.
fn shim_world(test: &str) -> Option<(tempfile::TempDir, PathBuf, String, Runtime)> {
    if !is_root() {
        skip(test, "the driver fixture's device nodes need mknod (root)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let specs = generated_spec(dir.path());
    let config = dir.path().join("config.toml").display().to_string();
    Some((dir, specs, config, Runtime::new()))
}

#[test]
fn the_shim_rewrites_on_create_and_passes_every_argument_through() {
    let Some((_dir, specs, config, rt)) = shim_world("the_shim_rewrites_on_create_and_passes_every_argument_through") else { return };
    std::fs::write(rt.bundle().join("config.json"), config_with_env(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui"])).unwrap();
    let log = rt.dir.path().join("log.json");
    let runc_args = ["--root", "/run/x", "--log", log.to_str().unwrap(), "--log-format", "json", "create", "--bundle", "bundle", "--pid-file", "bundle/init.pid", "abc"];
    let o = rt.shim(&specs, &config, &runc_args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rt.args().unwrap(), runc_args, "the runtime gets the arguments unchanged, without gpuwarden's");
    let seen: serde_json::Value = serde_json::from_slice(&std::fs::read(rt.dir.path().join("seen.json")).unwrap()).unwrap();
    assert_eq!(seen["process"]["args"][0], "/usr/libexec/gpuwarden/gpuwarden-launch");
    assert_eq!(seen["root"]["readonly"], true);
    assert!(seen["process"]["env"].as_array().unwrap().contains(&"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G".into()), "{}", seen["process"]["env"]);
    assert!(!log.exists(), "nothing logged");

    // Every other command goes straight through, without reading the bundle.
    std::fs::remove_file(rt.bundle().join("config.json")).unwrap();
    let o = rt.shim(&specs, &config, &["--root", "/run/x", "delete", "--force", "abc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rt.args().unwrap(), ["--root", "/run/x", "delete", "--force", "abc"]);
}

#[test]
fn the_shim_refuses_in_runc_s_log_and_runs_nothing() {
    let Some((_dir, specs, config, rt)) = shim_world("the_shim_refuses_in_runc_s_log_and_runs_nothing") else { return };
    let input = config_with_env(&["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=sdxl"]);
    std::fs::write(rt.bundle().join("config.json"), &input).unwrap();
    let log = rt.dir.path().join("log.json");
    let o = rt.shim(&specs, &config, &["--log", log.to_str().unwrap(), "--log-format", "json", "create", "--bundle", "bundle", "abc"]);
    assert_one_line_error(&o, "unresolvable CDI devices nvidia.com/gpu=sdxl: the specs in ");
    assert_eq!(rt.args(), None, "the runtime never ran");
    assert_eq!(std::fs::read(rt.bundle().join("config.json")).unwrap(), input, "config.json unchanged");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 1);
    let line: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"].as_str().unwrap(), stderr(&o).trim());

    // A runtime that cannot be run is named, with the option that fixes it.
    std::fs::write(rt.bundle().join("config.json"), DOCKER_CONFIG).unwrap();
    let o = Command::new(dist("gpuwarden-runtime")).args(["--gpuwarden-runtime", "/nonexistent/runc", "create", "--bundle", "bundle", "abc"]).current_dir(rt.dir.path()).output().unwrap();
    assert_one_line_error(&o, "cannot run the runtime \"/nonexistent/runc\"");
    assert!(stderr(&o).contains("--gpuwarden-runtime PATH"));

    // Its own options are checked; its help teaches the set-up.
    let o = Command::new(dist("gpuwarden-runtime")).args(["--gpuwarden-cdi"]).output().unwrap();
    assert_one_line_error(&o, "unknown option --gpuwarden-cdi");
    let o = Command::new(dist("gpuwarden-runtime")).arg("--gpuwarden-help").output().unwrap();
    assert!(o.status.success() && stdout(&o).contains("\"runtimes\": {\"gpuwarden\"") && stdout(&o).contains("NVIDIA_VISIBLE_DEVICES"));
}
