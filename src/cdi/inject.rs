//! Injecting CDI devices into a container's config, for runtimes that do not
//! (Docker before 25, or with CDI off): the runtime shim resolves the devices
//! a container asks for against the specs on the host and applies their edits
//! as the CDI specification says and its reference library does (Podman's and
//! Docker's): the spec's own edits once per spec, then each device's; env
//! replaces by name, device nodes get their type and numbers from the host
//! node and a device-cgroup rule, mounts replace by destination and are then
//! ordered by depth, hooks are appended to their stage.
//!
//! The CNCF crate does the same (tests/docker_shim.rs checks that both give one
//! result), but it is not linked here: this runs at every container start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::model::{ContainerEdits, DeviceNode, Hook, Mount, Spec};
use super::registry::is_spec_file;
use crate::oci::ContainerConfig;

/// The hook stages a CDI spec may name.
const HOOK_STAGES: &[&str] = &["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("unresolvable CDI devices {}: {}", .names.join(", "), hint(.known, .dirs, .broken))]
    Unresolved { names: Vec<String>, known: Vec<String>, dirs: Vec<PathBuf>, broken: Vec<String> },
    #[error("CDI device {name} is defined twice, in {} and {}: remove one of the specs", .first.display(), .second.display())]
    Conflict { name: String, first: PathBuf, second: PathBuf },
    #[error("{name:?} is not a CDI device name: write vendor.com/class=name, e.g. nvidia.com/gpu=comfyui")]
    BadName { name: String },
    #[error("CDI device {device}: host node {}: {why}", .host.display())]
    HostNode { device: String, host: PathBuf, why: String },
    #[error("CDI device {device}: unknown hook stage {stage:?}")]
    HookStage { device: String, stage: String },
}

fn hint(known: &[String], dirs: &[PathBuf], broken: &[String]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut s = if known.is_empty() {
        format!("no CDI spec in {} defines a device (run `gpuwarden cdi generate`)", dirs.join(", "))
    } else {
        format!("the specs in {} define {}", dirs.join(", "), known.join(", "))
    };
    if !broken.is_empty() {
        s.push_str(&format!("; unreadable: {}", broken.join("; ")));
    }
    s
}

/// What a device node on the host is: its type (`c`, `b`, `p`) and numbers.
pub type HostNodes<'a> = &'a dyn Fn(&Path) -> Result<(String, i64, i64), String>;

/// Reads a host node with stat(2).
pub fn stat_node(path: &Path) -> Result<(String, i64, i64), String> {
    use nix::sys::stat::{major, minor, stat, SFlag};
    let st = stat(path).map_err(|e| e.desc().to_string())?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFCHR => "c",
        SFlag::S_IFBLK => "b",
        SFlag::S_IFIFO => "p",
        _ => return Err("not a device node".into()),
    };
    Ok((kind.into(), major(st.st_rdev) as i64, minor(st.st_rdev) as i64))
}

