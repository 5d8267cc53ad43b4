//! The runtime side's cost, each subject alternating with its baseline in one
//! run, with the binaries `scripts/build.sh` installs (target/dist):
//! - `gpuwarden-hook --version` against `/bin/true` (the cost of one exec);
//! - `admit` + `release` with a ledger of 40 against `/bin/true` twice (with
//!   NVIDIA's real MPS control daemon running, which admission probes), and
//!   the same through the admission broker (the rootless path) against direct;
//! - a container's life in Podman (`podman run -d`, then `podman rm -f`) with
//!   gpuwarden's three hooks (precreate, admit, release) against the same three
//!   hooks as `/bin/cat` and `/bin/true`, on the same device and libraries;
//! - the render queue: how soon a waiting container is admitted after its
//!   share frees;
//! - precreate's look at the image's dynamic loader: in process, and precreate
//!   on a Debian root, a lib64 root and no root (`scripts/loader-images.sh`).
//!
//! The ledger lives on a tmpfs, as `/run` is on a systemd host; set
//! GPUWARDEN_BENCH_STATE=DIR to put it elsewhere.  `cargo bench --bench hooks`
//! runs every section; `cargo bench --bench hooks -- exec admit podman` names some.
//!
//! With `GPUWARDEN_BENCH_BEFORE=DIR` (another build's `target/dist`), section
//! `before` runs instead: that build's binaries alternating with today's, for
//! one exec of the hook, admit + release, and a profile container's life in
//! Podman (each build's own spec and precreate hook).

