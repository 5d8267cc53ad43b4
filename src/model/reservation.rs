//! A share held or waited for: one admitted container's reservation, and a
//! place in the render queue, as the ledger records them.

use serde::{Deserialize, Serialize};

use super::Who;
use crate::base::size::ByteSize;

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
    #[serde(with = "crate::base::size::as_bytes")]
    pub pinned_bytes: ByteSize,
    pub pid: i32,
    /// The pid's start time (clock ticks since boot), to tell reuse of the pid.
    pub pid_start: u64,
    /// Seconds since the Unix epoch.
    pub admitted_at: u64,
    /// Who holds it, when it came through the admission broker (a rootless
    /// container): only that uid (or root) may release it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Who>,
}

/// Who an entry belongs to: a user (`Some(uid)`), or root (`None`: a
/// rootful container, root's hook, root through the broker).
pub fn owner_of(holder: Option<&Who>) -> Option<u32> {
    holder.map(|h| h.uid)
}

/// Whether `uid` holds an entry held by `holder`: root holds root's
/// entries (the rootful containers'), a user their own. The one owner check
/// of releasing and cancelling.
pub fn held_by(holder: Option<&Who>, uid: u32) -> bool {
    owner_of(holder) == (uid != 0).then_some(uid)
}

/// How messages name an owner.
pub fn describe_owner(holder: Option<&Who>) -> String {
    holder.map_or_else(|| "root (a rootful container)".to_string(), Who::named)
}

impl Reservation {
    /// Its container as its processes are known.
    pub fn process(&self) -> crate::base::proc::ContainerProcess<'_> {
        crate::base::proc::ContainerProcess { id: &self.id, init: self.pid, init_start: self.pid_start }
    }

    /// `3f2a1c4d5e6f` or `3f2a1c4d5e6f comfy-1`.
    pub fn label(&self) -> String {
        label(&self.id, self.name.as_deref())
    }
}

/// How refusals, logs and `status` name a container: its id as `podman ps`
/// shows it, and its name when it has one.
pub fn label(id: &str, name: Option<&str>) -> String {
    let id = crate::base::names::short_id(id);
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
