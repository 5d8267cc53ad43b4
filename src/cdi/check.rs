//! The CDI specification's rules, checked by gpuwarden itself: the shape of
//! a spec (what the CDI JSON schema requires, read into strict types), the
//! version it declares against what it uses, the kind's vendor and class,
//! device names, annotations, and each container edit. `cdi validate` and
//! the generator use it; the CNCF `container-device-interface` crate, which
//! carried an HTTP client, a TLS stack and an async runtime into the admin
//! binary through its schema validator, is now a dev-dependency that proves
//! the two agree on a corpus (`tests/fixtures/cdi-corpus`, and every spec the
//! tests generate). Messages are the crate's, so `cdi validate` reads as
//! before; where the crate drops the cause of an invalid edit, the cause
//! follows its message after ` — `.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A spec, strictly as the CDI specification defines its fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    #[serde(rename = "cdiVersion")]
    pub version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub devices: Vec<RawDevice>,
    #[serde(rename = "containerEdits")]
    pub container_edits: Option<RawEdits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "containerEdits")]
    pub container_edits: RawEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawEdits {
    pub env: Option<Vec<String>>,
    pub device_nodes: Option<Vec<RawNode>>,
    pub hooks: Option<Vec<RawHook>>,
    pub mounts: Option<Vec<RawMount>>,
    pub intel_rdt: Option<RawIntelRdt>,
    pub additional_gids: Option<Vec<u32>>,
    pub net_devices: Option<Vec<RawNetDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNode {
    pub path: String,
    pub host_path: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    pub permissions: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHook {
    pub hook_name: String,
    pub path: String,
    pub args: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMount {
    pub host_path: String,
    pub container_path: String,
    pub options: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntelRdt {
    #[serde(rename = "closID")]
    pub clos_id: Option<String>,
    #[serde(rename = "l3CacheSchema")]
    pub l3_cache_schema: Option<String>,
    #[serde(rename = "memBwSchema")]
    pub mem_bw_schema: Option<String>,
    #[serde(rename = "enableCMT")]
    pub enable_cmt: Option<bool>,
    #[serde(rename = "enableMBM")]
    pub enable_mbm: Option<bool>,
    pub schemata: Option<Vec<String>>,
    #[serde(rename = "enableMonitoring")]
    pub enable_monitoring: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNetDevice {
    pub host_interface_name: String,
    pub name: String,
}

/// The versions of the CDI specification, oldest first.
pub const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0"];

fn parts(v: &str) -> Vec<u64> {
    v.trim_start_matches('v').split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Whether dotted version `a` is newer than `b` (`0.10.0` > `0.5.0`).
pub fn newer(a: &str, b: &str) -> bool {
    parts(a) > parts(b)
}

fn all_edits(spec: &RawSpec) -> impl Iterator<Item = &RawEdits> {
    spec.container_edits.iter().chain(spec.devices.iter().map(|d| &d.container_edits))
}

/// The lowest CDI version whose features cover what `spec` uses: 0.3.0 at
/// least; 0.4.0 for a mount's type; 0.5.0 for a device name not starting
/// with a letter or a node's hostPath; 0.6.0 for annotations or a dotted
/// class; 0.7.0 for intelRdt or additionalGids; 1.1.0 for netDevices,
/// intelRdt schemata or monitoring.
pub fn minimum_version(spec: &RawSpec) -> &'static str {
    let edits: Vec<&RawEdits> = all_edits(spec).collect();
    let v110 = edits.iter().any(|e| {
        e.net_devices.as_ref().is_some_and(|n| !n.is_empty()) || e.intel_rdt.as_ref().is_some_and(|r| r.schemata.is_some() || r.enable_monitoring.is_some())
    });
    let v070 = edits.iter().any(|e| e.intel_rdt.is_some() || e.additional_gids.as_ref().is_some_and(|g| !g.is_empty()));
    let (vendor, class) = qualifier(&spec.kind);
    let v060 = !spec.annotations.is_empty() || spec.devices.iter().any(|d| !d.annotations.is_empty()) || (!vendor.is_empty() && class.contains('.'));
    let v050 = spec.devices.iter().any(|d| !d.name.chars().next().is_some_and(char::is_alphabetic))
        || edits.iter().flat_map(|e| e.device_nodes.iter().flatten()).any(|n| n.host_path.as_deref().is_some_and(|p| !p.is_empty()));
    let v040 = edits.iter().flat_map(|e| e.mounts.iter().flatten()).any(|m| m.kind.as_deref().is_some_and(|t| !t.is_empty()));
    match () {
        _ if v110 => "1.1.0",
        _ if v070 => "0.7.0",
        _ if v060 => "0.6.0",
        _ if v050 => "0.5.0",
        _ if v040 => "0.4.0",
        _ => "0.3.0",
    }
}

/// `vendor/class` split, or ("", kind) when it is not of that form.
fn qualifier(kind: &str) -> (&str, &str) {
    match kind.split('/').collect::<Vec<_>>()[..] {
        [v, c] if !v.is_empty() && !c.is_empty() => (v, c),
        _ => ("", kind),
    }
}

/// Parses `text` strictly: an unknown field, a missing one or a wrong type is
/// the error, with where the parser saw it.
pub fn parse(text: &str) -> Result<RawSpec, String> {
    super::yaml::from_str(text)
}

/// Checks `spec` as the CNCF crate's `new_spec` does, in its order; the error
/// is its chain of contexts joined by `: `.
pub fn check(spec: &RawSpec) -> Result<(), String> {
    if spec.devices.is_empty() {
        return Err("invalid spec, no devices".into());
    }
    let schema = |why: String| format!("invalid CDI Spec: invalid CDI Spec schema: {why}");
    annotations("", &spec.annotations).map_err(schema)?;
    for d in &spec.devices {
        annotations(&d.name, &d.annotations).map_err(schema)?;
    }
    declared_version_fields(spec).map_err(schema)?;

    let failed = |why: String| format!("validate spec failed: {why}");
    version(spec).map_err(|e| failed(format!("validate cdi version failed: {e}")))?;
    let (vendor, class) = qualifier(&spec.kind);
    crate::base::names::kind_part(vendor).map_err(|e| failed(format!("validate vendor name failed: invalid vendor. {e}")))?;
    crate::base::names::kind_part(class).map_err(|e| failed(format!("validate class name failed: invalid class. {e}")))?;
    annotations(&spec.kind, &spec.annotations).map_err(|e| failed(format!("validate spec annotations failed: {e}")))?;
    if let Some(e) = &spec.container_edits {
        edits(e).map_err(|(outer, cause)| failed(format!("validate container edits failed: {outer} — {cause}")))?;
    }
    let mut seen = BTreeSet::new();
    for d in &spec.devices {
        device(spec, d).map_err(|e| failed(format!("failed to add device {}: device validated failed with error: {e}", d.name)))?;
        if !seen.insert(d.name.as_str()) {
            return Err(failed(format!("invalid spec, multiple device {}", d.name)));
        }
    }
    Ok(())
}

fn version(spec: &RawSpec) -> Result<(), String> {
    let declared = spec.version.trim_start_matches('v');
    if !VERSIONS.contains(&declared) {
        return Err(format!("invalid version {}", spec.version));
    }
    declared_version_fields(spec)?;
    let min = minimum_version(spec);
    if newer(min, declared) {
        return Err(format!("the spec version must be at least v{min}"));
    }
    Ok(())
}

/// Fields a declared version rules out or requires (intelRdt's and netDevices').
fn declared_version_fields(spec: &RawSpec) -> Result<(), String> {
    let declared = spec.version.trim_start_matches('v');
    if !VERSIONS.contains(&declared) {
        return Err(format!("invalid version {}", spec.version));
    }
    let v110_or_newer = !newer("1.1.0", declared);
    let scoped = spec.container_edits.iter().map(|e| ("containerEdits", e)).chain(spec.devices.iter().map(|d| ("devices[].containerEdits", &d.container_edits)));
    for (scope, e) in scoped {
        if let Some(rdt) = &e.intel_rdt {
            let wrong = if v110_or_newer {
                [("enableCMT", rdt.enable_cmt.is_some()), ("enableMBM", rdt.enable_mbm.is_some())].into_iter().find(|f| f.1).map(|(f, _)| format!("{scope}.intelRdt.{f} is not valid for CDI spec version {}", spec.version))
            } else {
                [("schemata", rdt.schemata.is_some()), ("enableMonitoring", rdt.enable_monitoring.is_some())].into_iter().find(|f| f.1).map(|(f, _)| format!("{scope}.intelRdt.{f} requires CDI spec version 1.1.0"))
            };
            if let Some(w) = wrong {
                return Err(w);
            }
        }
        if !v110_or_newer && e.net_devices.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(format!("{scope}.netDevices requires CDI spec version 1.1.0"));
        }
    }
    Ok(())
}

const ANNOTATIONS_LIMIT: usize = 256 * 1024;
const NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName' or 'my.name' or '123-abc'. regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Annotation keys are Kubernetes qualified names (an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters); all of
/// them together at most 256 KiB.
fn annotations(owner: &str, map: &BTreeMap<String, String>) -> Result<(), String> {
    let path = if owner.is_empty() { "annotations".to_string() } else { format!("{owner}.annotations") };
    let mut errs: Vec<String> = Vec::new();
    for key in map.keys() {
        for why in qualified_name(&key.to_lowercase()) {
            errs.push(format!("{path}.{key} is invalid: {why}"));
        }
    }
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > ANNOTATIONS_LIMIT {
        errs.push(format!("{path} is too long: annotations size {size} is larger than limit {ANNOTATIONS_LIMIT}"));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join(", ")) }
}

fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return vec![format!("a qualified name {NAME_RULE}").replace("name part must", "must")],
    };
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    let ends = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    let well_formed = |s: &str| ends(s) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name.is_empty() && !well_formed(name) {
        errs.push(NAME_RULE.to_string());
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if prefix.len() > 253 || !prefix.split('.').all(|l| ends(l) && l.len() <= 63 && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')) {
            errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
        }
    }
    errs
}

fn device(spec: &RawSpec, d: &RawDevice) -> Result<(), String> {
    crate::base::names::device_name(&d.name).map_err(|cause| format!("{:?} — {cause}", "validate device name failed"))?;
    let (vendor, class) = qualifier(&spec.kind);
    annotations(&format!("{vendor}/{class}={}", d.name), &d.annotations).map_err(|e| format!("{:?}", format!("validate spec annotations failed with error: {e:?}")))?;
    let e = &d.container_edits;
    let empty = e.env.as_ref().is_none_or(Vec::is_empty)
        && e.device_nodes.as_ref().is_none_or(Vec::is_empty)
        && e.hooks.as_ref().is_none_or(Vec::is_empty)
        && e.mounts.as_ref().is_none_or(Vec::is_empty)
        && e.intel_rdt.is_none()
        && e.additional_gids.as_ref().is_none_or(Vec::is_empty)
        && e.net_devices.as_ref().is_none_or(Vec::is_empty);
    if empty {
        return Err(format!("{:?}", "invalid device, empty device edits"));
    }
    edits(e).map_err(|(_, cause)| format!("{:?} — {cause}", format!("invalid device {:?} ", d.name)))
}

/// Checks container edits: the error is (the crate's outer message, the cause).
fn edits(e: &RawEdits) -> Result<(), (String, String)> {
    if let Some(env) = &e.env {
        envs(env).map_err(|c| (format!("invalid container edits with envs: {env:?}"), c))?;
    }
    for n in e.device_nodes.iter().flatten() {
        node(n).map_err(|c| ("invalid container edits with device".to_string(), c))?;
    }
    for h in e.hooks.iter().flatten() {
        hook(h).map_err(|c| ("invalid container edits with hook".to_string(), c))?;
    }
    for m in e.mounts.iter().flatten() {
        let bad = if m.host_path.is_empty() {
            Some("invalid mount, empty host path")
        } else if m.container_path.is_empty() {
            Some("invalid mount, empty container path")
        } else {
            None
        };
        if let Some(c) = bad {
            return Err(("invalid container edits with mount".to_string(), c.to_string()));
        }
    }
    if let Some(id) = e.intel_rdt.as_ref().and_then(|r| r.clos_id.as_deref()) {
        if id.len() >= 4096 || id == "." || id == ".." || id.contains(['/', '\n']) {
            return Err(("invalid container edits with mount".to_string(), "invalid clos id".to_string()));
        }
    }
    let (mut hosts, mut names) = (BTreeSet::new(), BTreeSet::new());
    for n in e.net_devices.iter().flatten() {
        let bad = match () {
            _ if n.host_interface_name.is_empty() => Some("invalid linux net device, empty HostInterfaceName".to_string()),
            _ if n.name.is_empty() => Some("invalid linux net device, empty Name".to_string()),
            _ if !hosts.insert(n.host_interface_name.as_str()) => Some(format!("invalid linux net device, duplicate HostInterfaceName {:?}", n.host_interface_name)),
            _ if !names.insert(n.name.as_str()) => Some(format!("invalid linux net device, duplicate Name {:?}", n.name)),
            _ => None,
        };
        if let Some(c) = bad {
            return Err((c.clone(), c));
        }
    }
    Ok(())
}

fn envs(env: &[String]) -> Result<(), String> {
    match env.iter().find(|v| v.split_once('=').is_none_or(|(name, _)| name.is_empty())) {
        Some(v) => Err(format!("invalid environment variable {v:?}: missing '=' or empty variable name")),
        None => Ok(()),
    }
}

fn node(n: &RawNode) -> Result<(), String> {
    if n.path.is_empty() {
        return Err("invalid (empty) device path".into());
    }
    if let Some(t) = &n.kind {
        if !["b", "c", "u", "p", ""].contains(&t.as_str()) {
            return Err(format!("device {:?}: invalid type {t:?}", n.path));
        }
    }
    if let Some(p) = &n.permissions {
        if !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) && p != "none" {
            return Err(format!("device {}: invalid permissions {p}", n.path));
        }
    }
    Ok(())
}