#[path = "support/mod.rs"]
mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A state folder: GPUWARDEN_BENCH_STATE, else a fresh tmpfs (unmounted on drop).
struct StateDir {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl StateDir {
    fn new() -> StateDir {
        if let Ok(base) = std::env::var("GPUWARDEN_BENCH_STATE") {
            return StateDir { dir: tempfile::Builder::new().prefix("gpuwarden-bench").tempdir_in(base).unwrap(), mounted: false };
        }
        let dir = tempfile::Builder::new().prefix("gpuwarden-bench").tempdir().unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(dir.path()).status().is_ok_and(|s| s.success());
        StateDir { dir, mounted }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

fn exec_cost(hook: &str, launcher: &str) {
    compare("gpuwarden-hook --version", 1000, 100, || run(hook, &["--version"], b""), || run("/bin/true", &[], b""), "/bin/true");
    // The launcher's own cost: NNP, capabilities, a Landlock ruleset as the rewrite writes it, then execve.
    let rules = ["--read", "/", "--exec", "/usr", "--exec", "/bin", "--write", "/tmp", "--write", "/dev", "--write", "/proc", "--require", "abi1", "--caps", "", "--", "/bin/true"];
    // SAFETY: the bench's main thread, before any other thread runs.
    #[allow(unsafe_code)]
    let () = unsafe { std::env::set_var("GPUWARDEN_LAUNCH_QUIET", "1") };
    compare("gpuwarden-launch ... -- /bin/true", 1000, 100, || run(launcher, &rules, b""), || run("/bin/true", &[], b""), "/bin/true");
}

/// The `[mps]` section with folders under `dir`.
fn mps_section(dir: &Path) -> String {
    let m = dir.join("mps");
    format!("[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n", m = m.display())
}

/// NVIDIA's real MPS control daemon for the run (admission asks it), stopped on drop.
struct Daemon {
    cli: String,
    config: PathBuf,
}

impl Daemon {
    fn start(cli: &str, config: &Path) -> Daemon {
        run(cli, &["--config", config.to_str().unwrap(), "mps", "start"], b"");
        Daemon { cli: cli.to_string(), config: config.to_path_buf() }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(&self.cli).args(["--config", self.config.to_str().unwrap(), "mps", "stop"]).output();
    }
}

/// A bundle in `dir` whose config.json is what `hook`'s precreate makes of a
/// `tiny` profile container, and the OCI state naming it with this process
/// as the container's first process: (the bundle, the state's JSON).
fn tiny_bundle(hook: &str, config: &str, dir: &Path) -> (PathBuf, String) {
    use std::io::Write;
    let raw = r#"{"process":{"env":["GPUWARDEN_PROFILE=tiny"]},"root":{"path":"rootfs"},"linux":{"devices":[{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}]}}"#;
    let rewritten = Command::new(hook).args(["precreate", "--config", config]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    rewritten.stdin.as_ref().unwrap().write_all(raw.as_bytes()).unwrap();
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), rewritten.wait_with_output().unwrap().stdout).unwrap();
    let state = serde_json::json!({"ociVersion": "1.0.2", "id": "bench0000000000", "status": "creating", "pid": std::process::id(), "bundle": bundle}).to_string();
    (bundle, state)
}

/// Sleeping children, killed and reaped on drop.
struct Sleepers(Vec<std::process::Child>);

impl Sleepers {
    fn spawn(n: usize) -> Sleepers {
        Sleepers((0..n).map(|_| Command::new("sleep").arg("3600").spawn().unwrap()).collect())
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process's start time (field 22 of /proc/PID/stat), as the ledger records it.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn admit_release(cli: &str, hook: &str) {
    let state_dir = StateDir::new();
    let dir = state_dir.path();
    println!("(ledger on {}, a {} file system)", dir.display(), fs_type(dir));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n{}[budget]\nreserves = {{}}\n[profiles.tiny]\nthreads = 1\npinned_memory = \"16MiB\"\n", state.display(), mps_section(dir))).unwrap();
    let _daemon = Daemon::start(cli, &config);
    // 40 live reservations, each with a first process of its own (a process is the first
    // process of one container only): a sleeping child stands for each container.
    let holders = Sleepers::spawn(40);
    let reservations: Vec<serde_json::Value> = holders
        .0
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"id": format!("held{i:02}00000000000000"), "profile": "tiny", "gpus": ["GPU-b1d7e4a0-4070-4c00-9e12-0000000a4070"],
            "threads": 1, "pinned_bytes": 16u64 << 20, "pid": c.id(), "pid_start": start_time(c.id()), "admitted_at": 0}))
        .collect();
    std::fs::write(state.join("ledger.json"), serde_json::json!({"version": 1, "reservations": reservations}).to_string()).unwrap();
    let c = config.to_str().unwrap();
    let (bundle, state_json) = tiny_bundle(hook, c, dir);
    compare(
        "gpuwarden-hook admit + release (ledger of 40)",
        500,
        50,
        || run(hook, &["admit", "--config", c], state_json.as_bytes()) + run(hook, &["release", "--config", c], state_json.as_bytes()),
        || run("/bin/true", &[], b"") + run("/bin/true", &[], b""),
        "/bin/true twice",
    );
    let left: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.join("ledger.json")).unwrap()).unwrap();
    assert_eq!(left["reservations"].as_array().unwrap().len(), 40, "every admission was released");

    // The rootless path: the same admission and release through the broker (forced with
    // --via-broker; under rootless Podman the hook takes it by itself), against the direct one.
    let socket = dir.join("broker.sock");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}[broker]\nsocket = \"{}\"\n", socket.display())).unwrap();
    let mut broker = Command::new(hook).args(["broker", "--config", c]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    compare(
        "admit + release through the broker (ledger of 40)",
        500,
        50,
        || run(hook, &["admit", "--config", c, "--via-broker"], state_json.as_bytes()) + run(hook, &["release", "--config", c, "--via-broker"], state_json.as_bytes()),
        || run(hook, &["admit", "--config", c], state_json.as_bytes()) + run(hook, &["release", "--config", c], state_json.as_bytes()),
        "admit + release, direct",
    );
    let _ = (broker.kill(), broker.wait());
    let left: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.join("ledger.json")).unwrap()).unwrap();
    assert_eq!(left["reservations"].as_array().unwrap().len(), 40, "every admission through the broker was released");
    queue_start(hook, &config, &state, &bundle);
}

