//! The OCI hooks: `precreate` (Podman's extension stage: rewrite the config),
//! `admit` (createRuntime or prestart: conform, then budget) and `release`
//! (poststop). Each takes its stdin as bytes and returns what to print, so
//! everything here is tested without a runtime.
//!
//! A refusal must reach the user, and Podman 4.3 drops a precreate hook's
//! stderr: so precreate never refuses by itself. It records the reason in the
//! config ([`REFUSAL_ANNOTATION`]) and makes sure the admission hook runs, and
//! admission (whose stderr `podman run` shows) refuses with that reason.

mod admit;
mod precreate;
mod release;

use std::path::{Path, PathBuf};

pub use admit::{admit, admit_config, record_refusal, AdmitError, Admission, HookEnv};
pub use precreate::{image_loader, precreate, PrecreateEnv, PrecreateError};
pub use release::{release, release_state, ReleaseError};

use crate::config::Config;
use crate::inventory::{Inventory, InventoryError, InventorySource, NvmlError};
use crate::oci::ContainerConfig;

/// Where precreate leaves the reason it could not apply a profile, for
/// admission to refuse with. Precreate owns it: it removes it from a config
/// it could rewrite.
pub const REFUSAL_ANNOTATION: &str = "gpuwarden.io/refusal";

/// The stage admission runs at, and the one that releases.
pub const ADMIT_STAGE: &str = "createRuntime";
pub const RELEASE_STAGE: &str = "poststop";

/// The name the hook binary is installed and called under.
pub const HOOK_BINARY: &str = "gpuwarden-hook";

/// Loads gpuwarden's configuration; hooks call it only for containers that
/// name a profile, so a broken config.toml never stops other containers.
pub type Settings<'a> = &'a dyn Fn() -> Result<Config, crate::config::ConfigError>;

/// How a runtime calls gpuwarden's hooks: the hook binary, and the options
/// that follow the stage (`--config`, `--state-dir`, ...). One definition
/// serves the CDI spec's hooks and the ones precreate adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    pub path: PathBuf,
    pub options: Vec<String>,
}

impl HookCall {
    /// The argv of the hook for `verb` (`admit`, `release`).
    pub fn args(&self, verb: &str) -> Vec<String> {
        [HOOK_BINARY, verb].into_iter().map(String::from).chain(self.options.iter().cloned()).collect()
    }

    /// Adds the admit and release hooks to `cfg` unless it already runs
    /// gpuwarden's admission (from a CDI profile device): a container that
    /// names its profile by annotation gets its budget checked too.
    pub fn ensure_in(&self, cfg: &mut ContainerConfig) {
        let admitted = ["prestart", ADMIT_STAGE].iter().any(|stage| cfg.hooks(stage).iter().any(|(path, args)| is_gpuwarden(path) && args.contains(&"admit")));
        if !admitted {
            let path = self.path.display().to_string();
            cfg.add_hook(ADMIT_STAGE, &path, &self.args("admit"));
            cfg.add_hook(RELEASE_STAGE, &path, &self.args("release"));
        }
    }
}

fn is_gpuwarden(path: &str) -> bool {
    Path::new(path).file_name().is_some_and(|n| n.to_string_lossy().starts_with("gpuwarden"))
}

/// Annotations that may name a container (Podman 4.3 passes none; users may
/// set `gpuwarden.io/name`, Kubernetes sets its own).
const NAME_ANNOTATIONS: &[&str] = &["gpuwarden.io/name", "io.kubernetes.container.name", "io.kubernetes.cri-o.ContainerName"];

fn container_name(state: &crate::oci::HookState, cfg: &ContainerConfig) -> Option<String> {
    NAME_ANNOTATIONS
        .iter()
        .find_map(|k| state.annotations.get(*k).map(String::as_str).or_else(|| cfg.annotation(k)))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// Where `cdi generate` leaves the inventory it found through NVML, for the
/// hooks: they never load NVML themselves (a static binary cannot dlopen it,
/// NVML's start costs more than a whole admission, and admission must map
/// `/dev/nvidiaN` to the GPUs the spec was made for).
pub const INVENTORY_SNAPSHOT: &str = "/var/lib/gpuwarden/inventory.json";

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

impl crate::inventory::GpuProbe for NoProbe {
    fn probe(&self, _: Option<&Path>) -> Result<Inventory, NvmlError> {
        Err(NvmlError::LibraryMissing { detail: "the hooks do not load NVML".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tests_support::podman_like;

    fn call() -> HookCall {
        HookCall { path: "/usr/libexec/gpuwarden/gpuwarden-hook".into(), options: vec!["--config".into(), "/etc/g.toml".into()] }
    }

    #[test]
    fn admission_hooks_are_added_once() {
        let mut cfg = podman_like();
        call().ensure_in(&mut cfg);
        call().ensure_in(&mut cfg);
        let admit = cfg.hooks(ADMIT_STAGE);
        assert_eq!(admit, [("/usr/libexec/gpuwarden/gpuwarden-hook", vec!["gpuwarden-hook", "admit", "--config", "/etc/g.toml"])]);
        assert_eq!(cfg.hooks(RELEASE_STAGE)[0].1, ["gpuwarden-hook", "release", "--config", "/etc/g.toml"]);
    }

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

    #[test]
    fn the_cdi_devices_admission_hook_is_enough() {
        let mut cfg = podman_like();
        cfg.add_hook(ADMIT_STAGE, "/usr/bin/gpuwarden-hook", &["gpuwarden-hook".into(), "admit".into(), "--state-dir".into(), "/x".into()]);
        call().ensure_in(&mut cfg);
        assert_eq!(cfg.hooks(ADMIT_STAGE).len(), 1);
        assert!(cfg.hooks(RELEASE_STAGE).is_empty(), "the CDI device brings its own release");
    }
}
