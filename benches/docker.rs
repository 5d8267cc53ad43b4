//! `docker run` through gpuwarden's runtime shim against plain runc, in one
//! run, each alternating with its baseline on Docker 20.10 (a dockerd of its
//! own, as in tests/docker.rs), with the binaries `scripts/build.sh` installs:
//! - a container without a GPU request (`--runtime gpuwarden` against
//!   `--runtime runc`): what the shim adds to every container it sees, with
//!   the runtime registered as the README says, and with runtimeArgs (which
//!   makes Docker 20.10 run it through a shell script);
//! - a ComfyUI-profile container (`-e NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui`:
//!   CDI injection, the profile rewrite, admission and release hooks, the
//!   launcher) against the same container under plain runc without a GPU;
//! - the shim's own exec (`gpuwarden-runtime ... --version`) against `runc --version`.
//!
//! Needs root.  `cargo bench --bench docker`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{comfyui_standin, Dockerd, Gpu, STANDIN};

fn timed(d: &Dockerd, args: &[&str]) -> Duration {
    let start = Instant::now();
    let o = d.docker(args);
    let took = start.elapsed();
    assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    took
}

fn main() {
    if !support::is_root() {
        eprintln!("=== SKIPPED docker bench: dockerd needs root ===");
        return;
    }
    let n: usize = std::env::var("GPUWARDEN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let gpu = Gpu::new();
    let d = Dockerd::start("bench", std::path::Path::new("/usr/sbin/dockerd"), std::path::Path::new("/usr/bin/docker"), serde_json::json!({"runtimes": {"gpuwarden": gpu.runtime_plain(), "gpuwarden-args": gpu.runtime()}}), &gpu.dockerd_env(), None);
    comfyui_standin(&d);
    let d = &d;
    let plain = |runtime: &'static str| move || timed(d, &["run", "--rm", "--network", "none", "--runtime", runtime, "--entrypoint", "sh", STANDIN, "-c", "true"]);

    let no_gpu = paired("docker run, no GPU request: gpuwarden shim against runc", n, plain("gpuwarden"), plain("runc"));
    let with_args = paired("docker run, no GPU request: gpuwarden shim registered with runtimeArgs against runc", n, plain("gpuwarden-args"), plain("runc"));
    let profile = || timed(d, &["run", "--rm", "--network", "none", "--runtime", "gpuwarden", "-e", "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui", "--entrypoint", "sh", STANDIN, "-c", "true"]);
    let with_gpu = paired("docker run, comfyui profile through the shim against runc without a GPU", n, profile, plain("runc"));

    let shim = common::dist("gpuwarden-runtime");
    let exec = |program: std::path::PathBuf, args: Vec<&'static str>| {
        move || {
            let start = Instant::now();
            let st = Command::new(&program).args(&args).stdout(std::process::Stdio::null()).status().unwrap();
            assert!(st.success());
            start.elapsed()
        }
    };
    support::compare("gpuwarden-runtime --gpuwarden-runtime runc --version", 500, 20, exec(shim, vec!["--gpuwarden-runtime", "/usr/sbin/runc", "--version"]), exec("/usr/sbin/runc".into(), vec!["--version"]), "runc --version");

    println!("added to docker run by the shim: {no_gpu} without a GPU request (aim: under 3%); {with_args} when registered with runtimeArgs (Docker's shell wrapper); {with_gpu} for a profile container (all of gpuwarden's work)");
}

/// Runs both alternately `n` times (after 5 warm-up rounds); prints medians and
/// the median of the paired differences with its 95% bootstrap interval, and
/// returns that difference as a share of the baseline's median.
fn paired(title: &str, n: usize, mut subject: impl FnMut() -> Duration, mut baseline: impl FnMut() -> Duration) -> String {
    for _ in 0..5 {
        subject();
        baseline();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(subject());
        b.push(baseline());
    }
    let (d, lo, hi) = support::paired_difference(&a, &b);
    let (sa, sb) = (support::stats(a), support::stats(b));
    let base = sb.median.as_secs_f64() * 1000.0;
    println!("{title}: {n} runs each, alternating");
    println!("  medians {} against {}; paired difference {d:+.2} ms (95% interval {lo:+.2} to {hi:+.2} ms)", support::ms(sa.median), support::ms(sb.median));
    let share = format!("{:+.1}% (95% interval {:+.1}% to {:+.1}%)", d / base * 100.0, lo / base * 100.0, hi / base * 100.0);
    println!("  added: {share}");
    share
}
