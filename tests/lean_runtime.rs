//! Every binary gpuwarden installs runs as root: the hook binary and Docker's
//! runtime shim at every container start, the admin CLI as the watchdog
//! service. None links HTTP, TLS or async code. The CNCF
//! `container-device-interface` crate (whose JSON-schema validator brings
//! reqwest, rustls, aws-lc and tokio) is a dev-dependency only, for the test
//! that gpuwarden's own CDI checks agree with it. The Kubernetes device
//! plugin speaks gRPC to the kubelet: tonic, prost and tokio are its own,
//! in its binary alone. Checked on the dependency graph and on the linked
//! binaries themselves.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that are network, TLS or async machinery, or what pulls them in;
/// and the YAML crate its author archived.
const BANNED: &[&str] = &[
    "serde_yaml", "unsafe-libyaml",
    "container-device-interface", "jsonschema", "reqwest", "hyper", "hyper-util", "h2", "http", "tokio", "futures-util",
    "rustls", "aws-lc-rs", "aws-lc-sys", "openssl", "native-tls", "ring",
    "tonic", "prost", "tower", "tokio-stream",
];

fn normal_dependencies(package: &str) -> BTreeSet<String> {
    dependencies(package, "normal")
}

fn dependencies(package: &str, edges: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["tree", "--locked", "-p", package, "-e", edges, "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(o.status.success(), "cargo tree: {}", stderr(&o));
    stdout(&o).lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect()
}

#[test]
fn no_binary_depends_on_an_http_tls_or_async_crate() {
    for package in ["gpuwarden-hook", "gpuwarden-cli", "gpuwarden-launch"] {
        let tree = normal_dependencies(package);
        let found: Vec<&&str> = BANNED.iter().filter(|c| tree.contains(**c)).collect();
        assert!(found.is_empty(), "{package} depends on {found:?}");
        assert!(tree.len() > 5, "the tree of {package} was read: {tree:?}");
    }
    // The device plugin does (gRPC), so the check above can tell; its own crates, counted.
    let plugin = normal_dependencies("gpuwarden-device-plugin");
    assert!(["tonic", "prost", "tokio", "h2", "hyper"].iter().all(|c| plugin.contains(*c)), "{plugin:?}");
    let cli = normal_dependencies("gpuwarden-cli");
    let own: Vec<&String> = plugin.iter().filter(|c| !cli.contains(*c)).collect();
    eprintln!("gpuwarden-device-plugin links {} crates, {} of them beside the admin CLI's: {own:?}", plugin.len(), own.len());
    // The tests do (the CNCF crate, to compare with), so the check above can tell.
    let dev = dependencies("gpuwarden", "normal,dev");
    assert!(dev.contains("container-device-interface") && dev.contains("reqwest") && dev.contains("aws-lc-sys"), "{dev:?}");
}

#[test]
fn the_linked_binaries_hold_none_of_that_code() {
    for binary in [hook_bin().to_string(), bin().to_string(), dist("gpuwarden-runtime").display().to_string()] {
        let bytes = std::fs::read(&binary).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for needle in [&b"aws_lc"[..], b"reqwest::", b"hyper::", b"tokio::", b"rustls::", b"jsonschema", b"tonic::", b"prost::"] {
            assert!(!has(needle), "{binary} contains {}", String::from_utf8_lossy(needle));
        }
        assert!(has(b"serde_json"), "{binary} was read (it holds serde_json)");
    }
}

/// Whether the ELF file at `path` asks for a program interpreter (PT_INTERP),
/// that is, whether it is linked dynamically.
fn has_interpreter(path: &std::path::Path) -> bool {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..5], b"\x7fELF\x02", "{} is a 64-bit ELF", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| u32::from_le_bytes(b[phoff + i * size..phoff + i * size + 4].try_into().unwrap()) == 3)
}

#[test]
fn the_installed_hook_binary_is_static_and_holds_no_driver_loading_code() {
    // What gets installed is what scripts/build.sh makes (the README's commands run it).
    let (cli, hook) = (dist("gpuwarden"), dist("gpuwarden-hook"));
    assert!(!has_interpreter(&dist("gpuwarden-launch")), "the launcher runs in images without libc: it is static");
    assert!(has_interpreter(&cli), "the admin CLI loads NVML, so it is linked dynamically (and the check can tell)");
    for runtime_side in [&hook, &dist("gpuwarden-runtime")] {
        assert!(!has_interpreter(runtime_side), "{} is linked dynamically", runtime_side.display());
        let bytes = std::fs::read(runtime_side).unwrap();
        // NVML entry points are looked up by name when it is loaded; the shim's CDI
        // injection is gpuwarden's own, not the CNCF crate's (with its schema resolver).
        for needle in [&b"nvmlInit"[..], b"libloading", b"aws_lc", b"reqwest::", b"tokio::"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds {}", runtime_side.display(), String::from_utf8_lossy(needle));
        }
    }
    assert!(std::fs::read(&cli).unwrap().windows(8).any(|w| w == b"nvmlInit"), "the CLI loads NVML (and the check can tell)");
    let o = Command::new(&hook).arg("--version").output().unwrap();
    assert!(o.status.success() && stdout(&o).starts_with("gpuwarden-hook "), "{}", stdout(&o));
}
