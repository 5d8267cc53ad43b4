//! `gpuwarden hook release`: the poststop stage. Gives the container's share
//! back; a container the ledger does not know is not an error.

use crate::ledger::{LedgerError, LedgerStore, Reservation};
use crate::oci::{HookState, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("refused to release {label}: it is held by {holder}, not by uid {uid}")]
    NotYours { label: String, holder: String, uid: u32 },
}

/// Removes the reservation of the container in `input`'s state, if any.
pub fn release(input: &[u8], store: &LedgerStore) -> Result<Option<Reservation>, ReleaseError> {
    release_state(&HookState::parse(input)?, store, None)
}

/// Removes the reservation of `state`'s container, if any. A `caller` other
/// than root (the broker's) may release only a reservation it holds.
pub fn release_state(state: &HookState, store: &LedgerStore, caller: Option<u32>) -> Result<Option<Reservation>, ReleaseError> {
    let mut locked = store.lock()?;
    if let (Some(uid), Some(r)) = (caller.filter(|u| *u != 0), locked.ledger.reservations.iter().find(|r| r.id == state.id)) {
        if r.holder.as_ref().map(|h| h.uid) != Some(uid) {
            let holder = r.holder.as_ref().map_or_else(|| "root (a rootful container)".to_string(), |h| h.describe());
            return Err(ReleaseError::NotYours { label: r.label(), holder, uid });
        }
    }
    let removed = locked.ledger.remove(&state.id);
    if let Some(r) = &removed {
        locked.save()?;
        tracing::info!("released {} ({}): {}%, {}", r.label(), r.profile, r.threads, r.pinned_bytes);
    }
    Ok(removed)
}
