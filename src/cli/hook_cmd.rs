//! `gpuwarden hook ...`, `status` and `ledger reset`: stdin in, the stage's
//! output out, the library in between.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{inventory_cmd, now, HookArgs, HookCommand, Result, Settings, StatusArgs};
use crate::config::Config;
use crate::discover::DriverRoot;
use crate::hook::{self, Admission, HookEnv};
use crate::inventory::{Inventory, InventoryError, InventorySource, NvmlError, NvmlProbe};
use crate::ledger::LedgerStore;
use crate::proc::ProcFs;

fn store(state_dir: &Option<PathBuf>, config: &Config) -> LedgerStore {
    LedgerStore::new(state_dir.as_ref().unwrap_or(&config.state_dir))
}

fn stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    Ok(input)
}

/// The hooks' inventory: like the generator's, but never from stdin (it holds the OCI state).
fn inventory(args: &HookArgs, config: &Config) -> std::result::Result<Inventory, InventoryError> {
    let root = args.driver_root.as_deref().unwrap_or("/".as_ref());
    let root = DriverRoot::new(root).map_err(|e| NvmlError::LibraryMissing { detail: format!("driver root {}: {e}", root.display()) })?;
    let source = inventory_cmd::source(args.inventory.as_deref(), &root, config)?;
    if source == InventorySource::File("-".into()) {
        return Err(InventoryError::Invalid { origin: "-".into(), why: "hooks read the OCI state on stdin: name an inventory file".into() });
    }
    source.load(&NvmlProbe)
}

pub fn run(command: HookCommand, settings: Settings) -> Result<ExitCode> {
    match command {
        HookCommand::Precreate(_) => {
            let out = hook::precreate(&stdin()?, settings)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
        }
        HookCommand::Admit(args) => {
            let config = &settings()?;
            let store = store(&args.state_dir, config);
            let load = || inventory(&args, config);
            let env = HookEnv { config, store: &store, processes: &ProcFs, inventory: &load, now: now() };
            if let Admission::Admitted(r) = hook::admit(&stdin()?, &env)? {
                tracing::debug!("ledger {}: {} holds {}%, {}", store.path().display(), r.label(), r.threads, r.pinned_bytes);
            }
        }
        HookCommand::Release(args) => {
            hook::release(&stdin()?, &store(&args.state_dir, &settings()?))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: &StatusArgs, config: &Config) -> Result<ExitCode> {
    let inv = inventory(&args.hook, config)?;
    let ledger = store(&args.hook.state_dir, config).read()?;
    let status = crate::status::gather(&inv, config, &ledger, &ProcFs);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&crate::status::render_json(&status, now()))?);
    } else {
        print!("{}", crate::status::render_text(&status, now()));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ledger_reset(state_dir: Option<PathBuf>, force: bool, config: &Config) -> Result<ExitCode> {
    let store = store(&state_dir, config);
    match store.reset(now(), force)? {
        Some(kept) => println!("ledger {} reset; the old one is kept as {}", store.path().display(), kept.display()),
        None => println!("ledger {} started empty (there was none)", store.path().display()),
    }
    Ok(ExitCode::SUCCESS)
}
