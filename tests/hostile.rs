//! The broker against a hostile local user, run as real users: the victim
//! `gwrootless` with a real rootless worker, root with a rootful one, and the
//! attacker `gwother` (both with subuids; scripts/setup.sh makes them). The
//! attacker runs their own runtime and hooks, as any rootless user can: what
//! they send the broker is whatever they like. None of it may take, fake,
//! block or flood another's share.

mod common;
use common::rootless::*;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OTHER: &str = "gwother";

/// The admin CLI where the user can run it (staged beside the hook).
fn gpuwarden_bin() -> PathBuf {
    PathBuf::from("/var/tmp").join(format!("gpuwarden-rootless-{}", std::process::id())).join("gpuwarden")
}

fn other() -> nix::unistd::User {
    nix::unistd::User::from_name(OTHER).unwrap().unwrap_or_else(|| panic!("user {OTHER} exists: scripts/setup.sh makes it"))
}

/// A folder the attacker writes in, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(format!("/var/tmp/gpuwarden-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let u = other();
        nix::unistd::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ledger's entries of others than the attacker: who holds which id with which process.
fn others_entries(w: &Rootless) -> Vec<(String, String, u64)> {
    let mut v: Vec<(String, String, u64)> = w
        .reservations()
        .iter()
        .filter(|r| r["holder"]["user"].as_str() != Some(OTHER))
        .map(|r| (r["id"].as_str().unwrap_or("").to_string(), r["holder"]["user"].as_str().unwrap_or("root").to_string(), r["pid"].as_u64().unwrap_or(0)))
        .collect();
    v.sort();
    v
}

