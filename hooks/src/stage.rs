//! One hook stage: stdin in, the stage's output out, the library in between.

// Admission's refusals pass through here as they are (see src/admission/mod.rs).
#![allow(clippy::result_large_err)]

use std::io::{Read, Write};
use std::path::Path;

use gpuwarden::config::Config;
use gpuwarden::admission::{self, waiter, Host};
use gpuwarden::hook;
use gpuwarden::hookcall::{HookCall, HookOptions};
use gpuwarden::ledger::LedgerStore;
use gpuwarden::base::proc::ProcFs;

use crate::cli::{Options, Stage};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    Ok(input)
}


impl Options {
    fn settings(&self) -> std::result::Result<Config, gpuwarden::config::ConfigError> {
        gpuwarden::config::Config::load_from(self.config.as_deref())
    }

    /// The options the admission hooks precreate adds are called with.
    fn for_admission(&self) -> HookOptions {
        HookOptions { config: self.config.clone(), inventory: self.inventory.clone(), state_dir: self.state_dir.clone(), launcher_path: None }
    }
}

/// The system as admission sees it: the configuration, the GPUs (the
/// inventory with the live view merged), the process table, the MPS daemon,
/// and the waiter's clock. The admit stage and the broker share it.
struct System<'a> {
    options: &'a Options,
    waiter: &'a dyn waiter::Waiter,
}

impl Host for System<'_> {
    fn settings(&self) -> std::result::Result<Config, gpuwarden::config::ConfigError> {
        self.options.settings()
    }
    fn state_dir(&self) -> Option<&Path> {
        self.options.state_dir.as_deref()
    }
    fn processes(&self) -> &dyn gpuwarden::base::proc::Processes {
        &ProcFs
    }
    fn inventory(&self, config: &Config) -> std::result::Result<gpuwarden::host::inventory::Inventory, gpuwarden::host::inventory::InventoryError> {
        let mut inv = hook::load_inventory(self.options.inventory.as_deref(), config)?;
        let live = gpuwarden::host::live::merge(&mut inv, &config.live.file, self.now(), config.live.max_age_seconds);
        tracing::debug!("{}", live.describe(&config.live.file));
        Ok(inv)
    }
    fn daemon(&self, mps: &gpuwarden::config::MpsConfig) -> std::result::Result<gpuwarden::host::mps::Daemon, gpuwarden::host::mps::ProbeError> {
        gpuwarden::host::mps::daemon(&mps.pipe_directory, Path::new("/proc"))
    }
    fn grant(&self, mps: &gpuwarden::config::MpsConfig, uid: u32) -> std::result::Result<(), String> {
        gpuwarden::host::mps::access::grant(mps, uid)
    }
    fn waiter(&self) -> &dyn waiter::Waiter {
        self.waiter
    }
}

