//! Hostile YAML in a spec folder (anyone who can write /etc/cdi can hand
//! gpuwarden a file): malformed, deeply nested, a billion laughs of aliases,
//! and 50 MB. `cdi list` and `cdi validate` each say one clear line per bad
//! file and go on, with no panic, no hang and no memory blow-up. One test in
//! its own binary, so the peak RSS of its children is theirs alone.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the CLI with `args`, killing it if it has not finished in 60 s.
fn run(args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let child = Command::new(bin()).args(args).env_remove("GPUWARDEN_CONFIG").env_remove("GPUWARDEN_CDI_SPEC_DIRS").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as i32;
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    });
    let o = child.wait_with_output().unwrap();
    drop(guard);
    assert!(o.status.code().is_some(), "{args:?} was killed: it hung or crashed: {}", stderr(&o));
    (o, start.elapsed())
}

/// The largest resident set of any child waited for so far, in KiB.
fn children_peak_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

#[test]
fn hostile_specs_get_one_line_each_with_no_panic_hang_or_blow_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = "cdiVersion: \"0.5.0\"\nkind: example.com/gpu\ndevices:\n  - name: \"0\"\n    containerEdits:\n      env: [\"A=1\"]\n";
    std::fs::write(d.join("good.yaml"), good).unwrap();
    std::fs::write(d.join("malformed.yaml"), "cdiVersion: \"0.5.0\"\nkind: [unclosed\ndevices: }\n").unwrap();
    std::fs::write(d.join("deep.yaml"), format!("cdiVersion: \"0.5.0\"\nkind: a.com/b\ndevices: {}{}\n", "[".repeat(200_000), "]".repeat(200_000))).unwrap();
    let mut laughs = String::from("cdiVersion: \"0.5.0\"\nkind: a.com/b\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..15 {
        laughs.push_str(&format!("x{i}: &x{i} [{}]\n", vec![format!("*x{}", i - 1); 10].join(", ")));
    }
    laughs.push_str("devices: *x14\n");
    std::fs::write(d.join("laughs.yaml"), laughs).unwrap();
    let mut huge = String::from("cdiVersion: \"0.5.0\"\nkind: a.com/b\ncontainerEdits:\n  env:\n");
    while huge.len() < 50 << 20 {
        huge.push_str("    - \"PADDING=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n");
    }
    huge.push_str("devices:\n  - name: big\n    containerEdits:\n      env: [\"A=1\"]\n");
    std::fs::write(d.join("huge.yaml"), huge).unwrap();
    let bad = ["malformed.yaml", "deep.yaml", "laughs.yaml", "huge.yaml"];

    // cdi list: the good spec's device is listed; each bad file is named once, on one line.
    let (o, took) = run(&["cdi", "list", "--cdi-dir", d.to_str().unwrap()]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("example.com/gpu=0"), "{out}\n{err}");
    for file in bad {
        let lines: Vec<&str> = err.lines().chain(out.lines()).filter(|l| l.contains(file)).collect();
        assert_eq!(lines.len(), 1, "{file}: {lines:?}\n{out}\n{err}");
    }
    assert!(err.lines().chain(out.lines()).any(|l| l.contains("huge.yaml") && l.contains("50.0 MiB, more than the 8 MiB a CDI spec may be here")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    println!("cdi list over the four hostile files: {took:?}, children's peak RSS {} KiB", children_peak_kib());

    // cdi validate: one finding line per bad file, exit 1, the good one clean.
    for file in bad {
        let path = d.join(file);
        let (o, took) = run(&["cdi", "validate", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stderr(&o));
        let text = format!("{}{}", stdout(&o), stderr(&o));
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(file)).collect();
        assert_eq!(lines.len(), 1, "{file}: {text}");
        assert!(lines[0].contains("error"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
        println!("cdi validate {file}: {took:?}: {}", lines[0]);
    }
    let (o, _) = run(&["cdi", "validate", d.join("good.yaml").to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let peak = children_peak_kib();
    println!("peak RSS of every cdi list and cdi validate above: {peak} KiB");
    assert!(peak < 256 * 1024, "a hostile spec blew memory up: {peak} KiB");
}
