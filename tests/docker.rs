//! Docker end to end, with real daemons: Debian 12's Docker 20.10 with the
//! gpuwarden runtime registered (the runtime-form stacks, docker-compose
//! 1.29), and Debian 13's Docker 26.1.5 with CDI (the CDI-form stacks,
//! Compose v2). The GPU is the only stand-in: the driver's real userspace,
//! fake device nodes, and NVIDIA's real MPS control daemon.
//!
//! Each test runs its own dockerd on its own socket, data root and exec root,
//! and removes every container, network and daemon it started, also when it
//! fails (`Dockerd`'s and `Gpu`'s Drop).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STANDIN: &str = "localhost/gpuwarden-comfyui-standin:test";
const BLENDER: &str = "localhost/gpuwarden-blender:bookworm";

/// Debian 13's Docker 26, Compose v2 and quadlet, unpacked by scripts/docker26.sh.
fn trixie() -> PathBuf {
    let out = repo().join("target/fixtures/trixie");
    let _lock = process_lock("trixie");
    let st = Command::new(repo().join("scripts/docker26.sh")).arg(&out).status().unwrap();
    assert!(st.success(), "scripts/docker26.sh failed (it needs Debian's archive)");
    out.join("root")
}

/// A dockerd of its own, stopped on drop with everything it ran.
struct Dockerd {
    name: String,
    child: Child,
    exec_root: PathBuf,
    cli: PathBuf,
    /// DOCKER_CONFIG for the CLI (Compose v2 as a plugin there).
    cli_config: tempfile::TempDir,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Dockerd {
    fn start(name: &str, dockerd: &Path, cli: &Path, daemon_json: serde_json::Value, path_first: Option<&Path>) -> Dockerd {
        let lock = process_lock(&format!("dockerd-{name}"));
        let exec_root = PathBuf::from(format!("/run/gwtest-{name}"));
        let data_root = repo().join(format!("target/fixtures/docker-data-{name}"));
        std::fs::create_dir_all(&exec_root).unwrap();
        std::fs::create_dir_all(&data_root).unwrap();
        let cli_config = tempfile::tempdir().unwrap();
        // A namespace of its own in containerd, in case the daemon finds the system's.
        let mut daemon_json = daemon_json;
        daemon_json["containerd-namespace"] = format!("gwtest-{name}").into();
        daemon_json["containerd-plugins-namespace"] = format!("gwtest-{name}-plugins").into();
        let config_file = cli_config.path().join("daemon.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&daemon_json).unwrap()).unwrap();
        let log = std::fs::File::create(cli_config.path().join("dockerd.log")).unwrap();
        let mut cmd = Command::new(dockerd);
        cmd.args(["--config-file", config_file.to_str().unwrap(), "--data-root", data_root.to_str().unwrap()])
            .args(["--exec-root", exec_root.to_str().unwrap(), "--pidfile", exec_root.join("dockerd.pid").to_str().unwrap()])
            .args(["-H", &format!("unix://{}/docker.sock", exec_root.display()), "--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(first) = path_first {
            cmd.env("PATH", format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default()));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{} runs: {e}", dockerd.display()));
        let d = Dockerd { name: name.into(), child, exec_root, cli: cli.to_path_buf(), cli_config, _lock: lock };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd {name} did not answer in 60 s: {}", d.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.exec_root.display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cli_config.path().join("dockerd.log")).unwrap_or_default()
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("DOCKER_HOST", self.host()).env("DOCKER_CONFIG", self.cli_config.path()).env_remove("GPUWARDEN_CONFIG");
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command(&self.cli).args(args).output().unwrap()
    }

    /// Imports a busybox root as `image` unless the daemon has it; `extra`
    /// adds to the root, `changes` are `docker import --change` lines.
    fn busybox_image(&self, image: &str, extra: impl FnOnce(&Path), changes: &[&str]) {
        if self.docker(&["image", "inspect", image]).status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed (scripts/setup.sh)");
        for applet in ["sh", "sleep", "httpd", "env", "cat", "touch", "id", "grep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        extra(&root);
        let tar = dir.path().join("root.tar");
        assert!(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
        let mut args = vec!["import".to_string()];
        for c in changes {
            args.extend(["--change".to_string(), c.to_string()]);
        }
        args.extend([tar.display().to_string(), image.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.docker(&args);
        assert!(o.status.success(), "docker import: {}", stderr(&o));
    }

    /// The bundle's config.json runc got for a running container: under the
    /// daemon's own containerd, or the system's where one runs (dockerd uses it then).
    fn bundle_config(&self, id: &str) -> serde_json::Value {
        let tasks = [self.exec_root.join("containerd/daemon/io.containerd.runtime.v2.task"), PathBuf::from("/run/containerd/io.containerd.runtime.v2.task")];
        let path = tasks.iter().map(|t| t.join(format!("gwtest-{}", self.name)).join(id).join("config.json")).find(|p| p.exists());
        let path = path.unwrap_or_else(|| panic!("no bundle for {id} under {tasks:?}"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.docker(&["network", "prune", "-f"]);
        let _ = self.docker(&["volume", "prune", "-f"]);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.exec_root);
        eprintln!("dockerd {} stopped", self.name);
    }
}

/// gpuwarden set up as for Docker: a config with no reserves (so the four
/// ComfyUI workers fill the RTX 4070: 4 x 25%, 4 x 3 GiB), a CDI spec in a
/// folder of its own, and the real MPS daemon.
struct Gpu {
    dir: tempfile::TempDir,
    config: String,
}

impl Gpu {
    fn new() -> Gpu {
        let fixture = driver_fixture();
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("mps");
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n[budget.reserves]\n",
                dir.path().join("state").display(),
                m = m.display()
            ),
        );
        let cdi = dir.path().join("cdi");
        std::fs::create_dir_all(&cdi).unwrap();
        let o = gpuwarden(
            &[
                "--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(),
                "--output", cdi.join("gpuwarden.yaml").to_str().unwrap(), "--launcher-path", dist("gpuwarden-launch").to_str().unwrap(),
            ],
            b"",
        );
        assert!(o.status.success(), "cdi generate: {}", stderr(&o));
        let o = gpuwarden(&["--config", &config, "mps", "start"], b"");
        assert!(o.status.success(), "mps start: {}", stderr(&o));
        Gpu { dir, config }
    }

    fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }

    /// The runtime entry for daemon.json, with the options this world needs.
    fn runtime(&self) -> serde_json::Value {
        serde_json::json!({
            "path": dist("gpuwarden-runtime"),
            "runtimeArgs": ["--gpuwarden-config", self.config, "--gpuwarden-cdi-dir", self.cdi_dir(), "--gpuwarden-launcher", dist("gpuwarden-launch")]
        })
    }

    fn reservations(&self) -> Vec<serde_json::Value> {
        let o = gpuwarden(&["--config", &self.config, "status", "--json"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["gpus"][0]["reservations"].as_array().cloned().unwrap_or_default()
    }

    /// A folder for a stack's volumes.
    fn folder(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p.display().to_string()
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = gpuwarden(&["--config", &self.config, "mps", "stop"], b"");
    }
}

/// The ComfyUI stand-in: busybox with ComfyUI's layout and entrypoint,
/// serving its output folder on 8188 as ComfyUI serves its UI.
fn comfyui_standin(d: &Dockerd) {
    d.busybox_image(
        STANDIN,
        |root| {
            for sub in ["models", "output", "input", "user", "temp"] {
                std::fs::create_dir_all(root.join("opt/ComfyUI").join(sub)).unwrap();
            }
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
            let start = root.join("usr/local/bin/comfyui-start");
            std::fs::write(&start, "#!/bin/sh\necho \"comfyui stand-in on 8188\"\nexec httpd -f -p 8188 -h /opt/ComfyUI/output\n").unwrap();
            std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        },
        &["ENTRYPOINT [\"/usr/local/bin/comfyui-start\"]"],
    );
}

fn combined(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// gpuwarden's line in an engine's output, from `gpuwarden: ` to the end of
/// the reason (Docker appends `: unknown`).
fn gpuwarden_line(o: &Output) -> String {
    let all = combined(o);
    let line = all.lines().find(|l| l.contains("gpuwarden: ")).unwrap_or_else(|| panic!("no gpuwarden line in: {all}"));
    line[line.find("gpuwarden: ").unwrap()..].trim_end_matches(": unknown").trim_end_matches(": unknown.").to_string()
}

fn needs_root(test: &str) -> bool {
    if !is_root() {
        skip(test, "dockerd, CDI folders and mknod need root");
        return false;
    }
    true
}

fn docker20(gpu: &Gpu) -> Dockerd {
    assert!(Path::new("/usr/sbin/dockerd").exists(), "Debian's docker.io is installed by scripts/setup.sh");
    Dockerd::start("d20", Path::new("/usr/sbin/dockerd"), Path::new("/usr/bin/docker"), serde_json::json!({"runtimes": {"gpuwarden": gpu.runtime()}}), None)
}

fn compose_v1(d: &Dockerd, file: &str, project: &str, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut c = d.command(Path::new("/usr/bin/docker-compose"));
    c.args(["-p", project, "-f", repo().join(file).to_str().unwrap()]).args(args).envs(env.iter().map(|(k, v)| (*k, v)));
    c.output().unwrap()
}

fn comfyui_env(gpu: &Gpu) -> Vec<(&'static str, String)> {
    vec![
        ("COMFYUI_IMAGE", STANDIN.to_string()),
        ("COMFYUI_MODELS", gpu.folder("models")),
        ("COMFYUI_INPUT", gpu.folder("input")),
        ("COMFYUI_OUTPUT", gpu.folder("output")),
    ]
}

fn running(d: &Dockerd, project: &str) -> Vec<String> {
    let o = d.docker(&["ps", "-q", "--no-trunc", "--filter", &format!("label=com.docker.compose.project={project}")]);
    stdout(&o).split_whitespace().map(str::to_owned).collect()
}

#[test]
fn docker20_runtime_stack_runs_four_workers_and_refuses_a_fifth() {
    let test = "docker20_runtime_stack_runs_four_workers_and_refuses_a_fifth";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let d = docker20(&gpu);
    comfyui_standin(&d);
    let project = format!("gwtest{}", std::process::id());
    let env = comfyui_env(&gpu);
    let file = "docker/comfyui/compose.runtime.yaml";

    let o = compose_v1(&d, file, &project, &env, &["up", "-d"]);
    assert!(o.status.success(), "docker-compose up: {}\n{}", combined(&o), d.log());
    let ids = running(&d, &project);
    assert_eq!(ids.len(), 4, "four workers run");
    let held = gpu.reservations();
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held.iter().all(|r| r["profile"] == "comfyui"));

    for id in &ids {
        // What runc got: the profile applied by the shim, the launcher in front.
        let cfg = d.bundle_config(id);
        assert_eq!(cfg["root"]["readonly"], true);
        assert_eq!(cfg["process"]["noNewPrivileges"], true);
        assert_eq!(cfg["process"]["args"][0], "/usr/libexec/gpuwarden/gpuwarden-launch", "{}", cfg["process"]["args"]);
        assert!(cfg["process"]["env"].as_array().unwrap().contains(&serde_json::json!("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25")));
        // What the container is: no capabilities, no new privileges, read-only root, under Landlock.
        let pid = stdout(&d.docker(&["inspect", "--format", "{{.State.Pid}}", id])).trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("CapEff:\t0000000000000000") && status.contains("NoNewPrivs:\t1"), "{status}");
        let o = d.docker(&["exec", id, "touch", "/x"]);
        assert!(combined(&o).contains("Read-only file system"), "{}", combined(&o));
        let logs = combined(&d.docker(&["logs", id]));
        assert!(logs.contains("gpuwarden-launch: Landlock ABI") && logs.contains("comfyui stand-in on 8188"), "{logs}");
    }

    // The fifth worker, as a user would start it: refused with the budget's numbers.
    let o = compose_v1(&d, file, &project, &env, &["run", "--rm", "-T", "worker-1"]);
    assert!(!o.status.success());
    let line = gpuwarden_line(&o);
    assert!(line.starts_with("gpuwarden: refused "), "{line}");
    assert!(line.contains(" (comfyui) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 0 B left of 12.0 GiB (held by "), "{line}");
    assert_eq!(gpu.reservations().len(), 4, "the refusal holds nothing");

    // An unknown device is named, with the ones the specs define.
    let o = d.docker(&["run", "--rm", "--runtime", "gpuwarden", "--network", "none", "-e", "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=sdxl", STANDIN]);
    let line = gpuwarden_line(&o);
    assert!(line.starts_with("gpuwarden: unresolvable CDI devices nvidia.com/gpu=sdxl: the specs in ") && line.contains("nvidia.com/gpu=comfyui"), "{line}");

    // No GPU request: the shim passes the container through untouched.
    let o = d.docker(&["run", "--rm", "--runtime", "gpuwarden", "--network", "none", "--entrypoint", "sh", STANDIN, "-c", "touch /x && env && grep CapEff /proc/self/status"]);
    assert!(o.status.success(), "{}", combined(&o));
    let out = stdout(&o);
    assert!(!out.contains("CUDA_MPS") && !out.contains("GPUWARDEN") && !out.contains("CapEff:\t0000000000000000"), "{out}");

    let o = compose_v1(&d, file, &project, &env, &["down"]);
    assert!(o.status.success(), "{}", combined(&o));
    assert!(gpu.reservations().is_empty(), "down gives every share back");
}

/// The Blender image: podman/blender/Containerfile built on a Debian 12 root
/// (scripts/blender-image.sh), copied into this daemon once.
fn blender_image(d: &Dockerd) {
    if d.docker(&["image", "inspect", BLENDER, "--format", "{{index .Config.Cmd 0}}"]).status.success()
        && stdout(&d.docker(&["image", "inspect", BLENDER, "--format", "{{.Id}}"])).trim() == podman_image_id(BLENDER)
    {
        return;
    }
    let st = Command::new(repo().join("scripts/blender-image.sh")).status().expect("scripts/blender-image.sh runs");
    assert!(st.success(), "scripts/blender-image.sh failed");
    let mut save = Command::new("podman").args(["save", "--format", "docker-archive", BLENDER]).stdout(Stdio::piped()).spawn().unwrap();
    let load = d.command(&d.cli).args(["load", "-q"]).stdin(save.stdout.take().unwrap()).output().unwrap();
    assert!(save.wait().unwrap().success() && load.status.success(), "podman save | docker load: {}", stderr(&load));
}

fn podman_image_id(image: &str) -> String {
    let o = Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", image]).output().unwrap();
    format!("sha256:{}", stdout(&o).trim())
}

#[test]
fn docker20_blender_stack_renders_a_frame_holding_its_budget() {
    let test = "docker20_blender_stack_renders_a_frame_holding_its_budget";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let d = docker20(&gpu);
    blender_image(&d);
    let out = gpu.folder("render");
    let env = [
        ("BLENDER_IMAGE", BLENDER.to_string()),
        ("BLENDER_PROJECTS", gpu.folder("projects")),
        ("BLENDER_OUTPUT", out.clone()),
        ("RESOLUTION", "64x64".to_string()),
        ("SAMPLES", "4".to_string()),
    ];
    let project = format!("gwtest{}b", std::process::id());
    // Watch the ledger while Blender renders.
    let config = gpu.config.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = gpuwarden(&["--config", &config, "status", "--json"], b"");
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                for r in v["gpus"][0]["reservations"].as_array().into_iter().flatten() {
                    seen.push((r["profile"].as_str().unwrap_or("").to_string(), r["threads"].clone(), r["pinned_memory"].clone()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let o = compose_v1(&d, "docker/blender/compose.runtime.yaml", &project, &env, &["up", "--exit-code-from", "render"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    let _ = compose_v1(&d, "docker/blender/compose.runtime.yaml", &project, &env, &["down"]);
    assert!(o.status.success(), "the render: {}", combined(&o));
    assert!(combined(&o).contains("Saved: '/render/frame_0001.png'"), "{}", combined(&o));
    let png = std::fs::read(Path::new(&out).join("frame_0001.png")).expect("the frame is in the output volume");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(seen.iter().any(|(p, _, _)| p == "blender"), "the budget was held while it rendered: {seen:?}");
    assert!(gpu.reservations().is_empty(), "and given back when it ended");
}

#[test]
fn docker26_cdi_device_and_compose_v2_stack_are_admitted_then_refused() {
    let test = "docker26_cdi_device_and_compose_v2_stack_are_admitted_then_refused";
    if !needs_root(test) {
        return;
    }
    let root = trixie();
    let gpu = Gpu::new();
    let daemon = serde_json::json!({
        "features": {"cdi": true},
        "cdi-spec-dirs": [gpu.cdi_dir()],
        "runtimes": {"gpuwarden": gpu.runtime()},
        "default-runtime": "gpuwarden",
        "userland-proxy-path": root.join("usr/sbin/docker-proxy"),
    });
    let d = Dockerd::start("d26", &root.join("usr/sbin/dockerd"), &root.join("usr/bin/docker"), daemon, Some(&root.join("usr/sbin")));
    let plugins = d.cli_config.path().join("cli-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(root.join("usr/libexec/docker/cli-plugins/docker-compose"), plugins.join("docker-compose")).unwrap();
    comfyui_standin(&d);

    // One container through Docker's own CDI: the profile applied by the shim.
    let o = d.docker(&["run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=comfyui", "--entrypoint", "sh", STANDIN, "-c", "env; grep -E 'CapEff|NoNewPrivs' /proc/self/status; touch /x"]);
    let out = combined(&o);
    assert!(out.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25") && out.contains("CapEff:\t0000000000000000") && out.contains("Read-only file system"), "{out}\n{}", d.log());

    // The CDI-form stack fills the GPU.
    let project = format!("gwtest{}c", std::process::id());
    let env = comfyui_env(&gpu);
    let compose = |args: &[&str]| {
        let mut c = d.command(&d.cli);
        c.args(["compose", "-p", &project, "-f", repo().join("docker/comfyui/compose.yaml").to_str().unwrap()]).args(args).envs(env.iter().map(|(k, v)| (*k, v)));
        c.output().unwrap()
    };
    let o = compose(&["up", "-d"]);
    assert!(o.status.success(), "docker compose up: {}\n{}", combined(&o), d.log());
    assert_eq!(running(&d, &project).len(), 4);
    assert_eq!(gpu.reservations().len(), 4);

    // The budget is spent: `docker run --device` is refused with the numbers.
    let o = d.docker(&["run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=comfyui", STANDIN]);
    assert!(!o.status.success());
    let line = gpuwarden_line(&o);
    assert!(line.starts_with("gpuwarden: refused ") && line.contains("(comfyui) on GPU 0 (RTX 4070): needs"), "{line}");
    assert!(line.contains("held by "), "{line}");

    let o = compose(&["down"]);
    assert!(o.status.success(), "{}", combined(&o));
    assert!(gpu.reservations().is_empty());
}
