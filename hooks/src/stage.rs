//! One hook stage: stdin in, the stage's output out, the library in between.

use std::io::{Read, Write};
use std::path::Path;

use gpuwarden::config::Config;
use gpuwarden::hook::{self, HookCall, HookEnv};
use gpuwarden::ledger::LedgerStore;
use gpuwarden::proc::ProcFs;

use super::{Options, Stage};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    Ok(input)
}

use gpuwarden::clock::unix_seconds as now;

impl Options {
    fn settings(&self) -> std::result::Result<Config, gpuwarden::config::ConfigError> {
        gpuwarden::config::Config::load_from(self.config.as_deref())
    }

    /// These options as arguments, for the admission hooks precreate adds.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                args.extend([flag.to_string(), v]);
            }
        };
        push("--config", self.config.as_deref().map(|p| gpuwarden::fsutil::absolute(p).display().to_string()));
        push("--inventory", self.inventory.clone());
        push("--state-dir", self.state_dir.as_deref().map(|p| gpuwarden::fsutil::absolute(p).display().to_string()));
        args
    }
}

/// Runs `f` with what admission reads besides its input: the configuration,
/// the GPUs (the inventory with the live view merged), the process table,
/// the MPS daemon, the clock. The admit stage and the broker share it.
fn with_hook_env<R>(o: &Options, waiter: &dyn gpuwarden::queue::Waiter, f: impl FnOnce(&HookEnv) -> R) -> R {
    let inventory = |config: &Config| {
        let mut inv = hook::load_inventory(o.inventory.as_deref(), config)?;
        let live = gpuwarden::live::merge(&mut inv, &config.live.file, now(), config.live.max_age_seconds);
        tracing::debug!("{}", live.describe(&config.live.file));
        Ok(inv)
    };
    let daemon = |mps: &gpuwarden::config::MpsConfig| gpuwarden::mps::daemon(&mps.pipe_directory, Path::new("/proc"));
    f(&HookEnv { settings: &|| o.settings(), state_dir: o.state_dir.as_deref(), processes: &ProcFs, inventory: &inventory, daemon: &daemon, now: now(), waiter })
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

/// One request to the broker at `socket`; its refusal is this hook's. `wait`
/// is how long the container may wait for its share there.
fn through_broker(socket: &Path, request: gpuwarden::broker::Request, id: &str, wait: std::time::Duration) -> Result<()> {
    match gpuwarden::broker::ask(socket, &request, gpuwarden::broker::ANSWER_TIMEOUT + wait) {
        Ok(answer) if answer.ok => Ok(()),
        Ok(answer) => Err(answer.line.into()),
        Err(down) => Err(format!("refused {}: {down}", gpuwarden::oci::short_id(id)).into()),
    }
}

/// How long the container in `config` may wait for its share, as far as
/// this hook can tell (the broker's configuration decides): its annotation or
/// env, else its profile's in the configuration this hook reads.
fn asked_wait(settings: Option<&Config>, config: &[u8]) -> std::time::Duration {
    let Ok(cfg) = gpuwarden::oci::ContainerConfig::parse(config, "config.json") else { return std::time::Duration::ZERO };
    let profiles = cfg.profile_name().ok().flatten().and_then(|p| settings?.profiles.iter().find(|(n, _)| n.as_str() == p)).map(|(_, d)| d.wait);
    let wait = gpuwarden::queue::requested(&cfg, profiles.unwrap_or_default()).unwrap_or_default();
    std::time::Duration::from_secs(wait.as_seconds())
}

pub fn run(stage: Stage) -> Result<()> {
    match stage {
        Stage::Precreate(o) => {
            let me = HookCall { path: std::env::current_exe()?, options: o.to_args() };
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
            through_broker(&broker_socket(settings.as_ref()), request, &state.id, wait)?;
        }
        Stage::Admit(o) => {
            let input = stdin()?;
            with_hook_env(&o, &gpuwarden::queue::HookWaiter::new(), |env| {
                hook::admit(&input, env).map(drop).inspect_err(|e| hook::record_refusal(e, env))
            })?;
        }
        Stage::Release(o) if via_broker(&o) => {
            let input = stdin()?;
            let state = gpuwarden::oci::HookState::parse(&input)?;
            let socket = broker_socket(o.settings().ok().as_ref());
            through_broker(&socket, gpuwarden::broker::Request::release(&input)?, &state.id, std::time::Duration::ZERO)?;
        }
        Stage::Release(o) => {
            let input = stdin()?;
            let dir = match &o.state_dir {
                Some(d) => d.clone(),
                None => o.settings()?.state_dir,
            };
            hook::release(&input, &LedgerStore::new(Path::new(&dir)))?;
        }
        Stage::Broker(o) => broker(&o)?,
    }
    Ok(())
}

/// Serves the broker's socket until it fails. Admission runs as the hooks run
/// it, with the broker's own configuration (never a caller's) and its ledger.
fn broker(o: &Options) -> Result<()> {
    let socket = broker_socket(o.settings().ok().as_ref());
    let listener = gpuwarden::broker::Listener::open(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    let o = o.clone();
    let handle = move |caller: &gpuwarden::broker::Caller, request: gpuwarden::broker::Request, connected: &dyn Fn() -> bool| {
        let waiter = gpuwarden::queue::CallerWaiter { pid: caller.pid, connected };
        with_hook_env(&o, &waiter, |env| gpuwarden::broker::handle(caller, request, env, &gpuwarden::proc::user_namespace_owner))
    };
    tracing::info!("the admission broker listens on {}", socket.display());
    let failed = gpuwarden::broker::serve(&listener, std::sync::Arc::new(gpuwarden::broker::ServeEnv { handle: Box::new(handle) }));
    Err(format!("the admission broker stopped: {failed}").into())
}
