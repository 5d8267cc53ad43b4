//! The two ways gpuwarden changes files: replace one atomically, and hold an
//! exclusive lock across a read-modify-write. Nothing else writes state.

mod atomic;
mod lock;

pub use atomic::{write_atomic, AtomicWriteError};
pub use lock::{ExclusiveLock, LockError};