const HOOK_NAMES: &[&str] = &["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

fn hook(h: &RawHook) -> Result<(), String> {
    if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
        return Err(format!("invalid hook name: {:?}: no such hook", h.hook_name));
    }
    if h.path.is_empty() {
        return Err(format!("invalid hook {:?} with empty path", h.hook_name));
    }
    if let Some(env) = &h.env {
        envs(env).map_err(|c| format!("hook {:?} with invalid env: {c}", h.hook_name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(text: &str) -> Result<(), String> {
        check(&parse(text)?)
    }

    const OK: &str = "cdiVersion: \"0.5.0\"\nkind: nvidia.com/gpu\ndevices:\n  - name: \"0\"\n    containerEdits:\n      deviceNodes:\n        - path: /dev/nvidia0\n";

    #[test]
    fn a_sound_spec_passes_and_its_version_is_the_lowest_it_needs() {
        assert_eq!(verdict(OK), Ok(()));
        assert_eq!(minimum_version(&parse(OK).unwrap()), "0.5.0", "a device name starting with a digit");
        assert_eq!(minimum_version(&parse(&OK.replace("\"0\"", "gpu0")).unwrap()), "0.3.0");
    }

    #[test]
    fn each_rule_is_named_as_the_cncf_crate_names_it() {
        let e = verdict(&OK.replace("0.5.0", "0.3.0")).unwrap_err();
        assert_eq!(e, "validate spec failed: validate cdi version failed: the spec version must be at least v0.5.0");
        assert_eq!(verdict(&OK.replace("0.5.0", "9.9.9")).unwrap_err(), "invalid CDI Spec: invalid CDI Spec schema: invalid version 9.9.9");
        let e = verdict(&OK.replace("nvidia.com/gpu", "nvi((dia.com/gpu")).unwrap_err();
        assert_eq!(e, "validate spec failed: validate vendor name failed: invalid vendor. invalid character '(' in name nvi((dia.com");
        let e = verdict(&OK.replace("- path: /dev/nvidia0", "- path: /dev/nvidia0\n          type: x")).unwrap_err();
        assert_eq!(e, "validate spec failed: failed to add device 0: device validated failed with error: \"invalid device \\\"0\\\" \" — device \"/dev/nvidia0\": invalid type \"x\"");
        assert!(verdict(&OK.replace("kind:", "flavour: mint\nkind:")).unwrap_err().contains("flavour"), "unknown fields are refused");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(newer("0.10.0", "0.5.0") && newer("0.6.0", "0.5.0"));
        assert!(!newer("0.5.0", "0.5.0") && !newer("0.3.0", "0.5.0"));
    }
}
