//! `gpuwarden watch`: the loop around the library's watchdog. It looks every
//! interval, acts, saves its state and appends its events; a failed look is
//! an event and the loop goes on.

use std::process::ExitCode;

use super::{now, Result, WatchArgs};
use gpuwarden::config::Config;
use gpuwarden::ledger::LedgerStore;
use gpuwarden::host::mps::guard::{restore, ControlLog, Held};
use gpuwarden::host::mps::{daemon, Ceiling};
use gpuwarden::base::proc::ProcFs;
use gpuwarden::admin::watch::engine::EngineCli;
use gpuwarden::admin::watch::events::{self, Event};
use gpuwarden::admin::watch::run::Watchdog;
use gpuwarden::admin::watch::state::WatchState;

/// The MPS guard of one look: the daemon's defaults, set back to the ceiling
/// if they moved; `logged` is what its log says was set since the last look.
/// `Err` when the defaults could not be read now (no daemon, or one too busy
/// to answer): a look says nothing of it, a wake tries again.
fn guard(config: &Config, devices: u32, logged: &[String]) -> std::result::Result<Option<std::result::Result<String, String>>, ()> {
    let Some(ceiling) = Ceiling::of(config).filter(|_| config.mps.enabled) else { return Ok(None) };
    let status = daemon::status(&config.mps, devices).map_err(drop)?;
    let held = Held { threads: status.threads, pinned: status.pinned };
    Ok(restore(&ceiling, &held, &gpuwarden::host::mps::ControlBinary::new(&config.mps), devices, logged))
}

/// What wakes the watchdog between looks: the MPS daemon's `control.log`
/// changing (a client sent it a command), so that moved defaults are put
/// back at once rather than at the next look.
struct DaemonLog(Option<nix::sys::inotify::Inotify>);

impl DaemonLog {
    fn watch(log_directory: &std::path::Path) -> DaemonLog {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let watched = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(log_directory, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE).map(|_| i));
        match watched {
            Ok(i) => DaemonLog(Some(i)),
            Err(e) => {
                eprintln!("gpuwarden watch: cannot follow {} ({e}): moved MPS defaults are put back at the next look", log_directory.display());
                DaemonLog(None)
            }
        }
    }

    /// After a wake, waits (at most 200 ms) until the daemon has logged the
    /// client's session to its end (`UI closed`), so the event says what it did.
    fn settle(&self, log: &std::path::Path) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while std::time::Instant::now() < until {
            let tail = std::fs::read(log).ok().map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(256)..]).into_owned()).unwrap_or_default();
            if tail.trim_end().ends_with("UI closed") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Waits until `deadline`; true when the log changed before it.
    fn wait(&self, deadline: std::time::Instant) -> bool {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(i) = &self.0 else {
            std::thread::sleep(left);
            return false;
        };
        use std::os::fd::AsFd;
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(i.as_fd(), nix::poll::PollFlags::POLLIN)];
        let woke = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).is_ok_and(|n| n > 0);
        // Read them all: one wake for a burst of lines.
        while woke && i.read_events().is_ok_and(|e| !e.is_empty()) {}
        woke
    }
}

/// Who may have moved the daemon's defaults, as the event says it: the
/// `nvidia-cuda-mps-control` clients seen running when its log moved, and
/// who can reach its control socket at all (root and the users the pipe
/// folder lets in). The daemon's own log does not name the caller.
fn talking_to_the_daemon(pipe: &std::path::Path) -> String {
    let user = |uid: u32| gpuwarden::base::users::lookup(std::path::Path::new("/"), uid).map_or_else(|| format!("uid {uid}"), |(a, _)| format!("{} (uid {uid})", a.name));
    let clients = gpuwarden::host::mps::guard::clients_now(&ProcFs, std::process::id() as i32);
    let seen: Vec<String> = clients.iter().map(|(pid, uid)| format!("nvidia-cuda-mps-control pid {pid} of {}", user(*uid))).collect();
    let may = match gpuwarden::base::fsutil::acl::read(pipe) {
        Ok(acl) if acl.other & gpuwarden::base::fsutil::acl::SEARCH == 0 => {
            let users: Vec<String> = acl.users.keys().map(|u| user(*u)).collect();
            format!("; only root{}{} can reach its control socket", if users.is_empty() { "" } else { " and " }, users.join(", "))
        }
        _ => "; every local user can reach its control socket".into(),
    };
    let seen = if seen.is_empty() { String::new() } else { format!("; talking to the daemon then: {}", seen.join(", ")) };
    format!("{seen}{may}")
}

fn record(config: &Config, list: &[Event]) {
    for e in list {
        eprintln!("gpuwarden watch: {}: {}", e.kind, e.detail);
        if let Err(err) = events::append(&config.watch.events_file, e) {
            eprintln!("gpuwarden watch: cannot write {}: {err}", config.watch.events_file.display());
        }
    }
}

