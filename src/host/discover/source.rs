//! Where the GPUs are read from, for a driver root: the inventory a command
//! names, else NVML from that root's own library; and a built-in stand-in
//! GPU on the driver installed there. Here, above the inventory, because it
//! looks into the driver root.

use crate::host::inventory::{GpuProbe, Inventory, InventoryError, InventorySource, NvmlError};

use super::{find_library, installed_driver_version, DriverRoot};

/// The source a command uses: the one it was given (`--inventory`), else
/// the configuration's, else NVML, loaded from the driver root when that
/// is not `/`. Named files are made absolute, since hooks run elsewhere.
pub fn choose(named: Option<&str>, configured: Option<&str>, driver_root: &DriverRoot) -> Result<InventorySource, NvmlError> {
    if let Some(name) = named.or(configured) {
        return Ok(match name.parse().unwrap_or_else(|e: std::convert::Infallible| match e {}) {
            InventorySource::File(p) if p.as_os_str() != "-" => InventorySource::File(crate::base::fsutil::absolute(&p)),
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

/// Loads `source` for the driver installed under `root`: a built-in
/// stand-in GPU takes that driver's version (535 on Debian 12, 550 on
/// Debian 13), so the spec made from it finds the driver's libraries.
pub fn load_on(source: &InventorySource, probe: &dyn GpuProbe, root: &DriverRoot) -> Result<Inventory, InventoryError> {
    let mut inventory = source.load(probe)?;
    if let (InventorySource::Builtin(_), Some(installed)) = (source, installed_driver_version(root)) {
        inventory.driver_version = installed;
    }
    Ok(inventory)
}
