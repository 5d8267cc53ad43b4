//! The admission broker: admission and release for callers that cannot take
//! the ledger's lock themselves, rootless Podman's hooks above all. They run
//! in the user's namespaces, where `/run/gpuwarden` is root's; the broker, a
//! root service on a unix socket, runs the same admission against the one
//! ledger rootful Podman and Docker use.
//!
//! What the broker guards is the budget and everyone else's reservations,
//! so it trusts nothing but the kernel: the caller is who `SO_PEERCRED`
//! says, the container's process must live in a user namespace that caller
//! owns (`NS_GET_OWNER_UID`), a reservation is released only by the uid
//! that holds it, and the broker opens no path a caller names (the hook
//! sends its bundle's config, not its path). Requests are bounded in size
//! and time, one connection per thread, so one slow client stalls nobody.

mod client;
mod handle;
mod serve;

pub use client::{ask, in_user_namespace, BrokerDown, ANSWER_TIMEOUT};
pub use handle::handle;
pub use serve::{serve, Listener, ServeEnv};

use serde::{Deserialize, Serialize};

/// Where the broker listens unless `[broker] socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/gpuwarden/broker.sock";

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
}

impl Answer {
    pub fn ok() -> Answer {
        Answer { ok: true, line: String::new() }
    }

    pub fn refused(line: impl Into<String>) -> Answer {
        Answer { ok: false, line: line.into() }
    }
}

/// Who is asking, as the kernel tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: i32,
    pub user: Option<String>,
    /// The groups the user is in, by name (for `[profiles.NAME] allow`).
    pub groups: Vec<String>,
}

/// Whether `caller` may act for the container whose process runs in a user
/// namespace owned by `owner` (`None`: that process is gone or unreadable).
/// Root may act for any; anyone else only for a namespace of their own,
/// never for one of root's (the initial namespace is root's).
pub fn may_act_for(caller: &Caller, pid: i32, owner: Option<u32>) -> Result<(), String> {
    if caller.uid == 0 {
        return Ok(());
    }
    match owner {
        Some(uid) if uid == caller.uid => Ok(()),
        Some(uid) => Err(format!("process {pid} is not in a user namespace of uid {}'s (its owner is uid {uid}): a hook speaks only for its own containers", caller.uid)),
        None => Err(format!("process {pid} is gone, or its user namespace cannot be read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Caller {
        Caller { uid, pid: 1234, user: Some("ana".into()), groups: vec![] }
    }

    #[test]
    fn a_caller_speaks_only_for_namespaces_it_owns() {
        assert!(may_act_for(&user(1000), 42, Some(1000)).is_ok());
        let e = may_act_for(&user(1000), 42, Some(0)).unwrap_err();
        assert!(e.contains("process 42 is not in a user namespace of uid 1000's (its owner is uid 0)"), "{e}");
        assert!(may_act_for(&user(1000), 42, Some(1001)).is_err());
        assert!(may_act_for(&user(1000), 42, None).unwrap_err().contains("gone"));
        assert!(may_act_for(&user(0), 42, Some(1001)).is_ok(), "root may act for any");
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
