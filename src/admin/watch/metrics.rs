//! `gpuwarden watch --metrics`: Prometheus' text format over HTTP on one
//! route, `/metrics`. Hand-written on purpose: one GET, no keep-alive, no
//! TLS, and a dependency (tiny_http and its crates) would be larger than it.
//! Each connection is served on a thread of its own with read and write
//! timeouts, at most [`MAX_CLIENTS`] at once, apart from the watchdog's loop:
//! a slow or silent client holds neither the loop nor other scrapers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; past this a new one is closed unanswered.
pub const MAX_CLIENTS: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(2);

/// `9464` alone means loopback: `127.0.0.1:9464`.
pub fn address(addr: &str) -> String {
    if addr.contains(':') { addr.to_string() } else { format!("127.0.0.1:{addr}") }
}

/// Serves `body()` at `/metrics` on `listener`, on a thread of its own.
pub fn serve(listener: TcpListener, body: impl Fn() -> String + Send + Sync + 'static) {
    let body = Arc::new(body);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (body, active) = (Arc::clone(&body), Arc::clone(&active));
            let spawned = std::thread::Builder::new().name("metrics".into()).stack_size(128 << 10).spawn(move || {
                answer(stream, &*body);
                active.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                tracing::warn!("cannot start a thread for a metrics connection");
            }
        }
    });
}

fn answer(mut stream: TcpStream, body: &dyn Fn() -> String) {
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    // The request line may come in pieces: read until it is whole (or 2 KiB, or the timeout).
    let mut request = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !request.windows(2).any(|w| w == b"\r\n") && request.len() < 2048 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let first = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
    let (status, text) = if first.starts_with("GET /metrics ") || first.starts_with("GET /metrics?") {
        ("200 OK", body())
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_string())
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", text.len());
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(text.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(port: u16, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The request line in pieces, as a slow client sends it.
        for piece in ["GET ", path, " HTTP/1.1\r\n", "Host: x\r\n\r\n"] {
            s.write_all(piece.as_bytes()).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_beside_a_silent_client_and_names_its_one_route() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        serve(listener, || "gpuwarden_watch_up 1\n".to_string());
        // A client that connects and says nothing holds its own thread only.
        let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let answer = get(port, "/metrics");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\ngpuwarden_watch_up 1\n"), "{answer}");
        assert!(get(port, "/").starts_with("HTTP/1.1 404 Not Found"));
        assert_eq!(address("9464"), "127.0.0.1:9464");
        assert_eq!(address("0.0.0.0:9464"), "0.0.0.0:9464");
    }
}
