//! The OCI hooks' own parts: `precreate` (Podman's extension stage: rewrite
//! the config), `release` (poststop), the inventory as the hooks read it,
//! and how a refusal reaches the user ([`deliver`]). Admission itself
//! (createRuntime) is [`crate::admission`]'s. Each takes its stdin as bytes
//! and returns what to print, so everything here is tested without a runtime.
//!
//! A refusal must reach the user, and Podman 4.3 drops a precreate hook's
//! stderr: so precreate never refuses by itself. It records the reason in the
//! config ([`crate::hookcall::REFUSAL_ANNOTATION`]) and makes sure the admission hook runs, and
//! admission (whose stderr `podman run` shows) refuses with that reason.

pub mod deliver;
mod precreate;
mod release;

use std::path::Path;

pub use precreate::{image_loader, precreate, PrecreateEnv, PrecreateError};
pub use release::{release, release_state, ReleaseError};

use crate::config::Config;
use crate::hookcall::INVENTORY_SNAPSHOT;
use crate::host::inventory::{Inventory, InventoryError, InventorySource, NvmlError};

/// The inventory as the hooks see it: `--inventory`, else the
/// configuration's; a file or a built-in, never NVML and never stdin.
pub fn load_inventory(named: Option<&str>, config: &Config) -> Result<Inventory, InventoryError> {
    let Some(name) = named.or(config.inventory.as_deref()) else {
        return Err(InventoryError::Invalid {
            origin: "hook".into(),
            why: format!(
                "no inventory file given: the hooks read the GPUs from the one `gpuwarden cdi generate` writes ({INVENTORY_SNAPSHOT}) and names in the spec; generate the spec again, or set inventory in config.toml"
            ),
        });
    };
    let source: InventorySource = name.parse().unwrap_or_else(|e: std::convert::Infallible| match e {});
    match source {
        InventorySource::File(p) if p.as_os_str() == "-" => {
            Err(InventoryError::Invalid { origin: "-".into(), why: "hooks read the OCI state on stdin: name an inventory file".into() })
        }
        InventorySource::Nvml { .. } => Err(InventoryError::Invalid {
            origin: "nvml".into(),
            why: format!("the hooks do not load NVML: name the inventory file `gpuwarden cdi generate` writes ({INVENTORY_SNAPSHOT})"),
        }),
        other => other.load(&NoProbe),
    }
}

/// The hooks' stand-in for NVML, never reached: `load_inventory` answers an
/// NVML source before loading.
struct NoProbe;

impl crate::host::inventory::GpuProbe for NoProbe {
    fn probe(&self, _: Option<&Path>) -> Result<Inventory, NvmlError> {
        Err(NvmlError::LibraryMissing { detail: "the hooks do not load NVML".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_take_their_gpus_from_a_file_or_a_builtin_never_nvml_or_stdin() {
        let c = Config::default();
        assert_eq!(load_inventory(Some("builtin:rtx4070"), &c).unwrap().gpus.len(), 1);
        let e = load_inventory(None, &c).unwrap_err().to_string();
        assert!(e.contains("gpuwarden cdi generate") && e.contains(INVENTORY_SNAPSHOT), "{e}");
        assert!(load_inventory(Some("nvml"), &c).unwrap_err().to_string().contains("do not load NVML"));
        assert!(load_inventory(Some("-"), &c).unwrap_err().to_string().contains("OCI state on stdin"));
        let from_config = Config::parse("inventory = \"builtin:rtx4070\"\n", Path::new("c")).unwrap();
        assert!(load_inventory(None, &from_config).is_ok());
    }
}
