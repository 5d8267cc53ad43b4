//! The hook's side: whether to go through the broker, and one request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Answer, Request, SOCKET_UNIT};

/// How long admission may take at the broker beyond the container's wait
/// for its share (it waits for the ledger's lock).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker could not be asked: the hook refuses, naming what to start,
/// or, when it is there but takes no more connections, to try again.
#[derive(Debug, thiserror::Error)]
pub enum BrokerDown {
    #[error("the admission broker does not answer at {} ({why}): rootless containers are admitted through it; start it with `systemctl start {SOCKET_UNIT}` (or run `gpuwarden-hook broker` as root)", socket.display())]
    NotThere { socket: PathBuf, why: String },
    #[error("the admission broker at {} is busy (its backlog of connections is full): try again", socket.display())]
    Busy { socket: PathBuf },
}

/// True in a user namespace other than the initial one, as rootless Podman's
/// hooks run: there the ledger is root's, and admission goes through the broker.
pub fn in_user_namespace(uid_map: &str) -> bool {
    let first: Vec<&str> = uid_map.split_whitespace().collect();
    first != ["0", "0", "4294967295"]
}

/// Sends `request` to the broker at `socket` and reads its answer, for at
/// most `within` (see [`ANSWER_TIMEOUT`]).
pub fn ask(socket: &Path, request: &Request, within: Duration) -> Result<Answer, BrokerDown> {
    let down = |why: String| BrokerDown::NotThere { socket: socket.to_path_buf(), why };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        // A listening socket whose backlog is full: it is there, and answers others.
        std::io::ErrorKind::WouldBlock => BrokerDown::Busy { socket: socket.to_path_buf() },
        _ => down(format!("connect: {e}")),
    })?;
    stream.set_read_timeout(Some(within)).map_err(|e| down(e.to_string()))?;
    let body = crate::base::json::compact(request);
    // A broker that turns the connection away at once may answer and close before the request is
    // all sent: the answer is read all the same.
    let sent = stream.write_all(&body).and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut answer = Vec::new();
    // A status answer carries the ledger as the caller may see it. A broker that turned the
    // connection away at once closed it with the request unread: the answer came, then a reset.
    match (&mut stream).take(1 << 20).read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {}
        Err(e) => return Err(down(format!("no answer: {e}"))),
    }
    if let Err(e) = sent {
        if answer.is_empty() {
            return Err(down(format!("send: {e}")));
        }
    }
    serde_json::from_slice(&answer).map_err(|e| down(format!("an answer that is not the broker's: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_told_from_rootless_ones() {
        assert!(!in_user_namespace("         0          0 4294967295\n"));
        assert!(in_user_namespace("         0       1000          1\n         1     100000      65536\n"));
        assert!(in_user_namespace(""), "unreadable: not the initial one");
    }

    #[test]
    fn a_broker_that_is_not_there_is_named_with_the_unit() {
        let e = ask(Path::new("/nonexistent/broker.sock"), &Request::Release { state: serde_json::json!({}) }, ANSWER_TIMEOUT).unwrap_err().to_string();
        assert!(e.starts_with("the admission broker does not answer at /nonexistent/broker.sock (connect: "), "{e}");
        assert!(e.contains("systemctl start gpuwarden-broker.socket"), "{e}");
    }
}
