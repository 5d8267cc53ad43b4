//! `gpuwarden watch`: the loop around the library's watchdog. It looks every
//! interval, acts, saves its state and appends its events; a failed look is
//! an event and the loop goes on.

use std::process::ExitCode;

use super::{now, Result, WatchArgs};
use gpuwarden::config::Config;
use gpuwarden::ledger::LedgerStore;
use gpuwarden::mps::{daemon, Ceiling};
use gpuwarden::proc::ProcFs;
use gpuwarden::watch::engine::EngineCli;
use gpuwarden::watch::events::{self, Event};
use gpuwarden::watch::run::Watchdog;
use gpuwarden::watch::state::WatchState;

/// The `Cmd:set_default_...` lines the daemon logged (control.log in its log
/// folder) since `offset`, which moves past what was read.
fn logged_changes(config: &Config, offset: &std::cell::Cell<u64>) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = config.mps.log_directory.join("control.log");
    let Ok(mut f) = std::fs::File::open(&path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // A new daemon starts a new log.
    let from = if len < offset.get() { 0 } else { offset.get() };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    offset.set(from + text.len() as u64);
    text.lines().filter_map(|l| l.split_once("Cmd:").map(|(_, c)| c.trim().to_string())).filter(|c| c.starts_with("set_default")).collect()
}

/// Puts the daemon's defaults back when they are not the ceiling; what the
/// daemon logged of who set what since the last look goes into the event.
fn guard(config: &Config, devices: u32, offset: &std::cell::Cell<u64>) -> Option<std::result::Result<String, String>> {
    if !config.mps.enabled {
        return None;
    }
    let ceiling = Ceiling::of(config)?;
    let logged = logged_changes(config, offset);
    let held = daemon::status(&config.mps, devices).ok()?;
    if ceiling.holds(held.threads, &held.pinned) {
        return None;
    }
    let found: Vec<String> = held.pinned.iter().map(|(o, l)| format!("{o}={}", l.map_or("none".to_string(), |l| l.mps_limit()))).collect();
    let log = if logged.is_empty() { String::new() } else { format!("; the daemon logged: {}", logged.join(", ")) };
    let control = gpuwarden::mps::control::ControlBinary::new(&config.mps);
    Some(match ceiling.apply(&control, devices) {
        Ok(()) => Ok(format!(
            "the MPS daemon's defaults were {:.1}% and pinned {}: set back to {}% and {} (a client changed them{log})",
            held.threads,
            found.join(" "),
            ceiling.threads,
            ceiling.pinned.mps_limit()
        )),
        Err(e) => Err(format!("the MPS daemon's defaults moved ({:.1}%, {}{log}) and could not be set back: {e}", held.threads, found.join(" "))),
    })
}

fn record(config: &Config, list: &[Event]) {
    for e in list {
        eprintln!("gpuwarden watch: {}: {}", e.kind, e.detail);
        if let Err(err) = events::append(&config.watch.events_file, e) {
            eprintln!("gpuwarden watch: cannot write {}: {err}", config.watch.events_file.display());
        }
    }
}

/// Serves the metrics from the ledger and the saved state, in a thread of its own.
fn serve_metrics(addr: &str, config: &Config) -> Result<()> {
    use std::io::{Read, Write};
    let addr = if addr.contains(':') { addr.to_string() } else { format!("127.0.0.1:{addr}") };
    let listener = std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    eprintln!("gpuwarden watch: metrics on http://{addr}/metrics");
    let (state_dir, state_file, events_file) = (config.state_dir.clone(), config.watch.state_file.clone(), config.watch.events_file.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut request = [0u8; 2048];
            let n = stream.read(&mut request).unwrap_or(0);
            let first = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_string();
            let (status, body) = if first.starts_with("GET /metrics ") || first.starts_with("GET /metrics?") {
                let ledger = LedgerStore::new(&state_dir).read().unwrap_or_default();
                let state = WatchState::load(&state_file).unwrap_or_default();
                let refusals = events::read(&events_file).iter().filter(|e| e.kind == "refused").count() as u64;
                ("200 OK", gpuwarden::watch::report::metrics(&ledger, &state, refusals, now()))
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_string())
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    });
    Ok(())
}

pub fn run(args: &WatchArgs, config: &Config) -> Result<ExitCode> {
    let mut config = config.clone();
    if let Some(i) = args.interval {
        config.watch.interval_seconds = i;
    }
    if let Some(addr) = &args.metrics {
        serve_metrics(addr, &config)?;
    }
    let state_file = config.watch.state_file.clone();
    let mut state = WatchState::load(&state_file).unwrap_or_else(|why| {
        eprintln!("gpuwarden watch: {why}");
        WatchState::default()
    });
    let store = LedgerStore::new(&config.state_dir);
    let ledger = || store.read().map_err(|e| e.to_string());
    let devices = super::inventory_cmd::for_status(args.inventory.as_deref(), args.driver_root.as_deref(), &config).map(|i| i.gpus.len() as u32).unwrap_or(1);
    let looker = || super::live_cmd::running(args.inventory.as_deref(), args.driver_root.as_deref()).map_err(|e| e.to_string());
    // Only what the daemon logs from now on is news.
    let offset = std::cell::Cell::new(std::fs::metadata(config.mps.log_directory.join("control.log")).map(|m| m.len()).unwrap_or(0));
    let mps = || guard(&config, devices, &offset);
    let dog = |now: u64| Watchdog { config: &config, ledger: &ledger, look: &looker, processes: &ProcFs, containers: &EngineCli, mps: &mps, now };
    record(&config, &dog(now()).reconcile(&state));
    loop {
        let list = dog(now()).tick(&mut state);
        record(&config, &list);
        state.save(&state_file)?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs(config.watch.interval_seconds));
    }
}
