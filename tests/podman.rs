//! End to end with Podman 4.3.1 and runc: the spec generated from the real
//! driver packages, the precreate hook installed with `gpuwarden podman
//! install-hook`, admission and release through the hooks in the spec.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const IMAGE: &str = "localhost/gpuwarden-test-busybox:latest";
/// Podman reads specs only from /etc/cdi and /var/run/cdi; tests use this file
/// and remove it, holding a lock so that only one test's spec exists at a time.
const SPEC: &str = "/var/run/cdi/gpuwarden-test.yaml";

struct World {
    dir: tempfile::TempDir,
    config: String,
    hooks_dir: PathBuf,
    prefix: String,
    started: Vec<String>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman is installed (scripts/setup.sh)")
}

fn ensure_image() {
    if podman(&["image", "exists", IMAGE]).status.success() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).expect("busybox-static is installed (scripts/setup.sh)");
    std::os::unix::fs::symlink("busybox", rootfs.join("sh")).unwrap();
    let tar = dir.path().join("bb.tar");
    assert!(Command::new("tar").arg("-C").arg(dir.path().join("rootfs")).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let o = podman(&["import", tar.to_str().unwrap(), IMAGE]);
    assert!(o.status.success(), "{}", stderr(&o));
}

impl World {
    /// A host set up as the README says, with its own state folder. `None`
    /// (said loudly) when not root: rootful Podman and mknod need it.
    fn new(test: &str, precreate: bool, config_extra: &str) -> Option<World> {
        if !is_root() {
            skip(test, "rootful Podman, /var/run/cdi and mknod need root");
            return None;
        }
        let lock = process_lock("podman-cdi");
        ensure_image();
        let fixture = driver_fixture();
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n{config_extra}",
                dir.path().join("state").display()
            ),
        );
        let _ = std::fs::remove_file(SPEC);
        let o = gpuwarden(
            &["--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", SPEC],
            b"",
        );
        assert!(o.status.success(), "cdi generate: {}", stderr(&o));
        let hooks_dir = dir.path().join("hooks.d");
        std::fs::create_dir_all(&hooks_dir).unwrap();
        if precreate {
            let o = gpuwarden(&["--config", &config, "podman", "install-hook", "--hooks-dir", hooks_dir.to_str().unwrap()], b"");
            assert!(o.status.success(), "install-hook: {}", stderr(&o));
        }
        Some(World { dir, config, hooks_dir, prefix: format!("gwtest-{}-", std::process::id()), started: Vec::new(), _lock: lock })
    }

    /// `podman run -d` of a sleeping busybox named NAME with `args`.
    fn start(&mut self, name: &str, args: &[&str]) -> Output {
        self.run(name, args, &["sh", "-c", "sleep 600"], true)
    }

    fn run(&mut self, name: &str, args: &[&str], cmd: &[&str], detach: bool) -> Output {
        let full = format!("{}{name}", self.prefix);
        self.started.push(full.clone());
        let hooks = self.hooks_dir.display().to_string();
        let mut a = vec!["--runtime", "runc", "--hooks-dir", &hooks, "run", "--name", &full, "--network", "none"];
        a.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
        if detach {
            a.push("-d");
        }
        a.extend_from_slice(args);
        a.push(IMAGE);
        a.extend_from_slice(cmd);
        podman(&a)
    }

    fn id(&self, name: &str) -> String {
        let o = podman(&["inspect", "--format", "{{.Id}}", &format!("{}{name}", self.prefix)]);
        stdout(&o).trim().to_string()
    }

    fn remove(&mut self, name: &str) {
        let o = podman(&["rm", "-f", "-t", "0", &format!("{}{name}", self.prefix)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    fn status(&self) -> serde_json::Value {
        let o = gpuwarden(&["--config", &self.config, "status", "--json"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn held_ids(&self) -> Vec<String> {
        let s = self.status();
        s["gpus"][0]["reservations"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for name in &self.started {
            let _ = podman(&["rm", "-f", "-t", "0", name]);
        }
        let _ = std::fs::remove_file(SPEC);
    }
}

fn refusal(o: &Output) -> String {
    assert!(!o.status.success(), "expected a refusal, got success");
    let err = stderr(o);
    let line = err.lines().find(|l| l.contains("gpuwarden: ")).unwrap_or_else(|| panic!("Podman did not show gpuwarden's line: {err}"));
    line[line.find("gpuwarden: ").unwrap()..].to_string()
}

#[test]
fn a_read_only_container_gets_the_gpu_the_real_driver_and_its_profile() {
    let Some(mut w) = World::new("a_read_only_container_gets_the_gpu_the_real_driver_and_its_profile", true, "") else { return };
    let script = "ls /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm && md5sum /usr/lib/x86_64-linux-gnu/libcuda.so.1 \
                  && echo profile=$GPUWARDEN_PROFILE && if touch /probe 2>/dev/null; then echo root-writable; else echo root-readonly; fi";
    let o = w.run("dev", &["--rm", "--read-only", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", script], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let host = driver_fixture().root.join("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03");
    let want = Command::new("md5sum").arg(&host).output().unwrap();
    let want_sum = stdout(&want).split_whitespace().next().unwrap().to_string();
    assert!(out.contains(&format!("{want_sum}  /usr/lib/x86_64-linux-gnu/libcuda.so.1")), "libcuda.so.1 differs from the host's {}:\n{out}", host.display());
    assert!(out.contains("/dev/nvidia0") && out.contains("/dev/nvidiactl"), "{out}");
    assert!(out.contains("profile=comfyui") && out.contains("root-readonly"), "{out}");
    assert!(w.held_ids().is_empty(), "a --rm container releases its share");
}

#[test]
fn the_workstation_demo_admits_refuses_and_releases() {
    let Some(mut w) = World::new("the_workstation_demo_admits_refuses_and_releases", true, "") else { return };
    // Podman passes no container name to hooks; the annotation gives one.
    let o = w.start("render", &["--device", "nvidia.com/gpu=blender", "--annotation", "gpuwarden.io/name=render"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let render = w.id("render");
    let s = w.status();
    assert_eq!(s["gpus"][0]["reservations"][0]["name"], "render");
    assert_eq!(s["gpus"][0]["threads"]["used"], 50);
    assert_eq!(s["gpus"][0]["pinned_memory"]["left_bytes"], 2560u64 << 20);

    // A ComfyUI worker does not fit beside the render; the line says why, with numbers.
    let line = refusal(&w.start("comfy1", &["--device", "nvidia.com/gpu=comfyui"]));
    let comfy1 = w.id("comfy1");
    assert_eq!(
        line,
        format!(
            "gpuwarden: refused {} (comfyui) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 2.5 GiB left of 7.5 GiB \
             (held by {} render (blender) 5.0 GiB; reserved: steam 4.0 GiB, system 0.5 GiB)",
            &comfy1[..12],
            &render[..12]
        )
    );
    assert_eq!(w.held_ids(), std::slice::from_ref(&render), "a refusal changes nothing");

    // The render stops (poststop releases it) and its share returns.
    w.remove("render");
    assert!(w.held_ids().is_empty(), "poststop released the render");
    w.remove("comfy1");

    for n in ["comfy1", "comfy2"] {
        let o = w.start(n, &["--device", "nvidia.com/gpu=comfyui"]);
        assert!(o.status.success(), "{n}: {}", stderr(&o));
    }
    let line = refusal(&w.start("comfy3", &["--device", "nvidia.com/gpu=comfyui"]));
    assert!(line.contains("needs 3.0 GiB pinned memory, 1.5 GiB left of 7.5 GiB"), "{line}");
    let s = w.status();
    assert_eq!(s["gpus"][0]["threads"]["used"], 50);
    assert_eq!(s["gpus"][0]["clients"]["used"], 2);

    // The admitted worker runs hardened and limited.
    let o = podman(&["exec", &format!("{}comfy1", w.prefix), "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ; grep -E 'CapEff|NoNewPrivs' /proc/1/status; touch /x 2>&1"]);
    let out = stdout(&o) + &stderr(&o);
    for want in ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G", "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Read-only file system"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
}

#[test]
fn a_container_that_breaks_its_profile_is_refused_with_the_rule() {
    // Without the precreate hook nothing rewrites the config: admission is the guard.
    let Some(mut w) = World::new("a_container_that_breaks_its_profile_is_refused_with_the_rule", false, "") else { return };
    let line = refusal(&w.start("writable", &["--device", "nvidia.com/gpu=comfyui"]));
    assert!(line.contains("(comfyui): breaks rule read-only-root: the root filesystem is writable"), "{line}");
    let line = refusal(&w.start("sysadmin", &["--device", "nvidia.com/gpu=comfyui", "--read-only", "--security-opt", "no-new-privileges", "--cap-add", "SYS_ADMIN"]));
    assert!(line.contains("breaks rule capabilities: keeps") && line.contains("CAP_SYS_ADMIN"), "{line}");
    let line = refusal(&w.start("limitless", &["--device", "nvidia.com/gpu=comfyui", "--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "ALL"]));
    assert!(line.contains("breaks rule mps-limits: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE is not set"), "{line}");
    assert!(w.held_ids().is_empty());
}

#[test]
fn with_the_precreate_hook_extra_capabilities_are_cut_and_privileged_is_refused() {
    let Some(mut w) = World::new("with_the_precreate_hook_extra_capabilities_are_cut_and_privileged_is_refused", true, "") else { return };
    let o = w.run("cut", &["--rm", "--device", "nvidia.com/gpu=comfyui", "--cap-add", "SYS_ADMIN"], &["sh", "-c", "grep -E 'CapEff|CapBnd' /proc/self/status"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("CapEff:\t0000000000000000") && stdout(&o).contains("CapBnd:\t0000000000000000"), "{}", stdout(&o));
    let line = refusal(&w.start("priv", &["--device", "nvidia.com/gpu=comfyui", "--privileged"]));
    assert!(line.contains("breaks rule not-privileged"), "{line}");
}

#[test]
fn a_container_killed_without_poststop_is_reclaimed_at_the_next_admission() {
    let Some(mut w) = World::new("a_container_killed_without_poststop_is_reclaimed_at_the_next_admission", true, "") else { return };
    let o = w.start("render", &["--device", "nvidia.com/gpu=blender"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let render = w.id("render");
    // Kill conmon first so that nothing runs the poststop hook, then the container's process.
    let name = format!("{}render", w.prefix);
    let pids = stdout(&podman(&["inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", &name])).trim().to_string();
    let (conmon, pid) = pids.split_once(' ').unwrap();
    for p in [conmon, pid] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.parse().unwrap()), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let proc_gone = Path::new("/proc").join(pid);
    for _ in 0..100 {
        if !proc_gone.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(w.held_ids(), std::slice::from_ref(&render), "the dead render still holds its share");
    assert_eq!(w.status()["gpus"][0]["reservations"][0]["stale"], true);
    // The next admission reclaims it, so the worker fits.
    let o = w.start("comfy1", &["--device", "nvidia.com/gpu=comfyui"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let held = w.held_ids();
    assert_eq!(held, [w.id("comfy1")]);
    assert!(w.state_dir().join("ledger.json").exists());
}
