//! The ledger: who holds what share of which GPU. One JSON document under the
//! state folder, changed only under an exclusive lock and replaced atomically
//! ([`store`]); the operations on it ([`Ledger`]) are pure.

mod store;

use serde::{Deserialize, Serialize};

use crate::proc::Processes;
use crate::size::ByteSize;

pub use store::{reset_command, LedgerError, LedgerStore, LockedLedger, ResetOutcome};

pub const LEDGER_VERSION: u32 = 1;

/// One admitted container's share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub profile: String,
    /// UUIDs of the GPUs it holds a share of.
    pub gpus: Vec<String>,
    pub threads: u32,
    #[serde(with = "crate::size::as_bytes")]
    pub pinned_bytes: ByteSize,
    pub pid: i32,
    /// The pid's start time (clock ticks since boot), to tell reuse of the pid.
    pub pid_start: u64,
    /// Seconds since the Unix epoch.
    pub admitted_at: u64,
    /// Who holds it, when it came through the admission broker (a rootless
    /// container): only that uid (or root) may release it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
}

/// The user a reservation belongs to, as the kernel told the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Holder {
    /// `ana (uid 1000)`, or `uid 1000`.
    pub fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("{u} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

impl Reservation {
    /// `3f2a1c4d5e6f` or `3f2a1c4d5e6f comfy-1`.
    pub fn label(&self) -> String {
        label(&self.id, self.name.as_deref())
    }
}

/// How refusals, logs and `status` name a container: its id as `podman ps`
/// shows it, and its name when it has one.
pub fn label(id: &str, name: Option<&str>) -> String {
    let id = crate::oci::short_id(id);
    match name {
        Some(n) => format!("{id} {n}"),
        None => id.to_string(),
    }
}

/// A container that waits for its share (the render queue). Its admission
/// hook (or, for a rootless container, the broker's caller) holds its place
/// and takes it off when admitted, refused or gone; an entry whose container
/// or holder is gone is reclaimed like a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    /// The reservation it asks for, as it will be admitted (its container's
    /// process, its share, its holder).
    pub asks: Reservation,
    /// The process that waits for it (the hook, or the broker's caller), and its start time.
    pub waiter: i32,
    pub waiter_start: u64,
    /// Seconds since the epoch: when it joined, and when it stops waiting.
    pub queued_at: u64,
    pub until: u64,
    /// What it waits for, as of its last look.
    pub waits_for: String,
    /// Set by `gpuwarden queue cancel`: the waiter refuses at its next look.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// A place in the queue reads as the reservation it asks for.
impl std::ops::Deref for Waiting {
    type Target = Reservation;
    fn deref(&self) -> &Reservation {
        &self.asks
    }
}

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
    /// Whether process `pid` runs in a container that holds a reservation.
    pub fn holds_process(&self, processes: &dyn Processes, pid: i32) -> bool {
        self.reservations.iter().any(|r| crate::proc::in_container(processes, pid, &r.id))
    }

    /// The reservations holding a share of GPU `uuid`.
    pub fn on_gpu(&self, uuid: &str) -> Vec<&Reservation> {
        self.reservations.iter().filter(|r| r.gpus.iter().any(|g| g == uuid)).collect()
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
