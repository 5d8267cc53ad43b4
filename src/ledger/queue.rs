//! The render queue as the ledger keeps it: who waits, in what order they
//! are served (`[watch] priority`, then first come first served within a
//! profile), and joining, updating, leaving and cancelling a place. How long
//! a container may wait, and the loop that looks again, are admission's.

use super::Ledger;
use crate::model::{held_by, Reservation, Waiting, Who};

/// Where `profile` stands in `priority` (lower goes first; unnamed last).
pub fn rank(priority: &[String], profile: &str) -> usize {
    priority.iter().position(|p| p == profile).unwrap_or(priority.len())
}

/// The entries of `queue` that go before a container of `profile` on
/// `gpus` (one of them shared): a better rank, or the same rank and earlier
/// in the queue. `id` is the container's own entry, if it has one; without
/// one, it would join at the end.
pub fn ahead<'a>(queue: &'a [Waiting], id: &str, profile: &str, gpus: &[String], priority: &[String]) -> Vec<&'a Waiting> {
    let mine = rank(priority, profile);
    let me = queue.iter().position(|w| w.id == id).unwrap_or(queue.len());
    queue
        .iter()
        .enumerate()
        .filter(|(i, w)| *i != me && !w.cancelled && w.gpus.iter().any(|g| gpus.contains(g)))
        .filter(|(i, w)| {
            let theirs = rank(priority, &w.profile);
            theirs < mine || (theirs == mine && *i < me)
        })
        .map(|(_, w)| w)
        .collect()
}

/// The queue in the order it is served: by rank, then as they joined.
pub fn ordered<'a>(queue: &'a [Waiting], priority: &[String]) -> Vec<&'a Waiting> {
    let mut v: Vec<&Waiting> = queue.iter().collect();
    v.sort_by_key(|w| rank(priority, &w.profile));
    v
}

/// Why a container could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("{label} waits for {holder}, not for uid {uid}: a user cancels only their own")]
    NotYours { label: String, holder: String, uid: u32 },
    #[error("no container waits in the queue as {key:?}: `gpuwarden status` lists the queue (a 12-character id, the whole id, or a name)")]
    NoMatch { key: String },
    #[error("{count} containers in the queue match {key:?}: give more of the id")]
    Ambiguous { key: String, count: usize },
    #[error("there is no ledger at {}: nothing waits", path.display())]
    NoLedger { path: std::path::PathBuf },
    #[error(transparent)]
    Ledger(#[from] super::LedgerError),
}

/// Marks the waiting container named by `key` (its id, an id prefix of 12
/// characters or more, or its name) cancelled: its hook refuses it at its
/// next look. Podman holds a container's lock while its hooks run, so
/// `podman rm -f` and Ctrl-C wait for the hook; this is how to end a wait.
/// `by` is the uid asking, through the broker: a user cancels only their own
/// (root, and the CLI run as root, any).
pub fn cancel<'a>(queue: &'a mut [Waiting], key: &str, by: Option<u32>) -> Result<&'a Waiting, CancelError> {
    let matches = |w: &Waiting| w.name.as_deref() == Some(key) || (key.len() >= 12 && w.id.starts_with(key));
    let found: Vec<usize> = queue.iter().enumerate().filter(|(_, w)| matches(w)).map(|(i, _)| i).collect();
    match found[..] {
        [i] => {
            if let Some(uid) = by.filter(|uid| *uid != 0) {
                if !held_by(queue[i].holder.as_ref(), uid) {
                    let holder = queue[i].holder.as_ref().map_or_else(|| "root".to_string(), Who::named);
                    return Err(CancelError::NotYours { label: queue[i].label(), holder, uid });
                }
            }
            queue[i].cancelled = true;
            Ok(&queue[i])
        }
        [] => Err(CancelError::NoMatch { key: key.to_string() }),
        _ => Err(CancelError::Ambiguous { key: key.to_string(), count: found.len() }),
    }
}

/// Cancels `key` in the queue of the ledger in `store`, under its lock; the
/// line says who leaves.
pub fn cancel_in(store: &super::LedgerStore, key: &str, by: Option<u32>) -> Result<String, CancelError> {
    if !store.path().exists() {
        return Err(CancelError::NoLedger { path: store.path().to_path_buf() });
    }
    let mut locked = store.lock()?;
    let w = cancel(&mut locked.ledger.queue, key, by)?;
    let line = format!("{} ({}) leaves the queue at its next look: its hook refuses it", w.label(), w.profile);
    locked.save()?;
    Ok(line)
}

impl Ledger {
    /// The place of container `id` in the queue, if it waits.
    pub fn place(&self, id: &str) -> Option<&Waiting> {
        self.queue.iter().find(|w| w.id == id)
    }