/// The render queue: how long after a share frees a waiting container is
/// admitted. A `whole` profile takes all 12 GiB; one container holds it, a
/// second waits (GPUWARDEN_WAIT), the first is released, and the time from
/// the release's end to the waiting hook's exit is taken, 30 times.
fn queue_start(hook: &str, config: &Path, state: &Path, bundle: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{text}[profiles.whole]\nthreads = 100\npinned_memory = \"12GiB\"\n")).unwrap();
    std::fs::write(state.join("ledger.json"), serde_json::json!({"version": 1, "reservations": []}).to_string()).unwrap();
    let c = config.to_str().unwrap();
    let raw = r#"{"process":{"env":["GPUWARDEN_PROFILE=whole","GPUWARDEN_WAIT=30s"]},"root":{"path":"rootfs"},"linux":{"devices":[{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}]}}"#;
    let out = Command::new(hook).args(["precreate", "--config", c]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(raw.as_bytes()).unwrap();
    std::fs::write(bundle.join("config.json"), out.wait_with_output().unwrap().stdout).unwrap();
    // Container k's first process is sleeper k (one container each).
    let firsts = Sleepers::spawn(31);
    let state_of = |id: &str, k: usize| serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": firsts.0[k].id(), "bundle": bundle}).to_string();
    let ledger = || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(state.join("ledger.json")).unwrap()).unwrap() };
    let mut took = Vec::new();
    let mut holder = "whole0000000000a".to_string();
    for i in 0..30 {
        assert!(Command::new(hook).args(["admit", "--config", c]).stdin_bytes(state_of(&holder, i)).success(), "the holder is admitted");
        let next = format!("whole{i:010}b");
        let mut waiting = Command::new(hook).args(["admit", "--config", c]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        waiting.stdin.take().unwrap().write_all(state_of(&next, i + 1).as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ledger()["queue"].as_array().is_none_or(|q| q.is_empty()) {
            assert!(Instant::now() < deadline, "the second never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Command::new(hook).args(["release", "--config", c]).stdin_bytes(state_of(&holder, i)).success());
        let freed = Instant::now();
        assert!(waiting.wait().unwrap().success(), "the waiting one is admitted");
        took.push(freed.elapsed());
        holder = next;
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "render queue: admitted after its share freed in {:.0} ms median, {:.0} ms at most ({} runs; the hook looks every {} ms)",
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1]),
        took.len(),
        gpuwarden::admission::waiter::POLL.as_millis()
    );
}

trait StdinBytes {
    fn stdin_bytes(&mut self, input: String) -> std::process::ExitStatus;
}

impl StdinBytes for Command {
    /// Runs with `input` on stdin, and waits.
    fn stdin_bytes(&mut self, input: String) -> std::process::ExitStatus {
        use std::io::Write;
        let mut child = self.stdin(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait().unwrap()
    }
}

fn podman_life(cli: &str, hook: &str) {
    let (root, dev) = driver_fixture();
    let state_dir = StateDir::new();
    let dir = state_dir.path();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n{}", dir.join("state").display(), mps_section(dir))).unwrap();
    let c = config.to_str().unwrap();
    let _daemon = Daemon::start(cli, &config);
    let (r, d) = (root.to_str().unwrap(), dev.to_str().unwrap());
    // Two specs: gpuwarden's hooks, and the same hooks as /bin/true.
    let specs = ["/var/run/cdi/gpuwarden-bench.yaml", "/var/run/cdi/gpuwarden-bench-trivial.yaml"];
    run(cli, &["--config", c, "cdi", "generate", "--driver-root", r, "--dev-root", d, "--class", "gwbench", "--hook-path", hook, "--output", specs[0]], b"");
    run(cli, &["--config", c, "cdi", "generate", "--driver-root", r, "--dev-root", d, "--class", "gwtrivial", "--hook-path", "/bin/true", "--output", specs[1]], b"");
    let (with, trivial) = (dir.join("hooks.d"), dir.join("trivial.d"));
    std::fs::create_dir_all(&trivial).unwrap();
    std::fs::write(trivial.join("cat.json"), r#"{"version":"1.0.0","hook":{"path":"/bin/cat","args":["cat"]},"when":{"always":true},"stages":["precreate"]}"#).unwrap();
    run(cli, &["--config", c, "podman", "install-hook", "--hooks-dir", with.to_str().unwrap(), "--hook-path", hook], b"");
    let image = busybox_image();

    // The config Podman hands precreate (captured by a precreate hook that copies it).
    let tee = dir.join("tee.d");
    std::fs::create_dir_all(&tee).unwrap();
    let captured = dir.join("podman-config.json");
    std::fs::write(tee.join("tee.json"), serde_json::json!({"version": "1.0.0", "hook": {"path": "/bin/sh", "args": ["sh", "-c", format!("tee {}", captured.display())]}, "when": {"always": true}, "stages": ["precreate"]}).to_string()).unwrap();
    let mut a = vec!["--hooks-dir", tee.to_str().unwrap()];
    a.extend(PODMAN_RUN);
    a.extend(["--rm", "--device", "nvidia.com/gwtrivial=comfyui", &image, "sh", "-c", "true"]);
    run("podman", &a, b"");
    let config_json = std::fs::read(&captured).unwrap();
    compare(
        &format!("gpuwarden-hook precreate on Podman's config ({} KB)", config_json.len() / 1024),
        500,
        50,
        || run(hook, &["precreate", "--config", c], &config_json),
        || run("/bin/cat", &[], &config_json),
        "/bin/cat, same input",
    );

    image_loader(hook, c, &config_json);

    let rounds = 200;
    let (g, t) = alternating_lives(rounds, (&with, "nvidia.com/gwbench=comfyui"), (&trivial, "nvidia.com/gwtrivial=comfyui"), &image);
    println!("podman run -d, then podman rm -f: {rounds} lives each, alternating; gpuwarden's hooks against /bin/cat, /bin/true, /bin/true");
    type Part = fn(&(Duration, Duration)) -> Duration;
    let parts: [(&str, Part); 3] =
        [("start (precreate, admit)", |x| x.0), ("removal (release)", |x| x.1), ("whole life (three hooks)", |x| x.0 + x.1)];
    for (what, part) in parts {
        let (a, b): (Vec<Duration>, Vec<Duration>) = (g.iter().map(part).collect(), t.iter().map(part).collect());
        let (d, lo, hi) = paired_difference(&a, &b);
        let (sa, sb) = (stats(a), stats(b));
        println!(
            "  {what:<26} gpuwarden median {:>10}  trivial hooks {:>10}  gpuwarden's own part (median of paired differences) {d:+.2} ms, 95% interval {lo:+.2} to {hi:+.2} ms",
            ms(sa.median),
            ms(sb.median)
        );
    }
    for s in specs {
        let _ = std::fs::remove_file(s);
    }
}

/// The look at the image's loader that precreate makes for a GPU container:
/// its cost in process, then precreate on Podman's config with `root.path` at a
/// Debian root (this host's: the libraries stay), at the lib64 image's (they
/// move), and at no root at all (the look ends at its first open), alternating.
fn image_loader(hook: &str, config: &str, podman_config: &[u8]) {
    let images = repo().join("target/fixtures/loader-images");
    assert!(Command::new(repo().join("scripts/loader-images.sh")).arg(&images).status().unwrap().success(), "scripts/loader-images.sh");
    let lib64 = images.join("lib64");
    for (what, root) in [("Debian's (this host's /)", Path::new("/")), ("the lib64 image's", lib64.as_path())] {
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(gpuwarden::host::loader::look(std::hint::black_box(root)));
        }
        println!("loader::look on {what} root, in process: {:.1} us each ({n} looks) -> {:?}", t.elapsed().as_secs_f64() * 1e6 / n as f64, gpuwarden::host::loader::look(root));
    }
    let at = |root: &Path| {
        let mut v: serde_json::Value = serde_json::from_slice(podman_config).unwrap();
        v["root"]["path"] = root.display().to_string().into();
        serde_json::to_vec(&v).unwrap()
    };
    let (debian, moved, none) = (at(Path::new("/")), at(&lib64), at(Path::new("/nonexistent-root")));
    let args = ["precreate", "--config", config];
    compare("precreate, Debian root (look, libraries kept)", 500, 50, || run(hook, &args, &debian), || run(hook, &args, &none), "precreate, no root (look ends at open)");
    compare("precreate, lib64 root (look, libraries moved)", 500, 50, || run(hook, &args, &moved), || run(hook, &args, &none), "precreate, no root (look ends at open)");
}

fn busybox_image() -> String {
    let image = "localhost/gpuwarden-bench-busybox:latest";
    if !Command::new("podman").args(["image", "exists", image]).status().unwrap().success() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join(applet)).unwrap();
        }
        let tar = dir.path().join("bb.tar");
        assert!(Command::new("tar").arg("-C").arg(dir.path().join("rootfs")).args(["-cf", tar.to_str().unwrap(), "."]).status().unwrap().success());
        run("podman", &["import", tar.to_str().unwrap(), image], b"");
    }
    image.to_string()
}