/// The specs in `dirs`, with each device under its qualified name. A later
/// folder overrides an earlier one (`/var/run/cdi` over `/etc/cdi`); the
/// same device twice in one folder is a conflict, as in CDI's cache.
pub struct Specs {
    specs: Vec<(PathBuf, Spec)>,
    devices: BTreeMap<String, (usize, usize, usize)>,
    conflicts: BTreeMap<String, (PathBuf, PathBuf)>,
    broken: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Specs {
    pub fn load(dirs: &[PathBuf]) -> Specs {
        let mut s = Specs { specs: Vec::new(), devices: BTreeMap::new(), conflicts: BTreeMap::new(), broken: Vec::new(), dirs: dirs.to_vec() };
        for (priority, dir) in dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| is_spec_file(p)).collect();
            paths.sort();
            for path in paths {
                match super::yaml::read_file::<Spec>(&path) {
                    Ok(spec) => s.add(priority, path, spec),
                    Err(why) => s.broken.push(format!("{}: {why}", path.display())),
                }
            }
        }
        s
    }

    fn add(&mut self, priority: usize, path: PathBuf, spec: Spec) {
        let index = self.specs.len();
        for (d, device) in spec.devices.iter().enumerate() {
            let name = format!("{}={}", spec.kind, device.name);
            match self.devices.get(&name) {
                Some(&(p, other, _)) if p == priority => {
                    self.conflicts.insert(name, (self.specs[other].0.clone(), path.clone()));
                }
                _ => {
                    self.devices.insert(name, (priority, index, d));
                }
            }
        }
        self.specs.push((path, spec));
    }

    /// The edits for `names`, in CDI's order: a spec's own edits before its
    /// first device, then each device's.
    pub fn edits(&self, names: &[String]) -> Result<Vec<(String, &ContainerEdits)>, InjectError> {
        let mut out = Vec::new();
        let mut seen_specs = Vec::new();
        let mut unresolved = Vec::new();
        for name in names {
            if !name.contains('=') || !name.contains('/') {
                return Err(InjectError::BadName { name: name.clone() });
            }
            if let Some((first, second)) = self.conflicts.get(name) {
                return Err(InjectError::Conflict { name: name.clone(), first: first.clone(), second: second.clone() });
            }
            let Some(&(_, spec, device)) = self.devices.get(name) else {
                unresolved.push(name.clone());
                continue;
            };
            if !seen_specs.contains(&spec) {
                seen_specs.push(spec);
                out.push((name.clone(), &self.specs[spec].1.container_edits));
            }
            out.push((name.clone(), &self.specs[spec].1.devices[device].container_edits));
        }
        if !unresolved.is_empty() {
            // The devices of the kinds asked for, to show what could be written instead.
            let kinds: Vec<&str> = unresolved.iter().filter_map(|n| n.split_once('=')).map(|(k, _)| k).collect();
            let known = self.devices.keys().filter(|d| d.split_once('=').is_some_and(|(k, _)| kinds.contains(&k))).cloned().collect();
            return Err(InjectError::Unresolved { names: unresolved, known, dirs: self.dirs.clone(), broken: self.broken.clone() });
        }
        Ok(out)
    }
}

/// Applies `edits` (from [`Specs::edits`]) to `cfg`; `host` reads the host's
/// device nodes.
pub fn apply(cfg: &mut ContainerConfig, edits: &[(String, &ContainerEdits)], host: HostNodes) -> Result<(), InjectError> {
    for (_, e) in edits {
        for var in &e.env {
            let (k, v) = var.split_once('=').unwrap_or((var, ""));
            cfg.set_env(k, v);
        }
    }
    let (uid, gid) = (cfg.uid(), cfg.gid());
    for (device, e) in edits {
        for node in &e.device_nodes {
            let (dev, rule) = device_entries(node, host, uid, gid).map_err(|why| InjectError::HostNode {
                device: device.clone(),
                host: PathBuf::from(node.host_path.as_deref().unwrap_or(&node.path)),
                why,
            })?;
            if let Some(rule) = rule {
                cfg.push_to(&["linux", "resources"], "devices", rule);
            }
            cfg.replace_in(&["linux"], "devices", "path", dev);
        }
    }
    let mut mounted = false;
    for (_, e) in edits {
        for m in &e.mounts {
            cfg.replace_in(&[], "mounts", "destination", mount_entry(m));
            mounted = true;
        }
    }
    if mounted {
        cfg.sort_mounts_by_depth();
    }
    for (device, e) in edits {
        for h in &e.hooks {
            if !HOOK_STAGES.contains(&h.hook_name.as_str()) {
                return Err(InjectError::HookStage { device: device.clone(), stage: h.hook_name.clone() });
            }
            cfg.push_to(&["hooks"], &h.hook_name, hook_entry(h));
        }
    }
    Ok(())
}

