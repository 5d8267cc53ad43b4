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

pub use admit::{admit, AdmitError, Admission, HookEnv};
pub use precreate::{precreate, PrecreateError};
pub use release::{release, ReleaseError};

use crate::config::Config;
use crate::discover::DriverRoot;
use crate::inventory::{Inventory, InventoryError, InventorySource, NvmlError, NvmlProbe};
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

/// The inventory as hooks and `status` see it: `--inventory`, else the
/// configuration's, else NVML (from `driver_root` when given); never stdin,
/// which holds the OCI state.
pub fn load_inventory(named: Option<&str>, driver_root: Option<&Path>, config: &Config) -> Result<Inventory, InventoryError> {
    let root = driver_root.unwrap_or(Path::new("/"));
    let root = DriverRoot::new(root).map_err(|e| NvmlError::LibraryMissing { detail: format!("driver root {}: {e}", root.display()) })?;
    let source = InventorySource::choose(named, config.inventory.as_deref(), &root)?;
    if source == InventorySource::File("-".into()) {
        return Err(InventoryError::Invalid { origin: "-".into(), why: "hooks read the OCI state on stdin: name an inventory file".into() });
    }
    source.load(&NvmlProbe)
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
    fn the_cdi_devices_admission_hook_is_enough() {
        let mut cfg = podman_like();
        cfg.add_hook(ADMIT_STAGE, "/usr/bin/gpuwarden-hook", &["gpuwarden-hook".into(), "admit".into(), "--state-dir".into(), "/x".into()]);
        call().ensure_in(&mut cfg);
        assert_eq!(cfg.hooks(ADMIT_STAGE).len(), 1);
        assert!(cfg.hooks(RELEASE_STAGE).is_empty(), "the CDI device brings its own release");
    }
}
