//! `gpuwarden-runtime`: the OCI runtime Docker is configured with. On
//! `create` it prepares the bundle's config.json through the library (CDI
//! devices and the profile rewrite, as Podman gets them), then it execs the
//! real runtime with the arguments it was given; every other command goes
//! straight through. A refusal is written where containerd's shim reads a
//! runtime's error (runc's `--log` file), so `docker run` shows it.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gpuwarden::cdi::inject::stat_node;
use gpuwarden::cdi::DEFAULT_SPEC_DIRS;
use gpuwarden::hookcall::{sibling, HookCall, HookOptions, HOOK_BINARY, LAUNCHER_BINARY};
use gpuwarden::shim::{self, Invocation, ShimEnv};

/// Its help, also the man page's text (tools/docgen).
const HELP: &str = include_str!("runtime-help.txt");
/// CDI spec folders when no --gpuwarden-cdi-dir is given (dockerd's environment).
const CDI_DIRS_ENV: &str = "GPUWARDEN_CDI_SPEC_DIRS";

fn prepare(inv: &Invocation, bundle: &Path) -> Result<(), String> {
    let o = &inv.shim;
    let config = o.config.clone().or_else(|| std::env::var_os("GPUWARDEN_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
    let settings = || gpuwarden::config::Config::load_from(config.as_deref());
    let options = HookOptions { config: config.clone(), ..Default::default() };
    let hook = o.hook.clone().or_else(|| sibling(HOOK_BINARY).ok()).unwrap_or_else(|| PathBuf::from(HOOK_BINARY));
    let launcher = o.launcher.clone().or_else(|| sibling(LAUNCHER_BINARY).ok());
    let from_env: Vec<PathBuf> = std::env::var_os(CDI_DIRS_ENV).map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect()).unwrap_or_default();
    let cdi_dirs = [o.cdi_dirs.clone(), from_env, DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()].into_iter().find(|d| !d.is_empty()).unwrap_or_default();
    let env = ShimEnv { settings: &settings, cdi_dirs, host_nodes: &stat_node, admission: HookCall { path: hook, options }, launcher };
    let done = shim::prepare(bundle, &env).map_err(|e| gpuwarden::base::text::one_line(&e))?;
    tracing::debug!("{}: {done:?}", bundle.display());
    Ok(())
}

/// Says why on stderr and in runc's `--log` file, where `docker run` reads it.
fn refuse(log: Option<&Path>, why: &str) -> ExitCode {
    let msg = format!("gpuwarden: {why}");
    eprintln!("{msg}");
    if let Some(log) = log {
        let line = shim::log_line(&msg, gpuwarden::base::clock::unix_seconds());
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Docker never calls a runtime with --help alone; a person does.
    if args.first().is_some_and(|a| a == "--gpuwarden-help") || (args.len() == 1 && (args[0] == "--help" || args[0] == "-h")) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let inv = match Invocation::parse(args) {
        Ok(inv) => inv,
        Err(e) => return refuse(None, &e.to_string()),
    };
    if let (Some("create"), Some(bundle)) = (inv.command.as_deref(), inv.bundle.as_deref()) {
        gpuwarden::base::logging::init(0);
        if let Err(why) = prepare(&inv, bundle) {
            return refuse(inv.log.as_deref(), &why);
        }
    }
    let e = std::process::Command::new(inv.runtime()).args(&inv.runtime_args).exec();
    refuse(inv.log.as_deref(), &format!("cannot run the runtime {:?}: {e} (name it with --gpuwarden-runtime PATH)", inv.runtime()))
}
