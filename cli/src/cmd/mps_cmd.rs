//! `gpuwarden mps start | stop | status`.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::{inventory_cmd, MpsArgs, Result};
use gpuwarden::config::Config;
use gpuwarden::host::mps::daemon::{self, DaemonStatus, Started, Stopped};
use gpuwarden::host::mps::Ceiling;

fn devices(args: &MpsArgs, config: &Config) -> Result<u32> {
    let inventory = inventory_cmd::for_status(args.inventory.as_deref(), args.driver_root.as_deref(), config)?;
    Ok(u32::try_from(inventory.gpus.len())?)
}

/// The file a configuration was read from (or would be), absolute: the mark
/// `mps start` leaves in the daemon's environment.
fn config_file(named: Option<&std::path::Path>) -> std::path::PathBuf {
    gpuwarden::base::fsutil::absolute(named.unwrap_or(std::path::Path::new(gpuwarden::config::DEFAULT_CONFIG_PATH)))
}

pub fn start(args: &MpsArgs, config: &Config, named: Option<&std::path::Path>) -> Result<ExitCode> {
    if !config.mps.enabled {
        return Err("MPS is off in config.toml ([mps] enabled = false): turn it on to run the daemon".into());
    }
    let ceiling = Ceiling::of(config).ok_or("no profiles: nothing to set the daemon's defaults to")?;
    let devices = devices(args, config)?;
    let how = match daemon::start(&config.mps, &ceiling, devices, &config_file(named))? {
        Started::Now { pid } => format!("started the MPS control daemon (pid {pid})"),
        Started::AlreadyRunning { pid } => format!("the MPS control daemon was running (pid {pid})"),
    };
    println!(
        "{how}: pipe directory {}, /dev/shm {}; defaults {}% of the SMs and {} pinned on devices 0..{}, read back",
        config.mps.pipe_directory.display(),
        config.mps.shm_directory.display(),
        ceiling.threads,
        ceiling.pinned.mps_limit(),
        devices.saturating_sub(1)
    );
    // Its control socket changes the defaults for every client: only those who use the GPU may reach it.
    match gpuwarden::host::mps::access::close_pipe(config, std::path::Path::new("/")) {
        Ok(line) => println!("{line}"),
        Err(warning) => eprintln!("gpuwarden: {warning}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the daemon of the configuration; when that file no longer parses,
/// the daemons `mps start` started from it, found by the mark in their
/// environment, so a broken config.toml never leaves one running.
pub fn stop(config: std::result::Result<Config, gpuwarden::config::ConfigError>, named: Option<&std::path::Path>) -> Result<ExitCode> {
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            let file = config_file(named);
            let recorded = daemon::started_from(&file, std::path::Path::new("/proc"));
            if recorded.is_empty() {
                return Err(format!("{}; and no MPS control daemon that `gpuwarden mps start` started from {} runs, so there is nothing to stop", gpuwarden::base::text::one_line(&e), file.display()).into());
            }
            for r in recorded {
                daemon::stop(&r.mps)?;
                println!(
                    "stopped the MPS control daemon (pid {}) that `gpuwarden mps start` started from {}: that file does not parse now ({}), so its pipe directory {} came from the daemon's environment",
                    r.pid,
                    file.display(),
                    gpuwarden::base::text::one_line(&e),
                    r.mps.pipe_directory.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match daemon::stop(&config.mps)? {
        Some(Stopped::Quit { pid }) => println!("stopped the MPS control daemon (pid {pid})"),
        Some(Stopped::Ended { pid }) => {
            println!("stopped the MPS control daemon (pid {pid}): it did not quit when asked (busy or hung servers, or its socket was gone), so it was ended with signals")
        }
        None => println!("no MPS control daemon answers in {}: nothing to stop", config.mps.pipe_directory.display()),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: &MpsArgs, config: &Config) -> Result<ExitCode> {
    print!("{}", render(config, daemon::status(&config.mps, devices(args, config)?)));
    Ok(ExitCode::SUCCESS)
}

/// The MPS lines of `mps status` and `status`.
pub fn render(config: &Config, status: std::result::Result<DaemonStatus, daemon::DaemonError>) -> String {
    let mut out = String::new();
    if !config.mps.enabled {
        let _ = writeln!(out, "MPS  OFF ([mps] enabled = false): containers are NOT limited on the GPU; the budget is bookkeeping only");
        return out;
    }
    let s = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "MPS  {}; profile containers are refused until it runs", gpuwarden::base::text::one_line(&e));
            return out;
        }
    };
    let pinned: Vec<String> = s.pinned.iter().map(|(o, l)| format!("device {o} {}", l.map_or_else(|| "NO LIMIT".to_string(), |l| l.mps_limit()))).collect();
    let _ = writeln!(out, "MPS  control daemon pid {}  pipe directory {}", s.pid, config.mps.pipe_directory.display());
    let _ = writeln!(out, "  defaults: {:.0}% of the SMs; pinned memory {}", s.threads, pinned.join(", "));
    match Ceiling::of(config) {
        Some(c) if !c.holds(s.threads, &s.pinned) => {
            let _ = writeln!(out, "  ! not the ceiling ({}%, {}): someone changed them; run `gpuwarden mps start` to set them again", c.threads, c.pinned.mps_limit());
        }
        _ => {}
    }
    if s.servers.is_empty() {
        let _ = writeln!(out, "  no MPS servers (one starts when the first CUDA client connects)");
    }
    for (server, clients) in &s.servers {
        let user = gpuwarden::base::users::lookup(std::path::Path::new("/"), server.uid).map_or_else(String::new, |(a, _)| format!(" ({})", a.name));
        let _ = writeln!(out, "  server pid {} for uid {}{user}: {} client(s) {:?}", server.pid, server.uid, clients.len(), clients);
    }
    let _ = writeln!(out, "  a share holds per CUDA process: a container that starts two CUDA processes takes two client slots");
    out
}

/// The MPS part of `status --json`.
pub fn json(config: &Config, status: &std::result::Result<DaemonStatus, daemon::DaemonError>) -> serde_json::Value {
    use serde_json::json;
    match (config.mps.enabled, status) {
        (false, _) => json!({"enabled": false, "enforced": false}),
        (true, Err(e)) => json!({"enabled": true, "enforced": false, "running": false, "error": gpuwarden::base::text::one_line(e)}),
        (true, Ok(s)) => json!({
            "enabled": true,
            "enforced": true,
            "running": true,
            "pid": s.pid,
            "pipe_directory": config.mps.pipe_directory,
            "default_thread_percentage": s.threads,
            "default_pinned_bytes": s.pinned.iter().map(|(o, l)| (o.to_string(), json!(l.map(|l| l.as_u64())))).collect::<serde_json::Map<_, _>>(),
            "servers": s.servers.iter().map(|(srv, clients)| json!({"pid": srv.pid, "uid": srv.uid, "clients": clients})).collect::<Vec<_>>(),
        }),
    }
}
