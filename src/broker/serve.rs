//! The broker's socket: inherited from systemd (socket activation) or bound
//! here, one thread per connection, every request bounded in size and time.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{Answer, Caller, Request, MAX_REQUEST, REQUEST_TIMEOUT};

/// Connections served at once; past this a new one is told to come back.
const MAX_CONNECTIONS: usize = 512;

/// Where the listening socket came from.
pub enum Listener {
    /// From systemd (`LISTEN_FDS`), at fd 3.
    Inherited(UnixListener),
    /// Bound here: a stale socket file removed first, the socket made 0666.
    Bound(UnixListener),
}

impl Listener {
    /// systemd's socket when it passed one to this process, else `socket` bound here.
    pub fn open(socket: &Path) -> std::io::Result<Listener> {
        let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        if ours && std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n >= 1) {
            // SAFETY: systemd passes the listening socket as fd 3 (SD_LISTEN_FDS_START).
            return Ok(Listener::Inherited(unsafe { UnixListener::from_raw_fd(3) }));
        }
        if let Ok(meta) = std::fs::symlink_metadata(socket) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::other(format!("{} exists and is no socket: remove it, or name another with [broker] socket", socket.display())));
            }
            std::fs::remove_file(socket)?;
        }
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = UnixListener::bind(socket)?;
        // Every user's hooks connect; who they are is asked of the kernel.
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        Ok(Listener::Bound(listener))
    }

    fn listener(&self) -> &UnixListener {
        match self {
            Listener::Inherited(l) | Listener::Bound(l) => l,
        }
    }
}

/// Answers one request from one caller; the third argument tells whether
/// the caller is still connected (a waiting admission leaves the queue when
/// its hook is gone).
pub type Handler = Box<dyn Fn(&Caller, Request, &dyn Fn() -> bool) -> Answer + Send + Sync>;

/// What answers a request.
pub struct ServeEnv {
    pub handle: Handler,
}

/// Serves connections until the listener fails.
pub fn serve(listener: &Listener, env: Arc<ServeEnv>) -> std::io::Error {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.listener().accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            reply(stream, &Answer::refused(format!("the admission broker is busy ({MAX_CONNECTIONS} connections): try again")));
            continue;
        }
        let (env, active) = (Arc::clone(&env), Arc::clone(&active));
        let spawned = std::thread::Builder::new().name("broker".into()).stack_size(256 << 10).spawn(move || {
            connection(stream, &env);
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a connection: {e}");
        }
    }
}

fn reply(mut stream: UnixStream, answer: &Answer) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.write_all(&serde_json::to_vec(answer).expect("an answer serializes"));
}

fn connection(stream: UnixStream, env: &ServeEnv) {
    let caller = match peer(&stream) {
        Ok(c) => c,
        Err(e) => return reply(stream, &Answer::refused(format!("who is asking cannot be told: {e}"))),
    };
    let answer = match read_request(&stream) {
        Ok(request) => (env.handle)(&caller, request, &|| connected(&stream)),
        Err(why) => {
            tracing::warn!("refused a request from uid {} (pid {}): {why}", caller.uid, caller.pid);
            Answer::refused(why)
        }
    };
    reply(stream, &answer);
}

/// Whether the caller still holds its end: a peer that closed (or died)
/// shows as POLLHUP; one that only finished sending does not.
fn connected(stream: &UnixStream) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::empty())];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => !fds[0].revents().is_some_and(|r| r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)),
        Err(_) => true,
    }
}

/// The caller, as the kernel saw it connect (translated into this namespace).
fn peer(stream: &UnixStream) -> nix::Result<Caller> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    // The user's groups as the group file says (not the caller's process, which may have dropped some).
    let (user, groups) = crate::users::lookup(Path::new("/"), cred.uid()).map_or((None, Vec::new()), |(a, g)| (Some(a.name), g));
    Ok(Caller { uid: cred.uid(), pid: cred.pid(), user, groups })
}

/// Reads one request, whole within [`REQUEST_TIMEOUT`] and [`MAX_REQUEST`] bytes.
fn read_request(mut stream: &UnixStream) -> Result<Request, String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut body = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the request did not arrive within {} s", REQUEST_TIMEOUT.as_secs()));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                if body.len() as u64 > MAX_REQUEST {
                    return Err(format!("the request is larger than {} bytes", MAX_REQUEST));
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("the request did not arrive within {} s", REQUEST_TIMEOUT.as_secs()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("the request could not be read: {e}")),
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("the request is not one of the broker's: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn broker() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/broker.sock");
        let listener = Listener::open(&socket).unwrap();
        let env = Arc::new(ServeEnv { handle: Box::new(|c: &Caller, r: Request, _: &dyn Fn() -> bool| Answer::refused(format!("uid {} asked {}", c.uid, matches!(r, Request::Release { .. })))) });
        std::thread::spawn(move || serve(&listener, env));
        (dir, socket)
    }

    #[test]
    fn a_handler_tells_a_caller_that_waits_from_one_that_left() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("broker.sock");
        let listener = Listener::open(&socket).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let handle = move |_: &Caller, _: Request, connected: &dyn Fn() -> bool| {
            let _ = tx.lock().unwrap().send(connected());
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while connected() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = tx.lock().unwrap().send(connected());
            Answer::ok()
        };
        let env = Arc::new(ServeEnv { handle: Box::new(handle) });
        std::thread::spawn(move || serve(&listener, env));
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(br#"{"stage":"release","state":{}}"#).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(rx.recv().unwrap(), "a caller that sent its request and waits for the answer is connected");
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(s);
        assert!(!rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), "a caller that closed is gone");
    }

    fn send(socket: &Path, body: &[u8]) -> Answer {
        let mut s = UnixStream::connect(socket).unwrap();
        s.write_all(body).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_request_reaches_the_handler_with_the_kernels_caller() {
        let (_dir, socket) = broker();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o666);
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(send(&socket, br#"{"stage":"release","state":{"id":"x"}}"#), Answer::refused(format!("uid {me} asked true")));
    }

    #[test]
    fn malformed_huge_and_slow_requests_are_refused_and_others_still_served() {
        let (_dir, socket) = broker();
        assert!(send(&socket, b"{nope").line.starts_with("the request is not one of the broker's"));
        let huge = vec![b' '; (MAX_REQUEST + 10) as usize];
        assert!(send(&socket, &huge).line.starts_with("the request is larger than"));
        // A client that sends half a request and waits: it times out, and meanwhile others are served.
        let mut slow = UnixStream::connect(&socket).unwrap();
        slow.write_all(b"{\"stage\":").unwrap();
        let start = Instant::now();
        assert!(send(&socket, br#"{"stage":"release","state":{}}"#).line.contains("asked true"));
        assert!(start.elapsed() < REQUEST_TIMEOUT, "served while the slow one waits");
        let mut out = Vec::new();
        slow.read_to_end(&mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("did not arrive within"), "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn a_file_in_the_sockets_place_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.sock");
        std::fs::write(&path, "mine").unwrap();
        let e = Listener::open(&path).err().unwrap().to_string();
        assert!(e.contains("exists and is no socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    }
}
