//! The admission hooks: `hook admit` + `hook release` with a ledger of 40
//! entries against two runs of `/bin/true`, and `podman run` with a profile
//! device (precreate, admit, release) against the same `podman run` with the
//! same device nodes and libraries and no gpuwarden hooks.  `cargo bench --bench hooks`

#[path = "support/mod.rs"]
mod support;
use support::*;

use std::process::Command;

fn hooks_alone() {
    let dir = tempfile::Builder::new().prefix("gpuwarden-bench").tempdir_in("/run").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[budget]\nreserves = {{}}\n[profiles.tiny]\nthreads = 1\npinned_memory = \"16MiB\"\n", state.display())).unwrap();
    let me = std::process::id();
    let start = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start: u64 = start[start.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    // 40 live reservations (this process stands for their containers).
    let reservations: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"id": format!("held{i:02}00000000000000"), "profile": "tiny", "gpus": ["GPU-b1d7e4a0-4070-4c00-9e12-0000000a4070"],
            "threads": 1, "pinned_bytes": 16u64 << 20, "pid": me, "pid_start": start, "admitted_at": 0}))
        .collect();
    std::fs::write(state.join("ledger.json"), serde_json::json!({"version": 1, "reservations": reservations}).to_string()).unwrap();
    let raw = r#"{"process":{"env":["GPUWARDEN_PROFILE=tiny"]},"root":{"path":"rootfs"},"linux":{"devices":[{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}]}}"#;
    let c = config.to_str().unwrap();
    let out = Command::new(hook_bin()).args(["precreate", "--config", c]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(raw.as_bytes()).unwrap();
    let rewritten = out.wait_with_output().unwrap().stdout;
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), rewritten).unwrap();
    let state_json = serde_json::json!({"ociVersion": "1.0.2", "id": "bench0000000000", "status": "creating", "pid": me, "bundle": bundle}).to_string();
    compare(
        "gpuwarden hook admit + hook release (ledger of 40)",
        300,
        20,
        || run(hook_bin(), &["admit", "--config", c], state_json.as_bytes()) + run(hook_bin(), &["release", "--config", c], state_json.as_bytes()),
        || run("/bin/true", &[], b"") + run("/bin/true", &[], b""),
        "/bin/true twice",
    );
    let left: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.join("ledger.json")).unwrap()).unwrap();
    assert_eq!(left["reservations"].as_array().unwrap().len(), 40, "every admission was released");
}

