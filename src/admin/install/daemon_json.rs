//! Docker's `/etc/docker/daemon.json`: gpuwarden's runtime merged in, and
//! taken out again, with every other key kept in its place.

use serde_json::{Map, Value};

/// The runtime's name in daemon.json.
pub const RUNTIME_NAME: &str = "gpuwarden";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DaemonJsonError {
    #[error("{path} is not valid JSON ({why}): fix it, then run this again; it was not changed")]
    Malformed { path: String, why: String },
    #[error("{path}: {key} is not a JSON object: fix it, then run this again; it was not changed")]
    NotAnObject { path: String, key: String },
}

/// What gpuwarden added, so that uninstall takes out exactly that.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Added {
    /// `runtimes.gpuwarden` (and `runtimes` itself when it was not there).
    pub runtime: bool,
    pub runtimes_object: bool,
    /// `features.cdi` (and `features` itself).
    pub cdi: bool,
    pub features_object: bool,
    /// `default-runtime`.
    pub default_runtime: bool,
}

fn parse(text: &str, path: &str) -> Result<Map<String, Value>, DaemonJsonError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(DaemonJsonError::NotAnObject { path: path.into(), key: "the top level".into() }),
        Err(e) => Err(DaemonJsonError::Malformed { path: path.into(), why: e.to_string() }),
    }
}

fn object<'a>(m: &'a mut Map<String, Value>, key: &str, path: &str, created: &mut bool) -> Result<&'a mut Map<String, Value>, DaemonJsonError> {
    if !m.contains_key(key) {
        *created = true;
    }
    match m.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(o) => Ok(o),
        _ => Err(DaemonJsonError::NotAnObject { path: path.into(), key: key.into() }),
    }
}

fn render(m: Map<String, Value>) -> String {
    crate::base::json::pretty(&Value::Object(m))
}

/// `text` (None: no file) with the runtime at `runtime_path`, and for an
/// engine with CDI, `features.cdi` and the runtime as `default-runtime`
/// (it applies the profile to the devices Docker injects). The same text
/// when everything is there already. A `default-runtime` the user set is
/// kept, and said in the returned note.
pub fn merge(text: Option<&str>, path: &str, runtime_path: &str, cdi: bool) -> Result<(String, Added, Option<String>), DaemonJsonError> {
    let mut m = parse(text.unwrap_or(""), path)?;
    let mut added = Added::default();
    let want = serde_json::json!({ "path": runtime_path });
    let runtimes = object(&mut m, "runtimes", path, &mut added.runtimes_object)?;
    if runtimes.get(RUNTIME_NAME) != Some(&want) {
        added.runtime = !runtimes.contains_key(RUNTIME_NAME);
        runtimes.insert(RUNTIME_NAME.into(), want);
    }
    let mut note = None;
    if cdi {
        let features = object(&mut m, "features", path, &mut added.features_object)?;
        if !features.contains_key("cdi") {
            features.insert("cdi".into(), Value::Bool(true));
            added.cdi = true;
        }
        match m.get("default-runtime").and_then(Value::as_str) {
            None => {
                m.insert("default-runtime".into(), RUNTIME_NAME.into());
                added.default_runtime = true;
            }
            Some(RUNTIME_NAME) => {}
            Some(other) => note = Some(format!("default-runtime is {other:?}: containers that get a profile device from Docker's CDI need --runtime {RUNTIME_NAME}")),
        }
    }
    let unchanged = text.is_some_and(|t| parse(t, path).ok() == Some(m.clone()));
    let out = if unchanged { text.unwrap_or_default().to_string() } else { render(m) };
    Ok((out, added, note))
}

/// `text` without what `added` says gpuwarden put there.
pub fn unmerge(text: &str, path: &str, added: &Added) -> Result<String, DaemonJsonError> {
    let mut m = parse(text, path)?;
    let prune = |m: &mut Map<String, Value>, key: &str, inner: &str, remove: bool, remove_empty: bool| {
        if let Some(Value::Object(o)) = m.get_mut(key) {
            if remove {
                o.remove(inner);
            }
            if remove_empty && o.is_empty() {
                m.remove(key);
            }
        }
    };
    prune(&mut m, "runtimes", RUNTIME_NAME, added.runtime, added.runtimes_object);
    prune(&mut m, "features", "cdi", added.cdi, added.features_object);
    if added.default_runtime && m.get("default-runtime").and_then(Value::as_str) == Some(RUNTIME_NAME) {
        m.remove("default-runtime");
    }
    Ok(render(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "{\n    \"log-driver\": \"journald\",\n    \"runtimes\": {\"nvidia\": {\"path\": \"nvidia-container-runtime\"}},\n    \"data-root\": \"/srv/docker\"\n}\n";

    #[test]
    fn merging_keeps_every_key_in_its_place() {
        let (out, added, note) = merge(Some(USER), "daemon.json", "/usr/local/bin/gpuwarden-runtime", false).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["log-driver", "runtimes", "data-root"]);
        let runtimes: Vec<&String> = v["runtimes"].as_object().unwrap().keys().collect();
        assert_eq!(runtimes, ["nvidia", "gpuwarden"]);
        assert_eq!(v["runtimes"]["gpuwarden"]["path"], "/usr/local/bin/gpuwarden-runtime");
        assert_eq!(added, Added { runtime: true, ..Added::default() });
        assert_eq!(note, None);
        // Twice changes nothing, byte for byte.
        let (again, added_again, _) = merge(Some(&out), "daemon.json", "/usr/local/bin/gpuwarden-runtime", false).unwrap();
        assert_eq!(again, out);
        assert_eq!(added_again, Added::default());
        // Taking it out leaves the user's keys.
        let back: Value = serde_json::from_str(&unmerge(&out, "daemon.json", &added).unwrap()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(USER).unwrap());
    }

    #[test]
    fn an_engine_with_cdi_gets_the_feature_and_the_default_runtime_unless_one_is_set() {
        let (out, added, note) = merge(None, "daemon.json", "/r", true).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), serde_json::json!({"runtimes": {"gpuwarden": {"path": "/r"}}, "features": {"cdi": true}, "default-runtime": "gpuwarden"}));
        assert!(added.runtimes_object && added.features_object && added.cdi && added.default_runtime && note.is_none());
        assert_eq!(unmerge(&out, "daemon.json", &added).unwrap(), "{}\n");
        let (_, added, note) = merge(Some(r#"{"default-runtime": "nvidia", "features": {"cdi": false}}"#), "daemon.json", "/r", true).unwrap();
        assert!(!added.default_runtime && !added.cdi, "the user's choices stay");
        assert!(note.unwrap().contains("default-runtime is \"nvidia\""));
    }

    #[test]
    fn malformed_files_are_refused() {
        let e = merge(Some("{\"a\": "), "/etc/docker/daemon.json", "/r", false).unwrap_err().to_string();
        assert!(e.starts_with("/etc/docker/daemon.json is not valid JSON") && e.ends_with("it was not changed"), "{e}");
        assert!(merge(Some("[1]"), "d", "/r", false).unwrap_err().to_string().contains("the top level is not a JSON object"));
        assert!(merge(Some(r#"{"runtimes": 3}"#), "d", "/r", false).unwrap_err().to_string().contains("runtimes is not a JSON object"));
    }
}
