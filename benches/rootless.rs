//! A rootless worker's start through the admission broker against the same
//! start on a plain device, in one run: the real user `gwrootless`
//! (scripts/setup.sh makes it) runs `podman run --rm` with Podman 4.3.1 and
//! runc, alternating `--device nvidia.com/gpu=comfyui` (precreate, admission
//! through the broker, the launcher, release through the broker) with
//! `--device nvidia.com/gpu=all` (the same spec's plain device: no admission,
//! no launcher), each running `true`. Both pass Podman's precreate hook, as
//! every container on the host does. `cargo bench --bench rootless [-- PAIRS]`
//!
//! With `GPUWARDEN_BENCH_BEFORE=DIR` (another build's `target/dist`), the
//! profile start with those binaries alternates with today's instead: two
//! worlds side by side, each with its own staging folder, spec (its own CDI
//! kind), broker and MPS daemon.

#[path = "support/mod.rs"]
mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const USER: &str = "gwrootless";
const IMAGE: &str = "localhost/gpuwarden-rootless-busybox:latest";
/// One world: its name (the spec's file and the staging folder), its CDI kind, the binaries it runs.
struct Setup<'a> {
    name: &'a str,
    vendor: &'a str,
    dist: PathBuf,
}
const NODES: &[(&str, u64, u64)] = &[("nvidia0", 195, 0), ("nvidiactl", 195, 255), ("nvidia-uvm", 511, 0), ("nvidia-uvm-tools", 511, 1), ("nvidia-modeset", 195, 254)];

