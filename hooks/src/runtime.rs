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
use gpuwarden::hook::{HookCall, HOOK_BINARY};
use gpuwarden::shim::{self, Invocation, ShimEnv};

const HELP: &str = "\
gpuwarden-runtime: an OCI runtime for Docker that gives containers a GPU under gpuwarden's
budget, then runs the real runtime (runc) with the arguments it was given.

Usage: gpuwarden-runtime [--gpuwarden-OPTION VALUE]... RUNC-ARGUMENTS...   (run by Docker)

Set up: `gpuwarden install --docker` registers it in /etc/docker/daemon.json (every other
key kept, the old file backed up), then restart Docker (systemctl restart docker). What it
writes, for the binary where the package puts it (/usr/bin; `install` alone: /usr/local/bin):
  {\"runtimes\": {\"gpuwarden\": {\"path\": \"/usr/bin/gpuwarden-runtime\"}}}
and on Docker 25+ also \"features\": {\"cdi\": true} and \"default-runtime\": \"gpuwarden\".
No runtimeArgs are needed: the runtime reads GPUWARDEN_CONFIG and GPUWARDEN_CDI_SPEC_DIRS
from dockerd's environment, else the defaults below.

A container asks for a GPU with
  docker run --device nvidia.com/gpu=comfyui ...                    (Docker 25+ with CDI)
  docker run --runtime gpuwarden -e NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=comfyui ...
  docker run --runtime gpuwarden -e GPUWARDEN_PROFILE=comfyui ...   (the profile device)
NVIDIA_VISIBLE_DEVICES also takes all, 0,1 and GPU UUIDs. Containers without a
request are not touched.

Options, before the runtime's own arguments (rarely needed; in daemon.json: \"runtimeArgs\",
which makes Docker run the runtime through a shell script, ~1 ms more per call):
  --gpuwarden-runtime PATH        the real runtime (default: runc, from PATH)
  --gpuwarden-config FILE         gpuwarden's config (default: $GPUWARDEN_CONFIG, else
                                  /etc/gpuwarden/config.toml)
  --gpuwarden-cdi-dir DIR         CDI spec folder, repeatable (default: the folders in
                                  $GPUWARDEN_CDI_SPEC_DIRS, colon-separated, else /etc/cdi, /var/run/cdi)
  --gpuwarden-launcher-path PATH  the launcher to mount (default: gpuwarden-launch beside this binary)
  --gpuwarden-hook-path PATH      the hook binary (default: gpuwarden-hook beside this binary)
  --gpuwarden-help, --help        this text
";

/// CDI spec folders when no --gpuwarden-cdi-dir is given (dockerd's environment).
const CDI_DIRS_ENV: &str = "GPUWARDEN_CDI_SPEC_DIRS";

fn sibling(name: &str) -> Option<PathBuf> {
    let here = std::env::current_exe().ok()?;
    Some(here.parent()?.join(name))
}

fn prepare(inv: &Invocation, bundle: &Path) -> Result<(), String> {
    let o = &inv.shim;
    let config = o.config.clone().or_else(|| std::env::var_os("GPUWARDEN_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
    let settings = || gpuwarden::config::Config::load_from(config.as_deref());
    let mut options = Vec::new();
    if let Some(c) = &config {
        options.extend(["--config".to_string(), gpuwarden::fsutil::absolute(c).display().to_string()]);
    }
    let hook = o.hook.clone().or_else(|| sibling(HOOK_BINARY)).unwrap_or_else(|| PathBuf::from(HOOK_BINARY));
    let launcher = o.launcher.clone().or_else(|| sibling("gpuwarden-launch").filter(|p| p.exists()));
    let from_env: Vec<PathBuf> = std::env::var_os(CDI_DIRS_ENV).map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect()).unwrap_or_default();
    let cdi_dirs = [o.cdi_dirs.clone(), from_env, DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()].into_iter().find(|d| !d.is_empty()).unwrap_or_default();
    let env = ShimEnv { settings: &settings, cdi_dirs, host_nodes: &stat_node, admission: HookCall { path: hook, options }, launcher };
    let done = shim::prepare(bundle, &env).map_err(|e| gpuwarden::text::one_line(&e))?;
    tracing::debug!("{}: {done:?}", bundle.display());
    Ok(())
}

/// Says why on stderr and in runc's `--log` file, where `docker run` reads it.
fn refuse(log: Option<&Path>, why: &str) -> ExitCode {
    let msg = format!("gpuwarden: {why}");
    eprintln!("{msg}");
    if let Some(log) = log {
        let line = shim::log_line(&msg, gpuwarden::clock::unix_seconds());
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
        gpuwarden::logging::init(0);
        if let Err(why) = prepare(&inv, bundle) {
            return refuse(inv.log.as_deref(), &why);
        }
    }
    let e = std::process::Command::new(inv.runtime()).args(&inv.runtime_args).exec();
    refuse(inv.log.as_deref(), &format!("cannot run the runtime {:?}: {e} (name it with --gpuwarden-runtime PATH)", inv.runtime()))
}
