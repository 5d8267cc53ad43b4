//! Timing helpers for the benchmarks: run commands alternately with their
//! baseline, so both see the same machine, and report medians and ratios.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/support/bins.rs"]
mod bins;
#[allow(unused_imports)]
pub use bins::{bin, hook_bin};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `program args` with `stdin`, output discarded; panics on failure.
pub fn run(program: &str, args: &[&str], stdin: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

pub struct Stats {
    pub median: Duration,
    pub p10: Duration,
    pub p90: Duration,
}

pub fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p10: at(0.1), p90: at(0.9) }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `subject` and `baseline` alternately `n` times (after `warm` warm-up
/// rounds) and prints both and their ratio.
pub fn compare(title: &str, n: usize, warm: usize, mut subject: impl FnMut() -> Duration, mut baseline: impl FnMut() -> Duration, baseline_name: &str) -> (Stats, Stats) {
    for _ in 0..warm {
        subject();
        baseline();
    }
    let (mut s, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        s.push(subject());
        b.push(baseline());
    }
    let (s, b) = (stats(s), stats(b));
    println!("{title}: {n} runs each, alternating");
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", title, ms(s.median), ms(s.p10), ms(s.p90));
    println!("  {:<44} median {:>10}  p10 {:>10}  p90 {:>10}", baseline_name, ms(b.median), ms(b.p10), ms(b.p90));
    println!(
        "  ratio of medians: {:.2}x; difference {}",
        s.median.as_secs_f64() / b.median.as_secs_f64(),
        ms(s.median.saturating_sub(b.median))
    );
    (s, b)
}

/// The real-package driver root (scripts/driver-root.sh; needs root).
pub fn driver_fixture() -> (PathBuf, PathBuf) {
    let out = repo().join("target/fixtures/driver-535.261.03");
    let st = Command::new(repo().join("scripts/driver-root.sh")).arg(&out).status().unwrap();
    assert!(st.success(), "scripts/driver-root.sh failed");
    // The dev root holds dev/, as nvidia-ctk's --dev-root does.
    (out.join("root"), out)
}

/// The binaries `scripts/build.sh` makes for installing (the static hook
/// among them), built first if needed.
pub fn dist_bins() -> (PathBuf, PathBuf) {
    let st = Command::new(repo().join("scripts/build.sh")).status().unwrap();
    assert!(st.success(), "scripts/build.sh failed");
    (repo().join("target/dist/gpuwarden"), repo().join("target/dist/gpuwarden-hook"))
}

/// The median of the paired differences `a[i] - b[i]` in milliseconds, with a
/// 95% bootstrap interval: pairing takes out the machine's drift between rounds.
pub fn paired_difference(a: &[Duration], b: &[Duration]) -> (f64, f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x.as_secs_f64() - y.as_secs_f64()) * 1000.0).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            let mut sample: Vec<f64> = (0..d.len()).map(|_| d[(next() % d.len() as u64) as usize]).collect();
            median(&mut sample)
        })
        .collect();
    medians.sort_by(|x, y| x.total_cmp(y));
    (median(&mut d.clone()), medians[50], medians[1949])
}
