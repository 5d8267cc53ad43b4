//! The command line a container engine gives its OCI runtime, as the shim
//! reads it: gpuwarden's own leading options (from `runtimeArgs` in
//! daemon.json), then runc's global options, the command and its options.
//! Everything after gpuwarden's options goes to the real runtime unchanged.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// runc's global options that take a value (`--root DIR` or `--root=DIR`).
const GLOBAL_WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];
/// `create`'s options that take a value.
const CREATE_WITH_VALUE: &[&str] = &["--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"];

/// gpuwarden's options, all spelled `--gpuwarden-NAME VALUE` so they cannot
/// be mistaken for the runtime's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShimOptions {
    /// The real runtime (default `runc`, looked up in PATH).
    pub runtime: Option<PathBuf>,
    /// gpuwarden's config.toml.
    pub config: Option<PathBuf>,
    /// CDI spec folders, in rising priority (default /etc/cdi, /var/run/cdi).
    pub cdi_dirs: Vec<PathBuf>,
    /// The launcher on the host, mounted into a profile container that lacks it.
    pub launcher: Option<PathBuf>,
    /// The hook binary precreate adds admission with, when the spec's device did not.
    pub hook: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub shim: ShimOptions,
    /// What the real runtime gets, unchanged.
    pub runtime_args: Vec<OsString>,
    /// The runtime command (`create`, `start`, `delete`, ...), if any.
    pub command: Option<String>,
    /// For `create`: the bundle (runc's default is the working folder).
    pub bundle: Option<PathBuf>,
    /// runc's `--log` file, where containerd's shim reads a failed runtime's error.
    pub log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("unknown option {0}: gpuwarden-runtime takes --gpuwarden-runtime, --gpuwarden-config, --gpuwarden-cdi-dir, --gpuwarden-launcher-path and --gpuwarden-hook-path before the runtime's own arguments (--gpuwarden-help says more)")]
    Unknown(String),
}

/// Splits `--name=value`, or takes the value from the next argument.
fn value_of<'a>(arg: &'a str, rest: &mut impl Iterator<Item = &'a OsString>) -> (&'a str, Option<OsString>) {
    match arg.split_once('=') {
        Some((name, v)) => (name, Some(OsString::from(v))),
        None => (arg, rest.next().cloned()),
    }
}

impl Invocation {
    pub fn parse(args: Vec<OsString>) -> Result<Invocation, ArgsError> {
        let mut shim = ShimOptions::default();
        let mut i = 0;
        while let Some(arg) = args.get(i).and_then(|a| a.to_str()).filter(|a| a.starts_with("--gpuwarden-")) {
            let mut rest = args[i + 1..].iter();
            let (name, value) = value_of(arg, &mut rest);
            let takes_next = !arg.contains('=');
            let slot = match name {
                "--gpuwarden-runtime" => &mut shim.runtime,
                "--gpuwarden-config" => &mut shim.config,
                // The names `gpuwarden cdi generate` uses (--launcher-path, --hook-path); the
                // short ones are still read, for daemon.json files written before.
                "--gpuwarden-launcher-path" | "--gpuwarden-launcher" => &mut shim.launcher,
                "--gpuwarden-hook-path" | "--gpuwarden-hook" => &mut shim.hook,
                "--gpuwarden-cdi-dir" => &mut None,
                other => return Err(ArgsError::Unknown(other.to_string())),
            };
            let value = PathBuf::from(value.ok_or_else(|| ArgsError::Missing(name.to_string()))?);
            if name == "--gpuwarden-cdi-dir" {
                shim.cdi_dirs.push(value);
            } else {
                *slot = Some(value);
            }
            i += if takes_next { 2 } else { 1 };
        }
        let runtime_args = args[i..].to_vec();
        let (mut command, mut bundle, mut log) = (None, None, None);
        let mut it = runtime_args.iter();
        while let Some(arg) = it.next() {
            let Some(a) = arg.to_str() else { continue };
            if command.is_none() {
                if !a.starts_with('-') {
                    command = Some(a.to_string());
                    continue;
                }
                let name = a.split_once('=').map_or(a, |(n, _)| n);
                if GLOBAL_WITH_VALUE.contains(&name) {
                    let (_, v) = value_of(a, &mut it);
                    if name == "--log" {
                        log = v.map(PathBuf::from);
                    }
                }
            } else if command.as_deref() == Some("create") {
                let name = a.split_once('=').map_or(a, |(n, _)| n);
                if CREATE_WITH_VALUE.contains(&name) {
                    let (_, v) = value_of(a, &mut it);
                    if name == "--bundle" || name == "-b" {
                        bundle = v.map(PathBuf::from);
                    }
                }
            }
        }
        if command.as_deref() == Some("create") && bundle.is_none() {
            bundle = Some(PathBuf::from("."));
        }
        Ok(Invocation { shim, runtime_args, command, bundle, log })
    }

    /// The real runtime to exec.
    pub fn runtime(&self) -> &OsStr {
        self.shim.runtime.as_deref().map_or(OsStr::new("runc"), |p| p.as_os_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ArgsError> {
        Invocation::parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn reads_what_containerd_passes_for_create() {
        let args = ["--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json", "--log-format", "json", "create", "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "abc"];
        let inv = parse(&args).unwrap();
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.bundle, Some(PathBuf::from("/run/b")));
        assert_eq!(inv.log, Some(PathBuf::from("/run/x/log.json")));
        assert_eq!(inv.runtime_args, args.map(OsString::from).to_vec(), "unchanged");
        assert_eq!(inv.runtime(), "runc");
    }

    #[test]
    fn gpuwarden_options_come_first_and_are_taken_out() {
        let inv = parse(&["--gpuwarden-runtime", "/usr/sbin/runc", "--gpuwarden-config=/etc/g.toml", "--gpuwarden-cdi-dir", "/a", "--gpuwarden-cdi-dir", "/b", "--log=/l", "create", "-b", "/x", "id"]).unwrap();
        assert_eq!(inv.runtime(), "/usr/sbin/runc");
        assert_eq!(inv.shim.config, Some(PathBuf::from("/etc/g.toml")));
        assert_eq!(inv.shim.cdi_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(inv.runtime_args, ["--log=/l", "create", "-b", "/x", "id"].map(OsString::from).to_vec());
        assert_eq!((inv.log, inv.bundle), (Some("/l".into()), Some("/x".into())));
    }

    #[test]
    fn other_commands_have_no_bundle_and_create_defaults_to_the_working_folder() {
        let inv = parse(&["--root", "/r", "delete", "--force", "id"]).unwrap();
        assert_eq!((inv.command.as_deref(), inv.bundle), (Some("delete"), None));
        assert_eq!(parse(&["create", "id"]).unwrap().bundle, Some(PathBuf::from(".")));
        assert_eq!(parse(&["--version"]).unwrap().command, None);
    }

    #[test]
    fn bad_gpuwarden_options_are_named() {
        assert_eq!(parse(&["--gpuwarden-config"]).unwrap_err(), ArgsError::Missing("--gpuwarden-config".into()));
        assert!(parse(&["--gpuwarden-nope", "x"]).unwrap_err().to_string().starts_with("unknown option --gpuwarden-nope"));
        assert!(parse(&["--gpuwarden-cdi"]).unwrap_err().to_string().starts_with("unknown option --gpuwarden-cdi:"), "the name before the value");
    }
}
