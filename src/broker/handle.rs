//! What the broker does with one request: the same admission and release
//! the hooks run, for a caller the kernel named, on containers it owns.

use super::{may_act_for, Answer, Caller, Request};
use crate::hook::{admit_config, release_state, HookEnv};
use crate::access::Who;
use crate::ledger::LedgerStore;
use crate::oci::{short_id, ContainerConfig, HookState};

/// Answers `request` from `caller`. `owner_of` tells the uid owning a
/// process's user namespace (see [`crate::proc::user_namespace_owner`]).
pub fn handle(caller: &Caller, request: Request, env: &HookEnv, owner_of: &dyn Fn(i32) -> Option<u32>) -> Answer {
    let user = Who { uid: caller.uid, user: caller.user.clone(), groups: caller.groups.clone() };
    let who = user.describe();
    let refuse = |line: String| {
        tracing::warn!("refused {who} (pid {}): {line}", caller.pid);
        Answer::refused(line)
    };
    let parse_state = |v: &serde_json::Value| HookState::parse(&serde_json::to_vec(v).expect("JSON serializes")).map_err(|e| e.to_string());
    match request {
        Request::Admit { state, config } => {
            let state = match parse_state(&state) {
                Ok(s) => s,
                Err(e) => return refuse(e),
            };
            let id = short_id(&state.id).to_string();
            let Some(pid) = state.pid else { return refuse(format!("refused {id}: the OCI state has no pid; run this hook at createRuntime or prestart")) };
            if let Err(why) = may_act_for(caller, pid, owner_of(pid)) {
                return refuse(format!("refused {id}: {why}"));
            }
            let cfg = match ContainerConfig::parse(&serde_json::to_vec(&config).expect("JSON serializes"), "the config the hook sent") {
                Ok(c) => c,
                Err(e) => return refuse(format!("refused {id}: {e}")),
            };
            // Root's containers are the administrator's: no user rules, nothing recorded.
            match admit_config(&state, &cfg, env, (caller.uid != 0).then_some(&user)) {
                Ok(admission) => {
                    tracing::info!("{who}: {admission:?}");
                    Answer::ok()
                }
                Err(e) => {
                    crate::hook::record_refusal(&e, env);
                    Answer::refused(crate::text::one_line(&e))
                }
            }
        }
        Request::Cancel { container } => {
            let store = match ledger(env) {
                Ok(store) => store,
                Err(e) => return refuse(e),
            };
            match crate::queue::cancel_in(&store, &container, Some(caller.uid)) {
                Ok(line) => Answer { ok: true, line },
                Err(e) => refuse(e),
            }
        }
        Request::Release { state } => {
            let state = match parse_state(&state) {
                Ok(s) => s,
                Err(e) => return refuse(e),
            };
            let store = match ledger(env) {
                Ok(store) => store,
                Err(e) => return refuse(e),
            };
            match release_state(&state, &store, Some(caller.uid)) {
                Ok(_) => Answer::ok(),
                Err(e) => refuse(crate::text::one_line(&e)),
            }
        }
    }
}

/// The ledger the broker serves: its own state folder, else its configuration's.
fn ledger(env: &HookEnv) -> Result<LedgerStore, String> {
    let dir = env.state_dir.map(std::path::Path::to_path_buf).map_or_else(|| (env.settings)().map(|c| c.state_dir), Ok).map_err(|e| crate::text::one_line(&e))?;
    Ok(LedgerStore::new(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ledger::tests::FakeProcesses;
    use std::collections::HashMap;

    fn env_in(dir: &std::path::Path) -> (Config, FakeProcesses) {
        let config = Config::parse(&format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\nenabled = false\n[budget]\nreserves = {{}}\n", dir.display()), std::path::Path::new("c")).unwrap();
        (config, FakeProcesses(HashMap::from([(4242, 7)])))
    }

    fn admit_request(id: &str) -> Request {
        let mut cfg: serde_json::Value = serde_json::from_slice(&crate::oci::tests_support::podman_like().to_json()).unwrap();
        let mut c = ContainerConfig::parse(&serde_json::to_vec(&cfg).unwrap(), "t").unwrap();
        crate::rewrite::apply_profile(&mut c, &Config::default()).unwrap();
        cfg = serde_json::from_slice(&c.to_json()).unwrap();
        Request::Admit { state: serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": 4242, "bundle": "/nonexistent"}), config: cfg }
    }

    #[test]
    fn admission_records_the_caller_and_only_they_release() {
        let dir = tempfile::tempdir().unwrap();
        let (config, procs) = env_in(dir.path());
        let settings = || Ok(config.clone());
        let inventory = |c: &Config| crate::hook::load_inventory(None, c);
        let daemon = |_: &crate::config::MpsConfig| Err(crate::mps::ProbeError::NotListening { path: "/x".into(), errno: nix::Error::ENOENT });
        let waiter = crate::queue::FakeWaiter::at(5);
        let env = HookEnv { settings: &settings, state_dir: None, processes: &procs, inventory: &inventory, daemon: &daemon, now: 5, waiter: &waiter };
        let ana = Caller { uid: 1000, pid: 99, user: Some("ana".into()), groups: vec![] };
        let owned_by = |uid: u32| move |_: i32| Some(uid);

        let a = handle(&ana, admit_request("c0ffee0000000000"), &env, &owned_by(1000));
        assert_eq!(a, Answer::ok(), "{a:?}");
        let ledger = LedgerStore::new(dir.path()).read().unwrap();
        assert_eq!(ledger.reservations[0].holder, Some(crate::ledger::Holder { uid: 1000, user: Some("ana".into()) }));

        // A pid in someone else's namespace is refused, and nothing is held for it.
        let a = handle(&ana, admit_request("bad0000000000000"), &env, &owned_by(0));
        assert!(!a.ok && a.line.starts_with("refused bad000000000: process 4242 is not in a user namespace of uid 1000's"), "{a:?}");
        assert_eq!(LedgerStore::new(dir.path()).read().unwrap().reservations.len(), 1);

        // Only ana (or root) releases ana's.
        let release = Request::Release { state: serde_json::json!({"ociVersion": "1.0.2", "id": "c0ffee0000000000", "status": "stopped", "bundle": ""}) };
        let bob = Caller { uid: 1001, pid: 98, user: Some("bob".into()), groups: vec![] };
        let a = handle(&bob, release.clone(), &env, &owned_by(1001));
        assert_eq!(a.line, "refused to release c0ffee000000: it is held by ana (uid 1000), not by uid 1001");
        assert_eq!(handle(&ana, release, &env, &owned_by(1000)), Answer::ok());
        assert!(LedgerStore::new(dir.path()).read().unwrap().reservations.is_empty());
    }
}
