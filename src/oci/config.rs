//! A container's `config.json` as JSON, with accessors for what gpuwarden
//! reads and edits. Unknown fields survive every edit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::PROFILE_ENV;

/// The annotation that names a profile (the CDI profile devices use the env).
pub const PROFILE_ANNOTATION: &str = "gpuwarden.io/profile";

const CAPABILITY_SETS: &[&str] = &["bounding", "effective", "inheritable", "permitted", "ambient"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin} is not an OCI config: {why}")]
    Malformed { origin: String, why: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerConfig(Value);

impl ContainerConfig {
    /// Parses config JSON; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, ConfigError> {
        let malformed = |why: String| ConfigError::Malformed { origin: origin.to_string(), why };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        ContainerConfig::from_value(v, origin)
    }

    /// A config already read as JSON (what a hook sent the broker).
    pub fn from_value(v: Value, origin: &str) -> Result<Self, ConfigError> {
        if !v.is_object() {
            return Err(ConfigError::Malformed { origin: origin.to_string(), why: "not a JSON object".into() });
        }
        Ok(ContainerConfig(v))
    }

    pub fn from_bundle(bundle: &Path) -> Result<Self, ConfigError> {
        let path = bundle.join("config.json");
        let bytes = std::fs::read(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        ContainerConfig::parse(&bytes, &path.display().to_string())
    }

    pub fn to_json(&self) -> Vec<u8> {
        crate::base::json::compact(&self.0)
    }

    fn at(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(&self.0, |v, k| v.get(k))
    }

    /// The object at `path`, created (with its parents) if absent or not an object.
    fn object_mut(&mut self, path: &[&str]) -> &mut Map<String, Value> {
        let mut v = &mut self.0;
        for k in path {
            v = object_in(v).entry(k.to_string()).or_insert(Value::Object(Map::new()));
        }
        object_in(v)
    }

    fn env_list(&self) -> impl Iterator<Item = &str> {
        self.at(&["process", "env"]).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    }

    /// The value of env var `name`; the last definition wins, as in execve.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env_list().filter_map(|e| e.split_once('=')).filter(|(k, _)| *k == name).map(|(_, v)| v).last()
    }

    /// Sets env var `name`: a definition already there is replaced where it
    /// stands (as CDI's env edits do), others with that name removed; a new
    /// one goes last.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let list = self.array_mut(&["process"], "env");
        let prefix = format!("{name}=");
        let is_it = |e: &Value| e.as_str().is_some_and(|s| s.starts_with(&prefix));
        let entry = Value::String(format!("{name}={value}"));
        match list.iter().rposition(is_it) {
            Some(at) => {
                list[at] = entry;
                let mut i = 0;
                list.retain(|e| {
                    i += 1;
                    i - 1 == at || !is_it(e)
                });
            }
            None => list.push(entry),
        }
    }

    /// The array `key` of the object at `parent`, created if absent or not an array.
    fn array_mut(&mut self, parent: &[&str], key: &str) -> &mut Vec<Value> {
        let slot = self.object_mut(parent).entry(key).or_insert(Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        #[allow(clippy::expect_used, reason = "made an array on the line above")]
        slot.as_array_mut().expect("just made an array")
    }

    /// Puts `entry` last in the array `key` of `parent`, after removing the
    /// first entry whose `field` equals the new one's (CDI's remove-then-add
    /// for devices and mounts).
    pub fn replace_in(&mut self, parent: &[&str], key: &str, field: &str, entry: Value) {
        let list = self.array_mut(parent, key);
        if let Some(at) = list.iter().position(|e| e.get(field).is_some() && e.get(field) == entry.get(field)) {
            list.remove(at);
        }
        list.push(entry);
    }

    /// Appends `entry` to the array `key` of `parent`.
    pub fn push_to(&mut self, parent: &[&str], key: &str, entry: Value) {
        self.array_mut(parent, key).push(entry);
    }

    /// Orders mounts by the depth of their destination, keeping the order of
    /// equal depths, so a mount is never hidden by its parent's (what CDI's
    /// reference library does after adding mounts).
    pub fn sort_mounts_by_depth(&mut self) {
        fn depth(m: &Value) -> usize {
            let dest = m.get("destination").and_then(Value::as_str).unwrap_or("");
            let mut parts: Vec<&str> = Vec::new();
            for p in dest.split('/') {
                match p {
                    "" | "." => {}
                    ".." => {
                        parts.pop();
                    }
                    p => parts.push(p),
                }
            }
            // As Go's strings.Split(filepath.Clean(dest), "/"): "/" and "/a" are both 2.
            if dest.starts_with('/') { 1 + parts.len().max(1) } else { parts.len().max(1) }
        }
        if let Some(list) = self.0.get_mut("mounts").and_then(Value::as_array_mut) {
            list.sort_by_key(depth);
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.at(&["annotations", key]).and_then(Value::as_str)
    }

    pub fn set_annotation(&mut self, key: &str, value: &str) {
        self.object_mut(&["annotations"]).insert(key.into(), Value::String(value.into()));
    }

    pub fn remove_annotation(&mut self, key: &str) -> Option<String> {
        let annotations = self.0.get_mut("annotations")?.as_object_mut()?;
        annotations.remove(key).and_then(|v| v.as_str().map(str::to_owned))
    }

    /// The hooks of `stage` (`createRuntime`, `poststop`, ...) as (path, args).
    pub fn hooks(&self, stage: &str) -> Vec<(&str, Vec<&str>)> {
        let list = self.at(&["hooks", stage]).and_then(Value::as_array).into_iter().flatten();
        list.filter_map(|h| {
            let path = h.get("path")?.as_str()?;
            let args = h.get("args").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            Some((path, args))
        })
        .collect()
    }

    /// Appends a hook to `stage`.
    pub fn add_hook(&mut self, stage: &str, path: &str, args: &[String]) {
        self.push_to(&["hooks"], stage, serde_json::json!({ "path": path, "args": args }));
    }

    /// The profile this container asks for, from the profile device's env or
    /// the annotation; an error if they disagree.
    pub fn profile_name(&self) -> Result<Option<&str>, String> {
        match (self.env(PROFILE_ENV), self.annotation(PROFILE_ANNOTATION)) {
            (Some(e), Some(a)) if e != a => Err(format!(
                "the container names two profiles: {PROFILE_ENV}={e} (from its CDI device) and annotation {PROFILE_ANNOTATION}={a}"
            )),
            (e, a) => Ok(e.or(a).filter(|p| !p.is_empty())),
        }
    }

    /// The N of each `/dev/nvidiaN` device the container gets, in order.
    pub fn gpu_minors(&self) -> Vec<u32> {
        let devices = self.at(&["linux", "devices"]).and_then(Value::as_array).into_iter().flatten();
        let mut minors: Vec<u32> = devices
            .filter_map(|d| d.get("path")?.as_str()?.strip_prefix("/dev/nvidia")?.parse().ok())
            .collect();
        minors.sort_unstable();
        minors.dedup();
        minors
    }

    /// Each capability set present, with its capabilities.
    pub fn capability_sets(&self) -> Vec<(&'static str, Vec<String>)> {
        CAPABILITY_SETS
            .iter()
            .filter_map(|set| {
                let list = self.at(&["process", "capabilities", set])?.as_array()?;
                Some((*set, list.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()))
            })
            .collect()
    }

    /// Removes from every capability set what `keep` does not hold.
    pub fn retain_capabilities(&mut self, keep: &BTreeSet<String>) {
        let caps = self.object_mut(&["process", "capabilities"]);
        for set in CAPABILITY_SETS {
            if let Some(list) = caps.get_mut(*set).and_then(Value::as_array_mut) {
                list.retain(|c| c.as_str().is_some_and(|c| keep.contains(c)));
            }
        }
    }

    /// Each mount as (destination, source).
    pub fn mounts(&self) -> Vec<(&str, &str)> {
        let list = self.at(&["mounts"]).and_then(Value::as_array).into_iter().flatten();
        list.filter_map(|m| Some((m.get("destination")?.as_str()?, m.get("source").and_then(Value::as_str).unwrap_or("")))).collect()
    }

    /// Whether the last mount at `destination` is a read-only bind mount.
    pub fn is_read_only_bind(&self, destination: &str) -> bool {
        let mut list = self.at(&["mounts"]).and_then(Value::as_array).into_iter().flatten();
        let Some(m) = list.rfind(|m| m.get("destination").and_then(Value::as_str) == Some(destination)) else { return false };
        let options: Vec<&str> = m.get("options").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let bind = m.get("type").and_then(Value::as_str) == Some("bind") || options.iter().any(|o| *o == "bind" || *o == "rbind");
        bind && options.contains(&"ro")
    }

    /// Rewrites mount destinations: `to` gives the new destination of a mount,
    /// or `None` to leave it. Returns how many moved.
    pub fn retarget_mounts(&mut self, to: impl Fn(&str) -> Option<String>) -> usize {
        let list = self.0.get_mut("mounts").and_then(Value::as_array_mut).into_iter().flatten();
        let mut moved = 0;
        for m in list {
            if let Some(new) = m.get("destination").and_then(Value::as_str).and_then(&to) {
                m["destination"] = Value::String(new);
                moved += 1;
            }
        }
        moved
    }

    /// `root.path`: the container's root filesystem (relative to the bundle when not absolute).
    pub fn root_path(&self) -> Option<&str> {
        self.at(&["root", "path"]).and_then(Value::as_str).filter(|p| !p.is_empty())
    }

    /// `process.args` (strings only).
    pub fn args(&self) -> Vec<String> {
        self.at(&["process", "args"]).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    }

    pub fn set_args(&mut self, args: &[String]) {
        self.object_mut(&["process"]).insert("args".into(), Value::Array(args.iter().cloned().map(Value::String).collect()));
    }

    /// Bind-mounts `source` at `destination` (nosuid, nodev, read-write unless
    /// `readonly`), unless the last mount there already is that bind.
    pub fn ensure_bind_mount(&mut self, destination: &str, source: &str, readonly: bool) {
        if self.mounts().iter().rev().find(|(d, _)| *d == destination).is_some_and(|(_, s)| *s == source) {
            return;
        }
        let access = if readonly { "ro" } else { "rw" };
        let mount = serde_json::json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", access, "nosuid", "nodev"]});
        self.push_to(&[], "mounts", mount);
    }

    /// The UID the container's process runs as (0 when the config names none).
    pub fn uid(&self) -> u32 {
        self.at(&["process", "user", "uid"]).and_then(Value::as_u64).and_then(|u| u32::try_from(u).ok()).unwrap_or(0)
    }

    /// The GID the container's process runs as (0 when the config names none).
    pub fn gid(&self) -> u32 {
        self.at(&["process", "user", "gid"]).and_then(Value::as_u64).and_then(|u| u32::try_from(u).ok()).unwrap_or(0)
    }

    pub fn root_readonly(&self) -> bool {
        self.at(&["root", "readonly"]).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn set_root_readonly(&mut self) {
        self.object_mut(&["root"]).insert("readonly".into(), Value::Bool(true));
    }

    pub fn no_new_privileges(&self) -> bool {
        self.at(&["process", "noNewPrivileges"]).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn set_no_new_privileges(&mut self) {
        self.object_mut(&["process"]).insert("noNewPrivileges".into(), Value::Bool(true));
    }

    /// True for a privileged container: Podman says so in an annotation, and
    /// any runtime's privileged mode lets the container open every device.
    pub fn is_privileged(&self) -> bool {
        self.annotation("io.podman.annotations.privileged").is_some_and(|v| v.eq_ignore_ascii_case("true")) || self.allows_all_devices()
    }

    /// True when the device cgroup lets the container open every device.
    pub fn allows_all_devices(&self) -> bool {
        let rules = self.at(&["linux", "resources", "devices"]).and_then(Value::as_array).into_iter().flatten();
        let mut all = false;
        for r in rules {
            let allow = r.get("allow").and_then(Value::as_bool).unwrap_or(false);
            let any_type = r.get("type").and_then(Value::as_str).is_none_or(|t| t == "a");
            let any_number = r.get("major").is_none_or(Value::is_null) && r.get("minor").is_none_or(Value::is_null);
            if any_type && any_number {
                // Later rules override earlier ones, as in the kernel's list.
                all = allow;
            }
        }
        all
    }
}

/// `v` as an object, made one (empty) if it is not.
fn object_in(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    #[allow(clippy::expect_used, reason = "made an object on the line above")]
    v.as_object_mut().expect("just made an object")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config as Podman writes it for `--device nvidia.com/gpu=comfyui`.
    pub(crate) fn podman_like() -> ContainerConfig {
        ContainerConfig::parse(
            br#"{
            "ociVersion": "1.0.2-dev",
            "process": {
                "args": ["/bin/sh"],
                "env": ["PATH=/usr/bin", "GPUWARDEN_PROFILE=comfyui"],
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_CHOWN", "CAP_KILL"],
                    "permitted": ["CAP_CHOWN", "CAP_KILL"]
                },
                "x-future-field": {"kept": true}
            },
            "root": {"path": "/var/lib/containers/rootfs"},
            "linux": {
                "devices": [{"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                            {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}],
                "resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rwm"}]}
            }
        }"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn reads_profile_gpus_and_env() {
        let c = podman_like();
        assert_eq!(c.profile_name().unwrap(), Some("comfyui"));
        assert_eq!(c.gpu_minors(), [0], "nvidiactl is not a GPU");
        assert_eq!(c.env("PATH"), Some("/usr/bin"));
        assert!(!c.allows_all_devices());
        assert!(!c.root_readonly() && !c.no_new_privileges());
    }

    #[test]
    fn edits_keep_unknown_fields_and_replace_env() {
        let mut c = podman_like();
        c.set_env("PATH", "/bin");
        c.set_root_readonly();
        c.set_no_new_privileges();
        c.retain_capabilities(&BTreeSet::from(["CAP_KILL".to_string()]));
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["process"]["x-future-field"]["kept"], true);
        assert_eq!(v["process"]["env"], serde_json::json!(["PATH=/bin", "GPUWARDEN_PROFILE=comfyui"]), "replaced where it stood");
        assert_eq!(v["process"]["capabilities"]["bounding"], serde_json::json!(["CAP_KILL"]));
        assert_eq!(v["root"], serde_json::json!({"path": "/var/lib/containers/rootfs", "readonly": true}));
        assert_eq!(v["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn env_duplicates_collapse_onto_the_last_and_new_names_go_last() {
        let mut c = ContainerConfig::parse(br#"{"process":{"env":["A=1","B=2","A=3"]}}"#, "t").unwrap();
        c.set_env("A", "9");
        c.set_env("C", "4");
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["process"]["env"], serde_json::json!(["B=2", "A=9", "C=4"]));
    }

    #[test]
    fn mounts_replace_by_destination_and_sort_by_depth_stably() {
        let mut c = ContainerConfig::parse(br#"{"mounts":[{"destination":"/a/b/c"},{"destination":"/x","source":"old"},{"destination":"/"},{"destination":"/y"}]}"#, "t").unwrap();
        c.replace_in(&[], "mounts", "destination", serde_json::json!({"destination": "/x", "source": "new"}));
        c.sort_mounts_by_depth();
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        let order: Vec<&str> = v["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
        assert_eq!(order, ["/", "/y", "/x", "/a/b/c"]);
        assert_eq!(v["mounts"][2]["source"], "new");
    }

    #[test]
    fn annotations_and_hooks_are_added_and_read_back() {
        let mut c = podman_like();
        assert_eq!(c.remove_annotation("a"), None, "no annotations at all");
        c.set_annotation("a", "1");
        assert_eq!(c.annotation("a"), Some("1"));
        assert_eq!(c.remove_annotation("a").as_deref(), Some("1"));
        assert_eq!(c.annotation("a"), None);
        assert!(c.hooks("createRuntime").is_empty());
        c.add_hook("createRuntime", "/usr/bin/x", &["x".into(), "admit".into()]);
        c.add_hook("createRuntime", "/usr/bin/y", &[]);
        assert_eq!(c.hooks("createRuntime"), [("/usr/bin/x", vec!["x", "admit"]), ("/usr/bin/y", vec![])]);
        let v: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(v["hooks"]["createRuntime"][0], serde_json::json!({"path": "/usr/bin/x", "args": ["x", "admit"]}));
    }

    #[test]
    fn two_different_profiles_are_an_error() {
        let c = ContainerConfig::parse(br#"{"process":{"env":["GPUWARDEN_PROFILE=comfyui"]},"annotations":{"gpuwarden.io/profile":"blender"}}"#, "t").unwrap();
        assert!(c.profile_name().unwrap_err().contains("two profiles"));
        let c = ContainerConfig::parse(br#"{"annotations":{"gpuwarden.io/profile":"blender"}}"#, "t").unwrap();
        assert_eq!(c.profile_name().unwrap(), Some("blender"));
        let c = ContainerConfig::parse(br#"{}"#, "t").unwrap();
        assert_eq!(c.profile_name().unwrap(), None);
    }

    #[test]
    fn privileged_device_rules_are_seen() {
        let c = ContainerConfig::parse(br#"{"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]}}}"#, "t").unwrap();
        assert!(c.allows_all_devices() && c.is_privileged());
        let c = ContainerConfig::parse(br#"{"annotations":{"io.podman.annotations.privileged":"TRUE"}}"#, "t").unwrap();
        assert!(c.is_privileged());
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(ContainerConfig::parse(b"[1]", "x").unwrap_err().to_string().contains("not a JSON object"));
        assert!(ContainerConfig::parse(b"{", "x").is_err());
    }
}
