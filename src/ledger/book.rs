//! The ledger's book: the reservations and the queue, and the pure
//! operations on them (who holds a process, what a GPU holds, whose an id
//! is, what is stale). The store reads and writes it.

use serde::{Deserialize, Serialize};

use crate::model::{describe_owner, owner_of, Reservation, Waiting};
use crate::base::proc::Processes;

pub const LEDGER_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub version: u32,
    pub reservations: Vec<Reservation>,
    /// The render queue, in the order containers joined it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<Waiting>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger { version: LEDGER_VERSION, reservations: Vec::new(), queue: Vec::new() }
    }
}

impl Ledger {
    /// Whether process `pid` runs in a container that holds a reservation
    /// (see [`crate::base::proc::Lineage::in_container`]).
    pub fn holds_process(&self, processes: &dyn Processes, pid: i32) -> bool {
        self.holder_of(processes, pid).is_some()
    }

    /// The reservation of the container process `pid` runs in, if any.
    pub fn holder_of(&self, processes: &dyn Processes, pid: i32) -> Option<&Reservation> {
        let lineage = crate::base::proc::Lineage::of(processes, pid);
        let host = processes.pid_namespace(1);
        self.reservations.iter().find(|r| lineage.in_container(processes, &r.process(), host))
    }

    /// The reservations holding a share of GPU `uuid`.
    pub fn on_gpu(&self, uuid: &str) -> Vec<&Reservation> {
        self.reservations.iter().filter(|r| r.gpus.iter().any(|g| g == uuid)).collect()
    }

    /// Why a container with `id` and first process `pid` (started at
    /// `pid_start`) may not take a share for `owner` (see [`owner_of`]):
    /// an id is its holder's, in a reservation or a place in the queue, and
    /// a process is the first process of one container only. `None` when
    /// nothing stands in the way; an entry of the same owner and id is that
    /// container's own, admitted again or waiting.
    pub fn conflict(&self, id: &str, pid: i32, pid_start: u64, owner: Option<u32>) -> Option<String> {
        let entries = self.reservations.iter().map(|r| (r, "holds a share")).chain(self.queue.iter().map(|w| (&w.asks, "waits in the queue")));
        for (r, what) in entries {
            let theirs = owner_of(r.holder.as_ref());
            if r.id == id && theirs != owner {
                return Some(format!("container id {} {what} for {}: an id is its holder's", crate::oci::short_id(id), describe_owner(r.holder.as_ref())));
            }
            if r.id != id && r.pid == pid && r.pid_start == pid_start {
                return Some(format!("process {pid} is the first process of {} already, which {what}", r.label()));
            }
        }
        None
    }

    /// Adds `r`, replacing an earlier reservation of the same container.
    pub fn insert(&mut self, r: Reservation) {
        self.reservations.retain(|old| old.id != r.id);
        self.reservations.push(r);
    }

    pub fn remove(&mut self, id: &str) -> Option<Reservation> {
        let at = self.reservations.iter().position(|r| r.id == id)?;
        Some(self.reservations.remove(at))
    }

    /// The ledger as user `uid` may see it: their own containers in full;
    /// others' by user and profile (the id shown as `-`, no name, not what
    /// their place in the queue waits for, which names other containers).
    pub fn seen_by(&self, uid: u32) -> Ledger {
        let hide = |r: &Reservation| owner_of(r.holder.as_ref()) != Some(uid);
        let redact = |r: &Reservation| Reservation { id: "-".into(), name: None, ..r.clone() };
        Ledger {
            version: self.version,
            reservations: self.reservations.iter().map(|r| if hide(r) { redact(r) } else { r.clone() }).collect(),
            queue: self
                .queue
                .iter()
                .map(|w| if hide(&w.asks) { Waiting { asks: redact(&w.asks), waits_for: String::new(), ..w.clone() } } else { w.clone() })
                .collect(),
        }
    }

