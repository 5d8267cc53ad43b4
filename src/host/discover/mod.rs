//! Install-time discovery: which device nodes, driver libraries, data files and
//! binaries a container needs to use the GPUs of an [`Inventory`]. Each kind of
//! file has its own small discoverer returning plain data; `cdi` turns that data
//! into a spec. Nothing here writes anything.

mod devices;
pub mod elf;
mod files;
mod found;
pub mod ldcache;
mod libraries;
mod root;
pub mod source;

use crate::host::inventory::Inventory;

pub use devices::device_nodes;
pub use files::{binaries, data_files};
pub use found::{triton_env, Discovery, GpuNodes, DeviceNode, DiscoveryError, FileMount, Library, Roots, CONTAINER_LIB_DIR, TRITON_ENV};
pub use libraries::{driver_libraries, find_library, installed_driver_version, LIB_DIRS};
pub use root::DriverRoot;

/// Runs every discoverer for `inventory`'s GPUs.
pub fn discover(roots: &Roots, inventory: &Inventory) -> Result<Discovery, DiscoveryError> {
    let (control_nodes, gpu_nodes) = device_nodes(&roots.dev, inventory)?;
    let libraries = driver_libraries(&roots.driver, &inventory.driver_version)?;
    let mut files = data_files(&roots.driver);
    files.extend(binaries(&roots.driver));
    Ok(Discovery { control_nodes, gpu_nodes, libraries, files })
}