/// The `linux.devices` entry of a node and, for `c` and `b`, its cgroup rule.
fn device_entries(node: &DeviceNode, host: HostNodes, uid: u32, gid: u32) -> Result<(Value, Option<Value>), String> {
    let host_path = Path::new(node.host_path.as_deref().unwrap_or(&node.path));
    let mut kind = node.kind.clone().filter(|k| !k.is_empty());
    let (mut major, mut minor) = (node.major, node.minor);
    let complete = kind.as_deref() == Some("p") || (kind.is_some() && major.is_some());
    if !complete {
        let (found, ma, mi) = host(host_path)?;
        match &kind {
            Some(k) if *k != found => return Err(format!("is of type {found}, the spec says {k}")),
            _ => kind = Some(found),
        }
        if major.is_none() && kind.as_deref() != Some("p") {
            (major, minor) = (Some(ma), Some(mi));
        }
    }
    let kind = kind.unwrap_or_default();
    let mut obj = Map::new();
    obj.insert("path".into(), node.path.clone().into());
    obj.insert("type".into(), kind.clone().into());
    obj.insert("major".into(), major.unwrap_or(0).into());
    obj.insert("minor".into(), minor.unwrap_or(0).into());
    if let Some(m) = node.file_mode {
        obj.insert("fileMode".into(), m.into());
    }
    if let Some(u) = node.uid.or((uid > 0).then_some(uid)) {
        obj.insert("uid".into(), u.into());
    }
    if let Some(g) = node.gid.or((gid > 0).then_some(gid)) {
        obj.insert("gid".into(), g.into());
    }
    let rule = matches!(kind.as_str(), "c" | "b").then(|| {
        let access = match node.permissions.as_deref() {
            None | Some("") => "rwm",
            Some("none") => "",
            Some(p) => p,
        };
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access})
    });
    Ok((Value::Object(obj), rule))
}

fn mount_entry(m: &Mount) -> Value {
    let mut obj = Map::new();
    obj.insert("destination".into(), m.container_path.clone().into());
    obj.insert("source".into(), m.host_path.clone().into());
    if let Some(t) = &m.kind {
        obj.insert("type".into(), t.clone().into());
    }
    if !m.options.is_empty() {
        obj.insert("options".into(), m.options.clone().into());
    }
    Value::Object(obj)
}

