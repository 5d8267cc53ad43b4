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
        Stage::Admit(o) => {
            let inventory = |config: &Config| {
                let mut inv = hook::load_inventory(o.inventory.as_deref(), config)?;
                let live = gpuwarden::live::merge(&mut inv, &config.live.file, now(), config.live.max_age_seconds);
                tracing::debug!("{}", live.describe(&config.live.file));
                Ok(inv)
            };
            let daemon = |mps: &gpuwarden::config::MpsConfig| gpuwarden::mps::daemon(&mps.pipe_directory, Path::new("/proc"));
            let env = HookEnv { settings: &|| o.settings(), state_dir: o.state_dir.as_deref(), processes: &ProcFs, inventory: &inventory, daemon: &daemon, now: now() };
            if let Err(e) = hook::admit(&stdin()?, &env) {
                // A verdict on a container is counted for the watchdog's metrics, in the
                // events file beside the ledger; unreadable input changes nothing.
                if let (true, Ok(config)) = (e.is_verdict(), o.settings()) {
                    let file = o.state_dir.as_ref().map_or(config.watch.events_file, |d| d.join("events.jsonl"));
                    let event = gpuwarden::watch::events::Event { time: now(), kind: "refused".into(), container: None, detail: gpuwarden::text::one_line(&e) };
                    let _ = gpuwarden::watch::events::append(&file, &event);
                }
                return Err(e.into());
            }
        }
        Stage::Release(o) => {
            let input = stdin()?;
            let dir = match &o.state_dir {
                Some(d) => d.clone(),
                None => o.settings()?.state_dir,
            };
            hook::release(&input, &LedgerStore::new(Path::new(&dir)))?;
        }
    }
    Ok(())
}
