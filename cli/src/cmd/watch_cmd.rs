//! `gpuwarden watch`: the loop around the library's watchdog. It looks every
//! interval, acts, saves its state and appends its events; a failed look is
//! an event and the loop goes on.

use std::process::ExitCode;

use super::{now, Result, WatchArgs};
use gpuwarden::config::Config;
use gpuwarden::ledger::LedgerStore;
use gpuwarden::mps::guard::{restore, ControlLog, Held};
use gpuwarden::mps::{daemon, Ceiling};
use gpuwarden::proc::ProcFs;
use gpuwarden::watch::engine::EngineCli;
use gpuwarden::watch::events::{self, Event};
use gpuwarden::watch::run::Watchdog;
use gpuwarden::watch::state::WatchState;

/// The MPS guard of one look: the daemon's defaults, set back to the ceiling if they moved.
fn guard(config: &Config, devices: u32, log: &ControlLog) -> Option<std::result::Result<String, String>> {
    if !config.mps.enabled {
        return None;
    }
    let ceiling = Ceiling::of(config)?;
    let status = daemon::status(&config.mps, devices).ok()?;
    let held = Held { threads: status.threads, pinned: status.pinned };
    restore(&ceiling, &held, &gpuwarden::mps::ControlBinary::new(&config.mps), devices, log)
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
    let addr = gpuwarden::watch::metrics::address(addr);
    let listener = std::net::TcpListener::bind(&addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    eprintln!("gpuwarden watch: metrics on http://{addr}/metrics");
    let (state_dir, state_file, events_file) = (config.state_dir.clone(), config.watch.state_file.clone(), config.watch.events_file.clone());
    gpuwarden::watch::metrics::serve(listener, move || {
        let ledger = LedgerStore::new(&state_dir).read().unwrap_or_default();
        let state = WatchState::load(&state_file).unwrap_or_default();
        let refusals = events::read(&events_file).iter().filter(|e| e.kind == "refused").count() as u64;
        gpuwarden::watch::report::metrics(&ledger, &state, refusals, now())
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
    let log = ControlLog::from_now(&config.mps.log_directory);
    let mps = || guard(&config, devices, &log);
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
