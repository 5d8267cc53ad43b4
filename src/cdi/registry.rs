//! The CDI specs on a host: every `.yaml` and `.json` file in the spec
//! folders, read leniently so that one broken file never hides the others.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::OWNER_ENV;

/// Where Podman and Docker look for specs (the second takes precedence).
pub const DEFAULT_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// What a spec file declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecFile {
    pub path: PathBuf,
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<String>,
    /// Written by gpuwarden (it carries the owner marker).
    pub ours: bool,
    /// Who wrote it, where that can be told: `gpuwarden`, `nvidia-ctk` (its hooks), else empty.
    pub writer: &'static str,
}

#[derive(Deserialize)]
struct Lenient {
    #[serde(rename = "cdiVersion", default)]
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<LenientDevice>,
    #[serde(rename = "containerEdits", default)]
    container_edits: Option<LenientEdits>,
}

#[derive(Deserialize)]
struct LenientDevice {
    name: String,
}

#[derive(Deserialize)]
struct LenientEdits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    hooks: Vec<LenientHook>,
}

#[derive(Deserialize)]
struct LenientHook {
    #[serde(default)]
    path: String,
}

/// NVIDIA's toolkit names its hook binaries in its specs' edits.
fn written_by_nvidia_ctk(edits: &LenientEdits) -> bool {
    edits.hooks.iter().any(|h| h.path.ends_with("/nvidia-cdi-hook") || h.path.ends_with("/nvidia-ctk"))
}

pub fn is_spec_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "json"))
}

/// Reads the kind and device names of one spec file (YAML or JSON).
pub fn read_spec_file(path: &Path) -> Result<SpecFile, String> {
    let l: Lenient = super::yaml::read_file(path)?;
    let owner = format!("{OWNER_ENV}=");
    let ours = l.container_edits.as_ref().is_some_and(|e| e.env.iter().any(|v| v.starts_with(&owner)));
    let writer = match () {
        _ if ours => "gpuwarden",
        _ if l.container_edits.as_ref().is_some_and(written_by_nvidia_ctk) => "nvidia-ctk",
        _ => "",
    };
    Ok(SpecFile { path: path.to_path_buf(), cdi_version: l.cdi_version, kind: l.kind, devices: l.devices.into_iter().map(|d| d.name).collect(), ours, writer })
}

/// Every spec in `dirs` (absent folders are skipped), and the files that
/// could not be read, with why.
pub fn scan(dirs: &[PathBuf]) -> (Vec<SpecFile>, Vec<(PathBuf, String)>) {
    let (mut specs, mut broken) = (Vec::new(), Vec::new());
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| is_spec_file(p)).collect();
        paths.sort();
        for path in paths {
            match read_spec_file(&path) {
                Ok(spec) => specs.push(spec),
                Err(why) => broken.push((path, why)),
            }
        }
    }
    (specs, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_specs_of_both_formats_and_reports_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvidia.yaml"), "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits: {}\n- name: all\n  containerEdits: {}\ncontainerEdits:\n  hooks: [{hookName: createContainer, path: /usr/bin/nvidia-cdi-hook, args: [nvidia-cdi-hook, update-ldcache]}]\n").unwrap();
        std::fs::write(dir.path().join("ours.json"), r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"comfyui","containerEdits":{}}],"containerEdits":{"env":["GPUWARDEN_CDI=gpuwarden/0.1.0"]}}"#).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (specs, broken) = scan(&[dir.path().to_path_buf(), dir.path().join("absent")]);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].devices, ["0", "all"]);
        assert!(!specs[0].ours);
        assert!(specs[1].ours);
        assert_eq!((specs[0].writer, specs[1].writer), ("nvidia-ctk", "gpuwarden"));
        assert_eq!(broken.len(), 1);
        assert!(broken[0].0.ends_with("broken.yaml"));
    }
}
