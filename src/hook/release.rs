//! `gpuwarden hook release`: the poststop stage. Gives the container's share
//! back; a container the ledger does not know is not an error.

use crate::ledger::{LedgerError, LedgerStore};
use crate::model::Reservation;
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

/// Removes the reservation of the container in `input`'s state, if any, for
/// root (the hooks of rootful containers).
pub fn release(input: &[u8], store: &LedgerStore) -> Result<Option<Reservation>, ReleaseError> {
    release_state(&HookState::parse(input)?, store, 0)
}

/// Removes the reservation of `state`'s container, if any, for `uid`: an
/// entry is removed only by its holder (root holds the rootful containers'
/// entries, a user their own).
pub fn release_state(state: &HookState, store: &LedgerStore, uid: u32) -> Result<Option<Reservation>, ReleaseError> {
    let mut locked = store.lock()?;
    let by = (uid != 0).then_some(uid);
    if let Some(r) = locked.ledger.reservations.iter().find(|r| r.id == state.id) {
        if crate::model::owner_of(r.holder.as_ref()) != by {
            return Err(ReleaseError::NotYours { label: r.label(), holder: crate::model::describe_owner(r.holder.as_ref()), uid });
        }
    }
    let removed = locked.ledger.remove(&state.id);
    if let Some(r) = &removed {
        locked.save()?;
        tracing::info!("released {} ({}): {}%, {}", r.label(), r.profile, r.threads, r.pinned_bytes);
    }
    Ok(removed)
}