/// The attacker's own rootless profile container, started with an extra
/// createRuntime hook of theirs that forges an admission for each id in
/// `victims` with the container's real state (its runtime's init, its
/// bundle): everything but the id is genuine. Returns what the forgeries
/// were answered, and where the attacker kept a copy of the state and config.
fn attack_with_own_container(w: &Rootless, victims: &[String], scratch: &Path) -> String {
    let hook = w.staged.path("gpuwarden-hook");
    let script = scratch.join("forge.sh");
    // Each forgery runs under a shell named `runc`: the hook then answers on its stderr as under
    // runc (under anything else it would tell the refusal through the container its pid names,
    // the attacker's own, which harms only the attacker).
    let runc = scratch.join("runc");
    let _ = std::os::unix::fs::symlink("/bin/sh", &runc);
    let forged = victims
        .iter()
        .map(|v| {
            let one = format!("echo \"$0\" | sed 's/\"id\": *\"[^\"]*\"/\"id\":\"{v}\"/' | {} admit --config {} --via-broker", hook.display(), w.config);
            format!("{} -c '{}' \"$state\" >> {out}/forged.txt 2>&1; echo rc=$? >> {out}/forged.txt", runc.display(), one.replace('\'', "'\\''"), out = scratch.display())
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nstate=$(cat)\necho \"$state\" > {out}/state.json\nbundle=$(echo \"$state\" | sed -n 's/.*\"bundle\": *\"\\([^\"]*\\)\".*/\\1/p')\ncp \"$bundle/config.json\" {out}/config.json\n{forged}\nexit 0\n",
            out = scratch.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hooks = scratch.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("forge.json"), serde_json::json!({"version": "1.0.0", "hook": {"path": script}, "when": {"always": true}, "stages": ["createRuntime"]}).to_string()).unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(scratch).status().unwrap();
    let name = format!("gwattack-{}", std::process::id());
    let o = as_named(OTHER, &["podman", "--runtime", "runc", "--hooks-dir", &w.hooks, "--hooks-dir", hooks.to_str().unwrap(), "run", "--rm", "--name", &name, "--network", "none", "--device", "nvidia.com/gpu=comfyui", IMAGE, "sh", "-c", "true"]);
    assert!(o.status.success(), "the attacker's own container runs: {}", stderr(&o));
    std::fs::read_to_string(scratch.join("forged.txt")).unwrap_or_default()
}

#[test]
fn nobody_takes_over_another_users_or_roots_reservation_by_its_id() {
    let Some(mut w) = Rootless::new("nobody_takes_over_another_users_or_roots_reservation_by_its_id") else { return };
    image_of(OTHER);
    let o = w.user_run("victim", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.root_start("rootful").status.success());
    let before = others_entries(&w);
    assert_eq!(before.len(), 2, "{before:?}");
    let victims: Vec<String> = before.iter().map(|(id, _, _)| id.clone()).collect();
    let scratch = Scratch::new("takeover");
    let answers = attack_with_own_container(&w, &victims, &scratch.0);
    for (id, holder, _) in &before {
        let short = &id[..12];
        let held_by = if holder == "root" { "root (a rootful container)".to_string() } else { format!("{holder} (uid {})", nix::unistd::User::from_name(holder).unwrap().unwrap().uid) };
        assert!(answers.contains(&format!("container id {short} holds a share for {held_by}: an id is its holder's")), "{answers}");
    }
    assert_eq!(answers.matches("rc=1").count(), 2, "both forgeries refused: {answers}");
    assert_eq!(others_entries(&w), before, "every entry is still its holder's");
    // What the attacker may read: not the ledger, and through the broker no id of others'.
    let o = as_named(OTHER, &[gpuwarden_bin().to_str().unwrap(), "--config", &w.config, "status", "--json"]);
    assert!(o.status.success(), "a user's status: {}", stderr(&o));
    let seen = stdout(&o);
    assert!(before.iter().all(|(id, _, _)| !seen.contains(&id[..12])), "no id of others': {seen}");
    assert!(seen.contains(&format!("\"user\": \"{USER}\"")) && seen.contains("\"profile\": \"comfyui\""), "others by user and profile: {seen}");
    // The victim's own release still works, and only theirs.
    let name = w.user_names[0].clone();
    assert!(as_user(&["podman", "rm", "-f", "-t", "0", &name]).status.success());
    assert_eq!(others_entries(&w).len(), 1, "the victim released their own");
}

#[test]
fn a_plain_process_is_not_a_container_and_cannot_wait_in_the_queue() {
    let Some(mut w) = Rootless::new("a_plain_process_is_not_a_container_and_cannot_wait_in_the_queue") else { return };
    image_of(OTHER);
    let scratch = Scratch::new("plain");
    // A genuine config.json of a profile container of the attacker's, to dress the forgery in.
    attack_with_own_container(&w, &[], &scratch.0);
    let bundle = scratch.0.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(scratch.0.join("config.json")).unwrap()).unwrap();
    cfg["annotations"]["gpuwarden.io/wait"] = "604800h".into();
    std::fs::write(bundle.join("config.json"), cfg.to_string()).unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(&scratch.0).status().unwrap();
    // A sleep in a user namespace the attacker owns.
    let u = other();
    let sleeper = KillOnDrop(Command::new("unshare").args(["--user", "--map-root-user", "sleep", "600"]).uid(u.uid.as_raw()).gid(u.gid.as_raw()).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let pid = sleeper.0.id();
    let o = w.user_run("victim", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = others_entries(&w);
    for id in ["c0ffee0000000000000000000000000000000000000000000000000000000000", "feed000000000001"] {
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": bundle});
        let o = forged_by(OTHER, &w, "admit", &state);
        assert_one_line_error(&o, &format!("process {pid} (sleep) is no runtime's container init (runc:[2:INIT], crun): a share is only for a container being created"));
    }
    assert_eq!(others_entries(&w), before);
    assert!(w.reservations().iter().all(|r| r["holder"]["user"].as_str() != Some(OTHER)), "nothing is held for it");
    let queue = gpuwarden(&["--config", &w.config, "status", "--json"], b"");
    assert!(!stdout(&queue).contains("604800"), "nobody waits a week: {}", stdout(&queue));
}

/// A process of `uid` that holds `n` connections to `socket` open, idle.
fn holder_of_connections(socket: &Path, uid: u32, gid: u32, n: usize) -> KillOnDrop {
    let socket = socket.to_path_buf();
    let mut cmd = Command::new("sleep");
    cmd.arg("600").uid(uid).gid(gid);
    // SAFETY: between fork and exec the child makes system calls only (socket, connect) on a
    // stack-built address, and leaks the descriptors on purpose so that `sleep` inherits them.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::socket::{connect, socket as open, AddressFamily, SockFlag, SockType, UnixAddr};
            let addr = UnixAddr::new(&socket)?;
            for _ in 0..n {
                let fd = open(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None)?;
                let _ = connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
                std::mem::forget(fd);
            }
            Ok(())
        });
    }
    KillOnDrop(cmd.spawn().unwrap())
}

