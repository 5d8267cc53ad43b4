//! The OCI state a runtime writes on a hook's stdin, read with `oci-spec`.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookState {
    pub id: String,
    /// `creating` (runc), `created` (crun) at createRuntime; `stopped` at poststop.
    pub status: String,
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
    #[error("the OCI state's container id {0:?} is not an id: at most {MAX_ID} letters, digits, '_', '+', '-' and '.'")]
    BadId(String),
}

/// The longest container id taken (runtimes' and engines' ids are 64 hex digits).
pub const MAX_ID: usize = 128;

/// Whether `id` is an id as runc takes them (`^[\w+.-]+$`), and not too long
/// to record and echo.
fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
}

impl HookState {
    pub fn parse(bytes: &[u8]) -> Result<HookState, StateError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(StateError::Empty);
        }
        HookState::checked(serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?)
    }

    /// The OCI state as JSON already read (what a hook sent the broker).
    pub fn from_value(v: serde_json::Value) -> Result<HookState, StateError> {
        HookState::checked(serde_json::from_value(v).map_err(|e| StateError::Malformed(e.to_string()))?)
    }

    fn checked(state: oci_spec::runtime::State) -> Result<HookState, StateError> {
        if state.id().is_empty() {
            return Err(StateError::Missing("container id"));
        }
        if !is_id(state.id()) {
            return Err(StateError::BadId(crate::base::text::truncate(state.id(), 40).to_string()));
        }
        let status = serde_json::to_value(state.status()).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        Ok(HookState {
            id: state.id().clone(),
            status,
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

pub use crate::base::names::short_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_runc_writes() {
        let s = HookState::parse(br#"{"ociVersion":"1.0.2","id":"3f2a1c4d5e6f7a8b","status":"created","pid":4242,"bundle":"/run/b","annotations":{"a":"b"}}"#).unwrap();
        assert_eq!((short_id(&s.id), s.pid, s.bundle.to_str().unwrap()), ("3f2a1c4d5e6f", Some(4242), "/run/b"));
        assert_eq!(s.annotations["a"], "b");
        assert_eq!(s.status, "created");
    }

    #[test]
    fn an_id_is_short_and_made_of_what_runc_allows() {
        let with = |id: &str| HookState::parse(format!(r#"{{"id":{id:?},"bundle":"/b"}}"#).as_bytes());
        assert!(with(&"a".repeat(64)).is_ok() && with("c-11.x_y+z").is_ok());
        let e = with(&"a".repeat(1_000_000)).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("at most 128"), "{e}");
        assert!(matches!(with("../../etc").unwrap_err(), StateError::BadId(_)));
        assert!(matches!(with("x\ny").unwrap_err(), StateError::BadId(_)));
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
