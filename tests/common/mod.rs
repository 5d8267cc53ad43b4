//! Helpers shared by the integration tests: the real binary, the real-package
//! driver root, Podman, and the locks that keep tests off each other's state.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

#[path = "../support/bins.rs"]
mod bins;
#[allow(unused_imports)]
pub use bins::{bin, dist, hook_bin, workspace_bin};

pub mod docker;
pub mod loaders;
pub mod rootless;

pub const VERSION: &str = "535.261.03";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the admin CLI with `args` and `stdin`.
pub fn gpuwarden(args: &[&str], stdin: &[u8]) -> Output {
    run_with(bin(), args, stdin)
}

/// Runs the hook binary with `args` (the stage first) and `stdin`.
pub fn hook(args: &[&str], stdin: &[u8]) -> Output {
    run_with(hook_bin(), args, stdin)
}

fn run_with(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("GPUWARDEN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command failed with exactly one line on stderr containing `want`.
pub fn assert_one_line_error(o: &Output, want: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err}");
    assert!(err.starts_with("gpuwarden: "), "{err}");
    assert!(err.contains(want), "expected {want:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Says loudly why a test cannot run here; the test returns after it.
pub fn skip(test: &str, why: &str) {
    eprintln!("\n=== SKIPPED {test}: {why} ===\n");
}

/// An exclusive lock across test processes (cargo test runs binaries one by
/// one, nextest runs tests in parallel processes).
pub fn process_lock(name: &str) -> nix::fcntl::Flock<File> {
    let path = std::env::temp_dir().join(format!("gpuwarden-test-{name}.lock"));
    let f = File::options().create(true).truncate(false).write(true).open(path).unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap()
}

/// The driver root and dev root built from NVIDIA's real packages by
/// scripts/driver-root.sh (downloads once, then reuses).
pub struct Fixture {
    pub root: PathBuf,
    /// The folder that holds `dev/` (what `--dev-root` takes, as in nvidia-ctk).
    pub dev: PathBuf,
}

pub fn driver_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let out = repo().join("target/fixtures").join(format!("driver-{VERSION}"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let _lock = process_lock("driver-root");
        let st = Command::new(repo().join("scripts/driver-root.sh")).arg(&out).status().unwrap();
        assert!(st.success(), "scripts/driver-root.sh failed (it needs root and Debian's non-free archive: run scripts/setup.sh)");
        Fixture { root: out.join("root"), dev: out }
    })
}

/// Stops a daemon the test started: SIGTERM, up to 30 s to finish, then SIGKILL; reaped.
pub fn stop_daemon(child: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A process killed (and reaped) when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Debian package, built once per test process by scripts/deb.sh.
pub fn deb_package() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let _lock = process_lock("deb-build");
        let o = Command::new(repo().join("scripts/deb.sh")).output().unwrap();
        assert!(o.status.success(), "scripts/deb.sh: {}", stderr(&o));
        let last = stdout(&o).lines().last().expect("the .deb's path").to_string();
        PathBuf::from(&last).canonicalize().unwrap_or_else(|_| repo().join(last))
    })
    .clone()
}

/// Writes `text` to a file in `dir` and returns its path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Imports a busybox root filesystem as `image` unless it exists; `extra`
/// adds to the root (given its path) before the import.
pub fn busybox_image(image: &str, extra: impl FnOnce(&Path)) {
    if Command::new("podman").args(["image", "exists", image]).output().unwrap().status.success() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed (scripts/setup.sh)");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    extra(&rootfs);
    let tar = dir.path().join("rootfs.tar");
    assert!(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let o = Command::new("podman").args(["import", tar.to_str().unwrap(), image]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Sends `command` to the MPS control daemon whose folders are under `mps_dir`,
/// as NVIDIA's client does, and waits for it to be taken.
pub fn ask_daemon(mps_dir: &Path, command: &str) {
    let control = Command::new("nvidia-cuda-mps-control")
        .env("CUDA_MPS_PIPE_DIRECTORY", mps_dir.join("pipe"))
        .env("CUDA_MPS_LOG_DIRECTORY", mps_dir.join("log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    control.stdin.as_ref().unwrap().write_all(format!("{command}\n").as_bytes()).unwrap();
    assert!(control.wait_with_output().unwrap().status.success(), "the daemon took {command:?}");
}

/// An MPS server of `uid`'s, as NVIDIA's real daemon starts one (it switches
/// to that uid). A real server needs a GPU and exits at once without one, so
/// a stand-in that stays up is put first in the daemon's PATH: the daemon of
/// `config` is restarted with it, and asked to start a server for `uid`.
/// Returns the server's pid; it goes when the daemon is stopped (or is killed
/// by the caller). `scratch` must be reachable by `uid`.
pub fn stand_in_server(config: &str, mps_dir: &Path, scratch: &Path, uid: u32) -> i32 {
    let stand_in = scratch.join("server-bin");
    std::fs::create_dir_all(&stand_in).unwrap();
    let server = stand_in.join("nvidia-cuda-mps-server");
    std::fs::write(&server, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&server, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mps = |args: &[&str], path: Option<String>| {
        let mut c = Command::new(bin());
        c.args(["--config", config, "mps"]).args(args).env_remove("GPUWARDEN_CONFIG");
        if let Some(p) = path {
            c.env("PATH", p);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "gpuwarden mps {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    mps(&["stop"], None);
    mps(&["start"], Some(format!("{}:{}", stand_in.display(), std::env::var("PATH").unwrap_or_default())));
    ask_daemon(mps_dir, &format!("start_server -uid {uid}"));
    let status = mps(&["status"], None);
    let user = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| gpuwarden::base::users::account_by_uid(&p, uid)).map(|a| a.name).unwrap();
    assert!(status.contains(&format!("for uid {uid} ({user})")), "a server of uid {uid} runs, named:\n{status}");
    status.split("server pid ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap()
}

/// The /dev/nvidia* nodes there were; on drop, any made since is removed. NVIDIA's own
/// libraries (NVML, libcuda), run as root, make /dev/nvidiactl where it is missing, and a
/// test leaves the host's /dev as it found it.
pub struct NodesAsBefore(Vec<std::ffi::OsString>);

impl NodesAsBefore {
    fn nodes() -> Vec<std::ffi::OsString> {
        std::fs::read_dir("/dev").unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with("nvidia")).collect()
    }
    pub fn now() -> NodesAsBefore {
        NodesAsBefore(Self::nodes())
    }
}

impl Drop for NodesAsBefore {
    fn drop(&mut self) {
        for n in Self::nodes().into_iter().filter(|n| !self.0.contains(n)) {
            let _ = std::fs::remove_file(std::path::Path::new("/dev").join(n));
        }
    }
}
