//! Sharing the kind `nvidia.com/gpu` with NVIDIA's Container Toolkit.
//!
//! CDI conflicts are per device name: two specs of one kind may both be
//! read as long as no name is defined twice. NVIDIA's `nvidia-ctk cdi
//! generate` (and, since 1.18, its `nvidia-cdi-refresh` unit at every boot)
//! writes each GPU's index and UUID and `all`; it never writes gpuwarden's
//! profile names. So gpuwarden writes its profile devices always, and a
//! plain device (index, UUID, `all`) only where no other spec of the kind
//! defines it now and NVIDIA's toolkit, if installed, will not write it
//! later. Whichever spec is written last, no name is defined twice, and
//! `--device nvidia.com/gpu=all` (NVIDIA's) and `nvidia.com/gpu=comfyui`
//! (gpuwarden's) both work.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{SpecFile, Spec, PROFILE_ENV};
use crate::host::inventory::Inventory;

/// Who defines a device gpuwarden leaves out of its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Another spec file defines it now.
    Spec(PathBuf),
    /// NVIDIA's toolkit is installed there and writes it (its refresh unit, or `nvidia-ctk cdi generate`).
    Toolkit(PathBuf),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Spec(p) => write!(f, "{}", p.display()),
            Owner::Toolkit(p) => write!(f, "NVIDIA's toolkit ({}) writes it", p.display()),
        }
    }
}

/// The names NVIDIA's toolkit writes for these GPUs: each index, each UUID, `all`.
pub fn toolkit_names(inventory: &Inventory) -> BTreeSet<String> {
    inventory.gpus.iter().flat_map(|g| [g.index.to_string(), g.uuid.clone()]).chain(std::iter::once("all".to_string())).collect()
}

/// True for a profile device (it names its profile in its env).
fn is_profile_device(d: &super::Device) -> bool {
    d.container_edits.env.iter().any(|e| e.starts_with(&format!("{PROFILE_ENV}=")))
}

/// Removes from `spec` the plain devices that `others` (specs of any kind,
/// `ours` excepted) define, and, when NVIDIA's toolkit is installed at
/// `toolkit`, those it writes. Returns what was left to whom, by name.
/// Profile devices always stay: a clash on one of them is a conflict the
/// writer refuses.
pub fn leave_to_others(spec: &mut Spec, others: &[SpecFile], ours: &Path, toolkit: Option<&Path>, inventory: &Inventory) -> Vec<(String, Owner)> {
    let same_kind: Vec<&SpecFile> = others.iter().filter(|s| s.kind == spec.kind && !same_file(&s.path, ours)).collect();
    let toolkit_writes = toolkit.map(|_| toolkit_names(inventory)).unwrap_or_default();
    let mut left = Vec::new();
    spec.devices.retain(|d| {
        if is_profile_device(d) {
            return true;
        }
        let owner = same_kind
            .iter()
            .find(|s| s.devices.contains(&d.name))
            .map(|s| Owner::Spec(s.path.clone()))
            .or_else(|| toolkit.filter(|_| toolkit_writes.contains(&d.name)).map(|t| Owner::Toolkit(t.to_path_buf())));
        match owner {
            Some(owner) => {
                left.push((d.name.clone(), owner));
                false
            }
            None => true,
        }
    });
    left
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok().as_ref() == Some(&a))
}

/// Where NVIDIA's toolkit is installed: `nvidia-ctk` in one of `path_dirs`
/// (the `PATH`), or in `/usr/bin` where its package puts it.
pub fn find_toolkit(path_dirs: &[PathBuf]) -> Option<PathBuf> {
    path_dirs.iter().map(PathBuf::as_path).chain([Path::new("/usr/bin")]).map(|d| d.join("nvidia-ctk")).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::build::tests::discovery;
    use crate::cdi::{build_spec, Kind, SpecInput};
    use crate::host::inventory::builtin;

    fn spec() -> (Spec, Inventory) {
        let inv = builtin("rtx4070").unwrap();
        let kind = Kind::new("nvidia.com", "gpu").unwrap();
        let profiles = vec!["comfyui".to_string(), "blender".to_string()];
        let s = build_spec(&SpecInput { kind: &kind, inventory: &inv, discovery: &discovery(&inv, "/dev"), profiles: &profiles, hooks: None, mps: None, launcher: None });
        (s, inv)
    }

    fn names(s: &Spec) -> Vec<&str> {
        s.devices.iter().map(|d| d.name.as_str()).collect()
    }

    fn nvidia(devices: &[&str]) -> SpecFile {
        SpecFile { path: "/var/run/cdi/nvidia.yaml".into(), cdi_version: "0.5.0".into(), kind: "nvidia.com/gpu".into(), devices: devices.iter().map(|d| d.to_string()).collect(), ours: false, writer: "nvidia-ctk" }
    }

    #[test]
    fn what_nvidias_spec_defines_is_left_to_it() {
        let (mut s, inv) = spec();
        let left = leave_to_others(&mut s, &[nvidia(&["all"])], Path::new("/etc/cdi/gpuwarden.yaml"), None, &inv);
        assert_eq!(names(&s), ["0", inv.gpus[0].uuid.as_str(), "comfyui", "blender"]);
        assert_eq!(left, [("all".to_string(), Owner::Spec("/var/run/cdi/nvidia.yaml".into()))]);
    }

    #[test]
    fn with_the_toolkit_installed_only_profile_devices_are_written_whatever_comes_later() {
        let (mut s, inv) = spec();
        let left = leave_to_others(&mut s, &[], Path::new("/etc/cdi/gpuwarden.yaml"), Some(Path::new("/usr/bin/nvidia-ctk")), &inv);
        assert_eq!(names(&s), ["comfyui", "blender"]);
        assert_eq!(left.len(), 3);
        assert!(left.iter().all(|(_, o)| *o == Owner::Toolkit("/usr/bin/nvidia-ctk".into())));
        assert_eq!(left[0].1.to_string(), "NVIDIA's toolkit (/usr/bin/nvidia-ctk) writes it");
    }

    #[test]
    fn our_own_file_other_kinds_and_profile_names_are_not_left_out() {
        let (mut s, inv) = spec();
        let mut ours = nvidia(&["0", "all", "comfyui"]);
        ours.path = "/etc/cdi/gpuwarden.yaml".into();
        let mut other_kind = nvidia(&["0", "all"]);
        other_kind.kind = "nvidia.com/gpuwarden".into();
        let clash = nvidia(&["comfyui"]);
        let left = leave_to_others(&mut s, &[ours, other_kind, clash], Path::new("/etc/cdi/gpuwarden.yaml"), None, &inv);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(names(&s).len(), 5, "a clash on a profile name is the writer's conflict to refuse");
    }

    #[test]
    fn the_toolkit_is_found_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_toolkit(&[dir.path().to_path_buf()]).filter(|p| p.starts_with(dir.path())), None);
        std::fs::write(dir.path().join("nvidia-ctk"), "").unwrap();
        assert_eq!(find_toolkit(&[dir.path().to_path_buf()]), Some(dir.path().join("nvidia-ctk")));
    }
}
