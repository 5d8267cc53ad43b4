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
    busybox_image(IMAGE, |_| {});
}

/// `gpuwarden cdi generate` of the test spec with `config`, as the refresh unit
/// runs it; `path_first` goes before PATH (where NVIDIA's toolkit may be found).
fn generate(config: &str, path_first: Option<&Path>) -> Output {
    let fixture = driver_fixture();
    let mut c = Command::new(bin());
    c.env_remove("GPUWARDEN_CONFIG").env_remove("GPUWARDEN_CDI_SPEC_DIRS");
    if let Some(first) = path_first {
        c.env("PATH", format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default()));
    }
    c.args(["--config", config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", SPEC])
        // Static: the busybox image has no libc.
        .args(["--launcher-path", dist("gpuwarden-launch").to_str().unwrap()]);
    c.output().unwrap()
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
        let dir = tempfile::tempdir().unwrap();
        let mps = dir.path().join("mps");
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n\
                 [budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n{config_extra}",
                dir.path().join("state").display(),
                m = mps.display()
            ),
        );
        let _ = std::fs::remove_file(SPEC);
        let o = generate(&config, None);
        assert!(o.status.success(), "cdi generate: {}", stderr(&o));
        let hooks_dir = dir.path().join("hooks.d");
        std::fs::create_dir_all(&hooks_dir).unwrap();
        if precreate {
            let launcher = dist("gpuwarden-launch");
            let o = gpuwarden(&["--config", &config, "podman", "install-hook", "--hooks-dir", hooks_dir.to_str().unwrap(), "--launcher-path", launcher.to_str().unwrap()], b"");
            assert!(o.status.success(), "install-hook: {}", stderr(&o));
        }
        // The daemon is run with a file of its own, which tests that break config.toml leave alone.
        write(dir.path(), "mps.toml", &format!("inventory = \"builtin:rtx4070\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n", m = mps.display()));
        let w = World { dir, config, hooks_dir, prefix: format!("gwtest-{}-", std::process::id()), started: Vec::new(), _lock: lock };
        w.mps(&["start"], &[]);
        Some(w)
    }

    /// `gpuwarden mps ARGS` on this world's daemon (NVIDIA's real one), with `env` added.
    fn mps(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let mut c = Command::new(bin());
        c.args(["--config", self.mps_config().to_str().unwrap(), "mps"]).args(args).env_remove("GPUWARDEN_CONFIG");
        c.envs(env.iter().map(|(k, v)| (*k, v)));
        let o = c.output().unwrap();
        assert!(o.status.success(), "gpuwarden mps {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    fn mps_config(&self) -> PathBuf {
        self.dir.path().join("mps.toml")
    }

    fn mps_dir(&self) -> PathBuf {
        self.dir.path().join("mps")
    }

    /// `podman run -d` of a sleeping busybox named NAME with `args`.
    fn start(&mut self, name: &str, args: &[&str]) -> Output {
        self.run(name, args, &["sh", "-c", "sleep 600"], true)
    }

    fn run(&mut self, name: &str, args: &[&str], cmd: &[&str], detach: bool) -> Output {
        self.run_image(name, IMAGE, args, cmd, detach)
    }

    fn run_image(&mut self, name: &str, image: &str, args: &[&str], cmd: &[&str], detach: bool) -> Output {
        let full = format!("{}{name}", self.prefix);
        self.started.push(full.clone());
        let hooks = self.hooks_dir.display().to_string();
        let mut a = vec!["--runtime", "runc", "--hooks-dir", &hooks, "run", "--name", &full, "--network", "none"];
        a.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
        if detach {
            a.push("-d");
        }
        a.extend_from_slice(args);
        a.push(image);
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

    /// Asserts that the container's root changed only where runc made mount points
    /// (before it made the root read-only): the workload and gpuwarden wrote nothing.
    /// Returns what `podman diff` listed.
    fn assert_only_mount_points_changed(&self, name: &str) -> String {
        let id = self.id(name);
        let bundle = PathBuf::from(format!("/var/lib/containers/storage/overlay-containers/{id}/userdata/config.json"));
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
        let destinations: Vec<&str> = config["mounts"].as_array().unwrap().iter().filter_map(|m| m["destination"].as_str()).collect();
        let diff = stdout(&podman(&["diff", &format!("{}{name}", self.prefix)]));
        for line in diff.lines() {
            let path = line.split_once(' ').map_or(line, |(_, p)| p);
            let mount_point = destinations.iter().any(|d| *d == path || d.starts_with(&format!("{path}/")));
            assert!(mount_point, "{path} changed in the container's root, and no mount is there: something wrote it\n{diff}");
        }
        diff
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for World {
    /// Removes every container the test started, and runc's record of it:
    /// a container whose conmon was killed leaves a stopped record in
    /// `runc list` that `podman rm` does not delete.
    fn drop(&mut self) {
        for name in &self.started {
            let id = stdout(&podman(&["inspect", "--format", "{{.Id}}", name])).trim().to_string();
            let _ = podman(&["rm", "-f", "-t", "0", name]);
            if !id.is_empty() && Path::new("/run/runc").join(&id).exists() {
                let _ = Command::new("runc").args(["delete", "--force", &id]).output();
            }
        }
        let _ = Command::new(bin()).args(["--config", self.mps_config().to_str().unwrap(), "mps", "stop"]).output();
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
    let pipe = format!("CUDA_MPS_PIPE_DIRECTORY={}", w.mps_dir().join("pipe").display());
    for want in ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G", &pipe, "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Read-only file system"] {
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
    // Everything right but the launcher: its Landlock rules would be skipped.
    let pipe = format!("CUDA_MPS_PIPE_DIRECTORY={}", w.mps_dir().join("pipe").display());
    let env = ["-e", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "-e", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G", "-e", &pipe];
    let mut args = vec!["--device", "nvidia.com/gpu=comfyui", "--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "ALL"];
    args.extend(env);
    let line = refusal(&w.start("nolauncher", &args));
    assert!(line.contains("breaks rule launcher: its first argument is not gpuwarden's launcher (/usr/libexec/gpuwarden/gpuwarden-launch), so profile comfyui's Landlock rules would be skipped"), "{line}");
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
    let runc_dir = Path::new("/run/runc").join(&render);
    assert!(runc_dir.exists(), "runc keeps a record of the render whose conmon died (what the clean-up must remove)");
    drop(w);
    assert!(!runc_dir.exists(), "the clean-up removed runc's record of the killed render");
}

#[test]
fn every_reason_precreate_cannot_apply_a_profile_reaches_podman_run() {
    let Some(mut w) = World::new("every_reason_precreate_cannot_apply_a_profile_reaches_podman_run", true, "") else { return };
    let cases: [(&str, &[&str], &str); 3] = [
        ("threads", &["--device", "nvidia.com/gpu=comfyui", "--annotation", "gpuwarden.io/threads=60"], "(comfyui): annotation gpuwarden.io/threads asks 60%, more than profile comfyui allows (25%): a container may ask for less, never more"),
        ("pinned", &["--device", "nvidia.com/gpu=comfyui", "--annotation", "gpuwarden.io/pinned-memory=lots"], "(comfyui): annotation gpuwarden.io/pinned-memory=\"lots\": invalid size \"lots\": unknown unit (write e.g. 3G, 3GiB, 3072M or 1.5GiB; units are binary)"),
        // Device 0 carries no hooks: precreate adds the admission hook that refuses.
        ("unknown", &["--device", "nvidia.com/gpu=0", "--annotation", "gpuwarden.io/profile=sdxl"], "(sdxl): unknown profile \"sdxl\": known profiles are blender, comfyui (gpuwarden config show)"),
    ];
    for (name, args, want) in cases {
        let line = refusal(&w.start(name, args));
        let id = w.id(name);
        assert_eq!(line, format!("gpuwarden: refused {} {want}", &id[..12]), "podman run's stderr for {name}");
    }
    assert!(w.held_ids().is_empty(), "refusals change nothing");
}

#[test]
fn a_broken_config_toml_refuses_gpu_containers_visibly_and_leaves_others_alone() {
    let Some(mut w) = World::new("a_broken_config_toml_refuses_gpu_containers_visibly_and_leaves_others_alone", true, "") else { return };
    std::fs::write(&w.config, "[budget\nsteam = 1\n").unwrap();
    let line = refusal(&w.start("comfy", &["--device", "nvidia.com/gpu=comfyui"]));
    let id = w.id("comfy");
    assert!(line.starts_with(&format!("gpuwarden: refused {} (comfyui): config {}:1:8: ", &id[..12], w.config)), "{line}");
    let o = w.run("plain", &["--rm"], &["sh", "-c", "echo untouched"], false);
    assert!(o.status.success(), "a container without a profile runs whatever config.toml holds: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "untouched");
}

#[test]
fn a_profile_named_by_annotation_alone_is_admitted_and_released() {
    let Some(mut w) = World::new("a_profile_named_by_annotation_alone_is_admitted_and_released", true, "") else { return };
    let o = w.start("annotated", &["--device", "nvidia.com/gpu=0", "--annotation", "gpuwarden.io/profile=blender"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = w.status();
    assert_eq!(s["gpus"][0]["reservations"][0]["id"], w.id("annotated"));
    assert_eq!(s["gpus"][0]["reservations"][0]["profile"], "blender");
    w.remove("annotated");
    assert!(w.held_ids().is_empty(), "the release hook precreate added gave the share back");
}

#[test]
fn a_read_only_container_finds_libcuda_the_way_triton_does() {
    let Some(mut w) = World::new("a_read_only_container_finds_libcuda_the_way_triton_does", true, "") else { return };
    // Triton's libcuda_dirs(): TRITON_LIBCUDA_PATH first (then `ldconfig -p`,
    // whose cache in an image does not list the mounted driver); it asserts
    // libcuda.so.1 is there, and links its launcher with `-L DIR -lcuda`.
    let script = r#"d="$TRITON_LIBCUDA_PATH"; [ -n "$d" ] || { echo no-env; exit 1; }
        [ -e "$d/libcuda.so.1" ] || { echo "libcuda.so cannot found!"; exit 1; }
        md5sum "$d/libcuda.so" "$d/libcuda.so.1""#;
    let o = w.run("triton", &["--rm", "--read-only", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", script], false);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let host = driver_fixture().root.join("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03");
    let want = stdout(&Command::new("md5sum").arg(&host).output().unwrap()).split_whitespace().next().unwrap().to_string();
    let out = stdout(&o);
    assert!(out.contains(&format!("{want}  /usr/lib/x86_64-linux-gnu/libcuda.so\n")), "libcuda.so is the driver's libcuda:\n{out}");
    // What `-lcuda` gets from that folder is a library the linker accepts.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&host, dir.path().join("libcuda.so")).unwrap();
    let src = dir.path().join("launcher.c");
    std::fs::write(&src, "extern int cuInit(unsigned int);\nint launch(void) { return cuInit(0); }\n").unwrap();
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.path().join("launcher.so"))
        .arg(&src)
        .arg(format!("-L{}", dir.path().display()))
        .arg("-lcuda")
        .output()
        .expect("cc is installed");
    assert!(cc.status.success(), "cc -lcuda: {}", stderr(&cc));
}

#[test]
fn a_profile_container_reaches_the_daemon_and_shares_its_shm() {
    let Some(mut w) = World::new("a_profile_container_reaches_the_daemon_and_shares_its_shm", true, "") else { return };
    let script = "ls -l $CUDA_MPS_PIPE_DIRECTORY/control; echo threads=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE pinned=$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT; touch /dev/shm/gw-probe && echo shm-ok";
    let o = w.run("client", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", script], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("srw-rw-rw-"), "the daemon's control socket is in the container: {out}");
    assert!(out.contains("threads=25 pinned=0=3G") && out.contains("shm-ok"), "{out}");
    // The file the container made is in the daemon's /dev/shm, not the host's.
    let daemon = w.mps(&["status"], &[]);
    let pid = daemon.split("pid ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    assert!(Path::new(&format!("/proc/{pid}/root/dev/shm/gw-probe")).exists(), "not in the daemon's /dev/shm:\n{daemon}");
    assert!(w.mps_dir().join("shm/gw-probe").exists());
    assert!(!Path::new("/dev/shm/gw-probe").exists(), "the host's /dev/shm is not shared");
    assert!(daemon.contains("defaults: 50% of the SMs; pinned memory device 0 5G"), "{daemon}");
}

#[test]
fn with_the_daemon_stopped_a_profile_container_is_refused_with_what_to_run() {
    let Some(mut w) = World::new("with_the_daemon_stopped_a_profile_container_is_refused_with_what_to_run", true, "") else { return };
    assert!(w.mps(&["stop"], &[]).starts_with("stopped the MPS control daemon (pid "));
    let line = refusal(&w.start("nodaemon", &["--device", "nvidia.com/gpu=comfyui"]));
    let id = w.id("nodaemon");
    let control = w.mps_dir().join("pipe/control");
    assert_eq!(
        line,
        format!(
            "gpuwarden: refused {} (comfyui): MPS would not hold: the MPS control daemon is not running: nothing listens on {} (ECONNREFUSED: Connection refused); run `gpuwarden mps start`",
            &id[..12],
            control.display()
        )
    );
    assert!(w.held_ids().is_empty());
    // Started again, the same container is admitted.
    w.remove("nodaemon");
    w.mps(&["start"], &[]);
    let o = w.start("nodaemon", &["--device", "nvidia.com/gpu=comfyui"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_container_of_another_uid_is_refused_while_a_root_server_is_active() {
    let Some(mut w) = World::new("a_container_of_another_uid_is_refused_while_a_root_server_is_active", true, "") else { return };
    // NVIDIA's real daemon starts a stand-in server of root's (no GPU here).
    let server_pid = stand_in_server(w.mps_config().to_str().unwrap(), &w.mps_dir(), w.dir.path(), 0);
    let line = refusal(&w.start("user1000", &["--device", "nvidia.com/gpu=comfyui", "--user", "1000"]));
    assert!(line.contains("MPS would not hold: an MPS server for uid 0 is active (pid "), "{line}");
    assert!(line.contains("run the container as uid 0 (--user 0)"), "{line}");
    let o = w.start("root", &["--device", "nvidia.com/gpu=comfyui"]);
    assert!(o.status.success(), "a client of the server's uid is admitted: {}", stderr(&o));
    // The stand-in server goes with the daemon.
    w.mps(&["stop"], &[]);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server_pid), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn a_game_on_the_gpu_beyond_the_reserves_refuses_a_render_that_fits_by_the_ledger() {
    let Some(mut w) = World::new("a_game_on_the_gpu_beyond_the_reserves_refuses_a_render_that_fits_by_the_ledger", true, "") else { return };
    // The inventory file stands in for NVML: the GPU, and what runs on it now.
    let mut inv: serde_json::Value = serde_json::from_slice(&gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"").stdout).unwrap();
    let inv_path = w.dir.path().join("live.json");
    let write_config = |w: &World, inv: &serde_json::Value| {
        std::fs::write(&inv_path, inv.to_string()).unwrap();
        let m = w.mps_dir();
        let text = format!(
            "inventory = \"{}\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n[budget.reserves]\nsystem = \"512MiB\"\n",
            inv_path.display(),
            w.state_dir().display(),
            m = m.display()
        );
        std::fs::write(&w.config, text).unwrap();
    };
    write_config(&w, &inv);
    let o = w.start("comfy", &["--device", "nvidia.com/gpu=comfyui"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let comfy = w.id("comfy");
    // 11.5 GiB to share, 3 held: a 5 GiB render fits by the ledger. A game takes 6 GiB, 5.5 beyond the reserves.
    inv["gpus"][0]["processes"] = serde_json::json!([{"pid": 4242, "name": "steam_game", "used_memory_bytes": 6u64 << 30}]);
    write_config(&w, &inv);
    let line = refusal(&w.start("render", &["--device", "nvidia.com/gpu=blender", "--annotation", "gpuwarden.io/name=render"]));
    let render = w.id("render");
    assert_eq!(
        line,
        format!(
            "gpuwarden: refused {} render (blender) on GPU 0 (RTX 4070): needs 5.0 GiB pinned memory, 3.0 GiB left of 11.5 GiB \
             (held by {} (comfyui) 3.0 GiB; in use outside gpuwarden: 4242 steam_game 6.0 GiB, 5.5 GiB beyond the reserves; reserved: system 0.5 GiB)",
            &render[..12],
            &comfy[..12]
        )
    );
    let s = w.status();
    assert_eq!(s["gpus"][0]["live"]["outside"][0]["name"], "steam_game");
    assert_eq!(s["gpus"][0]["pinned_memory"]["left_bytes"], 3u64 << 30);
}

#[test]
fn the_launcher_confines_the_workload_and_becomes_it() {
    let Some(mut w) = World::new("the_launcher_confines_the_workload_and_becomes_it", true, "") else { return };
    // Blender's profile writes /render and /tmp; /scratch is writable by mount, not by its rules.
    let script = "echo frame > /render/frame_0001 && echo render-ok; echo x > /scratch/f || echo scratch-denied; \
                  grep -E 'NoNewPrivs|CapEff|CapBnd' /proc/self/status; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 7";
    let o = w.run("confined", &["--rm", "--device", "nvidia.com/gpu=blender", "--tmpfs", "/render", "--tmpfs", "/scratch"], &["sh", "-c", script], false);
    assert_eq!(o.status.code(), Some(7), "the workload's exit status is the container's: {}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("render-ok") && out.contains("scratch-denied"), "{out}");
    assert!(err.contains("/scratch/f: Permission denied"), "EACCES from Landlock: {err}");
    for want in ["NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"] {
        assert!(out.contains(want), "{want} missing: {out}");
    }
    assert!(out.contains("\nsh -c "), "pid 1 is the workload, not the launcher: {out}");
    assert!(err.contains("gpuwarden-launch: Landlock ABI ") && err.contains("rules fully enforced"), "{err}");
    // SIGTERM reaches the workload, and its exit status comes back.
    let o = w.run("trap", &["-d", "--device", "nvidia.com/gpu=comfyui", "--annotation", "gpuwarden.io/threads=5"], &["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let trap = format!("{}trap", w.prefix);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(podman(&["stop", "-t", "10", &trap]).status.success());
    assert_eq!(stdout(&podman(&["inspect", "--format", "{{.State.ExitCode}}", &trap])).trim(), "42", "the workload's trap ran");
}

/// A busybox image with `/bin/euid`, a static program that prints its
/// effective uid, installed setuid root.
fn ensure_setuid_image() -> &'static str {
    const SUID_IMAGE: &str = "localhost/gpuwarden-test-setuid:latest";
    busybox_image(SUID_IMAGE, |rootfs| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("euid.c");
        std::fs::write(&src, "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n").unwrap();
        let o = Command::new("cc").args(["-static", "-O2", "-o"]).arg(rootfs.join("bin/euid")).arg(&src).output().expect("cc is installed");
        assert!(o.status.success(), "cc -static: {}", stderr(&o));
        std::fs::set_permissions(rootfs.join("bin/euid"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    });
    SUID_IMAGE
}

#[test]
fn a_setuid_binary_gains_nothing_under_the_launcher() {
    let Some(mut w) = World::new("a_setuid_binary_gains_nothing_under_the_launcher", true, "") else { return };
    let image = ensure_setuid_image();
    let name = format!("{}suid-plain", w.prefix);
    w.started.push(name.clone());
    // Without a profile the setuid bit works in this image (so the check below can fail).
    let o = podman(&["--runtime", "runc", "run", "--rm", "--name", &name, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--user", "1000", image, "/bin/euid"]);
    assert_eq!(stdout(&o).trim(), "euid=0", "{}", stderr(&o));
    let name = format!("{}suid-profile", w.prefix);
    w.started.push(name.clone());
    let hooks = w.hooks_dir.display().to_string();
    let args = ["--runtime", "runc", "--hooks-dir", &hooks, "run", "--rm", "--name", &name, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
    let o = podman(&[&args[..], &["--device", "nvidia.com/gpu=blender", "--user", "1000", image, "/bin/euid"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "euid=1000", "no-new-privileges holds: {}", stderr(&o));
}

#[test]
fn real_blender_renders_a_frame_under_its_profile_and_writes_nothing_else() {
    let Some(mut w) = World::new("real_blender_renders_a_frame_under_its_profile_and_writes_nothing_else", true, "") else { return };
    // Debian's blender package in a Debian 12 root made by debootstrap (built once, then reused).
    let st = Command::new(repo().join("scripts/blender-image.sh")).status().expect("scripts/blender-image.sh runs");
    assert!(st.success(), "scripts/blender-image.sh failed");
    let out = w.dir.path().join("render");
    std::fs::create_dir_all(&out).unwrap();
    let volume = format!("{}:/render", out.display());
    let scene = "import bpy; s=bpy.context.scene; s.render.resolution_x=64; s.render.resolution_y=64; s.cycles.samples=4; s.cycles.use_denoising=False";
    let cmd = ["blender", "-b", "--factory-startup", "-E", "CYCLES", "--python-expr", scene, "-o", "/render/frame_####", "-f", "1"];
    let o = w.run_image("blender", "localhost/gpuwarden-blender:bookworm", &["--device", "nvidia.com/gpu=blender", "-v", &volume], &cmd, false);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("gpuwarden-launch: Landlock ABI "), "it ran under the launcher: {}", stderr(&o));
    // Blender's CUDA is an MPS client: given the pipe directory read-write, it removed the
    // daemon's sockets (no GPU here). Mounted read-only, they stay, and the daemon answers.
    for f in ["control", "control_lock", "control_privileged", "log"] {
        assert!(w.mps_dir().join("pipe").join(f).exists(), "the daemon's {f} was removed");
    }
    assert!(w.mps(&["status"], &[]).contains("control daemon pid"), "the daemon still answers");
    let files: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["frame_0001.png"], "the frame, and nothing else, in the output folder");
    assert_eq!(&std::fs::read(out.join("frame_0001.png")).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let name = format!("{}blender", w.prefix);
    w.assert_only_mount_points_changed("blender");
    let inspect = stdout(&podman(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.Env}}", &name]));
    assert!(inspect.starts_with("true ") && inspect.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50"), "{inspect}");
    assert!(w.held_ids().is_empty(), "the render's share was released when it exited");
}

#[test]
fn cuda_reaches_the_driver_the_same_with_and_without_the_launcher() {
    let Some(mut w) = World::new("cuda_reaches_the_driver_the_same_with_and_without_the_launcher", true, "") else { return };
    let st = Command::new(repo().join("scripts/blender-image.sh")).status().expect("scripts/blender-image.sh runs");
    assert!(st.success());
    // A probe that loads the real libcuda and calls cuInit(0), in threads as CUDA programs do:
    // without a GPU it reaches the driver and returns 100 (no device); rules that broke the
    // path before the device (device nodes, /proc, the libraries) would change that.
    let dir = w.dir.path().join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("cuprobe.c");
    std::fs::write(
        &src,
        "#include <dlfcn.h>\n#include <stdio.h>\nint main(void) {\n  void *h = dlopen(\"libcuda.so.1\", RTLD_NOW);\n  if (!h) { printf(\"dlopen: %s\\n\", dlerror()); return 1; }\n  int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, \"cuInit\");\n  printf(\"cuInit=%d\\n\", init(0));\n  return 0;\n}\n",
    )
    .unwrap();
    let o = Command::new("cc").arg("-O2").arg("-o").arg(dir.join("cuprobe")).arg(&src).arg("-ldl").output().expect("cc is installed");
    assert!(o.status.success(), "{}", stderr(&o));
    let volume = format!("{}:/usr/local/bin/cuprobe:ro", dir.join("cuprobe").display());
    let image = "localhost/gpuwarden-blender:bookworm";
    let plain = w.run_image("cuda-plain", image, &["--rm", "--device", "nvidia.com/gpu=0", "-v", &volume], &["/usr/local/bin/cuprobe"], false);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(stdout(&plain).trim(), "cuInit=100", "without MPS, the driver is reached: no device: {}", stderr(&plain));
    // The same MPS client without the launcher: the daemon's env and folders, no rules.
    let pipe = w.mps_dir().join("pipe").display().to_string();
    let (env, pipe_mount, shm_mount) =
        (format!("CUDA_MPS_PIPE_DIRECTORY={pipe}"), format!("{pipe}:{pipe}:ro"), format!("{}:/dev/shm", w.mps_dir().join("shm").display()));
    let mps_plain = w.run_image("cuda-mps", image, &["--rm", "--device", "nvidia.com/gpu=0", "-v", &volume, "-e", &env, "-v", &pipe_mount, "-v", &shm_mount], &["/usr/local/bin/cuprobe"], false);
    let confined = w.run_image("cuda-launcher", image, &["--rm", "--device", "nvidia.com/gpu=blender", "-v", &volume], &["/usr/local/bin/cuprobe"], false);
    assert!(mps_plain.status.success() && confined.status.success(), "{}\n{}", stderr(&mps_plain), stderr(&confined));
    // 805 (CUDA_ERROR_MPS_CONNECTION_FAILED): CUDA reached gpuwarden's daemon, which cannot start a server without a GPU.
    assert_eq!(stdout(&mps_plain).trim(), "cuInit=805", "{}", stderr(&mps_plain));
    assert_eq!(stdout(&confined).trim(), stdout(&mps_plain).trim(), "the launcher's rules change what CUDA sees: {}", stderr(&confined));
    assert!(stderr(&confined).contains("gpuwarden-launch: Landlock ABI "), "{}", stderr(&confined));
}

#[test]
fn with_mps_off_every_container_says_so_where_the_user_sees_it() {
    let Some(mut w) = World::new("with_mps_off_every_container_says_so_where_the_user_sees_it", true, "") else { return };
    let text = std::fs::read_to_string(&w.config).unwrap().replace("[mps]\n", "[mps]\nenabled = false\n");
    std::fs::write(&w.config, text).unwrap();
    let o = w.run("off", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success(), "MPS off is a choice: {}", stderr(&o));
    assert!(
        stderr(&o).contains("gpuwarden-launch: WARNING: MPS is off ([mps] enabled = false in gpuwarden's config.toml): nothing limits this container on the GPU"),
        "podman run shows it: {}",
        stderr(&o)
    );
    let s = stdout(&gpuwarden(&["--config", &w.config, "status"], b""));
    assert!(s.contains("MPS  OFF"), "{s}");
}

/// The driver's libraries, in an image whose glibc searches /lib64 and /usr/lib64.
fn lib64_run(w: &mut World, name: &str, device: &str, script: &str) -> Output {
    common::loaders::loader_images();
    w.run_image(name, common::loaders::LIB64_IMAGE, &["--read-only", "--device", device], &["sh", "-c", script], false)
}

#[test]
fn without_the_precreate_hook_a_lib64_image_cannot_find_the_driver() {
    // The failure issue 15 fixes, reproduced: the spec alone mounts at Debian's folder.
    let Some(mut w) = World::new("without_the_precreate_hook_a_lib64_image_cannot_find_the_driver", false, "") else { return };
    let o = lib64_run(&mut w, "lib64-bare", "nvidia.com/gpu=0", "gpuprobe libcuda.so.1; nvidia-smi 2>&1; true");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("fail libcuda.so.1: libcuda.so.1: cannot open shared object file"), "{out}");
    assert!(out.contains("couldn't find libnvidia-ml.so"), "{out}");
}

#[test]
fn a_lib64_image_finds_the_driver_read_only_and_its_loader_files_are_untouched() {
    let Some(mut w) = World::new("a_lib64_image_finds_the_driver_read_only_and_its_loader_files_are_untouched", true, "") else { return };
    let o = lib64_run(&mut w, "lib64", "nvidia.com/gpu=comfyui", common::loaders::PROBE);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    common::loaders::assert_found_in_lib64(&stdout(&o));
    assert!(stderr(&o).contains("gpuwarden-launch: Landlock ABI "), "it ran under the launcher: {}", stderr(&o));
    // Nothing written into the image: only runc's mount points, and none of the loader's files.
    let diff = w.assert_only_mount_points_changed("lib64");
    assert!(!diff.contains("/etc/ld.so"), "{diff}");
    assert!(diff.contains("A /usr/lib64/libcuda.so.1") && !diff.contains("x86_64-linux-gnu"), "mounted where the loader looks, only there: {diff}");
    // A plain device (no profile, no admission) gets its libraries placed too.
    let o = lib64_run(&mut w, "lib64-plain", "nvidia.com/gpu=0", "gpuprobe libcuda.so.1 libnvidia-ml.so.1");
    assert_eq!(stdout(&o), "ok libcuda.so.1\nok libnvidia-ml.so.1\n", "{}", stderr(&o));
    assert!(w.held_ids().is_empty());
}

#[test]
fn a_profile_container_on_a_musl_image_is_refused_in_one_line() {
    let Some(mut w) = World::new("a_profile_container_on_a_musl_image_is_refused_in_one_line", true, "") else { return };
    common::loaders::loader_images();
    let o = w.run_image("musl", common::loaders::MUSL_IMAGE, &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    let line = refusal(&o);
    assert!(line.contains("the image's dynamic loader is musl's (/lib/ld-musl-x86_64.so.1, as in Alpine): NVIDIA's driver libraries are built for glibc"), "{line}");
    assert!(!stdout(&o).contains("ran"));
    assert!(w.held_ids().is_empty());
}

#[test]
fn in_debians_blender_image_ldd_finds_every_driver_library() {
    let Some(mut w) = World::new("in_debians_blender_image_ldd_finds_every_driver_library", true, "") else { return };
    let st = Command::new(repo().join("scripts/blender-image.sh")).status().expect("scripts/blender-image.sh runs");
    assert!(st.success());
    let script = "cd /usr/lib/x86_64-linux-gnu && for f in libcuda.so.1 libnvidia-ml.so.1 libnvoptix.so.1 libEGL_nvidia.so.0 libGLX_nvidia.so.0 \
                  libnvidia-ptxjitcompiler.so.1 libnvcuvid.so.1 libnvidia-encode.so.1 /usr/bin/nvidia-smi; do echo \"== $f\"; ldd $f; done";
    let o = w.run_image("ldd", "localhost/gpuwarden-blender:bookworm", &["--rm", "--read-only", "--device", "nvidia.com/gpu=blender"], &["sh", "-c", script], false);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("== ").count(), 9, "{out}");
    assert!(!out.contains("not found"), "{out}");
    // At Debian's folder, as before (its loader finds it through /lib, a link to /usr/lib).
    assert!(out.contains("libnvidia-glcore.so.535.261.03 => /lib/x86_64-linux-gnu/libnvidia-glcore.so.535.261.03"), "{out}");
}

/// NVIDIA's toolkit, built from its source, in shared/tools beside this checkout.
fn nvidia_toolkit(test: &str) -> Option<PathBuf> {
    let dir = repo().parent().unwrap().join("shared/tools/nvidia-container-toolkit-1.17.9");
    if !dir.join("nvidia-ctk").is_file() {
        skip(test, &format!("NVIDIA's nvidia-ctk is not in {} (shared/ is laid beside every checkout and CI clone)", dir.display()));
        return None;
    }
    Some(dir)
}

/// NVIDIA's spec as its refresh unit writes it (management mode: no GPU here), removed on drop.
struct NvidiaSpec(&'static str);

impl NvidiaSpec {
    fn write(toolkit: &Path) -> NvidiaSpec {
        let spec = NvidiaSpec("/var/run/cdi/nvidia-test.yaml");
        let f = driver_fixture();
        let o = Command::new(toolkit.join("nvidia-ctk"))
            .args(["cdi", "generate", "--mode", "management", "--driver-root", f.root.to_str().unwrap(), "--dev-root", f.dev.to_str().unwrap()])
            .args(["--nvidia-cdi-hook-path", toolkit.join("nvidia-cdi-hook").to_str().unwrap(), "--output", spec.0])
            .output()
            .unwrap();
        assert!(o.status.success(), "nvidia-ctk cdi generate: {}", stderr(&o));
        spec
    }
}

impl Drop for NvidiaSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn cdi_list() -> String {
    stdout(&gpuwarden(&["cdi", "list", "--cdi-dir", "/var/run/cdi"], b""))
}

#[test]
fn beside_nvidias_real_spec_its_all_and_our_comfyui_both_work_whichever_is_written_last() {
    let test = "beside_nvidias_real_spec_its_all_and_our_comfyui_both_work_whichever_is_written_last";
    let Some(mut w) = World::new(test, true, "") else { return };
    let Some(toolkit) = nvidia_toolkit(test) else { return };
    let both_run = |w: &mut World, tag: &str| {
        for (name, devices) in [("all", vec!["nvidia.com/gpu=all"]), ("comfyui", vec!["nvidia.com/gpu=comfyui"]), ("both", vec!["nvidia.com/gpu=all", "nvidia.com/gpu=comfyui"])] {
            let mut args = vec!["--rm"];
            for d in &devices {
                args.extend(["--device", d]);
            }
            let o = w.run(&format!("{tag}-{name}"), &args, &["sh", "-c", "ls /dev/nvidia0 >/dev/null && echo ran profile=$GPUWARDEN_PROFILE"], false);
            assert!(o.status.success(), "{tag}: podman run --device {devices:?}: {}", stderr(&o));
            let want = if name == "all" { "ran profile=\n" } else { "ran profile=comfyui\n" };
            assert_eq!(stdout(&o), want, "{tag} {devices:?}");
        }
    };

    // NVIDIA's spec first, then gpuwarden's refresh: `all` is left to NVIDIA's spec.
    let nvidia = NvidiaSpec::write(&toolkit);
    let o = generate(&w.config, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim_start().starts_with("nvidia.com/gpu=all ") && l.ends_with(&format!("not written: {}", nvidia.0))), "{}", stdout(&o));
    let list = cdi_list();
    assert!(!list.contains("defined twice"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("nvidia.com/gpu=all ") && l.contains("nvidia-ctk") && l.contains(nvidia.0)), "cdi list names NVIDIA's spec: {list}");
    assert!(list.lines().any(|l| l.starts_with("nvidia.com/gpu=comfyui ") && l.contains("gpuwarden") && l.contains(SPEC)), "and gpuwarden's: {list}");
    both_run(&mut w, "nvidia-first");
    drop(nvidia);

    // The other order, with NVIDIA's toolkit installed: gpuwarden's spec leaves it every plain
    // name from the start, so NVIDIA's refresh afterwards meets no name of gpuwarden's.
    let o = generate(&w.config, Some(&toolkit));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim_start().starts_with("nvidia.com/gpu=all ") && l.contains("not written: NVIDIA's toolkit (")), "{}", stdout(&o));
    let ours: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(SPEC).unwrap()).unwrap();
    let mut names: Vec<&str> = ours["devices"].as_sequence().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["blender", "comfyui"], "profile devices only");
    let nvidia = NvidiaSpec::write(&toolkit);
    assert!(!cdi_list().contains("defined twice"), "{}", cdi_list());
    both_run(&mut w, "gpuwarden-first");
    drop(nvidia);
}

impl World {
    /// The render queue of GPU 0, as `status --json` lists it (in the order it is served).
    fn queue(&self) -> Vec<serde_json::Value> {
        self.status()["gpus"][0]["queue"].as_array().unwrap().clone()
    }

    /// Waits (up to 60 s) until the queue holds `n` containers.
    fn await_queue(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let q = self.queue();
            if q.len() == n {
                return q;
            }
            assert!(std::time::Instant::now() < deadline, "the queue never held {n}: {q:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `podman run -d` of NAME (named so for gpuwarden too) on a thread, waiting `wait` for its share.
    fn start_waiting(&mut self, name: &str, device: &str, wait: &str) -> std::thread::JoinHandle<Output> {
        let full = format!("{}{name}", self.prefix);
        self.started.push(full.clone());
        let (hooks, device, annotations) = (self.hooks_dir.display().to_string(), format!("nvidia.com/gpu={device}"), [format!("gpuwarden.io/name={name}"), format!("gpuwarden.io/wait={wait}")]);
        std::thread::spawn(move || {
            podman(&[
                "--runtime", "runc", "--hooks-dir", &hooks, "run", "-d", "--name", &full, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--device", &device,
                "--annotation", &annotations[0], "--annotation", &annotations[1], IMAGE, "sh", "-c", "sleep 600",
            ])
        })
    }
}

#[test]
fn the_render_queue_admits_by_priority_times_out_visibly_and_survives_its_holders() {
    let Some(mut w) = World::new("the_render_queue_admits_by_priority_times_out_visibly_and_survives_its_holders", true, "") else { return };
    // The budget is full for both profiles: a render holds 5.0 of 7.5 GiB.
    let o = w.start("render1", &["--device", "nvidia.com/gpu=blender", "--annotation", "gpuwarden.io/name=render1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A worker queues first, a render second; the render is served first.
    let comfy = w.start_waiting("comfyq", "comfyui", "20s");
    w.await_queue(1);
    let render = w.start_waiting("renderq", "blender", "2m");
    let q = w.await_queue(2);
    let order: Vec<(&str, &str)> = q.iter().map(|e| (e["name"].as_str().unwrap(), e["profile"].as_str().unwrap())).collect();
    assert_eq!(order, [("renderq", "blender"), ("comfyq", "comfyui")], "{q:?}");
    // At its next look (every 0.2 s) the worker says it waits behind the render.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !w.queue()[1]["waits_for"].as_str().unwrap().contains("renderq (blender) waits ahead of it in the queue") {
        assert!(std::time::Instant::now() < deadline, "the worker never said it waits behind the render: {:?}", w.queue());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = stdout(&gpuwarden(&["--config", &w.config, "status"], b""));
    assert!(text.contains("queue    2 waiting") && text.contains("1. ") && text.contains("renderq  root  blender  waited"), "{text}");

    // The render's share frees: the queued render starts, the worker still waits (2.5 GiB left).
    w.remove("render1");
    let o = render.join().unwrap();
    assert!(o.status.success(), "the queued render starts once the share frees: {}", stderr(&o));
    assert_eq!(w.status()["gpus"][0]["reservations"][0]["name"], "renderq");
    assert_eq!(w.queue().len(), 1);

    // The worker's wait runs out: the line is on its own `podman run`'s stderr.
    let line = refusal(&comfy.join().unwrap());
    assert!(line.starts_with("gpuwarden: refused "), "{line}");
    assert!(line.contains(" comfyq (comfyui) after waiting 2") && line.contains("s (gpuwarden.io/wait=20s) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 2.5 GiB left of 7.5 GiB (held by "), "{line}");
    assert!(line.contains(" renderq (blender) 5.0 GiB; reserved: steam 4.0 GiB, system 0.5 GiB)"), "{line}");
    assert!(w.queue().is_empty(), "a refused container leaves the queue");

    // The queue survives a SIGKILL of the hook holding a place: the next in line keeps its place and starts.
    let first = w.start_waiting("comfyk", "comfyui", "2m");
    w.await_queue(1);
    let second = w.start_waiting("comfyl", "comfyui", "2m");
    let q = w.await_queue(2);
    assert_eq!(q[0]["name"], "comfyk");
    let waiter = q[0]["waiter"].as_i64().unwrap() as i32;
    let comm = std::fs::read_to_string(format!("/proc/{waiter}/comm")).unwrap();
    assert_eq!(comm.trim(), "gpuwarden-hook", "the place is held by comfyk's admission hook");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(waiter), nix::sys::signal::Signal::SIGKILL).unwrap();
    let o = first.join().unwrap();
    assert!(!o.status.success(), "a container whose hook was killed does not start");
    w.remove("renderq");
    let o = second.join().unwrap();
    assert!(o.status.success(), "the next in line starts: {}", stderr(&o));
    let held: Vec<String> = w.status()["gpus"][0]["reservations"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(held, ["comfyl"]);
    assert!(w.queue().is_empty(), "the killed hook's place was reclaimed");

    // Podman holds a container's lock while its hooks run: `podman rm -f` waits for the
    // wait, and `gpuwarden queue cancel` ends it at once.
    w.remove("comfyl");
    let o = w.start("render2", &["--device", "nvidia.com/gpu=blender"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let waiting = w.start_waiting("comfyc", "comfyui", "3m");
    w.await_queue(1);
    let full = format!("{}comfyc", w.prefix);
    let rm = std::thread::spawn(move || podman(&["rm", "-f", "-t", "0", &full]));
    let o = gpuwarden(&["--config", &w.config, "queue", "cancel", "comfyc"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("comfyc (comfyui) leaves the queue at its next look"), "{}", stdout(&o));
    let line = refusal(&waiting.join().unwrap());
    assert!(line.contains(" comfyc (comfyui): taken out of the queue with `gpuwarden queue cancel` after waiting "), "{line}");
    assert!(rm.join().unwrap().status.success(), "podman rm -f completes once the wait is over");
    assert!(w.queue().is_empty());
    let o = podman(&["container", "exists", &format!("{}comfyc", w.prefix)]);
    assert!(!o.status.success(), "the cancelled container is gone");
}
