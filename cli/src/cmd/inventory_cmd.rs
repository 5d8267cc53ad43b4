//! `gpuwarden inventory`, and the inventory of the commands that take
//! `--inventory` and `--driver-root`.

use std::path::Path;
use std::process::ExitCode;

use super::Result;
use gpuwarden::config::Config;
use gpuwarden::host::discover::DriverRoot;
use gpuwarden::host::inventory::{Inventory, InventorySource, NvmlProbe};

pub fn driver_root(path: &Path) -> Result<DriverRoot> {
    DriverRoot::new(path).map_err(|e| format!("driver root {}: {e}", path.display()).into())
}

/// The GPUs from `named` (`--inventory`), else the configuration's stand-in, else NVML.
pub fn load(named: Option<&str>, driver: Option<&Path>, config: &Config) -> Result<(InventorySource, Inventory)> {
    let root = driver_root(driver.unwrap_or(&config.cdi.driver_root))?;
    let source = gpuwarden::host::discover::source::choose(named, config.inventory.as_deref(), &root)?;
    let inventory = gpuwarden::host::discover::source::load_on(&source, &NvmlProbe, &root)?;
    Ok((source, inventory))
}

/// The GPUs as `status` and `config show` see them: what the hooks see
/// (`--inventory`, the configuration's, or the file `cdi generate` wrote),
/// else NVML.
pub fn for_status(named: Option<&str>, root: Option<&Path>, config: &Config) -> Result<Inventory> {
    let snapshot = Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT);
    let named = named.or(config.inventory.as_deref()).or_else(|| snapshot.is_file().then_some(gpuwarden::hookcall::INVENTORY_SNAPSHOT));
    let root = driver_root(root.unwrap_or(Path::new("/")))?;
    let source = gpuwarden::host::discover::source::choose(named, None, &root)?;
    Ok(gpuwarden::host::discover::source::load_on(&source, &NvmlProbe, &root)?)
}

pub fn run(args: &super::InventoryArgs, config: &Config) -> Result<ExitCode> {
    let (_, inv) = load(args.source.inventory.as_deref(), args.source.driver_root.as_deref(), config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("driver {}", inv.driver_version);
    println!("{:<5} {:<42} {:<28} {:>12} {:>5} {:<17} CC", "INDEX", "UUID", "NAME", "MEMORY", "MINOR", "PCI BUS");
    for g in &inv.gpus {
        println!(
            "{:<5} {:<42} {:<28} {:>12} {:>5} {:<17} {}",
            g.index, g.uuid, g.name, g.memory_total_bytes.to_string(), g.minor, g.pci_bus_id, g.compute_capability
        );
    }
    Ok(ExitCode::SUCCESS)
}
