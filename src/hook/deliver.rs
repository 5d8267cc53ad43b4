//! A refusal told through the container itself, for runtimes that swallow a
//! hook's stderr.
//!
//! runc puts a failing hook's stderr into its error, which Podman, Docker and
//! containerd show the user. crun sends hook output to /dev/null (crun#353),
//! so `podman run` says only "error executing hook ... (exit code: 1)". Under
//! such a runtime, admission writes its one line into the container's own
//! `/dev` (a tmpfs the runtime made for this container alone, mounted before
//! createRuntime hooks run) and lets the container start: its first process is
//! gpuwarden's launcher, which finds the line before anything else, prints it
//! on the container's stderr (so `podman run`, `podman logs`, `podman start
//! -a` and a unit's journal show it), and exits with [`REFUSED_STATUS`]. No
//! share is held and the workload never runs.
//!
//! Fail-closed: this channel is used only when the container's first process
//! is the launcher that the host bind-mounts, and only when the line was
//! written where the launcher will look. Otherwise the hook fails as before.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::hookcall::LAUNCHER_PATH;
use crate::oci::ContainerConfig;

/// Where the launcher looks for a refusal. The launcher has its own copy of
/// this path (it links nothing of this library); a test holds them equal.
pub const REFUSAL_FILE: &str = "/dev/gpuwarden-refusal";

/// The launcher's exit status for a container that admission refused (sysexits'
/// EX_NOPERM), apart from the engines' 125 to 127.
pub const REFUSED_STATUS: u8 = 77;

/// The largest line written and read.
pub const MAX_LINE: usize = 4096;

/// How the user is told of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The hook fails with the line on stderr, and the runtime shows it.
    Hook,
    /// The line goes into the container, whose launcher prints it and exits.
    Container,
}

/// The channel for a refusal of the container in `cfg`, when the runtime
/// that ran this hook is `runtime` (its process name). runc shows a hook's
/// stderr; any other runtime is taken to swallow it.
pub fn channel(runtime: Option<&str>, cfg: &ContainerConfig) -> Channel {
    if runtime == Some("runc") || !runs_hosts_launcher(cfg) {
        Channel::Hook
    } else {
        Channel::Container
    }
}

/// Whether the container's first process is the launcher the host mounts
/// read-only: one the image carries itself could ignore a refusal.
fn runs_hosts_launcher(cfg: &ContainerConfig) -> bool {
    cfg.args().first().map(String::as_str) == Some(LAUNCHER_PATH) && cfg.mounts().iter().any(|(d, _)| *d == LAUNCHER_PATH) && cfg.is_read_only_bind(LAUNCHER_PATH)
}

/// Why a refusal could not be put into the container.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("cannot read the mounts of process {pid}: {source}")]
    Mountinfo { pid: i32, source: std::io::Error },
    #[error("the container's /dev is not mounted in process {pid}'s namespace")]
    NoDev { pid: i32 },
    #[error("cannot open {path}: {errno}")]
    Open { path: String, errno: nix::Error },
    #[error("{path} is not the container's /dev tmpfs")]
    NotItsDev { path: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Writes `line` for the launcher of the container whose first process is
/// `pid` and whose root filesystem is mounted at `rootfs` (absolute, as the
/// runtime resolved it). Before `pivot_root` the container's `/dev` is at
/// `rootfs/dev` in that process's mount namespace; after it, at `/dev`.
pub fn deliver(pid: i32, rootfs: &Path, line: &str) -> Result<(), DeliverError> {
    let proc_root = format!("/proc/{pid}/root");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).map_err(|source| DeliverError::Mountinfo { pid, source })?;
    let (dev, device) = container_dev(&mountinfo, rootfs).ok_or(DeliverError::NoDev { pid })?;
    let shown = format!("{proc_root}{}", dev.display());
    let open_err = |errno| DeliverError::Open { path: shown.clone(), errno };
    // The magic link to the process's root is followed; nothing below it is.
    let mut dir: OwnedFd = nix::fcntl::open(proc_root.as_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(open_err)?;
    for part in dev.components() {
        let Component::Normal(name) = part else { continue };
        dir = openat(dir.as_fd(), name, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(open_err)?;
    }
    let stat = nix::sys::stat::fstat(dir.as_fd()).map_err(open_err)?;
    let fs = nix::sys::statfs::fstatfs(dir.as_fd()).map_err(open_err)?;
    if stat.st_dev != device || fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return Err(DeliverError::NotItsDev { path: shown });
    }
    let name = REFUSAL_FILE.trim_start_matches("/dev/");
    let target = format!("{shown}/{name}");
    let fd = openat(dir.as_fd(), name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o444))
        .map_err(|errno| DeliverError::Open { path: target.clone(), errno })?;
    let mut text = crate::base::text::truncate(line, MAX_LINE - 1).to_string();
    text.push('\n');
    File::from(fd).write_all(text.as_bytes()).map_err(|source| DeliverError::Write { path: target, source })
}