/// The type of the file system holding `path`, as `stat -f` names it.
fn fs_type(path: &Path) -> String {
    let o = Command::new("stat").args(["-f", "-c", "%T"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Another build's binaries (`before`, a `target/dist`) against today's, alternating.
fn before_and_now(cli: &str, hook: &str, before: &Path) {
    let (b_cli, b_hook) = (before.join("gpuwarden"), before.join("gpuwarden-hook"));
    let (b_cli, b_hook) = (b_cli.to_str().unwrap(), b_hook.to_str().unwrap());
    println!("GPUWARDEN_BENCH_BEFORE={} against today's target/dist, alternating", before.display());
    compare("gpuwarden-hook --version: today's", 1000, 100, || run(hook, &["--version"], b""), || run(b_hook, &["--version"], b""), "the build before");

    let (root, dev) = driver_fixture();
    let state_dir = StateDir::new();
    let dir = state_dir.path();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n{}[budget]\nreserves = {{}}\n[profiles.tiny]\nthreads = 1\npinned_memory = \"16MiB\"\n", dir.join("state").display(), mps_section(dir))).unwrap();
    let c = config.to_str().unwrap();
    let _daemon = Daemon::start(cli, &config);

    // admit + release, each build on the same ledger (empty between rounds).
    let (_bundle, state_json) = tiny_bundle(hook, c, dir);
    let pair = |h: &str| run(h, &["admit", "--config", c], state_json.as_bytes()) + run(h, &["release", "--config", c], state_json.as_bytes());
    compare("gpuwarden-hook admit + release: today's", 500, 50, || pair(hook), || pair(b_hook), "the build before");

    // A profile container's life in Podman: each build's spec (its own CDI class) and precreate hook.
    let (r, d) = (root.to_str().unwrap(), dev.to_str().unwrap());
    let specs = ["/var/run/cdi/gpuwarden-bench-now.yaml", "/var/run/cdi/gpuwarden-bench-before.yaml"];
    let (now_d, before_d) = (dir.join("now.d"), dir.join("before.d"));
    for (bin, class, spec, hooks) in [(cli, "gwnow", specs[0], &now_d), (b_cli, "gwbefore", specs[1], &before_d)] {
        let h = Path::new(bin).with_file_name("gpuwarden-hook");
        let h = h.to_str().unwrap();
        run(bin, &["--config", c, "cdi", "generate", "--driver-root", r, "--dev-root", d, "--class", class, "--hook-path", h, "--output", spec], b"");
        run(bin, &["--config", c, "podman", "install-hook", "--hooks-dir", hooks.to_str().unwrap(), "--hook-path", h], b"");
    }
    let image = busybox_image();
    let rounds = 100;
    let (a, b) = alternating_lives(rounds, (&now_d, "nvidia.com/gwnow=comfyui"), (&before_d, "nvidia.com/gwbefore=comfyui"), &image);
    let whole = |lives: Vec<(Duration, Duration)>| -> Vec<Duration> { lives.into_iter().map(|(start, removal)| start + removal).collect() };
    let (a, b) = (whole(a), whole(b));
    let (d, lo, hi) = paired_difference(&a, &b);
    let (sa, sb) = (stats(a), stats(b));
    println!(
        "podman run -d + rm -f of a comfyui container, {rounds} lives each: today's {}  the build before {}  ratio {:.3}x; paired difference {d:+.2} ms, 95% interval {lo:+.2} to {hi:+.2} ms",
        ms(sa.median),
        ms(sb.median),
        sa.median.as_secs_f64() / sb.median.as_secs_f64()
    );
    for s in specs {
        let _ = std::fs::remove_file(s);
    }
}

/// How every bench container is run: runc, no network, the profile's ulimits, a read-only root.
const PODMAN_RUN: [&str; 10] = ["--runtime", "runc", "run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--read-only"];

/// `rounds` lives of a container with `a`'s hooks and device alternating with
/// `b`'s (5 more of each first, not counted); each life is `podman run -d`
/// (precreate, admit) then `podman rm -f` (release): (start, removal).
#[allow(clippy::type_complexity)]
fn alternating_lives(rounds: usize, a: (&Path, &str), b: (&Path, &str), image: &str) -> (Vec<(Duration, Duration)>, Vec<(Duration, Duration)>) {
    let mut n = 0;
    let mut life = |hooks: &Path, device: &str| -> (Duration, Duration) {
        n += 1;
        let name = format!("gwbench-{}-{n}", std::process::id());
        let h = hooks.to_str().unwrap();
        let mut args = vec!["--hooks-dir", h];
        args.extend(PODMAN_RUN);
        args.extend(["-d", "--name", &name, "--device", device, image, "sleep", "600"]);
        let start = run("podman", &args, b"");
        let t = Instant::now();
        run("podman", &["--hooks-dir", h, "rm", "-f", "-t", "0", &name], b"");
        (start, t.elapsed())
    };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..rounds + 5 {
        let (x, y) = (life(a.0, a.1), life(b.0, b.1));
        if i >= 5 {
            xs.push(x);
            ys.push(y);
        }
    }
    (xs, ys)
}

/// `cargo bench --bench hooks -- [exec] [admit] [podman]`: the sections named, or all.
fn main() {
    let (cli, hook): (PathBuf, PathBuf) = dist_bins();
    let launcher = hook.with_file_name("gpuwarden-launch");
    let (cli, hook) = (cli.to_str().unwrap(), hook.to_str().unwrap());
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runs = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    if let Ok(before) = std::env::var("GPUWARDEN_BENCH_BEFORE") {
        assert!(is_root(), "the before section needs root (a tmpfs, rootful Podman)");
        return before_and_now(cli, hook, Path::new(&before));
    }
    if runs("exec") {
        exec_cost(hook, launcher.to_str().unwrap());
    }
    if !is_root() {
        println!("SKIPPED admit/release and podman: the tmpfs, mknod and rootful Podman need root");
        return;
    }
    if runs("admit") {
        admit_release(cli, hook);
    }
    if runs("podman") {
        podman_life(cli, hook);
    }
}
