//! The two ways gpuwarden changes files: replace one atomically, and hold an
//! exclusive lock across a read-modify-write. Nothing else writes state.

mod atomic;
mod lock;

pub use atomic::{write_atomic, AtomicWriteError};
pub use lock::{ExclusiveLock, LockError};

/// `path` made absolute against the current folder (for paths written into
/// specs and hooks, which run elsewhere).
pub fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