/// The container's `/dev` in `mountinfo` (a process's), as a path from that
/// process's root, with its device number. Before `pivot_root`: the mount at
/// `rootfs/dev`. After it (no mount left under `rootfs`): the one at `/dev`.
/// Of stacked mounts, the last is on top.
fn container_dev(mountinfo: &str, rootfs: &Path) -> Option<(std::path::PathBuf, u64)> {
    let mounts: Vec<(String, u64)> = mountinfo.lines().filter_map(mount_point).collect();
    let before = rootfs.join("dev");
    let find = |at: &Path| mounts.iter().rev().find(|(p, _)| Path::new(p) == at).map(|(_, d)| (at.to_path_buf(), *d));
    if let Some(found) = find(&before) {
        return Some(found);
    }
    let pivoted = !mounts.iter().any(|(p, _)| Path::new(p).starts_with(rootfs) && rootfs != Path::new("/"));
    if pivoted { find(Path::new("/dev")) } else { None }
}

/// The mount point and device number of one mountinfo line.
fn mount_point(line: &str) -> Option<(String, u64)> {
    let mut fields = line.split(' ');
    let (_, _, device, _, point) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let (major, minor) = device.split_once(':')?;
    Some((unescape(point), nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?)))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE_PIVOT: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw
301 22 0:60 / /var/lib/containers/storage/overlay/abc/merged rw - overlay overlay rw
302 301 0:61 / /var/lib/containers/storage/overlay/abc/merged/dev rw,nosuid - tmpfs tmpfs rw,size=65536k
303 302 0:62 / /var/lib/containers/storage/overlay/abc/merged/dev/pts rw - devpts devpts rw
";

    const AFTER_PIVOT: &str = "\
401 400 0:60 / / rw - overlay overlay rw
402 401 0:61 / /dev rw,nosuid - tmpfs tmpfs rw
";

    #[test]
    fn the_containers_dev_is_found_before_and_after_pivot_root() {
        let rootfs = Path::new("/var/lib/containers/storage/overlay/abc/merged");
        let (at, dev) = container_dev(BEFORE_PIVOT, rootfs).unwrap();
        assert_eq!(at, rootfs.join("dev"));
        assert_eq!(dev, nix::sys::stat::makedev(0, 61), "not the host's devtmpfs");
        let (at, dev) = container_dev(AFTER_PIVOT, rootfs).unwrap();
        assert_eq!((at.as_path(), dev), (Path::new("/dev"), nix::sys::stat::makedev(0, 61)));
        // Mounts under the root but no /dev among them: not there yet, and the host's /dev is never taken.
        let no_dev = "22 1 254:0 / / rw - ext4 /dev/vda rw\n25 22 0:5 / /dev rw - devtmpfs udev rw\n301 22 0:60 / /var/lib/containers/storage/overlay/abc/merged rw - overlay o rw\n";
        assert_eq!(container_dev(no_dev, rootfs), None);
    }

    #[test]
    fn escaped_mount_points_are_read() {
        assert_eq!(unescape(r"/srv/my\040root/dev"), "/srv/my root/dev");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04", "an incomplete escape stays");
    }

    fn with_launcher(mount: bool, ro: bool) -> ContainerConfig {
        let mut cfg = crate::oci::tests_support::podman_like();
        cfg.set_args(&[LAUNCHER_PATH.to_string(), "--".into(), "sh".into()]);
        if mount {
            cfg.ensure_bind_mount(LAUNCHER_PATH, "/usr/bin/gpuwarden-launch", ro);
        }
        cfg
    }

    #[test]
    fn only_a_container_that_runs_the_hosts_launcher_is_told_through_itself() {
        assert_eq!(channel(Some("crun"), &with_launcher(true, true)), Channel::Container);
        assert_eq!(channel(None, &with_launcher(true, true)), Channel::Container, "an unknown runtime is taken to swallow stderr");
        assert_eq!(channel(Some("runc"), &with_launcher(true, true)), Channel::Hook, "runc shows the hook's stderr");
        assert_eq!(channel(Some("crun"), &with_launcher(false, true)), Channel::Hook, "a launcher from the image could ignore it");
        assert_eq!(channel(Some("crun"), &with_launcher(true, false)), Channel::Hook, "a writable launcher mount could be replaced");
        assert_eq!(channel(Some("crun"), &crate::oci::tests_support::podman_like()), Channel::Hook, "no launcher at all");
    }

    #[test]
    fn the_launcher_looks_where_admission_writes_and_exits_as_said() {
        let launcher = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/launcher/src/main.rs")).unwrap();
        assert!(launcher.contains(&format!("const REFUSAL_FILE: &str = {REFUSAL_FILE:?};")), "the launcher's REFUSAL_FILE differs");
        assert!(launcher.contains(&format!("const REFUSED_STATUS: u8 = {REFUSED_STATUS};")), "the launcher's REFUSED_STATUS differs");
        assert!(launcher.contains(&format!(".take({MAX_LINE})")), "the launcher reads what admission may write");
    }

    #[test]
    fn a_missing_process_is_an_error_not_a_panic() {
        let e = deliver(i32::MAX, Path::new("/nonexistent"), "refused x").unwrap_err();
        assert!(matches!(e, DeliverError::Mountinfo { .. }), "{e}");
    }
}
