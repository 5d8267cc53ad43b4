//! The GPUs of one host as every reader downstream sees them, whatever
//! described them (NVML, a file, a built-in).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::base::size::ByteSize;

/// The GPUs of one host and the driver that runs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The kernel driver's version, e.g. `535.261.03`; driver libraries end in it.
    pub driver_version: String,
    pub gpus: Vec<Gpu>,
}

/// One GPU as NVML describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// NVML's index (PCI order).
    pub index: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    pub name: String,
    #[serde(with = "crate::base::size::as_bytes")]
    pub memory_total_bytes: ByteSize,
    /// The N of `/dev/nvidiaN`.
    pub minor: u32,
    /// `00000000:01:00.0`.
    pub pci_bus_id: String,
    /// `8.9`.
    pub compute_capability: String,
    /// The processes using it and their memory, when known live (NVML, or an
    /// inventory file standing in for it); `None` means no live view, and the
    /// budget is then checked against the ledger alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<GpuProcess>>,
}

/// A process using a GPU, as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuProcess {
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`), for people.
    pub name: String,
    #[serde(with = "crate::base::size::as_bytes")]
    pub used_memory_bytes: ByteSize,
}

impl Gpu {
    /// The device node that gives access to this GPU.
    pub fn device_path(&self) -> String {
        format!("/dev/nvidia{}", self.minor)
    }

    /// The bus id as `/dev/dri/by-path` writes it (`0000:01:00.0`).
    pub fn short_bus_id(&self) -> &str {
        let id = self.pci_bus_id.as_str();
        id.len().checked_sub(12).map_or(id, |cut| &id[cut..])
    }
}

impl Inventory {
    pub fn gpu_by_minor(&self, minor: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.minor == minor)
    }

    pub fn gpu_by_uuid(&self, uuid: &str) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }

    /// Checks what the rest of gpuwarden relies on; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.driver_version.is_empty()
            || !self.driver_version.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return Err(format!("driver_version {:?} is not a version such as 535.261.03", self.driver_version));
        }
        if self.gpus.is_empty() {
            return Err("gpus is empty: an inventory lists at least one GPU".into());
        }
        let (mut indexes, mut uuids, mut minors) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (i, g) in self.gpus.iter().enumerate() {
            let at = format!("gpus[{i}]");
            if !indexes.insert(g.index) {
                return Err(format!("{at}.index {} appears twice", g.index));
            }
            if !minors.insert(g.minor) {
                return Err(format!("{at}.minor {} appears twice", g.minor));
            }
            if !crate::base::names::is_device_name(&g.uuid) || !g.uuid.starts_with("GPU-") {
                return Err(format!("{at}.uuid {:?} is not a GPU UUID (GPU-xxxxxxxx-...)", g.uuid));
            }
            if !uuids.insert(g.uuid.as_str()) {
                return Err(format!("{at}.uuid {} appears twice", g.uuid));
            }
            if g.name.trim().is_empty() {
                return Err(format!("{at}.name is empty"));
            }
            if g.memory_total_bytes == ByteSize::ZERO {
                return Err(format!("{at}.memory_total_bytes is 0"));
            }
            if !is_bus_id(&g.pci_bus_id) {
                return Err(format!("{at}.pci_bus_id {:?} is not a PCI bus id such as 00000000:01:00.0", g.pci_bus_id));
            }
            let cc_ok = g.compute_capability.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && (a.to_owned() + b).chars().all(|c| c.is_ascii_digit())
            });
            if !cc_ok {
                return Err(format!("{at}.compute_capability {:?} is not MAJOR.MINOR such as 8.9", g.compute_capability));
            }
        }
        Ok(())
    }
}

/// `DDDD:BB:DD.F` or `DDDDDDDD:BB:DD.F`, hex digits.
fn is_bus_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split([':', '.']).collect();
    let hex = |s: &str, n: &[usize]| n.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit());
    parts.len() == 4 && hex(parts[0], &[4, 8]) && hex(parts[1], &[2]) && hex(parts[2], &[2]) && hex(parts[3], &[1])
}

/// Inventories for tests across the crate.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::host::inventory::builtin;
    use super::*;

    /// The built-in RTX 4070 and a second one at index 1, minor 1, bus 02.
    pub(crate) fn two_gpus() -> Inventory {
        let mut inv = builtin("rtx4070").expect("built in");
        let mut second = inv.gpus[0].clone();
        (second.index, second.minor, second.pci_bus_id) = (1, 1, "00000000:02:00.0".into());
        second.uuid = "GPU-11111111-2222-3333-4444-555555555555".into();
        inv.gpus.push(second);
        inv
    }
}

#[cfg(test)]
mod tests {
    use crate::host::inventory::builtin;
    use super::test_support::two_gpus;
    use super::*;

    #[test]
    fn the_builtin_and_a_two_gpu_inventory_are_valid() {
        builtin("rtx4070").unwrap().validate().unwrap();
        two_gpus().validate().unwrap();
    }

    #[test]
    fn each_broken_field_is_named() {
        type Breaker = fn(&mut Inventory);
        let cases: Vec<(Breaker, &str)> = vec![
            (|i| i.driver_version = "".into(), "driver_version"),
            (|i| i.driver_version = "535; rm".into(), "driver_version"),
            (|i| i.gpus.clear(), "gpus is empty"),
            (|i| i.gpus[1].index = 0, "gpus[1].index"),
            (|i| i.gpus[1].minor = 0, "gpus[1].minor"),
            (|i| i.gpus[1].uuid = i.gpus[0].uuid.clone(), "gpus[1].uuid"),
            (|i| i.gpus[0].uuid = "GPU-a b".into(), "gpus[0].uuid"),
            (|i| i.gpus[0].uuid = "not-a-uuid".into(), "gpus[0].uuid"),
            (|i| i.gpus[0].name = " ".into(), "gpus[0].name"),
            (|i| i.gpus[0].memory_total_bytes = ByteSize::ZERO, "memory_total_bytes"),
            (|i| i.gpus[0].pci_bus_id = "01:00.0".into(), "pci_bus_id"),
            (|i| i.gpus[0].compute_capability = "89".into(), "compute_capability"),
            (|i| i.gpus[0].compute_capability = "8.x".into(), "compute_capability"),
        ];
        for (breaker, field) in cases {
            let mut inv = two_gpus();
            breaker(&mut inv);
            let err = inv.validate().unwrap_err();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }

    #[test]
    fn bus_ids_are_shortened_for_dri_by_path() {
        let inv = builtin("rtx4070").unwrap();
        assert_eq!(inv.gpus[0].short_bus_id(), "0000:01:00.0");
        assert_eq!(inv.gpus[0].device_path(), "/dev/nvidia0");
    }
}
