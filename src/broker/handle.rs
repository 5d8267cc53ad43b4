//! What the broker does with one request: the same admission and release
//! the hooks run, for a caller the kernel named, on containers it owns.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{container_being_created, may_act_for, Answer, Caller, Request};
use crate::admission::{admit, record_event, record_refusal, Host, Request as AdmitRequest};
use crate::base::names::short_id;
use crate::hook::release_state;
use crate::ledger::LedgerStore;
use crate::oci::HookState;

/// Answers `request` from `caller`. `owner_of` tells the uid owning a
/// process's user namespace (see [`crate::base::proc::user_namespace_owner`]).
pub fn handle(caller: &Caller, request: Request, host: &dyn Host, owner_of: &dyn Fn(i32) -> Option<u32>) -> Answer {
    let user = &caller.who;
    let who = user.describe();
    let refuse = |line: String| {
        tracing::warn!("refused {who} (pid {}): {line}", caller.pid);
        Answer::refused(line)
    };
    match request {
        Request::Admit { state, config } => {
            // Root's containers are the administrator's: no user rules, nothing recorded.
            let asker = (caller.who.uid != 0).then(|| user.clone());
            let request = match AdmitRequest::sent(state, config, asker) {
                Ok(r) => r,
                Err(e) => return refuse(crate::base::text::one_line(&e)),
            };
            let pid = match request.pid() {
                Ok(pid) => pid,
                Err(e) => return refuse(e.to_string()),
            };
            let id = short_id(&request.state.id);
            if let Err(why) = may_act_for(caller, pid, owner_of(pid)) {
                return refuse(format!("refused {id}: {why}"));
            }
            if caller.who.uid != 0 {
                if let Err(why) = container_being_created(&request.state, pid, host.processes()) {
                    return refuse(format!("refused {id}: {why}"));
                }
            }
            match admit(&request, host) {
                Ok(admission) => {
                    tracing::info!("{who}: {admission:?}");
                    Answer::ok()
                }
                Err(e) => {
                    match refusal_events(caller.who.uid, host.now()) {
                        Record::Yes => record_refusal(&e, host),
                        Record::Suppress(n) => record_event(host, "refusals_suppressed", format!("{who} was refused {n} times within a minute: uid {}'s further refusals in that minute are not recorded", caller.who.uid)),
                        Record::No => {}
                    }
                    Answer::refused(crate::base::text::one_line(&e))
                }
            }
        }
        Request::Cancel { container } => {
            let store = match ledger(host) {
                Ok(store) => store,
                Err(e) => return refuse(e),
            };
            match crate::ledger::queue::cancel_in(&store, &container, Some(caller.who.uid)) {
                Ok(line) => Answer { ok: true, line, ledger: None },
                Err(e) => refuse(e.to_string()),
            }
        }
        Request::Status {} => match ledger(host).and_then(|store| store.read().map_err(|e| crate::base::text::one_line(&e))) {
            Ok(l) => Answer { ok: true, line: String::new(), ledger: Some(if caller.who.uid == 0 { l } else { l.seen_by(caller.who.uid) }) },
            Err(e) => refuse(e),
        },
        Request::Release { state } => {
            let state = match HookState::from_value(state) {
                Ok(s) => s,
                Err(e) => return refuse(e.to_string()),
            };
            let store = match ledger(host) {
                Ok(store) => store,
                Err(e) => return refuse(e),
            };
            match release_state(&state, &store, caller.who.uid) {
                Ok(_) => Answer::ok(),
                Err(e) => refuse(crate::base::text::one_line(&e)),
            }
        }
    }
}

/// Refusal events one user's requests add to the events file in a minute,
/// at most: the file is everyone's, and a user's refused requests are theirs
/// to repeat. Root's are all recorded.
pub const REFUSAL_EVENTS_PER_MINUTE: u32 = 10;

enum Record {
    Yes,
    /// The first refusal past the rate: one event says the rest go unrecorded.
    Suppress(u32),
    No,
}

/// Whether a refusal of `uid`'s at `now` is recorded: at most
/// [`REFUSAL_EVENTS_PER_MINUTE`] in the minute from the first one counted
/// (a window of the uid's own, so a burst across a clock minute is still cut).
fn refusal_events(uid: u32, now: u64) -> Record {
    static SEEN: Mutex<BTreeMap<u32, (u64, u32)>> = Mutex::new(BTreeMap::new());
    if uid == 0 {
        return Record::Yes;
    }
    let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    count_refusal(&mut seen, uid, now)
}

/// Counts one refusal of `uid` at `now` in `seen` (uid -> the window's start, its count).
fn count_refusal(seen: &mut BTreeMap<u32, (u64, u32)>, uid: u32, now: u64) -> Record {
    seen.retain(|_, (start, _)| now < start.saturating_add(60));
    let (_, count) = seen.entry(uid).or_insert((now, 0));
    *count += 1;
    match *count {
        n if n <= REFUSAL_EVENTS_PER_MINUTE => Record::Yes,
        n if n == REFUSAL_EVENTS_PER_MINUTE + 1 => Record::Suppress(n),
        _ => Record::No,
    }
}

