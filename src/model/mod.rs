//! The shared vocabulary, below everything that judges or records: a share
//! of a GPU, who asks and who holds, and a reservation or a place in the
//! queue. Pure data; the ledger records them, admission judges them.

mod identity;
mod reservation;
mod share;

pub use identity::Who;
pub use reservation::{describe_owner, held_by, label, owner_of, Reservation, Waiting};
pub use share::Share;