#[test]
fn one_users_flood_of_connections_is_capped_and_never_blocks_another() {
    let Some(mut w) = Rootless::new("one_users_flood_of_connections_is_capped_and_never_blocks_another") else { return };
    let u = other();
    // 600 idle connections: the broker keeps 8 of them (each for its 3 s read timeout) and turns the rest away at once.
    let _flood = holder_of_connections(&w.socket, u.uid.as_raw(), u.gid.as_raw(), 600);
    std::thread::sleep(Duration::from_millis(300));
    let scratch = Scratch::new("flood");
    std::fs::write(scratch.0.join("config.json"), "{}").unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(&scratch.0).status().unwrap();
    let o = forged_by(OTHER, &w, "admit", &serde_json::json!({"ociVersion": "1.0.2", "id": "feed000000000002", "status": "creating", "pid": 1, "bundle": scratch.0}));
    let err = stderr(&o);
    assert!(err.contains("has 8 connections open to the admission broker, the most one user may ([broker] connections_per_user = 8)"), "the limit is named: {err}");
    assert!(!err.contains("does not answer"), "it answers: {err}");
    // Meanwhile the victim's worker is admitted as if nothing happened.
    let start = Instant::now();
    let o = w.user_run("victim", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success() && stdout(&o).contains("ran"), "{}", stderr(&o));
    eprintln!("the victim's rootless start during the flood: {:?}", start.elapsed());
}

#[test]
fn megabyte_names_are_cut_and_refusals_do_not_flood_the_events_file() {
    let Some(mut w) = Rootless::new("megabyte_names_are_cut_and_refusals_do_not_flood_the_events_file") else { return };
    image_of(OTHER);
    for name in ["r1", "r2", "r3"] {
        assert!(w.root_start(name).status.success(), "nine of nine GiB held by root");
    }
    let events = Path::new(&w.config).parent().unwrap().join("state/events.jsonl");
    let size = || std::fs::metadata(&events).map_or(0, |m| m.len());
    let before = size();
    let name = "n".repeat(100_000);
    for i in 0..15 {
        let o = as_named(OTHER, &["podman", "--runtime", "runc", "--hooks-dir", &w.hooks, "run", "--rm", "--name", &format!("gwbig-{}-{i}", std::process::id()), "--network", "none", "--device", "nvidia.com/gpu=comfyui", "--annotation", &format!("gpuwarden.io/name={name}"), IMAGE, "sh", "-c", "true"]);
        assert!(!o.status.success());
        let line = stderr(&o).lines().find(|l| l.contains("gpuwarden: refused")).unwrap_or_default().to_string();
        assert!(line.contains(&format!(" {} (comfyui) on GPU 0", "n".repeat(64))) && line.len() < 4300, "the name is cut to 64 characters: {} bytes", line.len());
    }
    let grew = size() - before;
    assert!(grew < 10 * 2048 + 3000, "ten refusal events a minute and one saying the rest go unrecorded: {grew} bytes");
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.contains("refusals_suppressed"), "{}", &text[text.len().saturating_sub(600)..]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&events).unwrap().permissions().mode() & 0o077, 0, "the events are root's");
    let ledger = Path::new(&w.config).parent().unwrap().join("state/ledger.json");
    assert_eq!(std::fs::metadata(&ledger).unwrap().permissions().mode() & 0o077, 0, "the ledger is root's");
}

