//! Built-in inventories for demos and tests on machines without a GPU.

use super::{Gpu, Inventory};
use crate::base::size::ByteSize;

/// Names accepted after `builtin:`.
pub const BUILTIN_NAMES: &[&str] = &["rtx4070"];

/// The built-in inventory called `name`, if there is one.
pub fn builtin(name: &str) -> Option<Inventory> {
    match name {
        // One GeForce RTX 4070 (AD104, 12 GiB), as NVML reports it on driver 535.
        "rtx4070" => Some(Inventory {
            driver_version: "535.261.03".into(),
            gpus: vec![Gpu {
                index: 0,
                uuid: "GPU-b1d7e4a0-4070-4c00-9e12-0000000a4070".into(),
                name: "NVIDIA GeForce RTX 4070".into(),
                memory_total_bytes: ByteSize::gib(12),
                minor: 0,
                pci_bus_id: "00000000:01:00.0".into(),
                compute_capability: "8.9".into(),
                processes: None,
            }],
        }),
        _ => None,
    }
}
