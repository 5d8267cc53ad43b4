//! `gpuwarden watch` against real Podman containers and NVIDIA's real MPS
//! daemon. The GPU is the only stand-in: what runs on it comes from an
//! inventory file with `processes` (real pids, the memory they "use"), read
//! through the same seam as NVML.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Command, Output};

const IMAGE: &str = "localhost/gpuwarden-test-busybox:latest";
const SPEC: &str = "/var/run/cdi/gpuwarden-test.yaml";

struct World {
    dir: tempfile::TempDir,
    config: String,
    hooks: PathBuf,
    names: Vec<String>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap()
}

impl World {
    fn new(test: &str) -> Option<World> {
        if !is_root() {
            skip(test, "rootful Podman, /var/run/cdi and mknod need root");
            return None;
        }
        let lock = process_lock("podman-cdi");
        busybox_image(IMAGE, |_| {});
        let fixture = driver_fixture();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n\
                 [budget.reserves]\n[watch]\ninterval_seconds = 1\nstate_file = \"{d}/watch.json\"\nevents_file = \"{d}/events.jsonl\"\nover_share = {{ comfyui = \"pause\", blender = \"kill\" }}\n"
            ),
        );
        let _ = std::fs::remove_file(SPEC);
        let o = gpuwarden(
            &["--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", SPEC, "--launcher-path", dist("gpuwarden-launch").to_str().unwrap()],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let hooks = dir.path().join("hooks.d");
        let o = gpuwarden(&["--config", &config, "podman", "install-hook", "--hooks-dir", hooks.to_str().unwrap(), "--launcher-path", dist("gpuwarden-launch").to_str().unwrap()], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let w = World { dir, config, hooks, names: Vec::new(), _lock: lock };
        let o = w.gw(&["mps", "start"]);
        assert!(o.status.success(), "{}", stderr(&o));
        Some(w)
    }

    fn gw(&self, args: &[&str]) -> Output {
        gpuwarden(&[&["--config", self.config.as_str()], args].concat(), b"")
    }

    /// A detached sleeping container of `profile`; returns (id, pid of its init).
    fn start(&mut self, name: &str, profile: &str) -> (String, i32) {
        self.start_with(name, &format!("nvidia.com/gpu={profile}"))
    }

    /// A detached sleeping container given GPU 0 by its node alone, around the profile devices.
    fn start_around(&mut self, name: &str) -> (String, i32) {
        self.start_with(name, &format!("{}:/dev/nvidia0", driver_fixture().dev.join("dev/nvidia0").display()))
    }

    /// A detached sleeping container with `--device DEVICE`; returns (id, pid of its init).
    fn start_with(&mut self, name: &str, device: &str) -> (String, i32) {
        let full = format!("gwwatch-{}-{name}", std::process::id());
        self.names.push(full.clone());
        let hooks = self.hooks.display().to_string();
        let o = podman(&[
            "--runtime", "runc", "--hooks-dir", &hooks, "run", "-d", "--name", &full, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "--device", device, IMAGE, "sh", "-c", "sleep 600",
        ]);
        assert!(o.status.success(), "podman run {name}: {}", stderr(&o));
        let id = stdout(&podman(&["inspect", "--format", "{{.Id}}", &full])).trim().to_string();
        let pid = stdout(&podman(&["inspect", "--format", "{{.State.Pid}}", &full])).trim().parse().unwrap();
        (id, pid)
    }

    fn status_of(&self, name: &str) -> String {
        let full = format!("gwwatch-{}-{name}", std::process::id());
        stdout(&podman(&["inspect", "--format", "{{.State.Status}}", &full])).trim().to_string()
    }

    /// The stand-in for NVML: GPU 0 runs `processes` (pid, name, MiB).
    fn gpu_runs(&self, processes: &[(i32, &str, u64)]) -> String {
        let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"");
        let mut inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        inv["gpus"][0]["processes"] = processes.iter().map(|(pid, name, mib)| serde_json::json!({"pid": pid, "name": name, "used_memory_bytes": mib << 20})).collect();
        write(self.dir.path(), "live-inventory.json", &inv.to_string())
    }

    fn watch_once(&self, inventory: &str) -> Output {
        let o = self.gw(&["watch", "--once", "--inventory", inventory]);
        assert!(o.status.success(), "gpuwarden watch --once: {}", stderr(&o));
        o
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("watch.json")).unwrap()).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = podman(&["unpause", n]);
            let _ = podman(&["rm", "-f", "-t", "0", n]);
        }
        let _ = self.gw(&["mps", "stop"]);
        let _ = std::fs::remove_file(SPEC);
    }
}

