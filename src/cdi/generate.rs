//! `cdi::generate`: the whole spec one host gets, decided without touching a
//! file. What `build_spec` makes of discovery, less the plain devices other
//! specs (or NVIDIA's toolkit) already define, at the lowest `cdiVersion`
//! its content needs, so Podman 4.3 (which drops specs newer than 0.5.0)
//! reads it wherever it can. Writing it is `cdi::install`'s.

use std::path::{Path, PathBuf};

use super::check::{self, RawDevice, RawEdits, RawHook, RawMount, RawNode, RawSpec};
use super::{build_spec, leave_to_others, scan, ContainerEdits, Owner, Spec, SpecInput};

/// Where the spec goes and what it must leave to others.
pub struct Placement<'a> {
    /// The file gpuwarden's spec is written to (never counted as another's).
    pub output: &'a Path,
    /// The folders whose specs are read for names already defined.
    pub cdi_dirs: &'a [PathBuf],
    /// Where NVIDIA's toolkit is installed, if it is.
    pub toolkit: Option<&'a Path>,
}

/// The spec, and each plain device left out with who defines it.
#[derive(Debug)]
pub struct Generated {
    pub spec: Spec,
    pub left: Vec<(String, Owner)>,
}

/// Builds the spec, leaves what others define to them, and sets its version.
pub fn generate(input: &SpecInput, at: &Placement) -> Generated {
    let mut spec = build_spec(input);
    let (others, _unreadable) = scan(at.cdi_dirs);
    let left = leave_to_others(&mut spec, &others, at.output, at.toolkit, input.inventory);
    spec.cdi_version = minimum_version(&spec).to_owned();
    Generated { spec, left }
}

/// The lowest CDI version whose features cover everything in `spec`
/// (0.3.0 at least; 0.5.0 once a device name starts with a digit or a node
/// has a `hostPath`; see `check::minimum_version`).
pub fn minimum_version(spec: &Spec) -> &'static str {
    check::minimum_version(&RawSpec::from(spec))
}

impl From<&Spec> for RawSpec {
    fn from(s: &Spec) -> RawSpec {
        RawSpec {
            version: s.cdi_version.clone(),
            kind: s.kind.clone(),
            annotations: Default::default(),
            devices: s.devices.iter().map(|d| RawDevice { name: d.name.clone(), annotations: Default::default(), container_edits: (&d.container_edits).into() }).collect(),
            container_edits: (!s.container_edits.is_empty()).then(|| (&s.container_edits).into()),
        }
    }
}

impl From<&ContainerEdits> for RawEdits {
    fn from(e: &ContainerEdits) -> RawEdits {
        fn some<T>(v: Vec<T>) -> Option<Vec<T>> {
            (!v.is_empty()).then_some(v)
        }
        RawEdits {
            env: some(e.env.clone()),
            device_nodes: some(
                e.device_nodes
                    .iter()
                    .map(|n| RawNode {
                        path: n.path.clone(),
                        host_path: n.host_path.clone(),
                        kind: n.kind.clone(),
                        major: n.major,
                        minor: n.minor,
                        file_mode: n.file_mode,
                        permissions: n.permissions.clone(),
                        uid: n.uid,
                        gid: n.gid,
                    })
                    .collect(),
            ),
            hooks: some(e.hooks.iter().map(|h| RawHook { hook_name: h.hook_name.clone(), path: h.path.clone(), args: some(h.args.clone()), env: some(h.env.clone()), timeout: h.timeout }).collect()),
            mounts: some(e.mounts.iter().map(|m| RawMount { host_path: m.host_path.clone(), container_path: m.container_path.clone(), options: some(m.options.clone()), kind: m.kind.clone() }).collect()),
            intel_rdt: None,
            additional_gids: None,
            net_devices: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::{Device, DeviceNode, Mount};

    fn spec(name: &str, host_path: Option<&str>) -> Spec {
        Spec {
            cdi_version: String::new(),
            kind: "nvidia.com/gpu".into(),
            devices: vec![Device {
                name: name.into(),
                container_edits: ContainerEdits {
                    device_nodes: vec![DeviceNode { path: "/dev/nvidia0".into(), host_path: host_path.map(Into::into), ..Default::default() }],
                    ..Default::default()
                },
            }],
            container_edits: ContainerEdits::default(),
        }
    }

    #[test]
    fn plain_specs_need_the_oldest_version() {
        assert_eq!(minimum_version(&spec("comfyui", None)), "0.3.0");
    }

    #[test]
    fn digit_names_and_host_paths_need_0_5_0() {
        assert_eq!(minimum_version(&spec("0", None)), "0.5.0");
        assert_eq!(minimum_version(&spec("comfyui", Some("/tmp/dev/nvidia0"))), "0.5.0");
    }

    #[test]
    fn a_typed_mount_needs_0_4_0() {
        let mut s = spec("comfyui", None);
        s.container_edits.mounts.push(Mount { host_path: "/a".into(), container_path: "/a".into(), options: vec![], kind: Some("bind".into()) });
        assert_eq!(minimum_version(&s), "0.4.0");
    }

    #[test]
    fn the_conversion_agrees_with_reading_the_rendered_spec() {
        let mut s = spec("0", Some("/tmp/dev/nvidia0"));
        s.cdi_version = "0.5.0".into();
        s.container_edits.env.push("A=1".into());
        let text = crate::cdi::render(&s, crate::cdi::Format::Json);
        let read = check::parse(&text).unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", RawSpec::from(&s)));
        assert!(check::check(&read).is_ok());
    }
}
