//! Rootless Podman as a desktop user runs it: the real unprivileged user
//! `gwrootless` with subuids (scripts/setup.sh makes it), Podman 4.3.1
//! rootless with runc, gpuwarden's admission broker running as root, and one
//! ledger shared with rootful Podman. The spec's device nodes are at their
//! real /dev paths (rootless Podman bind-mounts `path`): the test makes the
//! ones that are missing and removes them again.

mod common;
use common::rootless::*;
use common::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn rootless_and_rootful_containers_share_one_budget_and_the_user_sees_the_refusal() {
    let Some(mut w) = Rootless::new("rootless_and_rootful_containers_share_one_budget_and_the_user_sees_the_refusal") else { return };
    // One budget for both: the user's own cap on memory (90% by default, which their third
    // worker would pass too; tests/hostile.rs holds it) is lifted, so the GPU's budget refuses.
    let base = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, format!("{base}[budget.per_user]\npinned_memory = \"100%\"\n")).unwrap();
    let sleep = ["sh", "-c", "sleep 600"];
    for n in ["u1", "u2"] {
        let o = w.user_run(n, &["--device", "nvidia.com/gpu=comfyui"], &sleep, true);
        assert!(o.status.success(), "rootless {n}: {}", stderr(&o));
    }
    let o = w.root_start("r1");
    assert!(o.status.success(), "rootful: {}", stderr(&o));
    let held = w.reservations();
    assert_eq!(held.len(), 3, "{held:?}");
    let by_user = held.iter().filter(|r| r["holder"]["uid"] == uid() && r["holder"]["user"] == USER).count();
    assert_eq!(by_user, 2, "the rootless ones are recorded with the user: {held:?}");
    // The user reads the budget and who holds it, without writing anything.
    let o = Command::new("runuser").args(["-u", USER, "--", w.staged.path("gpuwarden").to_str().unwrap(), "--config", &w.config, "status"]).output().unwrap();
    assert!(o.status.success(), "status as {USER}: {}", stderr(&o));
    let rows: Vec<String> = stdout(&o).lines().filter(|l| l.contains("comfyui") && l.contains("25%")).map(str::to_owned).collect();
    assert_eq!(rows.iter().filter(|l| l.split_whitespace().nth(2) == Some(USER)).count(), 2, "{rows:?}");
    assert_eq!(rows.iter().filter(|l| l.split_whitespace().nth(2) == Some("root")).count(), 1, "{rows:?}");
    // The fourth, rootless: refused with the numbers, on the user's own podman run.
    let o = w.user_run("u3", &["--device", "nvidia.com/gpu=comfyui"], &sleep, true);
    let line = refusal(&o);
    assert!(line.contains("(comfyui) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 0 B left of 9.0 GiB"), "{line}");
    assert!(line.contains("held by "), "{line}");
    // Rootful, too.
    let o = w.root_start("r2");
    assert!(refusal(&o).contains("0 B left of 9.0 GiB"), "{}", stderr(&o));
    assert_eq!(w.reservations().len(), 3);
    // podman rm as the user releases through the broker.
    let o = as_user(&["podman", "rm", "-f", "-t", "0", &format!("gwtest-{}-u1", std::process::id())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.reservations().len(), 2, "released");
}

