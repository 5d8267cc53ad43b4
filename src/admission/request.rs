//! What is asked: the container's OCI state and its bundle's config, who
//! asks (a user through the broker, or root), and the name refusals give it.
//! The hook reads its stdin and its bundle; the broker takes what the hook
//! sent, never a path. Both build this one request and hand it to
//! [`super::admit`].

use super::error::{Kind, Refusal};
use crate::model::Who;
use crate::oci::{ContainerConfig, HookState};

/// Annotations that may name a container (Podman 4.3 passes none; users may
/// set `gpuwarden.io/name`, Kubernetes sets its own).
const NAME_ANNOTATIONS: &[&str] = &["gpuwarden.io/name", "io.kubernetes.container.name", "io.kubernetes.cri-o.ContainerName"];

/// What containerd's CRI writes into every container's spec: the pod's
/// namespace and name, and the container's name in the pod.
const CRI_NAMES: [&str; 3] = ["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.container-name"];

/// The longest name recorded and shown, in characters.
pub const MAX_NAME: usize = 64;

/// One container asking for its share.
#[derive(Debug)]
pub struct Request {
    pub state: HookState,
    pub config: ContainerConfig,
    /// The user who asks through the broker; `None` for root (a rootful
    /// container's hook, or root through the broker): root's containers are
    /// the administrator's, with no user rules and no holder recorded.
    pub who: Option<Who>,
    /// Its name, from its annotations.
    pub name: Option<String>,
    /// How refusals name it: its short id, and its name.
    pub label: String,
}

impl Request {
    /// The request of a hook run by the runtime: the OCI state on its
    /// stdin, then its bundle's config.json.
    pub fn read(input: &[u8]) -> Result<Request, Refusal> {
        let unread = |kind| Refusal::new("", None, kind);
        let state = HookState::parse(input).map_err(|e| unread(Kind::State(e)))?;
        let bundle = state.bundle().map_err(|e| unread(Kind::State(e)))?;
        let config = ContainerConfig::from_bundle(bundle).map_err(|e| unread(Kind::Config(e)))?;
        Ok(Request::new(state, config, None))
    }

    /// The request a hook sent the broker for `who` (`None`: root): the OCI
    /// state and the config as JSON.
    pub fn sent(state: serde_json::Value, config: serde_json::Value, who: Option<Who>) -> Result<Request, Refusal> {
        let state = HookState::from_value(state).map_err(|e| Refusal::new("", None, Kind::State(e)))?;
        let id = crate::base::names::short_id(&state.id).to_string();
        let config = ContainerConfig::from_value(config, "the config the hook sent").map_err(|e| Refusal::new(id, None, Kind::Config(e)))?;
        Ok(Request::new(state, config, who))
    }

    fn new(state: HookState, config: ContainerConfig, who: Option<Who>) -> Request {
        let name = container_name(&state, &config);
        let label = crate::model::label(&state.id, name.as_deref());
        Request { state, config, who, name, label }
    }

    /// The container's first process: the one check that the OCI state
    /// names one.
    pub fn pid(&self) -> Result<i32, Refusal> {
        self.state.pid.ok_or_else(|| Refusal::new(crate::base::names::short_id(&self.state.id), None, Kind::NoPid))
    }
}

/// The container's name, as its annotations give it: control characters
/// dropped and cut to [`MAX_NAME`] characters, since it is recorded in the
/// ledger, the events and every refusal line.
/// A container of a Kubernetes pod under containerd is named
/// `namespace/pod/container`, as `kubectl` would point at it.
fn container_name(state: &HookState, cfg: &ContainerConfig) -> Option<String> {
    let get = |k: &str| state.annotations.get(k).map(String::as_str).or_else(|| cfg.annotation(k)).filter(|v| !v.is_empty());
    let cri = || {
        get(CRI_NAMES[2])?;
        Some(CRI_NAMES.iter().filter_map(|k| get(k)).collect::<Vec<_>>().join("/"))
    };
    NAME_ANNOTATIONS
        .iter()
        .find_map(|k| get(k).map(str::to_owned))
        .or_else(cri)
        .map(|n| n.chars().filter(|c| !c.is_control()).take(MAX_NAME).collect::<String>())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_and_the_broker_build_the_same_request() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"process": {"env": ["A=1"]}, "annotations": {"gpuwarden.io/name": "comfy\u{7}-1"}});
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": "3f2a1c4d5e6f7a8b", "status": "creating", "pid": 42, "bundle": dir.path()});
        let read = Request::read(state.to_string().as_bytes()).unwrap();
        let sent = Request::sent(state, config, None).unwrap();
        assert_eq!((read.label.as_str(), read.pid().unwrap()), ("3f2a1c4d5e6f comfy-1", 42));
        assert_eq!((read.state, read.config, read.label), (sent.state, sent.config, sent.label));
    }

    #[test]
    fn what_cannot_be_read_is_said_as_before() {
        let e = Request::read(br#"{"id":"x","pid":1,"bundle":"/nonexistent/b"}"#).unwrap_err().to_string();
        assert!(e.starts_with("cannot read /nonexistent/b/config.json"), "{e}");
        let e = Request::sent(serde_json::json!({"id": "c0ffee0000000000", "bundle": "/b"}), serde_json::json!([1]), None).unwrap_err().to_string();
        assert_eq!(e, "refused c0ffee000000: the config the hook sent is not an OCI config: not a JSON object");
        let no_pid = Request::sent(serde_json::json!({"id": "c0ffee0000000000", "bundle": "/b"}), serde_json::json!({}), None).unwrap();
        assert_eq!(no_pid.pid().unwrap_err().to_string(), "refused c0ffee000000: the OCI state has no pid; run this hook at createRuntime or prestart");
        let long = format!("{}", "n".repeat(200));
        let named = Request::sent(serde_json::json!({"id": "c1", "bundle": "/b", "annotations": {"gpuwarden.io/name": long}}), serde_json::json!({}), None).unwrap();
        assert_eq!(named.name.unwrap().len(), MAX_NAME);
    }

    #[test]
    fn a_pods_container_under_containerd_is_named_by_namespace_pod_and_container() {
        let cri = serde_json::json!({"annotations": {
            "io.kubernetes.cri.sandbox-namespace": "lab", "io.kubernetes.cri.sandbox-name": "comfy-0",
            "io.kubernetes.cri.container-name": "worker", "io.kubernetes.cri.container-type": "container"}});
        let r = Request::sent(serde_json::json!({"id": "c0ffee0000000000", "bundle": "/b"}), cri.clone(), None).unwrap();
        assert_eq!(r.name.as_deref(), Some("lab/comfy-0/worker"));
        assert_eq!(r.label, "c0ffee000000 lab/comfy-0/worker");
        let mut own = cri;
        own["annotations"]["gpuwarden.io/name"] = "mine".into();
        assert_eq!(Request::sent(serde_json::json!({"id": "c1", "bundle": "/b"}), own, None).unwrap().name.as_deref(), Some("mine"), "the user's own name first");
        let sandbox = serde_json::json!({"annotations": {"io.kubernetes.cri.sandbox-name": "comfy-0"}});
        assert_eq!(Request::sent(serde_json::json!({"id": "c2", "bundle": "/b"}), sandbox, None).unwrap().name, None, "a pod's sandbox is no container of it");
    }
}
