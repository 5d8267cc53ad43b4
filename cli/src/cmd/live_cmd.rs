//! `gpuwarden live`: the live view of the GPUs for the hooks, which never load
//! NVML. A failed look is said and the loop goes on: the file then ages, and
//! admission falls back to the ledger, which `status` says.

use std::path::Path;
use std::process::ExitCode;

use super::{now, LiveArgs, Result};
use gpuwarden::config::Config;
use gpuwarden::host::inventory::NvmlProbe;
use gpuwarden::host::inventory::GpuProcess;
use gpuwarden::host::live::{LiveFile, LiveGpu};

/// What runs on each GPU now (uuid, processes): NVML, or `inventory`, a file
/// standing in for it, read afresh. `gpuwarden live` and `gpuwarden watch` look so.
pub fn running(inventory: Option<&str>, driver_root: Option<&Path>) -> Result<Vec<(String, Vec<GpuProcess>)>> {
    let root = super::inventory_cmd::driver_root(driver_root.unwrap_or(Path::new("/")))?;
    // Only NVML, or a file standing in for it, knows what runs now: not the configured inventory.
    let inventory = gpuwarden::host::discover::source::choose(inventory, None, &root)?.load(&NvmlProbe)?;
    inventory
        .gpus
        .into_iter()
        .map(|g| match g.processes {
            Some(p) => Ok((g.uuid, p)),
            None => Err(format!("the inventory says nothing of what runs on GPU {} (no `processes`): it is no live view", g.index).into()),
        })
        .collect()
}

fn look(args: &LiveArgs) -> Result<LiveFile> {
    let gpus = running(args.inventory.as_deref(), args.driver_root.as_deref())?;
    Ok(LiveFile { written_at: now(), gpus: gpus.into_iter().map(|(uuid, processes)| LiveGpu { uuid, processes }).collect() })
}

fn write(file: &LiveFile, path: &Path) -> Result<()> {
    let mut text = serde_json::to_vec(file)?;
    text.push(b'\n');
    gpuwarden::base::fsutil::write_atomic_creating_folder(path, &text, 0o644)?;
    Ok(())
}

pub fn run(args: &LiveArgs, config: &Config, config_file: Option<&Path>) -> Result<ExitCode> {
    if args.once {
        let path = &config.live.file;
        let file = look(args)?;
        write(&file, path)?;
        let count: usize = file.gpus.iter().map(|g| g.processes.len()).sum();
        println!("wrote {} ({} GPU(s), {count} process(es))", path.display(), file.gpus.len());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = config.clone();
    let mut reload = gpuwarden::config::reload::Reloading::new(config_file);
    tracing::info!("writing the live view to {} every {}s", config.live.file.display(), args.interval);
    loop {
        super::watch_cmd::reloaded(&mut reload, "live", |c| config = c);
        let path = &config.live.file;
        match look(args).and_then(|f| write(&f, path)) {
            Ok(()) => {}
            Err(e) => eprintln!("gpuwarden: live view not updated: {}", gpuwarden::base::text::one_line(e.as_ref())),
        }
        std::thread::sleep(std::time::Duration::from_secs(args.interval));
    }
}
