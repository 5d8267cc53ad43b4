//! The watchdog's own cost with 16 admitted containers (real Podman
//! containers, a `tiny` profile so that 16 fit one RTX 4070) and 50 host GPU
//! processes (25 named like Steam's UI, 25 jobs it did not admit: each is
//! looked at in /proc, its ancestors, environment and cgroup), at the default
//! interval: CPU time of `gpuwarden watch` over a minute, as a share of one
//! core; and how long after the trigger (a container over its share in the
//! live view) Podman shows it paused. Needs root.  `cargo bench --bench watch`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "localhost/gpuwarden-test-busybox:latest";
const SPEC: &str = "/var/run/cdi/gpuwarden-bench-watch.yaml";
const N: usize = 16;
const HOST: usize = 50;

/// The host's GPU processes, killed when the bench ends, however it ends.
struct HostProcesses(Vec<(std::process::Child, &'static str)>);

impl Drop for HostProcesses {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, and cutime, cstime: the children it waited for (the MPS control
    // commands it runs to read the daemon's defaults back) count too.
    f[11..15].iter().map(|v| v.parse::<u64>().unwrap()).sum()
}

fn main() {
    if !is_root() {
        eprintln!("=== SKIPPED watch bench: rootful Podman needs root ===");
        return;
    }
    let seconds: u64 = std::env::var("GPUWARDEN_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let _lock = process_lock("podman-cdi");
    busybox_image(IMAGE, |_| {});
    let fixture = driver_fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let config = write(dir.path(), "config.toml", &format!(
        "inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n\
         [budget.reserves]\n[profiles.tiny]\nthreads = 5\npinned_memory = \"512MiB\"\n[profiles.tiny.landlock]\nread = [\"/\"]\nexec = [\"/bin\", \"/usr\"]\nwrite = [\"/tmp\"]\n[watch]\nstate_file = \"{d}/watch.json\"\nevents_file = \"{d}/events.jsonl\"\nover_share = {{ tiny = \"pause\" }}\n"));
    let gw = |args: &[&str]| gpuwarden(&[&["--config", config.as_str()], args].concat(), b"");
    let o = gw(&["cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", SPEC, "--class", "gwbenchwatch", "--launcher-path", dist("gpuwarden-launch").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hooks = dir.path().join("hooks.d");
    assert!(gw(&["podman", "install-hook", "--hooks-dir", hooks.to_str().unwrap(), "--launcher-path", dist("gpuwarden-launch").to_str().unwrap()]).status.success());
    assert!(gw(&["mps", "start"]).status.success());
    let h = hooks.display().to_string();
    let mut pids = Vec::new();
    let names: Vec<String> = (0..N).map(|i| format!("gwbenchwatch-{}-{i}", std::process::id())).collect();
    let _cleanup = Cleanup { names: names.clone(), config: config.clone() };
    for n in &names {
        let o = Command::new("podman").args(["--runtime", "runc", "--hooks-dir", &h, "run", "-d", "--name", n, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--device", "nvidia.com/gwbenchwatch=tiny", IMAGE, "sh", "-c", "sleep 900"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        pids.push(stdout(&Command::new("podman").args(["inspect", "--format", "{{.State.Pid}}", n]).output().unwrap()).trim().parse::<i32>().unwrap());
    }
    // 50 host processes on the GPU: the desktop's and jobs gpuwarden did not admit.
    let mut host = HostProcesses(Vec::new());
    for (name, n) in [("steamwebhelper", HOST / 2), ("hostjob", HOST / 2)] {
        let program = dir.path().join(name);
        std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
        for _ in 0..n {
            host.0.push((Command::new(&program).arg("900").spawn().unwrap(), name));
        }
    }
    let inventory = |over: Option<usize>| {
        let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"");
        let mut inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let containers = pids.iter().enumerate().map(|(i, p)| serde_json::json!({"pid": p, "name": "python3", "used_memory_bytes": if Some(i) == over { 700u64 << 20 } else { 400u64 << 20 }}));
        let others = host.0.iter().map(|(c, name)| serde_json::json!({"pid": c.id(), "name": name, "used_memory_bytes": 64u64 << 20}));
        inv["gpus"][0]["processes"] = containers.chain(others).collect();
        write(dir.path(), "inventory.json", &inv.to_string())
    };
    let file = inventory(None);
    for n in &names {
        let status = stdout(&Command::new("podman").args(["inspect", "--format", "{{.State.Status}}", n]).output().unwrap());
        assert_eq!(status.trim(), "running", "{n}");
    }
    let mut dog = Command::new(bin()).args(["--config", &config, "watch", "--inventory", &file]).env_remove("GPUWARDEN_CONFIG").spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (t0, c0) = (Instant::now(), cpu_ticks(dog.id()));
    std::thread::sleep(Duration::from_secs(seconds));
    let (t1, c1) = (Instant::now(), cpu_ticks(dog.id()));
    let hz = 100.0; // USER_HZ on Linux
    let share = (c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64() * 100.0;
    println!("gpuwarden watch, {N} containers and {HOST} host GPU processes, interval 2 s: {:.2} s of CPU in {:.0} s = {share:.2}% of one core (aim: under 1%)", (c1 - c0) as f64 / hz, (t1 - t0).as_secs_f64());
    // The trigger: container 0 goes over its share; how long until Podman shows it paused.
    let triggered = Instant::now();
    inventory(Some(0));
    while stdout(&Command::new("podman").args(["inspect", "--format", "{{.State.Status}}", &names[0]]).output().unwrap()).trim() != "paused" {
        assert!(triggered.elapsed() < Duration::from_secs(30), "not paused in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("paused {:.2} s after the trigger (interval 2 s)", triggered.elapsed().as_secs_f64());
    let _ = dog.kill();
    let _ = dog.wait();
}

/// Removes the containers, the MPS daemon and the spec, also when the bench fails.
struct Cleanup {
    names: Vec<String>,
    config: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("podman").args(["unpause", n]).output();
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", n]).output();
        }
        let _ = gpuwarden(&["--config", &self.config, "mps", "stop"], b"");
        let _ = std::fs::remove_file(SPEC);
    }
}