/// True when this hook must go through the broker: asked to, or running in a
/// user namespace (rootless Podman), where the ledger is root's.
fn via_broker(o: &Options) -> bool {
    o.via_broker || gpuwarden::broker::in_user_namespace(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// The broker's socket: the configuration's, else the default (a broken
/// config.toml still reaches the broker, whose own config decides).
fn broker_socket(settings: Option<&Config>) -> std::path::PathBuf {
    settings.map_or_else(|| gpuwarden::broker::DEFAULT_SOCKET.into(), |c| c.broker.socket.clone())
}

/// One request to the broker at `socket`; its refusal (the line) is this
/// hook's. `wait` is how long the container may wait for its share there.
fn through_broker(socket: &Path, request: gpuwarden::broker::Request, id: &str, wait: std::time::Duration) -> std::result::Result<(), String> {
    match gpuwarden::broker::ask(socket, &request, gpuwarden::broker::ANSWER_TIMEOUT + wait) {
        Ok(answer) if answer.ok => Ok(()),
        Ok(answer) => Err(answer.line),
        Err(down) => Err(format!("refused {}: {down}", gpuwarden::oci::short_id(id))),
    }
}

/// The runtime that ran this hook: its parent's process name (`runc`, `crun`).
fn runtime() -> Option<String> {
    use gpuwarden::base::proc::Processes;
    gpuwarden::base::proc::ProcFs.comm(std::os::unix::process::parent_id() as i32)
}

/// Refuses the container of the OCI state in `input` with `line`, where the
/// user will see it (see [`hook::deliver`]): this hook's failure under a
/// runtime that shows a hook's stderr (runc), else a line put into the
/// container for its launcher, which prints it and exits before the
/// workload starts; the hook then succeeds, holding nothing. Where the line
/// cannot be put there, the hook fails with it, as under runc. `config` is
/// the bundle's config.json when already read.
fn refuse(line: String, input: &[u8], config: Option<&[u8]>) -> Result<()> {
    let runtime = runtime();
    let delivered = (|| -> std::result::Result<(), String> {
        let state = gpuwarden::oci::HookState::parse(input).map_err(|e| e.to_string())?;
        let bundle = state.bundle().map_err(|e| e.to_string())?;
        let read;
        let bytes = match config {
            Some(c) => c,
            None => {
                read = std::fs::read(bundle.join("config.json")).map_err(|e| e.to_string())?;
                &read
            }
        };
        let cfg = gpuwarden::oci::ContainerConfig::parse(bytes, "config.json").map_err(|e| e.to_string())?;
        if hook::deliver::channel(runtime.as_deref(), &cfg) == hook::deliver::Channel::Hook {
            return Err(String::new());
        }
        let pid = state.pid.ok_or("the OCI state has no pid")?;
        let root = cfg.root_path().map(|r| bundle.join(r)).ok_or("config.json names no root")?;
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        hook::deliver::deliver(pid, &root, &line).map_err(|e| e.to_string())
    })();
    match delivered {
        Ok(()) => {
            tracing::info!("{} swallows a hook's output: the refusal goes to the container's launcher: {line}", runtime.as_deref().unwrap_or("the runtime"));
            Ok(())
        }
        Err(why) if why.is_empty() => Err(line.into()),
        Err(why) => Err(format!("{line} (it could not be told through the container: {why})").into()),
    }
}

/// How long the container in `config` may wait for its share, as far as
/// this hook can tell (the broker's configuration decides): its annotation or
/// env, else its profile's in the configuration this hook reads.
fn asked_wait(settings: Option<&Config>, config: &[u8]) -> std::time::Duration {
    let Ok(cfg) = gpuwarden::oci::ContainerConfig::parse(config, "config.json") else { return std::time::Duration::ZERO };
    let profiles = cfg.profile_name().ok().flatten().and_then(|p| settings?.profile(p)).map(|d| d.wait);
    let wait = waiter::requested(&cfg, profiles.unwrap_or_default()).unwrap_or_default();
    std::time::Duration::from_secs(wait.as_seconds())
}

pub fn run(stage: Stage) -> Result<()> {
    match stage {
        Stage::Precreate(o) => {
            let me = HookCall { path: std::env::current_exe()?, options: o.for_admission() };
            // Podman has mounted the container's storage at root.path before this stage.
            let loader = |cfg: &gpuwarden::oci::ContainerConfig| hook::image_loader(cfg, Path::new("/"));
            let env = hook::PrecreateEnv { settings: &|| o.settings(), admission: &me, launcher: o.launcher_path.as_deref(), loader: &loader };
            let out = hook::precreate(&stdin()?, &env)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
        }
        Stage::Admit(o) if via_broker(&o) => {
            let input = stdin()?;
            let state = gpuwarden::oci::HookState::parse(&input)?;
            // The hook reads its own bundle: the broker opens no path a caller names.
            let config_path = state.bundle()?.join("config.json");
            let config = std::fs::read(&config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
            // config.toml, read once: the broker's socket, and the profile's wait.
            let settings = o.settings().ok();
            let wait = asked_wait(settings.as_ref(), &config);
            let request = gpuwarden::broker::Request::admit(&input, &config)?;
            if let Err(line) = through_broker(&broker_socket(settings.as_ref()), request, &state.id, wait) {
                refuse(line, &input, Some(&config))?;
            }
        }
        Stage::Admit(o) => {
            let input = stdin()?;
            let host = System { options: &o, waiter: &waiter::HookWaiter::new() };
            let admitted = admission::Request::read(&input).and_then(|request| admission::admit(&request, &host)).map(drop).inspect_err(|e| admission::record_refusal(e, &host));
            if let Err(e) = admitted {
                refuse(gpuwarden::base::text::one_line(&e), &input, None)?;
            }
        }
        Stage::Release(o) if via_broker(&o) => {
            let input = stdin()?;
            let state = gpuwarden::oci::HookState::parse(&input)?;
            let socket = broker_socket(o.settings().ok().as_ref());
            through_broker(&socket, gpuwarden::broker::Request::release(&input)?, &state.id, std::time::Duration::ZERO)?;
        }
        Stage::Release(o) => {
            let input = stdin()?;
            hook::release(&input, &LedgerStore::chosen(o.state_dir.as_deref(), || o.settings())?)?;
        }
        Stage::Broker(o) => broker(&o)?,
    }
    Ok(())
}

/// Serves the broker's socket until it fails. Admission runs as the hooks run
/// it, with the broker's own configuration (never a caller's) and its ledger.
fn broker(o: &Options) -> Result<()> {
    let settings = o.settings().ok();
    let socket = broker_socket(settings.as_ref());
    let per_user = settings.as_ref().map_or(gpuwarden::config::DEFAULT_CONNECTIONS_PER_USER, |c| c.broker.connections_per_user) as usize;
    let listener = gpuwarden::broker::Listener::open(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    let o = o.clone();
    let handle = move |caller: &gpuwarden::broker::Caller, request: gpuwarden::broker::Request, connected: &dyn Fn() -> bool| {
        let waiter = waiter::CallerWaiter { pid: caller.pid, connected };
        gpuwarden::broker::handle(caller, request, &System { options: &o, waiter: &waiter }, &gpuwarden::base::proc::user_namespace_owner)
    };
    tracing::info!("the admission broker listens on {}", socket.display());
    let failed = gpuwarden::broker::serve(&listener, std::sync::Arc::new(gpuwarden::broker::ServeEnv { handle: Box::new(handle), per_user }));
    Err(format!("the admission broker stopped: {failed}").into())
}
