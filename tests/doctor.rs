//! `gpuwarden doctor` on a host laid out under a scratch root (`--root`), with
//! the spec generated from NVIDIA's real packages and NVIDIA's real MPS
//! control daemon: ready when every piece is there, and each broken piece one
//! line with what to run, and exit 1.

mod common;
use common::*;

use std::path::Path;

struct Host {
    dir: tempfile::TempDir,
    config: String,
}

impl Host {
    /// Everything in place: the spec, the hooks.d file and its hook binary, Podman, the daemon.
    fn ready(test: &str) -> Option<Host> {
        if !is_root() {
            skip(test, "the MPS daemon runs in a mount namespace of its own and the driver root's nodes are made with mknod: both need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("mps");
        let config = write(
            dir.path(),
            "config.toml",
            &format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n", dir.path().join("state").display(), m = m.display()),
        );
        let h = Host { dir, config };
        let f = driver_fixture();
        let spec = h.root().join("etc/cdi/gpuwarden.yaml");
        let o = gpuwarden(
            &["--config", &h.config, "cdi", "generate", "--driver-root", f.root.to_str().unwrap(), "--dev-root", f.dev.to_str().unwrap(), "--output", spec.to_str().unwrap(), "--cdi-dir", h.root().join("etc/cdi").to_str().unwrap()],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let hooks = h.root().join("usr/share/containers/oci/hooks.d");
        let o = gpuwarden(&["--config", &h.config, "podman", "install-hook", "--hooks-dir", hooks.to_str().unwrap(), "--hook-path", "/usr/bin/gpuwarden-hook", "--launcher-path", "/usr/bin/gpuwarden-launch"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::create_dir_all(h.root().join("usr/bin")).unwrap();
        for b in ["gpuwarden-hook", "podman"] {
            std::fs::write(h.root().join("usr/bin").join(b), "").unwrap();
        }
        let o = gpuwarden(&["--config", &h.config, "mps", "start"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        Some(h)
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn doctor(&self, json: bool) -> std::process::Output {
        let root = self.root();
        let dev = driver_fixture().dev.clone();
        let mut args = vec!["--config", &self.config, "doctor", "--root", root.to_str().unwrap(), "--dev-root", dev.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        gpuwarden(&args, b"")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = gpuwarden(&["--config", &self.config, "mps", "stop"], b"");
    }
}

#[test]
fn a_ready_host_is_ready_and_each_broken_piece_is_one_line_with_its_fix() {
    let Some(h) = Host::ready("a_ready_host_is_ready_and_each_broken_piece_is_one_line_with_its_fix") else { return };
    let o = h.doctor(false);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("ok    mps        the control daemon runs (pid "), "{out}");
    assert!(out.contains("is gpuwarden's spec, for driver 535.261.03"), "{out}");
    assert!(out.contains("gpuwarden-precreate.json runs /usr/bin/gpuwarden-hook"), "{out}");
    assert!(out.contains("WARN  driver     the GPUs come from builtin:rtx4070, a stand-in for NVML"), "the stand-in is said: {out}");
    assert!(out.lines().last().unwrap().starts_with("ready"), "{out}");
    assert!(out.lines().all(|l| l.len() <= 200), "fits a terminal: {out}");

    // Broken four ways.
    let o = gpuwarden(&["--config", &h.config, "mps", "stop"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = h.root().join("etc/cdi/gpuwarden.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let libcuda = text.lines().find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("hostPath: ").filter(|p| p.ends_with("libcuda.so.535.261.03"))).unwrap().to_string();
    std::fs::write(&spec, text.replace(&libcuda, "/nonexistent/libcuda.so.535.261.03")).unwrap();
    write(&h.root().join("etc/cdi"), "nvidia.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0}]\n");
    std::fs::remove_file(h.root().join("usr/share/containers/oci/hooks.d/gpuwarden-precreate.json")).unwrap();
    let o = h.doctor(false);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for (line, fix) in [
        ("FAIL  mps        the control daemon does not answer", "systemctl start gpuwarden-mps (or gpuwarden mps start)"),
        ("names 1 host path(s) that are gone, such as /nonexistent/libcuda.so.535.261.03: it is stale", "-> gpuwarden cdi generate"),
        (&format!("FAIL  cdi        nvidia.com/gpu=0 is defined by {} and {}", spec.display(), h.root().join("etc/cdi/nvidia.yaml").display()), "it leaves NVIDIA's names to NVIDIA's spec"),
        ("FAIL  podman     no hooks.d file runs gpuwarden-hook precreate", "gpuwarden podman install-hook (or gpuwarden install --podman)"),
    ] {
        let at = out.find(line).unwrap_or_else(|| panic!("no line {line:?} in:\n{out}"));
        let next = out[at..].lines().nth(1).unwrap_or_default();
        assert!(next.trim_start().starts_with("-> ") && next.contains(fix), "{line}: the fix follows it: {next:?}\n{out}");
    }
    assert!(out.lines().last().unwrap().starts_with("NOT ready: 4 problem(s)"), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&h.doctor(true).stdout).unwrap();
    assert_eq!(json["ready"], false);
    assert_eq!(json["findings"].as_array().unwrap().iter().filter(|f| f["level"] == "fail").count(), 4, "{json}");

    // A Kubernetes node: containerd's CRI with CDI off drops pods' CDI devices without a word,
    // so with a kubelet there it is one more problem, with its fix; turned on, it is ok.
    std::fs::create_dir_all(h.root().join("etc/containerd")).unwrap();
    for b in ["containerd", "kubelet"] {
        std::fs::write(h.root().join("usr/bin").join(b), "").unwrap();
    }
    let config = write(&h.root().join("etc/containerd"), "config.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = false\n");
    let out = stdout(&h.doctor(false));
    let at = out.find("FAIL  containerd  containerd: its CRI ignores CDI devices (enable_cdi is off)").unwrap_or_else(|| panic!("no containerd line in:\n{out}"));
    assert!(out[at..].lines().nth(1).unwrap_or_default().contains("-> set enable_cdi = true under [plugins.\"io.containerd.grpc.v1.cri\"]"), "{out}");
    assert!(out.lines().last().unwrap().starts_with("NOT ready: 5 problem(s)"), "{out}");
    std::fs::write(&config, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = true\n").unwrap();
    let out = stdout(&h.doctor(false));
    assert!(out.contains("ok    containerd  containerd: its CRI applies CDI devices"), "{out}");
    assert!(Path::new(&h.config).exists());
}
