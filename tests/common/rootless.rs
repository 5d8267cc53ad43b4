//! The rootless set-up the rootless and hostile-user tests share: the real
//! unprivileged user `gwrootless` with subuids (scripts/setup.sh makes it),
//! Podman 4.3.1 rootless with runc, gpuwarden's admission broker running as
//! root, and one ledger shared with rootful Podman. The spec's device nodes
//! are at their real /dev paths (rootless Podman bind-mounts `path`): the
//! set-up makes the ones that are missing and removes them again.
#![allow(dead_code)]

use super::*;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "gwrootless";
pub const IMAGE: &str = "localhost/gpuwarden-rootless-busybox:latest";
pub const SPEC: &str = "/var/run/cdi/gpuwarden-test.yaml";
pub const NODES: &[(&str, u64, u64)] = &[("nvidia0", 195, 0), ("nvidiactl", 195, 255), ("nvidia-uvm", 511, 0), ("nvidia-uvm-tools", 511, 1), ("nvidia-modeset", 195, 254)];

/// `'a'` quoting for a login shell's command line.
pub fn quote(args: &[&str]) -> String {
    args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
}

/// `args` run as the user, in a login shell as `su -` gives it.
pub fn as_user(args: &[&str]) -> Output {
    as_named(USER, args)
}

/// `args` run as `user`, in a login shell.
pub fn as_named(user: &str, args: &[&str]) -> Output {
    Command::new("runuser").args(["-l", user, "-c", &quote(args)]).output().expect("runuser (util-linux)")
}

pub fn uid() -> u32 {
    nix::unistd::User::from_name(USER).unwrap().unwrap_or_else(|| panic!("user {USER} exists: scripts/setup.sh makes it")).uid.as_raw()
}

/// What the user's side runs or mounts (the hook runc runs, the launcher and
/// the driver's files it bind-mounts, the CLI), where the user can reach it:
/// the checkout may sit under a folder only root can enter. Hard links where
/// the file system allows, under /var/tmp; removed on drop.
pub struct Staged(pub PathBuf);

