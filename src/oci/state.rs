//! The OCI state a runtime writes on a hook's stdin, read with `oci-spec`.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookState {
    pub id: String,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("no OCI state on stdin: `gpuwarden hook ...` is run by the container runtime, which writes the container's state there")]
    Empty,
    #[error("the OCI state on stdin is not valid: {0}")]
    Malformed(String),
    #[error("the OCI state on stdin has no {0}")]
    Missing(&'static str),
}

impl HookState {
    pub fn parse(bytes: &[u8]) -> Result<HookState, StateError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(StateError::Empty);
        }
        let state: oci_spec::runtime::State =
            serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
        if state.id().is_empty() {
            return Err(StateError::Missing("container id"));
        }
        Ok(HookState {
            id: state.id().clone(),
            pid: *state.pid(),
            bundle: state.bundle().clone(),
            annotations: state.annotations().clone().unwrap_or_default().into_iter().collect(),
        })
    }

    /// The bundle folder (the poststop stage needs none, admission does).
    pub fn bundle(&self) -> Result<&std::path::Path, StateError> {
        if self.bundle.as_os_str().is_empty() { Err(StateError::Missing("bundle")) } else { Ok(&self.bundle) }
    }

}

pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_runc_writes() {
        let s = HookState::parse(br#"{"ociVersion":"1.0.2","id":"3f2a1c4d5e6f7a8b","status":"created","pid":4242,"bundle":"/run/b","annotations":{"a":"b"}}"#).unwrap();
        assert_eq!((short_id(&s.id), s.pid, s.bundle.to_str().unwrap()), ("3f2a1c4d5e6f", Some(4242), "/run/b"));
        assert_eq!(s.annotations["a"], "b");
    }

    #[test]
    fn bad_stdin_is_named() {
        assert_eq!(HookState::parse(b"").unwrap_err(), StateError::Empty);
        assert_eq!(HookState::parse(b" \n").unwrap_err(), StateError::Empty);
        assert!(matches!(HookState::parse(b"not json").unwrap_err(), StateError::Malformed(_)));
        assert_eq!(HookState::parse(br#"{"id":"x"}"#).unwrap().bundle().unwrap_err(), StateError::Missing("bundle"));
        assert_eq!(HookState::parse(br#"{"bundle":"/b"}"#).unwrap_err(), StateError::Missing("container id"));
    }
}
