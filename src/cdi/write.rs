//! Writing a spec where runtimes read it, without harming anyone else's: a
//! file gpuwarden did not write is never replaced, and device names another
//! spec of the same kind defines are refused (two specs defining one device
//! make both unusable).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::registry::{read_spec_file, scan};
use super::Spec;
use crate::base::fsutil::{write_atomic, AtomicWriteError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// JSON for a `.json` path, YAML otherwise.
    pub fn for_path(path: &Path) -> Format {
        if path.extension().is_some_and(|e| e == "json") { Format::Json } else { Format::Yaml }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} exists and was not written by gpuwarden: write elsewhere with --output, or remove it if it is stale", path.display())]
    NotOurs { path: PathBuf },
    #[error("{} already defines {}, a name of gpuwarden's profile devices: two specs defining one device make both unusable; rename the profile in config.toml, generate under another class (--class gpuwarden gives {kind_vendor}/gpuwarden=PROFILE), or remove {}", other.display(), names.join(", "), other.display())]
    Conflict { other: PathBuf, kind_vendor: String, names: Vec<String> },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// The spec as text. YAML gets a header saying where it came from.
pub fn render(spec: &Spec, format: Format) -> String {
    match format {
        Format::Json => {
            crate::base::json::pretty(spec)
        }
        Format::Yaml => format!(
            "# Written by `gpuwarden cdi generate`; edits are lost when it runs again.\n{}",
            super::yaml::to_string(spec)
        ),
    }
}

/// Device names of `spec` that another spec of the same kind in `dirs` defines
/// (after [`super::leave_to_others`], only profile devices can).
fn conflicts(spec: &Spec, output: &Path, dirs: &[PathBuf]) -> Option<InstallError> {
    let ours: BTreeSet<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    let output = output.canonicalize().unwrap_or_else(|_| output.to_path_buf());
    let (specs, _) = scan(dirs);
    specs.into_iter().filter(|s| s.kind == spec.kind && s.path.canonicalize().ok().as_ref() != Some(&output)).find_map(|other| {
        let names: Vec<String> =
            other.devices.iter().filter(|n| ours.contains(n.as_str())).map(|n| format!("{}={n}", spec.kind)).collect();
        (!names.is_empty()).then(|| InstallError::Conflict {
            other: other.path.clone(),
            kind_vendor: spec.kind.split('/').next().unwrap_or_default().to_string(),
            names,
        })
    })
}

/// Writes `spec` to `output` atomically with mode 0644, after the ownership
/// and conflict checks against the specs in `dirs`.
pub fn install(spec: &Spec, format: Format, output: &Path, dirs: &[PathBuf]) -> Result<(), InstallError> {
    if output.exists() && !read_spec_file(output).is_ok_and(|s| s.ours) {
        return Err(InstallError::NotOurs { path: output.to_path_buf() });
    }
    if let Some(conflict) = conflicts(spec, output, dirs) {
        return Err(conflict);
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        std::fs::create_dir_all(parent).map_err(|source| InstallError::CreateDir { path: parent.to_path_buf(), source })?;
    }
    write_atomic(output, render(spec, format).as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::build::tests::discovery;
    use crate::cdi::{build_spec, Kind, SpecInput};
    use crate::host::inventory::builtin;
    use std::os::unix::fs::PermissionsExt;

    fn spec(class: &str) -> Spec {
        let inv = builtin("rtx4070").unwrap();
        let kind = Kind::new("nvidia.com", class).unwrap();
        let profiles = vec!["comfyui".to_string()];
        let mut s = build_spec(&SpecInput { kind: &kind, inventory: &inv, discovery: &discovery(&inv, "/dev"), profiles: &profiles, hooks: None, mps: None, launcher: None });
        s.cdi_version = "0.5.0".into();
        s
    }

    const NVIDIA_CTK: &str = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}\n- name: all\n  containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}\n";

    #[test]
    fn writes_0644_and_rewrites_its_own_spec() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cdi/gpuwarden.yaml");
        install(&spec("gpu"), Format::Yaml, &out, &[dir.path().join("cdi")]).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
        install(&spec("gpu"), Format::Yaml, &out, &[dir.path().join("cdi")]).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("# Written by `gpuwarden cdi generate`"));
        assert!(text.contains("cdiVersion: \"0.5.0\""), "{text}");
    }

    #[test]
    fn refuses_to_replace_a_spec_it_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nvidia.yaml");
        std::fs::write(&out, NVIDIA_CTK).unwrap();
        let e = install(&spec("gpu"), Format::Yaml, &out, &[]).unwrap_err().to_string();
        assert!(e.contains("was not written by gpuwarden"), "{e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), NVIDIA_CTK, "left untouched");
    }

    #[test]
    fn refuses_names_another_spec_defines_and_says_how_to_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvidia.yaml"), NVIDIA_CTK.replace("name: all", "name: comfyui")).unwrap();
        let out = dir.path().join("gpuwarden.yaml");
        let e = install(&spec("gpu"), Format::Yaml, &out, &[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("nvidia.yaml already defines nvidia.com/gpu=0, nvidia.com/gpu=comfyui, a name of gpuwarden's profile devices"), "{e}");
        assert!(e.contains("rename the profile in config.toml") && e.contains("--class gpuwarden"), "{e}");
        assert!(!out.exists());
        // Under another class there is no overlap.
        install(&spec("gpuwarden"), Format::Yaml, &out, &[dir.path().to_path_buf()]).unwrap();
    }

    #[test]
    fn json_output_is_json() {
        let text = render(&spec("gpu"), Format::Json);
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec("gpu"));
        assert_eq!(Format::for_path(Path::new("/etc/cdi/x.json")), Format::Json);
    }
}