impl Staged {
    pub fn new() -> Staged {
        let dir = PathBuf::from(format!("/var/tmp/gpuwarden-rootless-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for (from, name) in [(dist("gpuwarden-hook"), "gpuwarden-hook"), (dist("gpuwarden-launch"), "gpuwarden-launch"), (PathBuf::from(bin()), "gpuwarden")] {
            std::fs::copy(&from, dir.join(name)).unwrap();
        }
        let root = &driver_fixture().root;
        let linked = Command::new("cp").arg("-al").arg(root).arg(dir.join("driver")).status().unwrap().success();
        if !linked {
            assert!(Command::new("cp").arg("-a").arg(root).arg(dir.join("driver")).status().unwrap().success(), "cannot copy the driver root");
        }
        Staged(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Rootless {
    pub staged: Staged,
    pub dir: tempfile::TempDir,
    pub config: String,
    pub socket: PathBuf,
    pub hooks: String,
    pub broker: Option<Child>,
    pub made_nodes: Vec<PathBuf>,
    pub user_names: Vec<String>,
    pub root_names: Vec<String>,
    pub _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Rootless {
    pub fn new(test: &str) -> Option<Rootless> {
        if !is_root() {
            skip(test, "the broker, /dev nodes, /var/run/cdi and the test user need root");
            return None;
        }
        let lock = process_lock("podman-cdi");
        let _ = uid();
        let made_nodes = NODES
            .iter()
            .filter(|(n, _, _)| !Path::new("/dev").join(n).exists())
            .map(|(n, major, minor)| {
                let p = Path::new("/dev").join(n);
                nix::sys::stat::mknod(&p, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(*major, *minor)).unwrap();
                nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, &p, nix::sys::stat::Mode::from_bits_truncate(0o666), nix::sys::stat::FchmodatFlags::FollowSymlink).unwrap();
                p
            })
            .collect();
        let dir = tempfile::Builder::new().prefix("gwrootless").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let d = dir.path().display();
        let socket = dir.path().join("broker.sock");
        // Nine GiB to share: three ComfyUI workers of 3 GiB.
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{d}/state\"\n[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n[broker]\nsocket = \"{}\"\n[budget.reserves]\nsystem = \"3GiB\"\n",
                socket.display()
            ),
        );
        let mut w = Rootless { staged: Staged::new(), hooks: format!("{d}/hooks.d"), dir, config, socket, broker: None, made_nodes, user_names: Vec::new(), root_names: Vec::new(), _lock: lock };
        let _ = std::fs::remove_file(SPEC);
        let (hook, launcher, driver) = (w.staged.path("gpuwarden-hook"), w.staged.path("gpuwarden-launch"), w.staged.path("driver"));
        let o = gpuwarden(
            &["--config", &w.config, "cdi", "generate", "--driver-root", driver.to_str().unwrap(), "--dev-root", "/", "--output", SPEC, "--hook-path", hook.to_str().unwrap(), "--launcher-path", launcher.to_str().unwrap()],
            b"",
        );
        assert!(o.status.success(), "cdi generate: {}", stderr(&o));
        let o = gpuwarden(&["--config", &w.config, "podman", "install-hook", "--hooks-dir", &w.hooks, "--hook-path", hook.to_str().unwrap(), "--launcher-path", launcher.to_str().unwrap()], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        // Everything the user's hooks read: the config, the hooks.d file; the MPS folders' parents.
        // Before `mps start`, which closes the pipe folder to those it does not let in.
        let o = Command::new("chmod").args(["-R", "a+rX"]).arg(w.dir.path()).output().unwrap();
        assert!(o.status.success());
        let o = gpuwarden(&["--config", &w.config, "mps", "start"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        w.start_broker();
        user_image();
        Some(w)
    }

    pub fn start_broker(&mut self) {
        let child = Command::new(dist("gpuwarden-hook")).args(["broker", "--config", &self.config]).env_remove("GPUWARDEN_CONFIG").stderr(Stdio::null()).spawn().unwrap();
        self.broker = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "the broker did not listen on {}", self.socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }

    /// `podman run` as the user (`-d` when `detach`), named NAME.
    pub fn user_run(&mut self, name: &str, args: &[&str], cmd: &[&str], detach: bool) -> Output {
        let full = format!("gwtest-{}-{name}", std::process::id());
        self.user_names.push(full.clone());
        let mut a = vec!["podman", "--runtime", "runc", "--hooks-dir", &self.hooks, "run", "--name", &full, "--network", "none"];
        if detach {
            a.push("-d");
        }
        a.extend_from_slice(args);
        a.push(IMAGE);
        a.extend_from_slice(cmd);
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        as_user(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `podman run -d` as root, with the same spec and hooks.
    pub fn root_start(&mut self, name: &str) -> Output {
        let full = format!("gwtest-{}-{name}", std::process::id());
        self.root_names.push(full.clone());
        busybox_image("localhost/gpuwarden-test-busybox:latest", |_| {});
        Command::new("podman")
            .args(["--runtime", "runc", "--hooks-dir", &self.hooks, "run", "-d", "--name", &full, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .args(["--device", "nvidia.com/gpu=comfyui", "localhost/gpuwarden-test-busybox:latest", "sh", "-c", "sleep 600"])
            .output()
            .unwrap()
    }

    pub fn reservations(&self) -> Vec<serde_json::Value> {
        let o = gpuwarden(&["--config", &self.config, "status", "--json"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["gpus"][0]["reservations"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        for n in &self.user_names {
            let _ = as_user(&["podman", "rm", "-f", "-t", "0", n]);
        }
        for n in &self.root_names {
            let id = stdout(&Command::new("podman").args(["inspect", "--format", "{{.Id}}", n]).output().unwrap()).trim().to_string();
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", n]).output();
            if !id.is_empty() && Path::new("/run/runc").join(&id).exists() {
                let _ = Command::new("runc").args(["delete", "--force", &id]).output();
            }
        }
        self.stop_broker();
        let _ = gpuwarden(&["--config", &self.config, "mps", "stop"], b"");
        let _ = std::fs::remove_file(SPEC);
        for p in &self.made_nodes {
            let _ = std::fs::remove_file(p);
        }
        // The test users' rootless Podman leaves a pause process and its runtime folders
        // (no login session, so under /tmp): nothing of theirs outlives the test.
        for user in [USER, "gwother"] {
            if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
                let _ = Command::new("pkill").args(["-KILL", "-u", user]).output();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while Command::new("pgrep").args(["-u", user]).output().is_ok_and(|o| o.status.success()) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let _ = std::fs::remove_dir_all(format!("/tmp/podman-run-{}", u.uid));
                let _ = std::fs::remove_dir_all(format!("/tmp/containers-user-{}", u.uid));
            }
        }
    }
}

/// A busybox image in the user's own storage.
pub fn user_image() {
    image_of(USER)
}

/// A busybox image in `user`'s own storage.
pub fn image_of(user: &str) {
    let as_user = |args: &[&str]| as_named(user, args);
    if as_user(&["podman", "image", "exists", IMAGE]).status.success() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let tar = dir.path().join("root.tar");
    assert!(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = as_user(&["podman", "import", "-q", tar.to_str().unwrap(), IMAGE]);
    assert!(o.status.success(), "podman import as {user}: {}", stderr(&o));
}

/// gpuwarden's line in Podman's output.
pub fn refusal(o: &Output) -> String {
    assert!(!o.status.success(), "expected a refusal, got success: {}", stdout(o));
    let err = stderr(o);
    let line = err.lines().find(|l| l.contains("gpuwarden: ")).unwrap_or_else(|| panic!("podman run did not show gpuwarden's line: {err}"));
    line[line.find("gpuwarden: ").unwrap()..].to_string()
}

/// `gpuwarden-hook STAGE --via-broker` run by the user from a shell, not by a runtime.
pub fn forged(w: &Rootless, stage: &str, state: &serde_json::Value) -> Output {
    forged_by(USER, w, stage, state)
}

/// The same, run by `user`.
pub fn forged_by(user: &str, w: &Rootless, stage: &str, state: &serde_json::Value) -> Output {
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--", w.staged.path("gpuwarden-hook").to_str().unwrap(), stage, "--config", &w.config, "--via-broker"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(state.to_string().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}
