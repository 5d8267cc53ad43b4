//! A look at the control daemon cheap enough for every admission, with no
//! process started: connect to its `control` socket (a listener proves a live
//! daemon; the files a stopped one leaves behind prove nothing), learn its pid
//! from the socket's peer credentials, and its servers (its children) with
//! their UIDs from /proc.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::socket::{connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType, UnixAddr};

/// The control daemon, as seen at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    pub pid: i32,
    pub servers: Vec<Server>,
}

/// One MPS server: it serves the clients of one UID at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub pid: i32,
    pub uid: u32,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the MPS control daemon is not running: nothing listens on {} ({errno}); run `gpuwarden mps start`", path.display())]
    NotListening { path: PathBuf, errno: nix::Error },
    #[error("cannot ask {} who listens on it: {errno}", path.display())]
    Credentials { path: PathBuf, errno: nix::Error },
}

/// The daemon listening in `pipe` (its `control` socket), and its servers as
/// `proc_root` (`/proc`) shows them.
pub fn daemon(pipe: &Path, proc_root: &Path) -> Result<Daemon, ProbeError> {
    let path = pipe.join("control");
    let not_listening = |errno| ProbeError::NotListening { path: path.clone(), errno };
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(not_listening)?;
    let addr = UnixAddr::new(&path).map_err(not_listening)?;
    connect(fd.as_raw_fd(), &addr).map_err(not_listening)?;
    let cred = getsockopt(&fd, PeerCredentials).map_err(|errno| ProbeError::Credentials { path: path.clone(), errno })?;
    drop(fd);
    let pid = cred.pid();
    Ok(Daemon { pid, servers: servers(proc_root, pid) })
}

/// The children of `pid` (the daemon forks nothing but servers) with their
/// real UIDs; a child that is gone meanwhile is left out.
fn servers(proc_root: &Path, pid: i32) -> Vec<Server> {
    let tasks = proc_root.join(pid.to_string()).join("task");
    let mut children: Vec<i32> = std::fs::read_dir(&tasks)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect();
    children.sort_unstable();
    children.dedup();
    children.into_iter().filter_map(|child| Some(Server { pid: child, uid: real_uid(proc_root, child)? })).collect()
}

/// The real UID in `/proc/PID/status`.
fn real_uid(proc_root: &Path, pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_the_daemons_children_with_their_real_uid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for (task, children) in [("100", "200 201 "), ("101", "202")] {
            std::fs::create_dir_all(p.join("100/task").join(task)).unwrap();
            std::fs::write(p.join("100/task").join(task).join("children"), children).unwrap();
        }
        for (pid, uid) in [("200", "0\t0\t0\t0"), ("202", "1000\t1000\t1000\t1000")] {
            std::fs::create_dir_all(p.join(pid)).unwrap();
            std::fs::write(p.join(pid).join("status"), format!("Name:\tnvidia-cuda-mps\nUid:\t{uid}\n")).unwrap();
        }
        // 201 is gone: left out.
        assert_eq!(servers(p, 100), [Server { pid: 200, uid: 0 }, Server { pid: 202, uid: 1000 }]);
        assert!(servers(p, 999).is_empty());
    }

    #[test]
    fn a_socket_file_with_no_listener_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let e = daemon(dir.path(), Path::new("/proc")).unwrap_err().to_string();
        assert!(e.contains("the MPS control daemon is not running") && e.contains("gpuwarden mps start"), "{e}");
        // A socket bound and closed again leaves its file, and nothing listens.
        let path = dir.path().join("control");
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
        nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        drop(fd);
        assert!(path.exists());
        assert!(matches!(daemon(dir.path(), Path::new("/proc")), Err(ProbeError::NotListening { .. })));
    }
}
