//! The ledger: who holds what share of which GPU, and who waits for one.
//! One JSON document under the state folder (`book`: its contents and the
//! pure operations on them), changed only under an exclusive lock and
//! replaced atomically (`store`).

mod book;
pub mod queue;
mod store;

pub use book::{Ledger, LEDGER_VERSION};
pub use store::{reset_command, LedgerError, LedgerStore, LockedLedger, ResetOutcome};

#[cfg(test)]
pub(crate) use book::tests;
