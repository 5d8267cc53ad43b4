//! What a hook and the broker say to each other: one JSON request, one
//! JSON answer, each bounded.

use serde::{Deserialize, Serialize};

/// The unit that starts it on first use (systemd socket activation).
pub const SOCKET_UNIT: &str = "gpuwarden-broker.socket";

/// The largest request read: a config.json of Podman's is ~20 KB.
pub const MAX_REQUEST: u64 = 1 << 20;

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a hook asks, one JSON document on the connection, ended by shutting
/// down its write half.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// createRuntime: the OCI state and the bundle's config.json, as read by the hook.
    Admit { state: serde_json::Value, config: serde_json::Value },
    /// poststop: the OCI state.
    Release { state: serde_json::Value },
    /// `gpuwarden queue cancel` by a user: end the wait of their own container.
    Cancel { container: String },
    /// `gpuwarden status` by a user, who cannot read the ledger: the ledger as they may see it.
    Status {},
}

impl Request {
    /// An admission request from the OCI state and config.json as read.
    pub fn admit(state: &[u8], config: &[u8]) -> Result<Request, String> {
        let json = |b: &[u8], what: &str| serde_json::from_slice(b).map_err(|e| format!("{what} is not JSON: {e}"));
        Ok(Request::Admit { state: json(state, "the OCI state")?, config: json(config, "config.json")? })
    }

    /// A release request from the OCI state as read.
    pub fn release(state: &[u8]) -> Result<Request, String> {
        Ok(Request::Release { state: serde_json::from_slice(state).map_err(|e| format!("the OCI state is not JSON: {e}"))? })
    }
}

/// The broker's answer: admitted (or released), or the one line the hook prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub line: String,
    /// For a status request: the ledger as the caller may see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::ledger::Ledger>,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer { ok: true, line: String::new(), ledger: None }
    }

    /// A refusal, its line cut to [`MAX_ANSWER`] bytes.
    pub fn refused(line: impl Into<String>) -> Answer {
        let line = line.into();
        Answer { ok: false, line: crate::base::text::truncate(&line, MAX_ANSWER).to_string(), ledger: None }
    }
}

/// The longest line an answer carries back (a refusal names its numbers and
/// the holders of its GPU; names are cut to 64 characters).
pub const MAX_ANSWER: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_short() {
        assert_eq!(Answer::refused("x".repeat(1 << 20)).line.len(), MAX_ANSWER);
    }

    #[test]
    fn requests_and_answers_are_tagged_json() {
        let r: Request = serde_json::from_str(r#"{"stage":"release","state":{"id":"x"}}"#).unwrap();
        assert_eq!(r, Request::Release { state: serde_json::json!({"id": "x"}) });
        assert!(serde_json::from_str::<Request>(r#"{"stage":"admit","state":{}}"#).is_err(), "admit carries the config");
        assert!(serde_json::from_str::<Request>(r#"{"stage":"release","state":{},"path":"/etc/shadow"}"#).is_err(), "nothing else");
        assert_eq!(serde_json::to_string(&Answer::ok()).unwrap(), r#"{"ok":true}"#);
    }
}