fn freezer_state(pid: i32) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (file, _, _) = gpuwarden::admin::watch::engine::freezer(&cg).unwrap();
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

#[test]
fn a_container_over_its_share_is_paused_or_killed_by_its_profile() {
    let Some(mut w) = World::new("a_container_over_its_share_is_paused_or_killed_by_its_profile") else { return };
    let (comfy, comfy_pid) = w.start("comfy", "comfyui");
    let (render, render_pid) = w.start("render", "blender");
    // Within the share (3 GiB + 10%) nothing happens.
    w.watch_once(&w.gpu_runs(&[(comfy_pid, "python3", 3300), (render_pid, "blender", 4000)]));
    assert_eq!(w.status_of("comfy"), "running");
    assert!(w.events().is_empty(), "{:?}", w.events());

    w.watch_once(&w.gpu_runs(&[(comfy_pid, "python3", 3500), (render_pid, "blender", 6000)]));
    assert_eq!(w.status_of("comfy"), "paused", "podman knows it is paused");
    assert_eq!(freezer_state(comfy_pid), "FROZEN");
    assert_eq!(w.status_of("render"), "exited", "blender's action is kill");
    let events = w.events();
    let paused = events.iter().find(|e| e["kind"] == "paused").expect("a paused event");
    assert_eq!(paused["container"], comfy.as_str());
    assert!(paused["detail"].as_str().unwrap().contains("(comfyui) uses 3500.0 MiB of GPU memory, its share is 3.0 GiB (+10%): podman paused it"), "{paused}");
    let killed = events.iter().find(|e| e["kind"] == "killed").expect("a killed event");
    assert_eq!(killed["container"], render.as_str());
    assert!(w.state()["paused"][&comfy]["reason"]["kind"] == "over_share");
    // Paused for its memory, it stays paused at the next look.
    w.watch_once(&w.gpu_runs(&[(comfy_pid, "python3", 3500)]));
    assert_eq!(w.status_of("comfy"), "paused");

    // What it shows: `status` and the metrics, with the same numbers; promtool accepts them.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let inventory = w.gpu_runs(&[(comfy_pid, "python3", 3500)]);
    let dog = KillOnDrop(Command::new(bin()).args(["--config", &w.config, "watch", "--inventory", &inventory, "--metrics", &port.to_string()]).env_remove("GPUWARDEN_CONFIG").spawn().unwrap());
    let metrics = fetch_metrics(port);
    drop(dog);
    assert!(metrics.contains(&format!("gpuwarden_paused{{container=\"{comfy}\",reason=\"over_share\"}} 1\n")), "{metrics}");
    assert!(metrics.contains(&format!("gpuwarden_used_bytes{{container=\"{comfy}\",profile=\"comfyui\"}} {}\n", 3500u64 << 20)), "{metrics}");
    assert!(metrics.contains("gpuwarden_events_total{kind=\"paused\"}") && metrics.contains("gpuwarden_refusals_total "), "{metrics}");
    let mut promtool = Command::new("promtool").args(["check", "metrics"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("promtool (Debian's prometheus package, scripts/setup.sh)");
    use std::io::Write as _;
    promtool.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool check metrics: {}{}", stdout(&checked), stderr(&checked));
    let status: serde_json::Value = serde_json::from_slice(&w.gw(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["watch"]["used_bytes"][&comfy], 3500u64 << 20);
    assert_eq!(status["watch"]["paused"][&comfy]["reason"]["kind"], "over_share");
    let text = stdout(&w.gw(&["status"]));
    assert!(text.contains("WATCH ") && text.contains("paused   ") && text.contains("over its share (3500.0 MiB of 3.0 GiB)"), "{text}");
}

/// GET /metrics, retried while the watchdog starts.
fn fetch_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            return response.split("\r\n\r\n").nth(1).unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no metrics on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_game_pauses_the_workers_which_resume_when_it_ends_even_across_a_killed_watchdog() {
    let Some(mut w) = World::new("a_game_pauses_the_workers_which_resume_when_it_ends_even_across_a_killed_watchdog") else { return };
    let (_, p1) = w.start("w1", "comfyui");
    let (_, p2) = w.start("w2", "comfyui");
    let program = |name: &str| {
        let p = w.dir.path().join(name);
        // A link, not a copy: a copied executable run while another thread forks can fail with ETXTBSY.
        std::os::unix::fs::symlink("/bin/sleep", &p).unwrap();
        p
    };

    // Steam open all day: its client, its web UI, the display server and the shell are on the GPU.
    let desktop: Vec<KillOnDrop> = ["steam", "steamwebhelper", "Xorg", "gnome-shell"].iter().map(|n| KillOnDrop(Command::new(program(n)).arg("600").spawn().unwrap())).collect();
    let desktop_gpu: Vec<(i32, &str, u64)> = desktop.iter().zip(["steam", "steamwebhelper", "Xorg", "gnome-shell"]).map(|(p, n)| (p.0.id() as i32, n, 300)).collect();
    let o = w.watch_once(&w.gpu_runs(&[&[(p1, "python3", 1000), (p2, "python3", 1000)], &desktop_gpu[..]].concat()));
    assert_eq!((w.status_of("w1").as_str(), w.status_of("w2").as_str()), ("running", "running"), "Steam open pauses nothing: {}", stderr(&o));
    let unknown = w.state()["unknown"].as_array().unwrap().clone();
    assert_eq!(unknown.iter().filter(|u| u["desktop"] == true && u["game"] == false).count(), 4, "{unknown:?}");

    // A game Steam launched: its reaper (`reaper SteamLaunch AppId=570 -- ./dota2`) starts it
    // with SteamAppId in its environment, and the game is on the GPU.
    let reaper = w.dir.path().join("reaper");
    std::fs::write(&reaper, "#!/bin/sh\napp=${2#AppId=}; shift 3\nSteamAppId=$app SteamGameId=$app \"$@\" &\nwait\n").unwrap();
    std::fs::set_permissions(&reaper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dota2 = program("dota2");
    let steam_launch = KillOnDrop(Command::new(&reaper).args(["SteamLaunch", "AppId=570", "--"]).arg(&dota2).arg("600").spawn().unwrap());
    let game_pid = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let kids = stdout(&Command::new("pgrep").args(["-P", &steam_launch.0.id().to_string(), "dota2"]).output().unwrap());
            if let Some(pid) = kids.split_whitespace().next() {
                break pid.parse::<i32>().unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "the reaper started no game");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let with_game = w.gpu_runs(&[&[(p1, "python3", 1000), (p2, "python3", 1000), (game_pid, "dota2", 2000)], &desktop_gpu[..]].concat());

    // The watchdog as a service, killed with SIGKILL once it has paused both.
    let mut dog = KillOnDrop(Command::new(bin()).args(["--config", &w.config, "watch", "--inventory", &with_game]).env_remove("GPUWARDEN_CONFIG").spawn().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(w.status_of("w1") == "paused" && w.status_of("w2") == "paused") {
        assert!(std::time::Instant::now() < deadline, "not paused within 20 s: {:?}", w.events());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dog.0.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    dog.0.wait().unwrap();
    let label = format!("dota2 (Steam app 570, pid {game_pid})");
    let unknown = w.state()["unknown"].as_array().unwrap().clone();
    assert!(unknown.iter().any(|u| u["name"] == label.as_str() && u["game"] == true), "the game is named with its app: {unknown:?}");
    let paused: Vec<String> = w.events().iter().filter(|e| e["kind"] == "paused").map(|e| e["detail"].as_str().unwrap().to_string()).collect();
    assert!(paused.len() == 2 && paused.iter().all(|d| d.contains(&label)), "{paused:?}");

    // The game ends; a new watchdog resumes what the killed one paused.
    drop(steam_launch);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(game_pid), nix::sys::signal::Signal::SIGKILL);
    w.watch_once(&w.gpu_runs(&[&[(p1, "python3", 1000), (p2, "python3", 1000)], &desktop_gpu[..]].concat()));
    assert_eq!((w.status_of("w1").as_str(), w.status_of("w2").as_str()), ("running", "running"), "{:?}", w.events());
    let kinds: Vec<String> = w.events().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "paused").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "resumed").count(), 2, "{kinds:?}");
    drop(desktop);

    // A container paused by someone else is reported, not resumed.
    let full = format!("gwwatch-{}-w1", std::process::id());
    assert!(podman(&["pause", &full]).status.success());
    let o = w.watch_once(&w.gpu_runs(&[(p1, "python3", 1000)]));
    assert!(stderr(&o).contains("found_frozen") && stderr(&o).contains("podman unpause"), "{}", stderr(&o));
    assert_eq!(w.status_of("w1"), "paused");
}

#[test]
fn defaults_raised_by_an_unprivileged_client_are_put_back_within_an_interval() {
    let Some(w) = World::new("defaults_raised_by_an_unprivileged_client_are_put_back_within_an_interval") else { return };
    let pipe = w.dir.path().join("mps/pipe");
    // The pipe directory's parents must let uid 1001 through, as /run does on a host.
    for d in [w.dir.path().to_path_buf(), w.dir.path().join("mps")] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // uid 1001 is a GPU user (a profile's allow rule names them), so the daemon's folder lets
    // them in: the one kind of client that can reach the defaults (README, Security model).
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(1001)).unwrap().expect("uid 1001 exists: scripts/setup.sh makes it");
    let base = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, format!("{base}[profiles.comfyui]\nallow = [\"{}\"]\n", user.name)).unwrap();
    assert!(w.gw(&["mps", "stop"]).status.success() && w.gw(&["mps", "start"]).status.success(), "the daemon restarts with the user let in");
    // The watchdog runs (interval 1 s) before the client acts, as a service would.
    let inventory = w.gpu_runs(&[]);
    let dog = KillOnDrop(Command::new(bin()).args(["--config", &w.config, "watch", "--inventory", &inventory]).env_remove("GPUWARDEN_CONFIG").spawn().unwrap());
    let state = w.dir.path().join("watch.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.exists() {
        assert!(std::time::Instant::now() < deadline, "the watchdog did not look");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut client = Command::new("setpriv")
        .args(["--reuid=1001", "--regid=1001", "--clear-groups", "nvidia-cuda-mps-control"])
        .env("CUDA_MPS_PIPE_DIRECTORY", &pipe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    client.stdin.take().unwrap().write_all(b"set_default_active_thread_percentage 90\n").unwrap();
    let o = client.wait_with_output().unwrap();
    let changed = std::time::Instant::now();
    assert!(o.status.success() && stdout(&o).contains("90"), "the unprivileged client changed the default: {}", stdout(&o));
    let restored = loop {
        if let Some(e) = w.events().into_iter().find(|e| e["kind"] == "mps_defaults_restored") {
            break e;
        }
        assert!(changed.elapsed() < std::time::Duration::from_secs(5), "not restored within 5 s (interval 1 s): {:?}", w.events());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(dog);
    let detail = restored["detail"].as_str().unwrap();
    assert!(detail.contains("were 90.0%") && detail.contains("set back to 50%"), "{restored}");
    assert!(detail.contains("the daemon logged: set_default_active_thread_percentage 90"), "the daemon's log names the command: {restored}");
    let status = stdout(&w.gw(&["mps", "status"]));
    assert!(status.contains("50% of the SMs"), "{status}");
}


#[test]
fn gpu_processes_gpuwarden_did_not_admit_are_reported_once_counted_and_killed_in_kill_mode() {
    let Some(mut w) = World::new("gpu_processes_gpuwarden_did_not_admit_are_reported_once_counted_and_killed_in_kill_mode") else { return };
    let (_, worker) = w.start("admitted", "comfyui");
    let (rogue_id, rogue) = w.start_around("rogue");
    // A CUDA job on the host.
    let job = w.dir.path().join("python3");
    std::os::unix::fs::symlink("/bin/sleep", &job).unwrap();
    let mut host = KillOnDrop(Command::new(&job).arg("600").spawn().unwrap());
    let host_pid = host.0.id() as i32;
    let gpu = w.gpu_runs(&[(worker, "python3", 1000), (rogue, "sleep", 800), (host_pid, "python3", 500)]);

    w.watch_once(&gpu);
    let unauthorized: Vec<String> = w.events().iter().filter(|e| e["kind"] == "unauthorized").map(|e| e["detail"].as_str().unwrap().to_string()).collect();
    assert_eq!(unauthorized.len(), 2, "{unauthorized:?}");
    let short = &rogue_id[..12];
    assert!(unauthorized.iter().any(|d| d.starts_with(&format!("pid {rogue} (root, uid 0, in container {short}) runs `sleep 600` on GPU ")) && d.contains("with 800.0 MiB")), "{unauthorized:?}");
    assert!(unauthorized.iter().any(|d| d.starts_with(&format!("pid {host_pid} (root, uid 0, on the host) runs `{} 600` on GPU ", job.display()))), "{unauthorized:?}");
    // Once per process, while it runs.
    w.watch_once(&gpu);
    assert_eq!(w.events().iter().filter(|e| e["kind"] == "unauthorized").count(), 2);
    let status = stdout(&w.gw(&["status"]));
    assert!(status.contains(&format!("UNAUTHORIZED  pid {rogue} sleep uses 800.0 MiB")) && status.contains(&format!("UNAUTHORIZED  pid {host_pid} python3")), "{status}");
    assert!(!status.contains(&format!("pid {worker} ")), "the admitted worker is no stranger: {status}");

    // The gauge, from a watchdog serving metrics.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dog = KillOnDrop(Command::new(bin()).args(["--config", &w.config, "watch", "--inventory", &gpu, "--metrics", &port.to_string()]).env_remove("GPUWARDEN_CONFIG").spawn().unwrap());
    let metrics = fetch_metrics(port);
    drop(dog);
    assert!(metrics.lines().any(|l| l.starts_with("gpuwarden_unauthorized_processes{gpu=\"GPU-") && l.ends_with(" 2")), "{metrics}");

    // Kill mode ends them: the container through Podman, the host process by signal.
    let text = std::fs::read_to_string(&w.config).unwrap().replace("[watch]\n", "[watch]\nunauthorized = \"kill\"\n");
    std::fs::write(&w.config, text).unwrap();
    w.watch_once(&gpu);
    let killed = w.events().iter().filter(|e| e["kind"] == "unauthorized_killed").count();
    assert_eq!(killed, 2, "{:?}", w.events());
    assert_ne!(w.status_of("rogue"), "running");
    assert!(host.0.wait().is_ok());
    assert_eq!(w.status_of("admitted"), "running", "the admitted worker is left alone");
}
