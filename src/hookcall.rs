//! How gpuwarden's hooks are called: the stage names, the binaries' names,
//! the options that follow the stage (typed, built in one place), the
//! annotation precreate leaves a refusal in, and where the launcher sits in
//! a container. The CDI spec's hooks, Podman's hooks.d file, the hooks
//! precreate adds and the Docker shim all say it through here.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::oci::ContainerConfig;

/// The stage admission runs at, and the one that releases.
pub const ADMIT_STAGE: &str = "createRuntime";
pub const RELEASE_STAGE: &str = "poststop";

/// The name the hook binary is installed and called under.
pub const HOOK_BINARY: &str = "gpuwarden-hook";

/// The launcher binary's name on the host.
pub const LAUNCHER_BINARY: &str = "gpuwarden-launch";
/// The runtime that Docker (and containerd, as runc's binary) runs in front of runc.
pub const RUNTIME_BINARY: &str = "gpuwarden-runtime";

/// Where the launcher is mounted in a profile container: its first process.
pub const LAUNCHER_PATH: &str = "/usr/libexec/gpuwarden/gpuwarden-launch";

/// Where precreate leaves the reason it could not apply a profile, for
/// admission to refuse with. Precreate owns it: it removes it from a config
/// it could rewrite.
pub const REFUSAL_ANNOTATION: &str = "gpuwarden.io/refusal";

/// Where `cdi generate` leaves the inventory it found through NVML, for the
/// hooks: they never load NVML themselves (a static binary cannot dlopen it,
/// NVML's start costs more than a whole admission, and admission must map
/// `/dev/nvidiaN` to the GPUs the spec was made for).
pub const INVENTORY_SNAPSHOT: &str = "/var/lib/gpuwarden/inventory.json";

/// Loads gpuwarden's configuration; hooks call it only for containers that
/// name a profile, so a broken config.toml never stops other containers.
pub type Settings<'a> = &'a dyn Fn() -> Result<Config, ConfigError>;

/// The options that follow a hook's stage. Paths are written absolute: a
/// runtime runs hooks from another folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookOptions {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--inventory FILE|builtin:NAME`.
    pub inventory: Option<String>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--launcher-path PATH` (precreate).
    pub launcher_path: Option<PathBuf>,
}

impl HookOptions {
    /// The options as arguments, in the order `--help` lists them.
    pub fn to_args(&self) -> Vec<String> {
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p| crate::base::fsutil::absolute(p).display().to_string());
        [("--config", path(&self.config)), ("--inventory", self.inventory.clone()), ("--state-dir", path(&self.state_dir)), ("--launcher-path", path(&self.launcher_path))]
            .into_iter()
            .filter_map(|(flag, v)| v.map(|v| [flag.to_string(), v]))
            .flatten()
            .collect()
    }
}

/// How a runtime calls gpuwarden's hooks: the hook binary, and the options
/// that follow the stage. One definition serves the CDI spec's hooks,
/// Podman's hooks.d file and the ones precreate adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    pub path: PathBuf,
    pub options: HookOptions,
}

impl HookCall {
    /// The argv of the hook for `verb` (`precreate`, `admit`, `release`).
    pub fn args(&self, verb: &str) -> Vec<String> {
        [HOOK_BINARY, verb].into_iter().map(String::from).chain(self.options.to_args()).collect()
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

/// The binary `name` next to the running one (where `scripts/build.sh` and
/// the package put gpuwarden's binaries), or why it is not there.
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).map_err(|e| format!("cannot tell where this binary is: {e}"))?;
    let found = me.with_file_name(name);
    if found.is_file() { Ok(found) } else { Err(format!("{} not found next to {}", found.display(), me.display())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tests_support::podman_like;

    fn call() -> HookCall {
        HookCall { path: "/usr/libexec/gpuwarden/gpuwarden-hook".into(), options: HookOptions { config: Some("/etc/g.toml".into()), ..Default::default() } }
    }

    #[test]
    fn options_are_written_in_one_order_with_absolute_paths() {
        let o = HookOptions { config: Some("c.toml".into()), inventory: Some("builtin:rtx4070".into()), state_dir: Some("/s".into()), launcher_path: Some("/l".into()) };
        let args = o.to_args();
        assert_eq!(args[0], "--config");
        assert!(Path::new(&args[1]).is_absolute() && args[1].ends_with("/c.toml"), "{args:?}");
        assert_eq!(args[2..], ["--inventory", "builtin:rtx4070", "--state-dir", "/s", "--launcher-path", "/l"]);
        assert!(HookOptions::default().to_args().is_empty());
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

    #[test]
    fn a_missing_sibling_is_named() {
        let e = sibling("no-such-gpuwarden-binary").unwrap_err();
        assert!(e.contains("no-such-gpuwarden-binary not found next to"), "{e}");
    }
}