/// Asks the daemon of `w` as `user` (as root when `None`).
fn mps_as(w: &Rootless, user: Option<&str>, command: &str) -> std::process::Output {
    let mps = Path::new(&w.config).parent().unwrap().join("mps");
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "env"]);
            c
        }
        None => Command::new("env"),
    };
    c.arg(format!("CUDA_MPS_PIPE_DIRECTORY={}", mps.join("pipe").display())).arg(format!("CUDA_MPS_LOG_DIRECTORY={}", mps.join("log").display())).arg("nvidia-cuda-mps-control");
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{command}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn only_gpu_users_reach_the_mps_daemon_and_the_watchdog_puts_a_moved_default_back_at_once() {
    let Some(mut w) = Rootless::new("only_gpu_users_reach_the_mps_daemon_and_the_watchdog_puts_a_moved_default_back_at_once") else { return };
    let threads = |w: &Rootless| stdout(&mps_as(w, None, "get_default_active_thread_percentage")).trim().to_string();
    let ceiling = threads(&w);
    assert_eq!(ceiling, "50.0", "the largest profile's share");
    // Nobody (no GPU user) cannot reach the control socket.
    let o = mps_as(&w, Some("nobody"), "set_default_active_thread_percentage 100");
    assert!(!o.status.success() || !stdout(&o).contains("100"), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(threads(&w), ceiling, "nobody changed nothing");
    // A GPU user (the victim's admitted worker let them in) can: the watchdog, looking every
    // 30 s, follows the daemon's log and puts it back at once.
    let o = w.user_run("gpu-user", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = Path::new(&w.config).parent().unwrap().to_path_buf();
    let mut inv: serde_json::Value = serde_json::from_slice(&gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"").stdout).unwrap();
    inv["gpus"][0]["processes"] = serde_json::json!([]);
    let gpus = write(&dir, "gpus.json", &inv.to_string());
    let said = std::fs::File::create(dir.join("watch.log")).unwrap();
    let _dog = KillOnDrop(Command::new(bin()).args(["--config", &w.config, "watch", "--interval", "30", "--inventory", &gpus]).env_remove("GPUWARDEN_CONFIG").stderr(said).spawn().unwrap());
    // Its first look asks the daemon for its defaults; the client's command comes after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("state/watch.json").exists() {
        assert!(Instant::now() < deadline, "the watchdog's first look");
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let o = mps_as(&w, Some(USER), "set_default_active_thread_percentage 100");
    assert!(o.status.success(), "a GPU user may: {}", stderr(&o));
    let mut back = None;
    while start.elapsed() < Duration::from_secs(10) {
        if threads(&w) == ceiling {
            back = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = back.expect("the default is put back well before the next look (30 s)");
    eprintln!("a moved MPS default was put back {back:?} after the client set it");
    let deadline = Instant::now() + Duration::from_secs(5);
    let restored = loop {
        let events = gpuwarden::host::watched::events::read(&dir.join("state/events.jsonl"));
        if let Some(e) = events.into_iter().find(|e| e.kind == "mps_defaults_restored") {
            break e;
        }
        assert!(Instant::now() < deadline, "an event says what was put back; the watchdog said: {}", std::fs::read_to_string(dir.join("watch.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(restored.detail.contains("set_default_active_thread_percentage 100"), "{}", restored.detail);
    eprintln!("the event: {}", restored.detail);
    assert!(restored.detail.contains(&format!("only root and {USER} (uid {}) can reach its control socket", uid())), "who could have: {}", restored.detail);
}

/// A small deterministic generator, so a failing mutation can be found again.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One mutation of a genuine OCI state and config.json: a field replaced
/// by something hostile, or the bytes cut or flipped.
fn mutate(rng: &mut XorShift, state: &serde_json::Value, config: &serde_json::Value, victim: &str, victim_pid: u64) -> (Vec<u8>, Vec<u8>) {
    let (mut s, mut c) = (state.clone(), config.clone());
    let odd: [serde_json::Value; 10] = [
        "".into(),
        "x".repeat(10_000).into(),
        "../../etc/shadow".into(),
        "ünïcödé\u{0}\n".into(),
        (-1).into(),
        0.into(),
        u64::MAX.into(),
        serde_json::json!([1, {"a": null}]),
        serde_json::Value::Null,
        true.into(),
    ];
    let pick = |rng: &mut XorShift| odd[rng.below(odd.len())].clone();
    match rng.below(12) {
        0 => s["id"] = pick(rng),
        1 => s["id"] = victim.into(),
        2 => s["pid"] = [pick(rng), victim_pid.into(), 1.into(), (std::process::id() as u64).into()][rng.below(4)].clone(),
        3 => s["status"] = ["running", "stopped", "created", "", "creating\u{0}"][rng.below(5)].into(),
        4 => s["bundle"] = ["/", "/etc", "/root", "/proc/1/root", "/nonexistent"][rng.below(5)].into(),
        5 => c["process"]["env"] = serde_json::json!(["GPUWARDEN_PROFILE=comfyui", "GPUWARDEN_PROFILE=blender", format!("GPUWARDEN_WAIT={}", ["604800h", "-1", "9999999999999", "x"][rng.below(4)])]),
        6 => c["annotations"] = serde_json::json!({"gpuwarden.io/name": "n".repeat(rng.below(200_000)), "gpuwarden.io/threads": pick(rng), "gpuwarden.io/refusal": "forged"}),
        7 => c["linux"]["devices"] = serde_json::json!([{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": pick(rng)}]),
        8 => c["process"]["args"] = pick(rng),
        9 => c = pick(rng),
        _ => {}
    }
    let (mut sb, mut cb) = (serde_json::to_vec(&s).unwrap(), serde_json::to_vec(&c).unwrap());
    match rng.below(6) {
        0 => sb.truncate(rng.below(sb.len() + 1)),
        1 => cb.truncate(rng.below(cb.len() + 1)),
        2 => {
            let at = rng.below(sb.len());
            sb[at] ^= 1 << rng.below(8);
        }
        _ => {}
    }
    (sb, cb)
}

/// The broker's resident memory (kB) and CPU time (clock ticks).
fn broker_use(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit(") ").next().unwrap().split_whitespace().collect();
    (rss, f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap())
}

#[test]
fn thousands_of_mutated_requests_from_another_user_change_nothing_and_the_broker_stays_up() {
    let Some(mut w) = Rootless::new("thousands_of_mutated_requests_from_another_user_change_nothing_and_the_broker_stays_up") else { return };
    image_of(OTHER);
    let o = w.user_run("victim", &["--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "sleep 600"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let scratch = Scratch::new("fuzz");
    attack_with_own_container(&w, &[], &scratch.0);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(scratch.0.join("state.json")).unwrap()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(scratch.0.join("config.json")).unwrap()).unwrap();
    let before = others_entries(&w);
    let (victim, victim_pid) = (before[0].0.clone(), before[0].2);
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let cases = 2000;
    for i in 0..cases {
        let (s, c) = mutate(&mut rng, &state, &config, &victim, victim_pid);
        let b = scratch.0.join(format!("b{i}"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("config.json"), c).unwrap();
        // The state names its own bundle unless the mutation put another there.
        let s = String::from_utf8_lossy(&s).replace(state["bundle"].as_str().unwrap(), b.to_str().unwrap());
        std::fs::write(scratch.0.join(format!("s{i}.json")), s).unwrap();
    }
    Command::new("chmod").args(["-R", "a+rX"]).arg(&scratch.0).status().unwrap();
    let broker = w.broker.as_ref().unwrap().id();
    let (rss0, cpu0) = broker_use(broker);
    let start = Instant::now();
    let hook = w.staged.path("gpuwarden-hook");
    let script = format!("for i in $(seq 0 {}); do {} admit --config {} --via-broker < {}/s$i.json >/dev/null 2>&1; done; exit 0", cases - 1, hook.display(), w.config, scratch.0.display());
    let o = Command::new("runuser").args(["-u", OTHER, "--", "sh", "-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let took = start.elapsed();
    let (rss1, cpu1) = broker_use(broker);
    eprintln!("{cases} mutated requests from {OTHER} in {took:?}: the broker's RSS {rss0} kB before, {rss1} kB after; its CPU {:.2} s", (cpu1 - cpu0) as f64 / 100.0);
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(broker as i32), None).is_ok(), "the broker is up");
    assert_eq!(others_entries(&w), before, "the ledger is unchanged for everyone else");
    assert!(w.reservations().iter().all(|r| r["holder"]["user"].as_str() != Some(OTHER)), "the attacker holds nothing: {:?}", w.reservations());
    // And it still serves: a real admission of the victim's.
    let o = w.user_run("after", &["--rm", "--device", "nvidia.com/gpu=comfyui"], &["sh", "-c", "echo ran"], false);
    assert!(o.status.success() && stdout(&o).contains("ran"), "{}", stderr(&o));
}