/// What the bench set up, taken away on drop.
struct World {
    dir: PathBuf,
    spec: PathBuf,
    vendor: String,
    config: String,
    cli: String,
    broker: Option<Child>,
    made_nodes: Vec<PathBuf>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut b) = self.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = Command::new(&self.cli).args(["--config", &self.config, "mps", "stop"]).output();
        let _ = std::fs::remove_file(&self.spec);
        for n in &self.made_nodes {
            let _ = std::fs::remove_file(n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_user(script: &str) -> Output {
    Command::new("runuser").args(["-l", USER, "-c", script]).output().unwrap()
}

fn must(o: Output, what: &str) {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// The user's side reaches everything under a 0755 folder in /var/tmp (hard links of the binaries and the driver root).
fn set_up(s: &Setup) -> World {
    let (driver, _) = driver_fixture();
    let dir = PathBuf::from(format!("/var/tmp/gpuwarden-bench-{}-{}", s.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = PathBuf::from(format!("/var/run/cdi/gpuwarden-bench-{}.yaml", s.name));
    let mut world = World { dir: dir.clone(), spec: spec.clone(), vendor: s.vendor.to_string(), config: dir.join("config.toml").display().to_string(), cli: String::new(), broker: None, made_nodes: Vec::new() };
    for b in ["gpuwarden", "gpuwarden-hook", "gpuwarden-launch"] {
        std::fs::copy(s.dist.join(b), dir.join(b)).unwrap();
    }
    world.cli = dir.join("gpuwarden").display().to_string();
    must(Command::new("cp").arg("-al").arg(&driver).arg(dir.join("driver")).output().unwrap(), "cp -al the driver root");
    for (n, major, minor) in NODES {
        let p = Path::new("/dev").join(n);
        if !p.exists() {
            must(Command::new("mknod").args(["-m", "666"]).arg(&p).args(["c", &major.to_string(), &minor.to_string()]).output().unwrap(), "mknod");
            world.made_nodes.push(p);
        }
    }
    let d = dir.display();
    // Nothing reserved: twelve GiB, so no start ever waits for a share.
    std::fs::write(&world.config, format!(
        "inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n[broker]\nsocket = \"{d}/broker.sock\"\n[budget]\nreserves = {{}}\n"
    )).unwrap();
    let gw = |args: &[&str]| Command::new(&world.cli).arg("--config").arg(&world.config).args(args).env_remove("GPUWARDEN_CONFIG").output().unwrap();
    let (hook, launcher) = (format!("{d}/gpuwarden-hook"), format!("{d}/gpuwarden-launch"));
    must(gw(&["cdi", "generate", "--driver-root", &format!("{d}/driver"), "--dev-root", "/", "--output", spec.to_str().unwrap(), "--vendor", s.vendor, "--hook-path", &hook, "--launcher-path", &launcher, "--cdi-dir", &format!("{d}/no-other-specs")]), "cdi generate");
    must(gw(&["podman", "install-hook", "--hooks-dir", &format!("{d}/hooks.d"), "--hook-path", &hook, "--launcher-path", &launcher]), "install-hook");
    must(gw(&["mps", "start"]), "mps start");
    world.broker = Some(Command::new(&hook).args(["broker", "--config", &world.config]).env_remove("GPUWARDEN_CONFIG").stderr(std::process::Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(dir.join("broker.sock")).is_err() {
        assert!(Instant::now() < deadline, "the broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    must(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).output().unwrap(), "chmod");
    if !as_user(&format!("podman image exists {IMAGE}")).status.success() {
        let root = dir.join("image");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/true")).unwrap();
        let tar = dir.join("image.tar");
        must(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().unwrap(), "tar");
        must(Command::new("chmod").arg("644").arg(&tar).output().unwrap(), "chmod");
        must(as_user(&format!("podman import -q {} {IMAGE}", tar.display())), "podman import");
    }
    world
}

fn start(world: &World, device: &str) -> Duration {
    let hooks = world.dir.join("hooks.d");
    let script = format!("podman --runtime runc --hooks-dir {} run --rm --network none --device {}/gpu={device} {IMAGE} sh -c true", hooks.display(), world.vendor);
    let t = Instant::now();
    let o = as_user(&script);
    let took = t.elapsed();
    must(o, &format!("podman run --device nvidia.com/gpu={device} as {USER}"));
    took
}

fn main() {
    if !is_root() || nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        println!("SKIPPED: needs root and the user {USER} (scripts/setup.sh)");
        return;
    }
    let pairs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30);
    let (cli, _) = dist_bins();
    let now = Setup { name: "now", vendor: "nvidia.com", dist: cli.parent().unwrap().to_path_buf() };
    if let Ok(before) = std::env::var("GPUWARDEN_BENCH_BEFORE") {
        return before_and_now(&set_up(&Setup { name: "before", vendor: "before.example.com", dist: PathBuf::from(before) }), &set_up(&now), pairs);
    }
    let world = set_up(&now);
    for _ in 0..3 {
        start(&world, "comfyui");
        start(&world, "all");
    }
    let (mut profile, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        profile.push(start(&world, "comfyui"));
        plain.push(start(&world, "all"));
    }
    let (p, b) = (stats(profile.clone()), stats(plain.clone()));
    println!("rootless `podman run --rm` as {USER}, runc, {pairs} pairs, alternating");
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", "nvidia.com/gpu=comfyui (through the broker)", ms(p.median), ms(p.p10), ms(p.p90));
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", "nvidia.com/gpu=all (plain device)", ms(b.median), ms(b.p10), ms(b.p90));
    let (median, low, high) = paired_difference(&profile, &plain);
    println!("  ratio of medians: {:.3}x; paired difference: median {median:+.2} ms, 95% interval {low:+.2} to {high:+.2} ms", p.median.as_secs_f64() / b.median.as_secs_f64());
}

/// A profile start with another build's binaries against today's, alternating.
fn before_and_now(before: &World, now: &World, pairs: usize) {
    for _ in 0..3 {
        start(before, "comfyui");
        start(now, "comfyui");
    }
    let (mut b, mut n) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        b.push(start(before, "comfyui"));
        n.push(start(now, "comfyui"));
    }
    let (sb, sn) = (stats(b.clone()), stats(n.clone()));
    println!("rootless `podman run --rm --device .../gpu=comfyui` through the broker as {USER}, runc, {pairs} pairs, alternating");
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", "today's binaries", ms(sn.median), ms(sn.p10), ms(sn.p90));
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", "GPUWARDEN_BENCH_BEFORE's binaries", ms(sb.median), ms(sb.p10), ms(sb.p90));
    let (median, low, high) = paired_difference(&n, &b);
    println!("  ratio of medians: {:.3}x; paired difference: median {median:+.2} ms, 95% interval {low:+.2} to {high:+.2} ms", sn.median.as_secs_f64() / sb.median.as_secs_f64());
}