    /// Drops reservations whose process is gone or now another process, and
    /// returns them.
    pub fn reclaim(&mut self, processes: &dyn Processes) -> Vec<Reservation> {
        let (live, stale): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reservations).into_iter().partition(|r| processes.start_time(r.pid) == Some(r.pid_start));
        self.reservations = live;
        stale
    }

    /// Drops queue entries whose container or waiter is gone, and returns them.
    pub fn reclaim_queue(&mut self, processes: &dyn Processes) -> Vec<Waiting> {
        let (live, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|w| processes.start_time(w.pid) == Some(w.pid_start) && processes.start_time(w.waiter) == Some(w.waiter_start));
        self.queue = live;
        stale
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::base::size::ByteSize;
    use std::collections::HashMap;

    /// Live pids with their start times; each one's cgroup names the container `c-PID-0000000000`.
    pub(crate) struct FakeProcesses(pub HashMap<i32, u64>);
    impl Processes for FakeProcesses {
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.0.get(&pid).copied()
        }
        fn cgroup(&self, pid: i32) -> Option<String> {
            self.0.contains_key(&pid).then(|| format!("0::/machine.slice/libpod-c-{pid}-0000000000.scope\n"))
        }
    }

    fn res(id: &str, pid: i32, start: u64) -> Reservation {
        Reservation { id: id.into(), name: None, profile: "comfyui".into(), gpus: vec!["GPU-a".into()], threads: 25, pinned_bytes: ByteSize::gib(3), pid, pid_start: start, admitted_at: 0, holder: None }
    }

    #[test]
    fn stale_entries_are_those_whose_pid_is_gone_or_reused() {
        let mut l = Ledger::default();
        l.insert(res("alive", 10, 100));
        l.insert(res("gone", 11, 100));
        l.insert(res("reused", 12, 100));
        let procs = FakeProcesses(HashMap::from([(10, 100), (12, 555)]));
        let stale: Vec<String> = l.reclaim(&procs).into_iter().map(|r| r.id).collect();
        assert_eq!(stale, ["gone", "reused"]);
        assert_eq!(l.reservations.len(), 1);
    }

    #[test]
    fn an_id_and_a_first_process_belong_to_one_holder() {
        let mut l = Ledger::default();
        let mut ana = res("c0ffee000000aa", 10, 7);
        ana.holder = Some(crate::model::Who::new(1000, Some("ana".into())));
        l.insert(ana.clone());
        l.insert(res("root00000000bb", 20, 7));
        assert_eq!(l.conflict("c0ffee000000aa", 10, 7, Some(1000)), None, "ana's own, admitted again");
        assert_eq!(l.conflict("c0ffee000000aa", 99, 7, Some(1001)).unwrap(), "container id c0ffee000000 holds a share for ana (uid 1000): an id is its holder's");
        assert!(l.conflict("c0ffee000000aa", 10, 7, None).unwrap().contains("for ana (uid 1000)"), "root's hook neither");
        assert_eq!(l.conflict("root00000000bb", 98, 7, Some(1001)).unwrap(), "container id root00000000 holds a share for root (a rootful container): an id is its holder's");
        assert_eq!(l.conflict("feed00000000cc", 10, 7, Some(1000)).unwrap(), "process 10 is the first process of c0ffee000000 already, which holds a share");
        assert_eq!(l.conflict("feed00000000cc", 10, 8, Some(1000)), None, "another process with that pid");
        l.queue.push(Waiting { asks: Reservation { id: "wait00000000dd".into(), pid: 30, ..ana }, waiter: 31, waiter_start: 7, queued_at: 0, until: 9, waits_for: String::new(), cancelled: false });
        assert!(l.conflict("wait00000000dd", 40, 7, None).unwrap().contains("waits in the queue for ana"));
    }

    #[test]
    fn a_user_sees_their_own_in_full_and_others_by_user_and_profile() {
        let mut l = Ledger::default();
        let mut ana = res("c0ffee000000aa", 10, 7);
        ana.holder = Some(crate::model::Who::new(1000, Some("ana".into())));
        ana.name = Some("comfy-1".into());
        l.insert(ana.clone());
        l.insert(Reservation { name: Some("render".into()), ..res("root00000000bb", 20, 7) });
        l.queue.push(Waiting { asks: res("wait00000000dd", 30, 7), waiter: 31, waiter_start: 7, queued_at: 0, until: 9, waits_for: "held by c0ffee000000".into(), cancelled: false });
        let seen = l.seen_by(1000);
        assert_eq!(seen.reservations[0], ana);
        assert_eq!((seen.reservations[1].id.as_str(), seen.reservations[1].name.as_deref(), seen.reservations[1].profile.as_str()), ("-", None, "comfyui"));
        assert_eq!((seen.queue[0].id.as_str(), seen.queue[0].waits_for.as_str()), ("-", ""));
        assert!(!serde_json::to_string(&l.seen_by(1001)).unwrap().contains("c0ffee"), "another user sees no id of ana's");
    }

    #[test]
    fn a_container_admitted_again_replaces_its_entry() {
        let mut l = Ledger::default();
        l.insert(res("a", 1, 1));
        l.insert(res("a", 2, 2));
        assert_eq!(l.reservations.len(), 1);
        assert_eq!(l.reservations[0].pid, 2);
        assert_eq!(l.remove("a").map(|r| r.pid), Some(2));
        assert_eq!(l.remove("a"), None);
    }
}
