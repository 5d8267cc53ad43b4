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
use common::docker::*;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

/// Docker 20.10 with the runtime registered with runtimeArgs, or (`plain`) as
/// the README registers it, told the config and spec folder by dockerd's env.
fn docker20(gpu: &Gpu, plain: bool) -> Dockerd {
    assert!(Path::new("/usr/sbin/dockerd").exists(), "Debian's docker.io is installed by scripts/setup.sh");
    let (runtime, env) = if plain { (gpu.runtime_plain(), gpu.dockerd_env()) } else { (gpu.runtime(), Vec::new()) };
    Dockerd::start("d20", Path::new("/usr/sbin/dockerd"), Path::new("/usr/bin/docker"), serde_json::json!({"runtimes": {"gpuwarden": runtime}}), &env, None)
}

/// Debian 13's Docker 26 with CDI on, the runtime registered as the README
/// says and made the default, so it applies the profile to what Docker injects.
fn docker26(root: &Path, gpu: &Gpu) -> Dockerd {
    let daemon = serde_json::json!({
        "features": {"cdi": true},
        "cdi-spec-dirs": [gpu.cdi_dir()],
        "runtimes": {"gpuwarden": gpu.runtime_plain()},
        "default-runtime": "gpuwarden",
        "userland-proxy-path": root.join("usr/sbin/docker-proxy"),
    });
    Dockerd::start("d26", &root.join("usr/sbin/dockerd"), &root.join("usr/bin/docker"), daemon, &gpu.dockerd_env(), Some(&root.join("usr/sbin")))
}

fn compose_v1(d: &Dockerd, file: &str, project: &str, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut c = d.command(Path::new("/usr/bin/docker-compose"));
    c.args(["-p", project, "-f", repo().join(file).to_str().unwrap()]).args(args).envs(env.iter().map(|(k, v)| (*k, v)));
    c.output().unwrap()
}

/// The ComfyUI stacks publish 127.0.0.1:8188-8191: one test at a time runs one.
fn comfyui_ports() -> nix::fcntl::Flock<std::fs::File> {
    process_lock("comfyui-ports")
}