fn podman_start() {
    if !is_root() {
        println!("SKIPPED podman run comparison: rootful Podman needs root");
        return;
    }
    let (root, dev) = driver_fixture();
    // The ledger where it lives by default (/run), with that folder's file system.
    let base = std::env::var("GPUWARDEN_BENCH_STATE").unwrap_or_else(|_| "/run".into());
    let dir = tempfile::Builder::new().prefix("gpuwarden-bench").tempdir_in(&base).unwrap();
    println!("(ledger in {}, a {} file system)", dir.path().display(), fs_type(dir.path()));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n", dir.path().join("state").display())).unwrap();
    let c = config.to_str().unwrap();
    let (r, d) = (root.to_str().unwrap(), dev.to_str().unwrap());
    // Two specs: gpuwarden's hooks, and the same hooks with /bin/true (what Podman and runc cost by themselves).
    let specs = ["/var/run/cdi/gpuwarden-bench.yaml", "/var/run/cdi/gpuwarden-bench-trivial.yaml"];
    run(bin(), &["--config", c, "cdi", "generate", "--driver-root", r, "--dev-root", d, "--class", "gwbench", "--output", specs[0]], b"");
    run(bin(), &["--config", c, "cdi", "generate", "--driver-root", r, "--dev-root", d, "--class", "gwtrivial", "--hook-path", "/bin/true", "--output", specs[1]], b"");
    let (with, trivial, without) = (dir.path().join("hooks.d"), dir.path().join("trivial.d"), dir.path().join("empty.d"));
    std::fs::create_dir_all(&trivial).unwrap();
    std::fs::create_dir_all(&without).unwrap();
    std::fs::write(trivial.join("cat.json"), r#"{"version":"1.0.0","hook":{"path":"/bin/cat","args":["cat"]},"when":{"always":true},"stages":["precreate"]}"#).unwrap();
    run(bin(), &["--config", c, "podman", "install-hook", "--hooks-dir", with.to_str().unwrap()], b"");
    let image = "localhost/gpuwarden-bench-busybox:latest";
    if !Command::new("podman").args(["image", "exists", image]).status().unwrap().success() {
        let rootfs = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("sh")).unwrap();
        let tar = dir.path().join("bb.tar");
        assert!(Command::new("tar").arg("-C").arg(dir.path().join("rootfs")).args(["-cf", tar.to_str().unwrap(), "."]).status().unwrap().success());
        run("podman", &["import", tar.to_str().unwrap(), image], b"");
    }
    let common = ["--runtime", "runc", "run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--read-only"];
    let mut n = 0;
    // Start: `podman run -d` returns once the workload runs; stop and removal are not timed.
    let mut start = |hooks: &std::path::Path, device: &str| {
        n += 1;
        let name = format!("gwbench-{}-{n}", std::process::id());
        let mut a = vec!["--hooks-dir", hooks.to_str().unwrap()];
        a.extend(common);
        a.extend(["-d", "--name", &name, "--device", device, image, "sh", "-c", "true"]);
        let took = run("podman", &a, b"");
        run("podman", &["wait", &name], b"");
        run("podman", &["rm", &name], b"");
        took
    };
    let rounds = 40;
    let mut times: [Vec<std::time::Duration>; 3] = Default::default();
    for i in 0..rounds + 3 {
        let t = [start(&with, "nvidia.com/gwbench=comfyui"), start(&trivial, "nvidia.com/gwtrivial=comfyui"), start(&without, "nvidia.com/gwbench=0")];
        if i >= 3 {
            for (k, v) in t.into_iter().enumerate() {
                times[k].push(v);
            }
        }
    }
    let [g, t, b] = times.map(stats);
    println!("podman run -d (container start): {rounds} runs each, interleaved");
    for (label, s) in [("gpuwarden hooks (precreate, admit)", &g), ("same hooks as /bin/cat, /bin/true", &t), ("no hooks, same device nodes and libraries", &b)] {
        println!("  {label:<44} median {:>10}  p10 {:>10}  p90 {:>10}", ms(s.median), ms(s.p10), ms(s.p90));
    }
    let pct = |a: &Stats| (a.median.as_secs_f64() / b.median.as_secs_f64() - 1.0) * 100.0;
    println!("  added to a start: gpuwarden {:+.1}% ({}), of which Podman and runc running hooks {:+.1}%", pct(&g), ms(g.median.saturating_sub(b.median)), pct(&t));
    // The whole life of a container that exits at once, release (poststop) included.
    let full = |hooks: &std::path::Path, device: &str| {
        let mut a = vec!["--hooks-dir", hooks.to_str().unwrap()];
        a.extend(common);
        a.extend(["--rm", "--device", device, image, "sh", "-c", "true"]);
        run("podman", &a, b"")
    };
    compare(
        "podman run --rm (start to removal)",
        rounds,
        3,
        || full(&with, "nvidia.com/gwbench=comfyui"),
        || full(&without, "nvidia.com/gwbench=0"),
        "same run, no gpuwarden hooks",
    );
    for s in specs {
        let _ = std::fs::remove_file(s);
    }
}

/// The type of the file system holding `path`, as `stat -f` names it.
fn fs_type(path: &std::path::Path) -> String {
    let o = Command::new("stat").args(["-f", "-c", "%T"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn main() {
    hooks_alone();
    podman_start();
}