    /// Puts `waiting` at the end of the queue.
    pub fn join(&mut self, waiting: Waiting) {
        self.queue.push(waiting);
    }

    /// Records what container `id` waits for; true when that changed.
    pub fn update(&mut self, id: &str, waits_for: &str) -> bool {
        match self.queue.iter_mut().find(|w| w.id == id) {
            Some(w) if w.waits_for != waits_for => {
                w.waits_for = waits_for.to_string();
                true
            }
            _ => false,
        }
    }

    /// Takes container `id` off the queue.
    pub fn leave(&mut self, id: &str) {
        self.queue.retain(|w| w.id != id);
    }

    /// How many places in the queue `uid` holds.
    pub fn waiting_for(&self, uid: u32) -> usize {
        self.queue.iter().filter(|w| w.holder.as_ref().is_some_and(|h| h.uid == uid)).count()
    }

    /// The reservations `uid` holds.
    pub fn held_by(&self, uid: u32) -> Vec<&Reservation> {
        self.reservations.iter().filter(|r| r.holder.as_ref().is_some_and(|h| h.uid == uid)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::size::ByteSize;

    fn waiting(id: &str, profile: &str, gpu: &str) -> Waiting {
        let asks = crate::model::Reservation { id: id.into(), name: None, profile: profile.into(), gpus: vec![gpu.into()], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 1, admitted_at: 0, holder: None };
        Waiting { asks, waiter: 2, waiter_start: 2, queued_at: 0, until: 100, waits_for: String::new(), cancelled: false }
    }

    fn ids(v: Vec<&Waiting>) -> Vec<&str> {
        v.into_iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn renders_go_before_inference_and_first_come_first_served_within_a_profile() {
        let prio = ["blender".to_string(), "comfyui".to_string()];
        let q = vec![waiting("c1", "comfyui", "G0"), waiting("b1", "blender", "G0"), waiting("c2", "comfyui", "G0"), waiting("x1", "other", "G0"), waiting("b9", "blender", "G1")];
        let g0 = ["G0".to_string()];
        assert!(ids(ahead(&q, "b1", "blender", &g0, &prio)).is_empty(), "the render queued second goes first");
        assert_eq!(ids(ahead(&q, "c1", "comfyui", &g0, &prio)), ["b1"]);
        assert_eq!(ids(ahead(&q, "c2", "comfyui", &g0, &prio)), ["c1", "b1"]);
        assert_eq!(ids(ahead(&q, "x1", "other", &g0, &prio)), ["c1", "b1", "c2"], "unnamed profiles come last");
        assert_eq!(ids(ahead(&q, "new", "comfyui", &g0, &prio)), ["c1", "b1", "c2"], "a newcomer joins at the end of its rank");
        assert_eq!(ids(ahead(&q, "new", "blender", &["G1".to_string()], &prio)), ["b9"], "only a shared GPU counts");
        let mut q = q;
        q[1].cancelled = true;
        assert_eq!(ids(ahead(&q, "c1", "comfyui", &g0, &prio)), Vec::<&str>::new(), "a cancelled entry holds nobody up");
    }

    #[test]
    fn a_waiting_container_is_cancelled_by_id_or_name() {
        let mut q = vec![waiting("c0ffee0011223344", "comfyui", "G0"), waiting("c0ffee0011229999", "comfyui", "G0")];
        q[1].asks.name = Some("comfy-2".into());
        assert!(cancel(&mut q, "c0ffee001122", None).unwrap_err().to_string().starts_with("2 containers in the queue match"));
        // A user cancels their own only; root any.
        q[1].asks.holder = Some(crate::model::Who::new(1000, Some("ana".into())));
        assert_eq!(cancel(&mut q, "comfy-2", Some(1001)).unwrap_err().to_string(), "c0ffee001122 comfy-2 waits for ana (uid 1000), not for uid 1001: a user cancels only their own");
        assert!(cancel(&mut q, "c0ffee00112233", Some(1000)).unwrap_err().to_string().contains("waits for root"));
        assert!(!q[0].cancelled && !q[1].cancelled);
        assert_eq!(cancel(&mut q, "comfy-2", Some(1000)).unwrap().id, "c0ffee0011229999");
        assert!(q[1].cancelled && !q[0].cancelled);
        assert_eq!(cancel(&mut q, "c0ffee00112233", Some(0)).unwrap().id, "c0ffee0011223344");
        assert!(cancel(&mut q, "c0ffee", None).unwrap_err().to_string().starts_with("no container waits in the queue as \"c0ffee\""));
    }
}