fn comfyui_env(gpu: &Gpu) -> Vec<(&'static str, String)> {
    vec![
        ("COMFYUI_IMAGE", STANDIN.to_string()),
        ("COMFYUI_MODELS", gpu.folder("models")),
        ("COMFYUI_INPUT", gpu.folder("input")),
        ("COMFYUI_OUTPUT", gpu.folder("output")),
        ("COMFYUI_USER", gpu.folder("user")),
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
    let _ports = comfyui_ports();
    let gpu = Gpu::new();
    let d = docker20(&gpu, false);
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
    let o = compose_v1(&d, file, &project, &env, &["run", "--rm", "-T", "comfyui-8188"]);
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
    let d = docker20(&gpu, true);
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
    let _ports = comfyui_ports();
    let gpu = Gpu::new();
    let d = docker26(&root, &gpu);
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

/// The lib64 image in this daemon, from the tar Podman's was imported from.
fn lib64_image(d: &Dockerd) {
    use common::loaders::*;
    let tar = loader_images().join("lib64.tar");
    if !d.docker(&["image", "inspect", LIB64_IMAGE]).status.success() {
        let o = d.docker(&["import", tar.to_str().unwrap(), LIB64_IMAGE]);
        assert!(o.status.success(), "docker import: {}", combined(&o));
    }
}

#[test]
fn docker20_runtime_finds_the_driver_in_a_lib64_image() {
    if !needs_root("docker20_runtime_finds_the_driver_in_a_lib64_image") {
        return;
    }
    let gpu = Gpu::new();
    let d = docker20(&gpu, true);
    lib64_image(&d);
    let image = common::loaders::LIB64_IMAGE;
    let o = d.docker(&["run", "--rm", "--runtime", "gpuwarden", "--read-only", "--network", "none", "-e", "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui", image, "sh", "-c", common::loaders::PROBE]);
    assert!(o.status.success(), "{}\n{}", combined(&o), d.log());
    common::loaders::assert_found_in_lib64(&stdout(&o));
    assert!(gpu.reservations().is_empty(), "released");
}

#[test]
fn docker26_cdi_finds_the_driver_in_a_lib64_image() {
    if !needs_root("docker26_cdi_finds_the_driver_in_a_lib64_image") {
        return;
    }
    let root = trixie();
    let gpu = Gpu::new();
    let d = docker26(&root, &gpu);
    lib64_image(&d);
    let o = d.docker(&["run", "--rm", "--read-only", "--network", "none", "--device", "nvidia.com/gpu=comfyui", common::loaders::LIB64_IMAGE, "sh", "-c", common::loaders::PROBE]);
    assert!(o.status.success(), "{}\n{}", combined(&o), d.log());
    common::loaders::assert_found_in_lib64(&stdout(&o));
}

/// `docker run -d` of the stand-in through the runtime, as `device`'s profile, asking to wait `wait`.
fn run_waiting(d: &Dockerd, name: &str, device: &str, wait: &str) -> Output {
    let (visible, wait) = (format!("NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu={device}"), format!("GPUWARDEN_WAIT={wait}"));
    d.docker(&["run", "-d", "--name", name, "--runtime", "gpuwarden", "--network", "none", "-e", &visible, "-e", &wait, "--entrypoint", "sh", STANDIN, "-c", "sleep 600"])
}

fn queue_of(gpu: &Gpu) -> Vec<serde_json::Value> {
    let o = gpuwarden(&["--config", &gpu.config, "status", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["gpus"][0]["queue"].as_array().cloned().unwrap_or_default()
}

fn await_queue(gpu: &Gpu, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let q = queue_of(gpu);
        if q.len() == n {
            return q;
        }
        assert!(std::time::Instant::now() < deadline, "the queue never held {n}: {q:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn docker20_runtime_queues_by_priority_times_out_visibly_and_survives_its_holders() {
    let test = "docker20_runtime_queues_by_priority_times_out_visibly_and_survives_its_holders";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let d = std::sync::Arc::new(docker20(&gpu, false));
    comfyui_standin(&d);
    let spawn = |name: &'static str, device: &'static str, wait: &'static str| {
        let d = std::sync::Arc::clone(&d);
        std::thread::spawn(move || run_waiting(&d, name, device, wait))
    };
    // Two renders hold 10 of the 12 GiB (names left by a run that failed go first).
    for n in ["gwq-render1", "gwq-render2", "gwq-render3", "gwq-comfyq", "gwq-renderq", "gwq-comfyk", "gwq-comfyl", "gwq-comfyc"] {
        let _ = d.docker(&["rm", "-f", n]);
    }
    for n in ["gwq-render1", "gwq-render2"] {
        let o = run_waiting(&d, n, "blender", "0");
        assert!(o.status.success(), "{n}: {}", combined(&o));
    }
    let comfy = spawn("gwq-comfyq", "comfyui", "15s");
    while queue_of(&gpu).is_empty() {
        assert!(!comfy.is_finished(), "the worker did not queue: {}", combined(&comfy.join().unwrap()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let render = spawn("gwq-renderq", "blender", "2m");
    let q = await_queue(&gpu, 2);
    assert_eq!(q.iter().map(|e| e["profile"].as_str().unwrap()).collect::<Vec<_>>(), ["blender", "comfyui"], "the render queued second is served first: {q:?}");

    // One render stops: the queued render starts; the worker (3 GiB, 2 left) waits on, then is refused.
    assert!(d.docker(&["rm", "-f", "gwq-render1"]).status.success());
    let o = render.join().unwrap();
    assert!(o.status.success(), "{}", combined(&o));
    let line = gpuwarden_line(&comfy.join().unwrap());
    assert!(line.starts_with("gpuwarden: refused ") && line.contains(" (comfyui) after waiting 1"), "{line}");
    assert!(line.contains("s (gpuwarden.io/wait=15s) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 2.0 GiB left of 12.0 GiB (held by "), "{line}");
    assert!(queue_of(&gpu).is_empty());

    // A SIGKILL of the hook holding the first place: the next in line keeps its place and starts.
    let first = spawn("gwq-comfyk", "comfyui", "2m");
    await_queue(&gpu, 1);
    let second = spawn("gwq-comfyl", "comfyui", "2m");
    let q = await_queue(&gpu, 2);
    let waiter = q[0]["waiter"].as_i64().unwrap() as i32;
    assert_eq!(std::fs::read_to_string(format!("/proc/{waiter}/comm")).unwrap().trim(), "gpuwarden-hook");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(waiter), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(!first.join().unwrap().status.success(), "a container whose hook was killed does not start");
    assert!(d.docker(&["rm", "-f", "gwq-renderq"]).status.success());
    let o = second.join().unwrap();
    assert!(o.status.success(), "the next in line starts: {}", combined(&o));
    assert!(queue_of(&gpu).is_empty(), "the killed hook's place was reclaimed");

    // dockerd holds a container's lock while it starts: `docker rm -f` waits for the
    // wait (seen: 179.7 s for a 3m wait), and `gpuwarden queue cancel` ends it at once.
    assert!(d.docker(&["rm", "-f", "gwq-comfyl"]).status.success());
    let o = run_waiting(&d, "gwq-render3", "blender", "0");
    assert!(o.status.success(), "{}", combined(&o));
    let waiting = spawn("gwq-comfyc", "comfyui", "3m");
    let q = await_queue(&gpu, 1);
    let id = q[0]["id"].as_str().unwrap().to_string();
    let rm = {
        let d = std::sync::Arc::clone(&d);
        std::thread::spawn(move || d.docker(&["rm", "-f", "gwq-comfyc"]))
    };
    let o = gpuwarden(&["--config", &gpu.config, "queue", "cancel", &id[..12]], b"");
    assert!(o.status.success(), "{}", combined(&o));
    let line = gpuwarden_line(&waiting.join().unwrap());
    assert!(line.contains(" (comfyui): taken out of the queue with `gpuwarden queue cancel` after waiting "), "{line}");
    assert!(rm.join().unwrap().status.success(), "docker rm -f completes once the wait is over");
    assert!(queue_of(&gpu).is_empty());
    assert!(!d.docker(&["container", "inspect", "gwq-comfyc"]).status.success(), "the removed container is gone");
    for n in ["gwq-render2", "gwq-render3", "gwq-comfyl", "gwq-comfyk", "gwq-comfyq", "gwq-comfyc"] {
        let _ = d.docker(&["rm", "-f", n]);
    }
    assert!(gpu.reservations().is_empty(), "{:?}", gpu.reservations());
}