/// Serves the metrics from the ledger and the saved state.
fn serve_metrics(addr: &str, config: &Config) -> Result<()> {
    let addr = gpuwarden::admin::watch::metrics::address(addr);
    let listener = std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    eprintln!("gpuwarden watch: metrics on http://{addr}/metrics");
    let (state_dir, state_file, events_file) = (config.state_dir.clone(), config.watch.state_file.clone(), config.watch.events_file.clone());
    gpuwarden::admin::watch::metrics::serve(listener, move || {
        let ledger = LedgerStore::new(&state_dir).read().unwrap_or_default();
        let state = WatchState::load(&state_file).unwrap_or_default();
        let refusals = events::read(&events_file).iter().filter(|e| e.kind == "refused").count() as u64;
        gpuwarden::admin::watch::report::metrics(&ledger, &state, refusals, now())
    });
    Ok(())
}

/// A configuration edited while the service runs: the new one, with this
/// run's own overrides, or the one in force when the edit does not parse.
pub fn reloaded(reload: &mut gpuwarden::config::reload::Reloading, service: &str, apply: impl FnOnce(Config)) {
    match reload.changed() {
        None => {}
        Some(Ok(config)) => {
            eprintln!("gpuwarden {service}: {} changed: read again", reload.path().display());
            apply(config);
        }
        Some(Err(e)) => eprintln!("gpuwarden {service}: {} changed, but the configuration in force is kept: {}", reload.path().display(), gpuwarden::base::text::one_line(&e)),
    }
}

pub fn run(args: &WatchArgs, config: &Config, config_file: Option<&std::path::Path>) -> Result<ExitCode> {
    let with_args = |mut c: Config| {
        if let Some(i) = args.interval {
            c.watch.interval_seconds = i;
        }
        c
    };
    let mut config = with_args(config.clone());
    let mut reload = gpuwarden::config::reload::Reloading::new(config_file);
    if let Some(addr) = &args.metrics {
        serve_metrics(addr, &config)?;
    }
    let state_file = config.watch.state_file.clone();
    let mut state = WatchState::load(&state_file).unwrap_or_else(|why| {
        eprintln!("gpuwarden watch: {why}");
        WatchState::default()
    });
    let devices = super::inventory_cmd::for_status(args.inventory.as_deref(), args.driver_root.as_deref(), &config).map(|i| i.gpus.len() as u32).unwrap_or(1);
    let looker = || super::live_cmd::running(args.inventory.as_deref(), args.driver_root.as_deref()).map_err(|e| e.to_string());
    // Only what the daemon logs from now on is news.
    let log = ControlLog::from_now(&config.mps.log_directory);
    let daemon_log = DaemonLog::watch(&config.mps.log_directory);
    let mut first = true;
    loop {
        // An edit of config.toml (profiles, actions, the MPS ceiling) counts from this look on.
        reloaded(&mut reload, "watch", |c| config = with_args(c));
        let store = LedgerStore::new(&config.state_dir);
        let ledger = || store.read().map_err(|e| e.to_string());
        let mps = || guard(&config, devices, &log.news()).ok().flatten();
        let dog = Watchdog { config: &config, ledger: &ledger, look: &looker, processes: &ProcFs, containers: &EngineCli, mps: &mps, now: now() };
        if std::mem::take(&mut first) {
            record(&config, &dog.reconcile(&state));
        }
        // A panic in one look is a bug: it is logged, the state stays as the last good look left it,
        // and the next look runs (README, "Panics").
        let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut next = state.clone();
            let list = dog.tick(&mut next);
            (next, list)
        }));
        let list = match looked {
            Ok((next, list)) => {
                state = next;
                list
            }
            Err(_) => {
                tracing::error!("a look of the watchdog ended in a panic (a bug in gpuwarden); the next look runs");
                Vec::new()
            }
        };
        record(&config, &list);
        state.save(&config.watch.state_file)?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        let next = std::time::Instant::now() + std::time::Duration::from_secs(config.watch.interval_seconds);
        while daemon_log.wait(next) {
            let seen = talking_to_the_daemon(&config.mps.pipe_directory);
            daemon_log.settle(&config.mps.log_directory.join("control.log"));
            // Only a command that sets a default is news: the guard's own questions, which the
            // daemon logs too, would wake the watchdog again and again.
            let logged = log.news();
            if logged.is_empty() {
                continue;
            }
            // A daemon busy with another client may turn the question away: ask again, for a second.
            let mut answered = guard(&config, devices, &logged);
            for _ in 0..50 {
                if answered.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                answered = guard(&config, devices, &logged);
            }
            if let Ok(Some(what)) = answered {
                let e = match what {
                    Ok(line) => Event { time: now(), kind: "mps_defaults_restored".into(), container: None, detail: format!("{line}{seen}") },
                    Err(why) => Event { time: now(), kind: "mps_defaults_unchecked".into(), container: None, detail: format!("{why}{seen}") },
                };
                *state.counts.entry(e.kind.clone()).or_insert(0) += 1;
                record(&config, &[e]);
            }
        }
    }
}
