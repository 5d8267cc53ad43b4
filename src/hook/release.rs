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
}

/// Removes the reservation of the container in `input`'s state, if any.
pub fn release(input: &[u8], store: &LedgerStore) -> Result<Option<Reservation>, ReleaseError> {
    let state = HookState::parse(input)?;
    let mut locked = store.lock()?;
    let removed = locked.ledger.remove(&state.id);
    if let Some(r) = &removed {
        locked.save()?;
        tracing::info!("released {} ({}): {}%, {}", r.label(), r.profile, r.threads, r.pinned_bytes);
    }
    Ok(removed)
}
