//! `gpuwarden status` and `gpuwarden ledger reset`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{now, Result, StatusArgs};
use gpuwarden::config::Config;
use gpuwarden::ledger::{LedgerStore, ResetOutcome};
use gpuwarden::base::proc::ProcFs;

fn store(state_dir: &Option<PathBuf>, config: &Config) -> LedgerStore {
    LedgerStore::new(state_dir.as_ref().unwrap_or(&config.state_dir))
}

pub fn status(args: &StatusArgs, config: &Config) -> Result<ExitCode> {
    let a = &args.ledger;
    let mut inv = super::inventory_cmd::for_status(a.inventory.as_deref(), a.driver_root.as_deref(), config)?;
    let live = gpuwarden::host::live::merge(&mut inv, &config.live.file, now(), config.live.max_age_seconds);
    let ledger = match store(&a.state_dir, config).read() {
        // Root's alone: a user sees it through the broker, their own containers in full and others' by user and profile.
        Err(gpuwarden::ledger::LedgerError::Read { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => ledger_seen_by_me(config)?,
        other => other?,
    };
    let status = gpuwarden::admin::status::gather(&inv, config, &ledger, &ProcFs);
    let mps = gpuwarden::host::mps::daemon::status(&config.mps, u32::try_from(inv.gpus.len())?);
    let watch = gpuwarden::host::watched::state::WatchState::load(&config.watch.state_file).unwrap_or_default();
    let events = gpuwarden::host::watched::events::read(&config.watch.events_file);
    if args.json {
        let mut v = gpuwarden::admin::status::render_json(&status, now());
        v["mps"] = super::mps_cmd::json(config, &mps);
        v["live_view"] = serde_json::json!(live.describe(&config.live.file));
        v["watch"] = gpuwarden::admin::watch::report::render_json(&watch, &events, now());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", gpuwarden::admin::status::render_text(&status, now()));
        println!("LIVE {}", live.describe(&config.live.file));
        print!("{}", super::mps_cmd::render(config, mps));
        print!("{}", gpuwarden::admin::watch::report::render_text(&ledger, &watch, &events, now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ledger as the admission broker shows it to this user.
fn ledger_seen_by_me(config: &Config) -> Result<gpuwarden::ledger::Ledger> {
    let answer = gpuwarden::broker::ask(&config.broker.socket, &gpuwarden::broker::Request::Status {}, gpuwarden::broker::ANSWER_TIMEOUT)
        .map_err(|down| format!("the ledger is root's, and {down}"))?;
    match answer.ledger {
        Some(l) if answer.ok => Ok(l),
        _ => Err(format!("the admission broker did not show the ledger: {}", answer.line).into()),
    }
}

pub fn ledger_reset(state_dir: Option<PathBuf>, force: bool, config: &Config) -> Result<ExitCode> {
    let store = store(&state_dir, config);
    let path = store.path();
    // A folder named by mistake must not get a ledger of its own.
    if !path.exists() {
        return Err(format!(
            "there is no ledger at {}: nothing to reset (the admission hook makes it at the first profile container; the configuration's state folder is {})",
            path.display(),
            config.state_dir.display()
        )
        .into());
    }
    match store.reset(now(), force)? {
        ResetOutcome::Started => println!("ledger {} started empty (there was none)", path.display()),
        ResetOutcome::AlreadyEmpty => println!("ledger {} is readable and empty: nothing to reset", path.display()),
        ResetOutcome::KeptBad(kept) => println!("ledger {} reset; the unreadable one is kept as {}", path.display(), kept.display()),
        ResetOutcome::KeptDiscarded(kept) => {
            println!("ledger {} reset; its reservations are discarded and kept in {}", path.display(), kept.display())
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn queue_cancel(key: &str, state_dir: Option<PathBuf>, config: &Config) -> Result<ExitCode> {
    // Root takes the ledger's lock itself; a user asks the broker, which checks it is theirs.
    let line = if nix::unistd::geteuid().is_root() {
        gpuwarden::ledger::queue::cancel_in(&store(&state_dir, config), key, None)?
    } else {
        let request = gpuwarden::broker::Request::Cancel { container: key.to_string() };
        let answer = gpuwarden::broker::ask(&config.broker.socket, &request, gpuwarden::broker::ANSWER_TIMEOUT)?;
        if !answer.ok {
            return Err(answer.line.into());
        }
        answer.line
    };
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
