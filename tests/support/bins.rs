//! The workspace's binaries for integration tests and benchmarks. They belong
//! to other packages (the admin CLI and the lean hook binary), so Cargo gives
//! no `CARGO_BIN_EXE_` for them: they are built here once per test process,
//! with the profile of the running test, and found in the target folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// target/debug or target/release: the folder above this executable's deps/.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its executable");
        let deps = exe.parent().expect("in a folder");
        let dir = if deps.ends_with("deps") { deps.parent().expect("in target") } else { deps };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--locked", "--quiet"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build --workspace --bins failed");
        dir.to_path_buf()
    })
}

fn path_of(name: &str) -> &'static str {
    static PATHS: OnceLock<(String, String)> = OnceLock::new();
    let (cli, hook) = PATHS.get_or_init(|| {
        let at = |n: &str| {
            let p = profile_dir().join(n);
            assert!(p.is_file(), "{} was not built", p.display());
            p.display().to_string()
        };
        (at("gpuwarden"), at("gpuwarden-hook"))
    });
    if name == "gpuwarden" { cli } else { hook }
}

/// The admin CLI, `gpuwarden`.
pub fn bin() -> &'static str {
    path_of("gpuwarden")
}

/// The runtime side, `gpuwarden-hook`.
pub fn hook_bin() -> &'static str {
    path_of("gpuwarden-hook")
}

/// A binary as `scripts/build.sh` makes it for installing (release; the hook
/// and the launcher linked statically), built once per test process.
pub fn dist(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        let st = Command::new(repo.join("scripts/build.sh")).status().expect("scripts/build.sh runs");
        assert!(st.success(), "scripts/build.sh failed");
    });
    repo.join("target/dist").join(name)
}

/// Another of the workspace's binaries (the device plugin), as built for the running test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}
