//! What GPUs this host has: from NVML, from an inventory file (the JSON that
//! `gpuwarden inventory --json` prints), or from a built-in description for
//! machines without a GPU. Everything downstream sees only [`Inventory`].

mod builtin;
mod gpus;
mod nvml;
mod source;

pub use builtin::{builtin, BUILTIN_NAMES};
pub use gpus::{Gpu, GpuProcess, Inventory};
pub use nvml::{GpuProbe, NvmlError, NvmlProbe};
pub use source::{InventoryError, InventorySource};

#[cfg(test)]
pub(crate) use gpus::test_support;
