//! `gpuwarden inventory`, and the one place that turns `--inventory` /
//! the configuration / `--driver-root` into an inventory.

use std::path::Path;
use std::process::ExitCode;

use super::{GpuSource, Result};
use crate::config::Config;
use crate::discover::{find_library, DriverRoot};
use crate::inventory::{Inventory, InventorySource, NvmlError, NvmlProbe};

/// The inventory source: `--inventory`, else the configuration's, else NVML
/// (loaded from the driver root when it is not /).
pub fn source(inventory: Option<&str>, driver_root: &DriverRoot, config: &Config) -> std::result::Result<InventorySource, NvmlError> {
    let named = inventory.or(config.inventory.as_deref());
    if let Some(name) = named {
        return Ok(match name.parse().expect("infallible") {
            InventorySource::File(p) if p.as_os_str() != "-" => InventorySource::File(super::absolute(&p)),
            other => other,
        });
    }
    let library = if driver_root.is_host_root() {
        None
    } else {
        Some(find_library(driver_root, "libnvidia-ml.so.1").ok_or_else(|| NvmlError::LibraryMissing {
            detail: format!("no libnvidia-ml.so.1 under {}", driver_root.path().display()),
        })?)
    };
    Ok(InventorySource::Nvml { library })
}

pub fn driver_root(path: &Path) -> Result<DriverRoot> {
    DriverRoot::new(path).map_err(|e| format!("driver root {}: {e}", path.display()).into())
}

pub fn load(src: &GpuSource, config: &Config) -> Result<(InventorySource, Inventory)> {
    let root = driver_root(&src.driver_root)?;
    let source = source(src.inventory.as_deref(), &root, config)?;
    let inventory = source.load(&NvmlProbe)?;
    Ok((source, inventory))
}

pub fn run(args: &super::InventoryArgs, config: &Config) -> Result<ExitCode> {
    let (_, inv) = load(&args.source, config)?;
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