/// The ledger the broker serves: its own state folder, else its configuration's.
fn ledger(host: &dyn Host) -> Result<LedgerStore, String> {
    LedgerStore::chosen(host.state_dir(), || host.settings()).map_err(|e| crate::base::text::one_line(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_users_refusal_events_are_cut_after_ten_in_the_minute_from_the_first_even_across_a_clock_minute() {
        let mut seen = BTreeMap::new();
        let kinds: Vec<String> = (0..13).map(|i| match count_refusal(&mut seen, 1000, 59 + i) {
            Record::Yes => "yes".to_string(),
            Record::Suppress(n) => format!("suppress {n}"),
            Record::No => "no".to_string(),
        }).collect();
        assert_eq!(kinds[..10], vec!["yes"; 10][..], "{kinds:?}");
        assert_eq!(kinds[10..], ["suppress 11", "no", "no"], "{kinds:?}");
        // Another user has a window of their own; the first one's ends a minute after it began.
        assert!(matches!(count_refusal(&mut seen, 1001, 70), Record::Yes));
        assert!(matches!(count_refusal(&mut seen, 1000, 118), Record::No));
        assert!(matches!(count_refusal(&mut seen, 1000, 119), Record::Yes));
    }

    /// The container's first process, 4242, as runc makes it.
    fn env_in(dir: &std::path::Path) -> (Config, crate::base::proc::fake::Table) {
        let config = Config::parse(&format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\nenabled = false\n[budget]\nreserves = {{}}\n", dir.display()), std::path::Path::new("c")).unwrap();
        (config, crate::base::proc::fake::Table::default().with(4242, 1, "runc:[2:INIT]", "", 1))
    }

    fn admit_request(id: &str) -> Request {
        let mut cfg: serde_json::Value = serde_json::from_slice(&crate::oci::tests_support::podman_like().to_json()).unwrap();
        let mut c = crate::oci::ContainerConfig::parse(&serde_json::to_vec(&cfg).unwrap(), "t").unwrap();
        crate::profile::rewrite::apply_profile(&mut c, &Config::default()).unwrap();
        cfg = serde_json::from_slice(&c.to_json()).unwrap();
        Request::Admit { state: serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": 4242, "bundle": "/nonexistent"}), config: cfg }
    }

    #[test]
    fn admission_records_the_caller_and_only_they_release() {
        let dir = tempfile::tempdir().unwrap();
        let (config, procs) = env_in(dir.path());
        // No state folder named: the broker's configuration names it; MPS is off there.
        let env = crate::admission::FakeHost { state_dir: None, daemon: None, ..crate::admission::FakeHost::new(config, dir.path(), &procs, 5) };
        let ana = Caller { pid: 99, who: crate::model::Who::new(1000, Some("ana".into())) };
        let owned_by = |uid: u32| move |_: i32| Some(uid);

        let a = handle(&ana, admit_request("c0ffee0000000000"), &env, &owned_by(1000));
        assert_eq!(a, Answer::ok(), "{a:?}");
        let ledger = LedgerStore::new(dir.path()).read().unwrap();
        assert_eq!(ledger.reservations[0].holder, Some(crate::model::Who::new(1000, Some("ana".into()))));

        // A pid in someone else's namespace is refused, and nothing is held for it.
        let a = handle(&ana, admit_request("bad0000000000000"), &env, &owned_by(0));
        assert!(!a.ok && a.line.starts_with("refused bad000000000: process 4242 is not in a user namespace of uid 1000's"), "{a:?}");
        assert_eq!(LedgerStore::new(dir.path()).read().unwrap().reservations.len(), 1);

        // Bob takes over ana's id with a container of his own: refused, and ana's entry stays hers.
        let bob = Caller { pid: 98, who: crate::model::Who::new(1001, Some("bob".into())) };
        let before = LedgerStore::new(dir.path()).read().unwrap();
        let a = handle(&bob, admit_request("c0ffee0000000000"), &env, &owned_by(1001));
        assert_eq!(a.line, "refused c0ffee000000 (comfyui): container id c0ffee000000 holds a share for ana (uid 1000): an id is its holder's");
        assert_eq!(LedgerStore::new(dir.path()).read().unwrap(), before);
        // A plain process passed off as a container's first process.
        procs.procs.borrow_mut().get_mut(&4242).unwrap().comm = "sleep".into();
        let a = handle(&bob, admit_request("feed000000000000"), &env, &owned_by(1001));
        assert!(a.line.starts_with("refused feed00000000: process 4242 (sleep) is no runtime's container init"), "{a:?}");
        assert_eq!(LedgerStore::new(dir.path()).read().unwrap(), before);
        procs.procs.borrow_mut().get_mut(&4242).unwrap().comm = "runc:[2:INIT]".into();

        // Only ana releases ana's.
        let release = Request::Release { state: serde_json::json!({"ociVersion": "1.0.2", "id": "c0ffee0000000000", "status": "stopped", "bundle": ""}) };
        let a = handle(&bob, release.clone(), &env, &owned_by(1001));
        assert_eq!(a.line, "refused to release c0ffee000000: it is held by ana (uid 1000), not by uid 1001");
        assert_eq!(handle(&ana, release, &env, &owned_by(1000)), Answer::ok());
        assert!(LedgerStore::new(dir.path()).read().unwrap().reservations.is_empty());
    }
}
