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
            #[allow(unsafe_code)]
            let inherited = unsafe { UnixListener::from_raw_fd(3) };
            return Ok(Listener::Inherited(inherited));
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

/// What answers a request, and how many connections one user may hold.
pub struct ServeEnv {
    pub handle: Handler,
    /// Connections one uid (not root) may hold open at once (`[broker] connections_per_user`).
    pub per_user: usize,
}

/// Open connections by uid.
type Open = std::sync::Mutex<std::collections::HashMap<u32, usize>>;

/// A user's place among the open connections: given up when the connection ends.
struct Slot {
    uid: u32,
    open: Arc<Open>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// A place for a connection of `uid`, or the line that names the limit it is over.
fn take_slot(open: &Arc<Open>, uid: u32, per_user: usize) -> Result<Slot, String> {
    let mut map = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = map.entry(uid).or_insert(0);
    if uid != 0 && *n >= per_user {
        return Err(format!(
            "refused: uid {uid} has {n} connections open to the admission broker, the most one user may ([broker] connections_per_user = {per_user}); try again when one ends"
        ));
    }
    *n += 1;
    Ok(Slot { uid, open: Arc::clone(open) })
}

/// The answer to a request whose handling panicked.
pub const PANICKED: &str = "refused: the admission broker failed on this request (a bug in gpuwarden: its journal says where); try again, and report it";

/// Serves connections until the listener fails.
pub fn serve(listener: &Listener, env: Arc<ServeEnv>) -> std::io::Error {
    let active = Arc::new(AtomicUsize::new(0));
    let open: Arc<Open> = Arc::default();
    loop {
        let stream = match listener.listener().accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        // Who connects is known before anything is read: one user's connections never use up everyone's.
        let uid = match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) => cred.uid(),
            Err(e) => {
                reply(stream, &Answer::refused(format!("who is asking cannot be told: {e}")));
                continue;
            }
        };
        let slot = match take_slot(&open, uid, env.per_user) {
            Ok(slot) => slot,
            Err(line) => {
                tracing::warn!("{line}");
                reply(stream, &Answer::refused(line));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            reply(stream, &Answer::refused(format!("the admission broker is busy ({MAX_CONNECTIONS} connections from all users): try again")));
            continue;
        }
        let (env, active) = (Arc::clone(&env), Arc::clone(&active));
        let spawned = std::thread::Builder::new().name("broker".into()).stack_size(256 << 10).spawn(move || {
            let _slot = slot;
            // A panic is a bug; it ends this request, never the broker or anyone else's: the
            // ledger's lock is a guard that unwinding releases, and its file is replaced whole.
            let spare = stream.try_clone().ok();
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| connection(stream, &env))).is_err() {
                tracing::error!("a request of uid {uid} ended in a panic (a bug in gpuwarden); the broker serves on");
                if let Some(stream) = spare {
                    reply(stream, &Answer::refused(PANICKED));
                }
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a connection: {e}");
        }
    }
}

fn reply(mut stream: UnixStream, answer: &Answer) {
    // A caller that does not read is not waited for long: the answer fits the socket's buffer.
    let _ = stream.set_write_timeout(Some(std::time::Duration::from_millis(500)));
    let _ = stream.write_all(&crate::base::json::compact(answer));
}

fn connection(stream: UnixStream, env: &ServeEnv) {
    let caller = match peer(&stream) {
        Ok(c) => c,
        Err(e) => return reply(stream, &Answer::refused(format!("who is asking cannot be told: {e}"))),
    };
    let answer = match read_request(&stream) {
        Ok(Some(request)) => (env.handle)(&caller, request, &|| connected(&stream)),
        // Connected and closed without a word: a liveness check (`gpuwarden doctor`).
        Ok(None) => {
            tracing::debug!("uid {} (pid {}) connected and sent nothing: a liveness check", caller.who.uid, caller.pid);
            return;
        }
        Err(why) => {
            tracing::warn!("refused a request from uid {} (pid {}): {why}", caller.who.uid, caller.pid);
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
    let (user, groups) = crate::base::users::lookup(Path::new("/"), cred.uid()).map_or((None, Vec::new()), |(a, g)| (Some(a.name), g));
    Ok(Caller { pid: cred.pid(), who: crate::model::Who { uid: cred.uid(), user, groups } })
}

/// Reads one request, whole within [`REQUEST_TIMEOUT`] and [`MAX_REQUEST`]
/// bytes; `None` when the caller closed without sending anything.
fn read_request(mut stream: &UnixStream) -> Result<Option<Request>, String> {
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
    if body.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| format!("the request is not one of the broker's: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn broker() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/broker.sock");
        let listener = Listener::open(&socket).unwrap();
        let env = Arc::new(ServeEnv { handle: Box::new(|c: &Caller, r: Request, _: &dyn Fn() -> bool| Answer::refused(format!("uid {} asked {}", c.who.uid, matches!(r, Request::Release { .. })))), per_user: 8 });
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
        let env = Arc::new(ServeEnv { handle: Box::new(handle), per_user: 8 });
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
    fn a_request_that_panics_is_refused_and_the_broker_serves_on() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("broker.sock");
        let listener = Listener::open(&socket).unwrap();
        let handle = |_: &Caller, r: Request, _: &dyn Fn() -> bool| match r {
            Request::Release { state } if state["id"] == "boom" => panic!("a bug"),
            _ => Answer::ok(),
        };
        std::thread::spawn(move || serve(&listener, Arc::new(ServeEnv { handle: Box::new(handle), per_user: 1 })));
        for _ in 0..3 {
            assert_eq!(send(&socket, br#"{"stage":"release","state":{"id":"boom"}}"#), Answer::refused(PANICKED));
        }
        // The broker serves on: the connections that panicked gave their places back.
        assert_eq!(send(&socket, br#"{"stage":"release","state":{"id":"x"}}"#), Answer::ok());
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
    fn a_liveness_check_that_sends_nothing_gets_nothing_and_is_no_request() {
        let (_dir, socket) = broker();
        let mut s = UnixStream::connect(&socket).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.is_empty(), "no answer, and no handler ran: {}", String::from_utf8_lossy(&out));
        assert!(send(&socket, br#"{"stage":"release","state":{}}"#).line.contains("asked true"), "still served");
    }

    #[test]
    fn one_user_holds_a_few_connections_and_gets_them_back_as_they_end() {
        let open: Arc<Open> = Arc::default();
        let held: Vec<Slot> = (0..8).map(|_| take_slot(&open, 1001, 8).unwrap()).collect();
        let e = take_slot(&open, 1001, 8).err().unwrap();
        assert_eq!(e, "refused: uid 1001 has 8 connections open to the admission broker, the most one user may ([broker] connections_per_user = 8); try again when one ends");
        assert!(take_slot(&open, 1000, 8).is_ok(), "another user is not held back");
        assert!((0..20).all(|_| take_slot(&open, 0, 8).is_ok()), "root's hooks are not limited");
        drop(held);
        let again = take_slot(&open, 1001, 8).unwrap();
        assert_eq!(open.lock().unwrap().get(&1001), Some(&1), "counted down as they end");
        drop(again);
        assert_eq!(open.lock().unwrap().get(&1001), None);
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