#[test]
fn the_profile_holds_inside_a_rootless_container() {
    let Some(mut w) = Rootless::new("the_profile_holds_inside_a_rootless_container") else { return };
    let script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; env | grep CUDA_MPS_ | sort; if touch /x 2>/dev/null; then echo root-writable; else echo root-read-only; fi";
    let o = w.user_run("profile", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", script], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in ["CapEff:\t0000000000000000", "NoNewPrivs:\t1", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G", "root-read-only"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(stderr(&o).contains("gpuwarden-launch: Landlock ABI "), "the launcher's line: {}", stderr(&o));
    assert!(w.reservations().is_empty(), "--rm released it");
}

#[test]
fn with_the_broker_down_a_rootless_container_is_refused_naming_the_unit_and_admitted_once_it_is_up() {
    let Some(mut w) = Rootless::new("with_the_broker_down_a_rootless_container_is_refused_naming_the_unit_and_admitted_once_it_is_up") else { return };
    w.stop_broker();
    let o = w.user_run("down", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    let line = refusal(&o);
    assert!(line.starts_with("gpuwarden: refused "), "{line}");
    assert!(
        line.contains(&format!("the admission broker does not answer at {} (connect: ", w.socket.display()))
            && line.contains("rootless containers are admitted through it; start it with `systemctl start gpuwarden-broker.socket` (or run `gpuwarden-hook broker` as root)"),
        "{line}"
    );
    assert!(!stdout(&o).contains("ran"));
    w.start_broker();
    let o = w.user_run("up", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success() && stdout(&o).contains("ran"), "{}", stderr(&o));
}

#[test]
fn a_killed_conmon_leaves_a_reservation_the_next_admission_reclaims() {
    let Some(mut w) = Rootless::new("a_killed_conmon_leaves_a_reservation_the_next_admission_reclaims") else { return };
    let o = w.user_run("victim", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.reservations().len(), 1);
    // conmon and the container's process die without poststop, as on a crash.
    let pids = stdout(&as_user(&["podman", "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", &format!("gwtest-{}-victim", std::process::id())]));
    let pids: Vec<i32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| gpuwarden::base::proc::Processes::start_time(&gpuwarden::base::proc::ProcFs, *p).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.reservations().len(), 1, "no poststop ran: the reservation stays");
    let o = w.user_run("next", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.reservations().is_empty(), "the stale one was reclaimed: {:?}", w.reservations());
}


#[test]
fn forged_requests_are_refused_and_do_not_stall_a_real_admission() {
    let Some(mut w) = Rootless::new("forged_requests_are_refused_and_do_not_stall_a_real_admission") else { return };
    // A bundle the user can read, for a container that is not theirs.
    let bundle = w.dir.path().join("forged");
    std::fs::create_dir_all(&bundle).unwrap();
    let cfg = serde_json::json!({"process": {"env": ["GPUWARDEN_PROFILE=comfyui"], "args": ["/usr/libexec/gpuwarden/gpuwarden-launch"]}, "root": {"path": "rootfs", "readonly": true}, "linux": {"devices": [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]}});
    std::fs::write(bundle.join("config.json"), cfg.to_string()).unwrap();
    let o = Command::new("chmod").args(["-R", "a+rX"]).arg(&bundle).output().unwrap();
    assert!(o.status.success());
    // A process of root's and one of another user's (nobody): refused, nothing held.
    let state = |id: &str, pid: u32| serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": bundle});
    let mut roots = Command::new("sleep").arg("60").spawn().unwrap();
    let mut nobodys = Command::new("runuser").args(["-u", "nobody", "--", "sleep", "60"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for (who, pid) in [("root", roots.id()), ("nobody", nobodys.id())] {
        let o = forged(&w, "admit", &state("f0f0f0f0f0f0f0f0", pid));
        assert_one_line_error(&o, &format!("refused f0f0f0f0f0f0: process {pid} is not in a user namespace of uid {}'s (its owner is uid 0)", uid()));
        assert!(w.reservations().is_empty(), "{who}'s process got nothing held");
    }
    let _ = (roots.kill(), nobodys.kill(), roots.wait(), nobodys.wait());
    // A rootful container's reservation: the user cannot release it.
    let o = w.root_start("rootful");
    assert!(o.status.success(), "{}", stderr(&o));
    let rootful = w.reservations()[0]["id"].as_str().unwrap().to_string();
    let o = forged(&w, "release", &serde_json::json!({"ociVersion": "1.0.2", "id": rootful, "status": "stopped", "bundle": ""}));
    assert_one_line_error(&o, &format!("it is held by root (a rootful container), not by uid {}", uid()));
    assert_eq!(w.reservations().len(), 1, "still held");

    // 100 connections that never finish, a 10 MB request, a request that never ends:
    // a real rootless admission still completes meanwhile.
    let hung: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(&w.socket).unwrap()).collect();
    let mut huge = UnixStream::connect(&w.socket).unwrap();
    let sent = huge.write_all(&vec![b' '; 10 << 20]);
    let mut slow = UnixStream::connect(&w.socket).unwrap();
    slow.write_all(b"{\"stage\":\"admit\"").unwrap();
    let start = Instant::now();
    let o = w.user_run("real", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success() && stdout(&o).contains("ran"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(20), "not stalled: {:?}", start.elapsed());
    let mut answer = String::new();
    if sent.is_ok() {
        let _ = huge.shutdown(std::net::Shutdown::Write);
    }
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.contains("larger than") || sent.is_err(), "the 10 MB request: {answer}");
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("did not arrive within"), "{answer}");
    drop(hung);
}

#[test]
fn beside_a_root_mps_server_a_rootless_container_is_refused_by_its_host_uid() {
    let Some(mut w) = Rootless::new("beside_a_root_mps_server_a_rootless_container_is_refused_by_its_host_uid") else { return };
    let server = stand_in_server(&w.config, &w.dir.path().join("mps"), w.dir.path(), 0);
    // Its root is the user on the host, not uid 0: MPS would queue it behind root's server.
    let o = w.user_run("queued", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    let line = refusal(&o);
    assert!(line.contains(&format!("MPS would not hold: an MPS server for uid 0 is active (pid {server})")), "{line}");
    assert!(line.contains(&format!("a client of host uid {} (uid 0 in the container) would wait", uid())), "{line}");
    assert!(line.contains("--userns keep-id"), "{line}");
    assert!(w.reservations().is_empty());
    let _ = gpuwarden(&["--config", &w.config, "mps", "stop"], b"");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::Signal::SIGKILL);

    // A server of the user's own uid: the same container, run as that uid with
    // --userns keep-id, is a client of it and admitted.
    let server = stand_in_server(&w.config, &w.dir.path().join("mps"), w.dir.path(), uid());
    let o = w.user_run("keep-id", &["--rm", "--userns", "keep-id", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "id -u"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), uid().to_string(), "it ran as the user's own uid");
    // Without keep-id its root is the user too, so it is served by the same server.
    let o = w.user_run("as-root", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = gpuwarden(&["--config", &w.config, "mps", "stop"], b"");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn who_may_use_what_is_enforced_for_rootless_users_with_the_rule_named() {
    let Some(mut w) = Rootless::new("who_may_use_what_is_enforced_for_rootless_users_with_the_rule_named") else { return };
    let base = std::fs::read_to_string(&w.config).unwrap();
    let run = |w: &mut Rootless, name: &str| w.user_run(name, &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    // A group the user is not in.
    std::fs::write(&w.config, format!("{base}[profiles.comfyui]\nallow = [\"@gpu-users\"]\n")).unwrap();
    let line = refusal(&run(&mut w, "outside"));
    assert!(line.ends_with(&format!("(comfyui): user {USER} (uid {}) may not use profile comfyui: [profiles.comfyui] allow = [\"@gpu-users\"] in gpuwarden's config.toml", uid())), "{line}");
    assert!(w.reservations().is_empty());
    // Named, with a cap of one worker's share.
    std::fs::write(&w.config, format!("{base}[budget.per_user]\nthreads = 25\n[profiles.comfyui]\nallow = [\"{USER}\"]\n")).unwrap();
    let o = run(&mut w, "named");
    assert!(o.status.success(), "{}", stderr(&o));
    let line = refusal(&run(&mut w, "second"));
    assert!(line.ends_with(&format!("(comfyui): user {USER} (uid {}) would hold 50% and 6.0 GiB in 2 containers, more than [budget] per_user allows (threads = 25, pinned_memory = \"90%\")", uid())), "{line}");
    // Root's containers are not the user's: the cap does not count them, nor stop them.
    let o = w.root_start("root");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.reservations().len(), 2);
}

#[test]
fn the_broker_serves_the_socket_systemd_passes_it() {
    if !is_root() {
        skip("the_broker_serves_the_socket_systemd_passes_it", "the broker runs as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let activated = dir.path().join("activated.sock");
    // The broker's own config names another socket: it must not bind that one.
    let broker_config = write(dir.path(), "broker.toml", &format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[broker]\nsocket = \"{d}/never.sock\"\n"));
    let client_config = write(dir.path(), "client.toml", &format!("inventory = \"builtin:rtx4070\"\n[broker]\nsocket = \"{}\"\n", activated.display()));
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&activated)
        .arg(dist("gpuwarden-hook"))
        .args(["broker", "--config", &broker_config])
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package, scripts/setup.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !activated.exists() {
        assert!(Instant::now() < deadline, "systemd-socket-activate did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = hook(&["release", "--config", &client_config, "--via-broker"], br#"{"ociVersion":"1.0.2","id":"5ca1ab1e00000000","status":"stopped","bundle":""}"#);
    let _ = (activator.kill(), activator.wait());
    assert!(o.status.success(), "the broker answered through the inherited socket: {}", stderr(&o));
    assert!(!dir.path().join("never.sock").exists(), "it served systemd's socket, not one of its own");
}

impl Rootless {
    /// The queue of GPU 0 as `status --json` lists it.
    fn queue(&self) -> Vec<serde_json::Value> {
        let o = gpuwarden(&["--config", &self.config, "status", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["gpus"][0]["queue"].as_array().cloned().unwrap_or_default()
    }

    fn await_queue(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let q = self.queue();
            if q.len() == n {
                return q;
            }
            assert!(Instant::now() < deadline, "the queue never held {n}: {q:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The user's `podman run -d` of a worker that waits `wait`, on a thread.
    fn user_waiting(&mut self, name: &str, wait: &str) -> std::thread::JoinHandle<Output> {
        let full = format!("gwtest-{}-{name}", std::process::id());
        self.user_names.push(full.clone());
        let (hooks, wait) = (self.hooks.clone(), format!("gpuwarden.io/wait={wait}"));
        std::thread::spawn(move || {
            as_user(&["podman", "--runtime", "runc", "--hooks-dir", &hooks, "run", "-d", "--name", &full, "--network", "none", "--device", "nvidia.com/gpu=comfyui", "--annotation", &wait, IMAGE, "sh", "-c", "sleep 600"])
        })
    }
}

#[test]
fn a_rootless_container_waits_its_turn_through_the_broker() {
    let Some(mut w) = Rootless::new("a_rootless_container_waits_its_turn_through_the_broker") else { return };
    for n in ["r1", "r2", "r3"] {
        let o = w.root_start(n);
        assert!(o.status.success(), "{n}: {}", stderr(&o));
    }
    // The budget is full: the user's worker waits in the queue, as the user.
    let waiting = w.user_waiting("u1", "1m");
    let q = w.await_queue(1);
    assert_eq!((q[0]["holder"]["user"].as_str(), q[0]["profile"].as_str()), (Some(USER), Some("comfyui")), "{q:?}");
    let o = Command::new("runuser").args(["-u", USER, "--", w.staged.path("gpuwarden").to_str().unwrap(), "--config", &w.config, "status"]).output().unwrap();
    assert!(stdout(&o).contains(&format!("1. gwtest-{}-u1", std::process::id())) || stdout(&o).contains(&format!("  {USER}  comfyui  waited")), "{}", stdout(&o));
    // A root container stops: the user's worker starts.
    let r1 = format!("gwtest-{}-r1", std::process::id());
    assert!(Command::new("podman").args(["rm", "-f", "-t", "0", &r1]).output().unwrap().status.success());
    let o = waiting.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.reservations().iter().any(|r| r["holder"]["user"] == USER), "{:?}", w.reservations());

    // A wait that runs out: the line is on the user's own podman run.
    let line = refusal(&w.user_waiting("u2", "3s").join().unwrap());
    assert!(line.contains(" (comfyui) after waiting 3 s (gpuwarden.io/wait=3s) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 0 B left of 9.0 GiB"), "{line}");
    assert!(w.queue().is_empty());

    // The hook that asked is killed: the broker sees it hang up, and the place is given back.
    let waiting = w.user_waiting("u3", "1m");
    let q = w.await_queue(1);
    let waiter = q[0]["waiter"].as_i64().unwrap() as i32;
    assert_eq!(std::fs::read_to_string(format!("/proc/{waiter}/comm")).unwrap().trim(), "gpuwarden-hook", "the broker's caller holds the place");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(waiter), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.queue().is_empty() {
        assert!(Instant::now() < deadline, "the broker kept a hung-up caller's place: {:?}", w.queue());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!waiting.join().unwrap().status.success());

    // The user ends their own wait with `gpuwarden queue cancel`, through the broker.
    let waiting = w.user_waiting("u4", "1m");
    let q = w.await_queue(1);
    let id = q[0]["id"].as_str().unwrap()[..12].to_string();
    let o = Command::new("runuser").args(["-u", USER, "--", w.staged.path("gpuwarden").to_str().unwrap(), "--config", &w.config, "queue", "cancel", &id]).output().unwrap();
    assert!(o.status.success(), "queue cancel as {USER}: {}", stderr(&o));
    assert!(stdout(&o).contains("leaves the queue at its next look"), "{}", stdout(&o));
    let line = refusal(&waiting.join().unwrap());
    assert!(line.contains("taken out of the queue with `gpuwarden queue cancel`"), "{line}");
    assert!(w.queue().is_empty());
}

/// What NVIDIA's real control daemon does, with gpuwarden's root-owned MPS
/// folders, when a server must run as the user: it starts it as that uid, and
/// the server connects, logs (through the daemon's FIFO, into the daemon's
/// root-owned server.log) and reaches the driver's initialization, which fails
/// here only because there is no GPU. It creates nothing of its own in the pipe
/// or log folder. (What it does after cuInit on a real GPU is not seen here.)
#[test]
fn the_real_daemon_starts_a_server_for_the_user_with_gpuwardens_root_owned_folders() {
    let Some(w) = Rootless::new("the_real_daemon_starts_a_server_for_the_user_with_gpuwardens_root_owned_folders") else { return };
    // The daemon's servers find libcuda by its SONAME; the driver is not installed on this host.
    let lib = w.staged.path("mpslib");
    std::fs::create_dir_all(&lib).unwrap();
    let cuda = w.staged.path("driver/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03");
    std::fs::copy(&cuda, lib.join("libcuda.so.1")).unwrap();
    let o = Command::new("chmod").args(["-R", "a+rX"]).arg(&lib).output().unwrap();
    assert!(o.status.success());
    let mps = |args: &[&str]| {
        let o = Command::new(bin()).args(["--config", &w.config, "mps"]).args(args).env_remove("GPUWARDEN_CONFIG").env("LD_LIBRARY_PATH", &lib).output().unwrap();
        assert!(o.status.success(), "mps {args:?}: {}", stderr(&o));
    };
    mps(&["stop"]);
    mps(&["start"]);
    let m = w.dir.path().join("mps");
    let before: Vec<String> = ["pipe", "log"].iter().flat_map(|d| std::fs::read_dir(m.join(d)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned())).collect();
    let uid = uid();
    ask_daemon(&m, &format!("start_server -uid {uid}"));
    let started = format!(" for user {uid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (server, log) = loop {
        let control_log = std::fs::read_to_string(m.join("log/control.log")).unwrap_or_default();
        let server = control_log.lines().find(|l| l.contains("Starting new server") && l.ends_with(&started)).and_then(|l| l.split_whitespace().rev().nth(3).map(str::to_owned));
        if let Some(pid) = server.filter(|pid| control_log.contains(&format!("Server {pid} exited"))) {
            break (pid, std::fs::read_to_string(m.join("log/server.log")).unwrap());
        }
        assert!(Instant::now() < deadline, "the daemon did not start and end a server for uid {uid}:\n{control_log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mine: Vec<&str> = log.lines().filter(|l| l.contains(&format!(" {server}]"))).collect();
    for step in ["Connecting to control daemon on socket", "Initializing server process", "Driver initialization failed with: no CUDA-capable device is detected"] {
        assert!(mine.iter().any(|l| l.contains(step)), "the user's server did not get to \"{step}\":\n{}", mine.join("\n"));
    }
    let after: Vec<String> = ["pipe", "log"].iter().flat_map(|d| std::fs::read_dir(m.join(d)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned())).collect();
    assert_eq!(before, after, "the user's server made no file in the pipe or log folder");
    mps(&["stop"]);
}

/// The unit's `Exec*=` commands, continuation lines joined, split as systemd
/// splits them (no quotes are used in the shipped units).
fn unit_commands(text: &str, key: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.starts_with(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}="));
    line[key.len() + 1..].split_whitespace().map(str::to_owned).collect()
}

/// podman/systemd/comfyui@.service as a user would run it with
/// `systemctl --user` (this host has no systemd as PID 1): its own ExecStart,
/// ExecStop and ExecStopPost, run as the user with systemd's specifiers
/// filled in. The only changes are the user's own: volume folders of their
/// own, the hooks folder of this test's install, and the image tag.
#[test]
fn the_comfyui_user_unit_runs_rootless_through_the_broker() {
    let Some(w) = Rootless::new("the_comfyui_user_unit_runs_rootless_through_the_broker") else { return };
    let _ports = process_lock("comfyui-ports");
    let unit = std::fs::read_to_string(repo().join("podman/systemd/comfyui@.service")).unwrap();
    let home = w.staged.path("user-home");
    for sub in ["run", "srv/models", "srv/input", "srv/output", "srv/user"] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    let o = Command::new("chown").args(["-R", &format!("{USER}:{USER}")]).arg(&home).output().unwrap();
    assert!(o.status.success());
    // The user's image: the busybox stand-in, sleeping as ComfyUI would serve.
    let o = as_user(&["podman", "tag", IMAGE, "localhost/comfyui-unit-test:latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fill = |args: Vec<String>| -> Vec<String> {
        let mut out = Vec::new();
        for a in args {
            let a = a.replace("%t", &home.join("run").display().to_string()).replace("%n", "comfyui@8188.service").replace("%i", "8188").replace("/srv/comfyui", &home.join("srv").display().to_string());
            let a = if a == "localhost/comfyui:latest" { "localhost/comfyui-unit-test:latest".to_string() } else { a };
            out.push(a);
        }
        if out.get(1).is_some_and(|s| s != "--hooks-dir") && out[0].ends_with("podman") {
            out.splice(1..1, ["--hooks-dir".to_string(), w.hooks.clone()]);
        }
        out
    };
    let run = |key: &str, extra: &[&str]| {
        let mut args = fill(unit_commands(&unit, key));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        as_user(&refs)
    };
    // The unit publishes its port: rootless Podman's network (slirp4netns) opens
    // /dev/net/tun, which Debian makes 0666 and this host 0600; restored after.
    let _tun = TunOpen::new();
    let o = run("ExecStart", &["sh", "-c", "sleep 600"]);
    assert!(o.status.success(), "ExecStart as {USER}: {}", stderr(&o));
    let held = w.reservations();
    assert!(held.iter().any(|r| r["name"] == "comfyui-8188" && r["holder"]["user"] == USER && r["profile"] == "comfyui"), "{held:?}");
    let o = as_user(&["podman", "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.State.Running}}", "comfyui-8188"]);
    assert_eq!(stdout(&o).trim(), "true true", "{}", stderr(&o));
    for key in ["ExecStop", "ExecStopPost"] {
        let o = run(key, &[]);
        assert!(o.status.success(), "{key} as {USER}: {}", stderr(&o));
    }
    assert!(w.reservations().iter().all(|r| r["name"] != "comfyui-8188"), "stopping the unit released the share: {:?}", w.reservations());
    let _ = as_user(&["podman", "rmi", "localhost/comfyui-unit-test:latest"]);
}

/// /dev/net/tun as Debian's udev rules make it (0666) while it lives; its mode before, after.
struct TunOpen(Option<u32>);

impl TunOpen {
    fn new() -> TunOpen {
        use std::os::unix::fs::PermissionsExt;
        let tun = Path::new("/dev/net/tun");
        let mode = std::fs::metadata(tun).map(|m| m.permissions().mode() & 0o7777).ok();
        if mode.is_some_and(|m| m != 0o666) {
            std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).unwrap();
            return TunOpen(mode);
        }
        TunOpen(None)
    }
}

impl Drop for TunOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.0 {
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode));
        }
    }
}

/// This host runs cgroup v1 without systemd: rootless Podman gives a
/// container no cgroup of its own, and its processes share the cgroups of the
/// command that started them. The watchdog still knows them as the worker's.
#[test]
fn the_watchdog_holds_a_rootless_worker_without_a_cgroup_of_its_own_and_kill_spares_it() {
    let Some(mut w) = Rootless::new("the_watchdog_holds_a_rootless_worker_without_a_cgroup_of_its_own_and_kill_spares_it") else { return };
    let o = w.user_run("held", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = w.user_names.last().unwrap().clone();
    let worker: i32 = stdout(&as_user(&["podman", "inspect", "--format", "{{.State.Pid}}", &name])).trim().parse().unwrap();
    let id = stdout(&as_user(&["podman", "inspect", "--format", "{{.Id}}", &name])).trim().to_string();
    let cgroup = std::fs::read_to_string(format!("/proc/{worker}/cgroup")).unwrap();
    assert!(!cgroup.contains(&id), "no cgroup of its own on this host: {cgroup}");
    let o = w.root_start("beside");
    assert!(o.status.success(), "{}", stderr(&o));
    let root_id = stdout(&o).trim().to_string();
    let rootful: i32 = stdout(&Command::new("podman").args(["inspect", "--format", "{{.State.Pid}}", &root_id]).output().unwrap()).trim().parse().unwrap();
    // A CUDA job on the host, which nobody admitted.
    let job = KillOnDrop(Command::new("sleep").arg("600").spawn().unwrap());
    let job_pid = job.0.id() as i32;

    // The GPUs as NVML would show them: the worker over its 3 GiB, root's worker within its share, the job.
    let mut inv: serde_json::Value = serde_json::from_slice(&gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"").stdout).unwrap();
    inv["gpus"][0]["processes"] = serde_json::json!([
        {"pid": worker, "name": "python3", "used_memory_bytes": 4_000_000_000u64},
        {"pid": rootful, "name": "python3", "used_memory_bytes": 1_000_000_000u64},
        {"pid": job_pid, "name": "sleep", "used_memory_bytes": 1_000_000_000u64},
    ]);
    let gpus = write(w.dir.path(), "gpus.json", &inv.to_string());
    let config = write(w.dir.path(), "watch.toml", &format!("{}[watch]\nunauthorized = \"kill\"\n", std::fs::read_to_string(&w.config).unwrap()));
    let o = gpuwarden(&["--config", &config, "watch", "--once", "--inventory", &gpus], b"");
    let said = stderr(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("(comfyui) uses 3.7 GiB of GPU memory, its share is 3.0 GiB (+10%): stopped its 1 processes (SIGSTOP"), "{said}");
    let state = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
    assert_eq!(state(worker), Some('T'), "the worker is stopped");
    // Never the cgroup it shares: on this host that holds this very test.
    for line in cgroup.lines().filter(|l| l.split(':').nth(1) == Some("freezer")) {
        let path = line.splitn(3, ':').nth(2).unwrap();
        // The root cgroup (shared with every process of the host) has no freezer.state: it cannot be frozen.
        if path != "/" {
            let file = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "THAWED", "{file}");
        }
    }
    assert!(said.contains(&format!("unauthorized_killed: pid {job_pid} ")), "the job nobody admitted is killed: {said}");
    assert!(!said.contains(&format!("pid {worker} ")) && !said.contains(&format!("pid {rootful} ")), "neither worker is unauthorized: {said}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(state(worker), Some('T')) && state(rootful).is_some_and(|s| s != 'Z'), "both workers live on");
    assert_eq!(w.reservations().len(), 2, "both still hold their share");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGCONT).unwrap();
}