fn hook_entry(h: &Hook) -> Value {
    let mut obj = Map::new();
    obj.insert("path".into(), h.path.clone().into());
    if !h.args.is_empty() {
        obj.insert("args".into(), h.args.clone().into());
    }
    if !h.env.is_empty() {
        obj.insert("env".into(), h.env.clone().into());
    }
    if let Some(t) = h.timeout {
        obj.insert("timeout".into(), t.into());
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const SPEC: &str = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [GPUWARDEN_CDI=x]\n  deviceNodes: [{path: /dev/nvidiactl}]\n  mounts: [{hostPath: /lib/libcuda.so.1, containerPath: /usr/lib/libcuda.so.1, options: [ro, bind]}]\n\
devices:\n- name: comfyui\n  containerEdits:\n    env: [GPUWARDEN_PROFILE=comfyui]\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /fake/nvidia0}]\n    hooks: [{hookName: createRuntime, path: /bin/hook, args: [hook, admit]}]\n\
- name: '0'\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0, hostPath: /fake/nvidia0}]\n";

    fn host(path: &Path) -> Result<(String, i64, i64), String> {
        match path.to_str() {
            Some("/dev/nvidiactl") => Ok(("c".into(), 195, 255)),
            Some("/fake/nvidia0") => Ok(("c".into(), 195, 0)),
            _ => Err("No such file or directory".into()),
        }
    }

    fn inject(dirs: &[PathBuf], names: &[&str], cfg: &str) -> Result<Value, InjectError> {
        let specs = Specs::load(dirs);
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut c = ContainerConfig::parse(cfg.as_bytes(), "t").unwrap();
        apply(&mut c, &specs.edits(&names)?, &host)?;
        Ok(serde_json::from_slice(&c.to_json()).unwrap())
    }

    #[test]
    fn a_profile_device_brings_the_spec_edits_and_its_own() {
        let d = spec_dir(&[("gpuwarden.yaml", SPEC)]);
        let cfg = r#"{"process":{"env":["PATH=/bin"],"user":{"uid":1000,"gid":0}},"mounts":[{"destination":"/proc"},{"destination":"/usr/lib/libcuda.so.1","source":"/old"}]}"#;
        let v = inject(&[d.path().into()], &["nvidia.com/gpu=comfyui"], cfg).unwrap();
        assert_eq!(v["process"]["env"], json!(["PATH=/bin", "GPUWARDEN_CDI=x", "GPUWARDEN_PROFILE=comfyui"]));
        assert_eq!(v["linux"]["devices"], json!([{"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255, "uid": 1000}, {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0, "uid": 1000}]));
        assert_eq!(v["linux"]["resources"]["devices"][1], json!({"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rwm"}));
        assert_eq!(v["mounts"], json!([{"destination": "/proc"}, {"destination": "/usr/lib/libcuda.so.1", "source": "/lib/libcuda.so.1", "options": ["ro", "bind"]}]));
        assert_eq!(v["hooks"]["createRuntime"], json!([{"path": "/bin/hook", "args": ["hook", "admit"]}]));
    }

    #[test]
    fn two_devices_of_one_spec_get_its_edits_once_and_one_node_entry() {
        let d = spec_dir(&[("gpuwarden.yaml", SPEC)]);
        let v = inject(&[d.path().into()], &["nvidia.com/gpu=0", "nvidia.com/gpu=comfyui"], "{}").unwrap();
        assert_eq!(v["linux"]["devices"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["process"]["env"].as_array().unwrap().len(), 2);
        assert_eq!(v["mounts"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn unknown_devices_conflicts_and_bad_names_are_named() {
        let d = spec_dir(&[("a.yaml", SPEC), ("b.yaml", SPEC), ("c.yaml", "kind: [")]);
        let e = inject(&[d.path().into()], &["nvidia.com/gpu=comfyui"], "{}").unwrap_err().to_string();
        assert!(e.contains("defined twice") && e.contains("a.yaml") && e.contains("b.yaml"), "{e}");
        let e = inject(&[d.path().into()], &["nvidia.com/gpu=sdxl"], "{}").unwrap_err().to_string();
        assert!(e.starts_with("unresolvable CDI devices nvidia.com/gpu=sdxl: the specs in ") && e.contains("define nvidia.com/gpu=0, nvidia.com/gpu=comfyui; unreadable: ") && e.contains("c.yaml"), "{e}");
        let e = inject(&[d.path().join("absent")], &["nvidia.com/gpu=0"], "{}").unwrap_err().to_string();
        assert!(e.ends_with("absent defines a device (run `gpuwarden cdi generate`)"), "{e}");
        let e = inject(&[d.path().into()], &["comfyui"], "{}").unwrap_err().to_string();
        assert!(e.contains("vendor.com/class=name"), "{e}");
    }

    #[test]
    fn a_later_folder_overrides_an_earlier_one() {
        let etc = spec_dir(&[("x.yaml", SPEC)]);
        let run = spec_dir(&[("x.yaml", &SPEC.replace("GPUWARDEN_PROFILE=comfyui", "GPUWARDEN_PROFILE=other"))]);
        let v = inject(&[etc.path().into(), run.path().into()], &["nvidia.com/gpu=comfyui"], "{}").unwrap();
        assert!(v["process"]["env"].as_array().unwrap().contains(&json!("GPUWARDEN_PROFILE=other")), "{v}");
    }

    #[test]
    fn a_missing_host_node_and_a_bad_hook_stage_refuse() {
        let d = spec_dir(&[("x.yaml", &SPEC.replace("/fake/nvidia0", "/gone/nvidia0"))]);
        let e = inject(&[d.path().into()], &["nvidia.com/gpu=0"], "{}").unwrap_err().to_string();
        assert_eq!(e, "CDI device nvidia.com/gpu=0: host node /gone/nvidia0: No such file or directory");
        let d = spec_dir(&[("x.yaml", &SPEC.replace("hookName: createRuntime", "hookName: preStart"))]);
        let e = inject(&[d.path().into()], &["nvidia.com/gpu=comfyui"], "{}").unwrap_err().to_string();
        assert!(e.contains("unknown hook stage \"preStart\""), "{e}");
    }

    #[test]
    fn given_numbers_and_fifos_need_no_host_node() {
        let spec = "cdiVersion: 0.5.0\nkind: x.com/y\ndevices:\n- name: a\n  containerEdits:\n    deviceNodes: [{path: /dev/a, type: c, major: 1, minor: 3, permissions: rw}, {path: /dev/p, type: p}]\n";
        let d = spec_dir(&[("x.yaml", spec)]);
        let v = inject(&[d.path().into()], &["x.com/y=a"], "{}").unwrap();
        assert_eq!(v["linux"]["resources"]["devices"], json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}]));
        assert_eq!(v["linux"]["devices"][1], json!({"path": "/dev/p", "type": "p", "major": 0, "minor": 0}));
    }

    #[test]
    fn stat_reads_real_nodes() {
        assert_eq!(stat_node(Path::new("/dev/null")).unwrap(), ("c".to_string(), 1, 3));
        assert_eq!(stat_node(Path::new("/")).unwrap_err(), "not a device node");
    }
}
