//! The hook binary runs as root at every container start: it links no HTTP,
//! TLS or async code. The admin CLI links the CNCF `container-device-interface`
//! crate (and, through its JSON-schema resolver, all of that) for `cdi
//! validate`; the hooks must not. Checked on the dependency graph and on the
//! linked binaries themselves.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that are network, TLS or async machinery, or what pulls them in.
const BANNED: &[&str] = &[
    "container-device-interface", "jsonschema", "reqwest", "hyper", "hyper-util", "h2", "http", "tokio", "futures-util",
    "rustls", "aws-lc-rs", "aws-lc-sys", "openssl", "native-tls", "ring",
];

fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(o.status.success(), "cargo tree: {}", stderr(&o));
    stdout(&o).lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect()
}

#[test]
fn the_hook_binary_depends_on_no_http_tls_or_async_crate() {
    let hook = normal_dependencies("gpuwarden-hook");
    let found: Vec<&&str> = BANNED.iter().filter(|c| hook.contains(**c)).collect();
    assert!(found.is_empty(), "gpuwarden-hook depends on {found:?}");
    assert!(hook.contains("gpuwarden") && hook.contains("serde_json"), "the tree was read: {hook:?}");
    // The admin CLI does, so the check above can tell.
    let cli = normal_dependencies("gpuwarden-cli");
    assert!(cli.contains("container-device-interface") && cli.contains("aws-lc-sys"), "{cli:?}");
}

#[test]
fn the_linked_hook_binary_holds_none_of_that_code() {
    let has = |path: &str, needle: &[u8]| std::fs::read(path).unwrap().windows(needle.len()).any(|w| w == needle);
    for needle in [&b"aws_lc"[..], b"reqwest::", b"hyper::", b"tokio::", b"rustls::"] {
        assert!(!has(hook_bin(), needle), "{} contains {}", hook_bin(), String::from_utf8_lossy(needle));
    }
    assert!(has(bin(), b"aws_lc") && has(bin(), b"reqwest::"), "the admin CLI links aws-lc and reqwest (what the hook binary must not)");
}
