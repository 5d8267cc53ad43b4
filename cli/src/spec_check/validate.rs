//! `cdi validate`: the CDI specification's checks (gpuwarden's own, in
//! `gpuwarden::cdi::check`, agreeing with the CNCF crate's), plus what those
//! do not check: host paths that do not exist, and versions Podman 4.3
//! drops. Each finding names the file and, where known, the field.

use std::fmt;
use std::path::{Path, PathBuf};

use gpuwarden::cdi::check::newer as version_newer;
use gpuwarden::cdi::Spec;

/// The newest version Podman 4.3 reads; it silently drops newer specs.
pub const PODMAN_43_MAX_VERSION: &str = "0.5.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {level}: ", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one spec file; empty when it is sound.
pub fn validate_file(path: &Path) -> Vec<Finding> {
    let finding = |severity, field: Option<String>, message: String| Finding { severity, file: path.to_path_buf(), field, message };
    let text = match std::fs::metadata(path).map(|m| m.len()) {
        Ok(size) if size > gpuwarden::cdi::yaml::MAX_SPEC_BYTES => {
            return vec![finding(Severity::Error, None, gpuwarden::cdi::yaml::too_large(size))];
        }
        _ => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return vec![finding(Severity::Error, None, format!("cannot read: {e}"))],
        },
    };
    let raw = match gpuwarden::cdi::check::parse(&text) {
        Ok(raw) => raw,
        Err(e) => return vec![finding(Severity::Error, None, format!("not a CDI spec: {e}"))],
    };
    let mut out = Vec::new();
    if let Err(e) = gpuwarden::cdi::check::check(&raw) {
        out.push(finding(Severity::Error, None, e));
    }
    // The strict types accepted it, so ours (a lenient subset) do too.
    if let Ok(spec) = gpuwarden::cdi::yaml::from_str::<Spec>(&text) {
        for (field, host) in host_paths(&spec) {
            if std::fs::symlink_metadata(&host).is_err() {
                out.push(finding(Severity::Error, Some(field), format!("{host} does not exist on this host")));
            }
        }
        if version_newer(&spec.cdi_version, PODMAN_43_MAX_VERSION) {
            out.push(finding(
                Severity::Warning,
                Some("cdiVersion".into()),
                format!("{} is newer than {PODMAN_43_MAX_VERSION}: Podman 4.3 ignores this spec (unresolvable CDI devices)", spec.cdi_version),
            ));
        }
    }
    out
}

/// (field path, host path) of every node, mount and hook in the spec.
fn host_paths(spec: &Spec) -> Vec<(String, String)> {
    let edits = std::iter::once(("containerEdits".to_string(), &spec.container_edits))
        .chain(spec.devices.iter().enumerate().map(|(i, d)| (format!("devices[{i}].containerEdits"), &d.container_edits)));
    let mut out = Vec::new();
    for (at, e) in edits {
        for (i, n) in e.device_nodes.iter().enumerate() {
            match &n.host_path {
                Some(h) => out.push((format!("{at}.deviceNodes[{i}].hostPath"), h.clone())),
                None => out.push((format!("{at}.deviceNodes[{i}].path"), n.path.clone())),
            }
        }
        for (i, m) in e.mounts.iter().enumerate() {
            out.push((format!("{at}.mounts[{i}].hostPath"), m.host_path.clone()));
        }
        for (i, h) in e.hooks.iter().enumerate() {
            out.push((format!("{at}.hooks[{i}].path"), h.path.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, text).unwrap();
        validate_file(&path).iter().map(|f| f.to_string().replace(&dir.path().display().to_string(), "D")).collect()
    }

    #[test]
    fn a_sound_spec_has_no_findings() {
        let f = check("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/null}]\n");
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn missing_host_paths_are_named_with_their_field() {
        let f = check("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: x\n  containerEdits:\n    mounts: [{hostPath: /nonexistent/libcuda.so.1, containerPath: /usr/lib/libcuda.so.1}]\n");
        assert_eq!(f, ["D/spec.yaml: error: devices[0].containerEdits.mounts[0].hostPath: /nonexistent/libcuda.so.1 does not exist on this host"]);
    }

    #[test]
    fn the_cncf_checks_catch_bad_names_and_understated_versions() {
        let f = check("cdiVersion: 0.3.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/null}]\n");
        assert!(f.len() == 1 && f[0].contains("must be at least v0.5.0"), "{f:?}");
        let f = check("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"bad name\"\n  containerEdits:\n    deviceNodes: [{path: /dev/null}]\n");
        assert!(f.len() == 1 && f[0].contains("bad name"), "{f:?}");
    }

    #[test]
    fn unknown_fields_and_garbage_are_errors() {
        let f = check("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\nbogus: 1\ndevices: []\n");
        assert!(f.len() == 1 && f[0].contains("not a CDI spec") && f[0].contains("bogus"), "{f:?}");
        let f = check("{{{");
        assert!(f.len() == 1 && f[0].contains("not a CDI spec"), "{f:?}");
    }

    #[test]
    fn versions_podman_4_3_drops_are_warned_about() {
        let f = check("cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n- name: x\n  annotations: {a: b}\n  containerEdits:\n    deviceNodes: [{path: /dev/null}]\n");
        assert!(f.len() == 1 && f[0].contains("warning: cdiVersion: 0.6.0 is newer than 0.5.0"), "{f:?}");
    }
}
