//! The two ways gpuwarden changes files: replace one atomically, and hold an
//! exclusive lock across a read-modify-write. Nothing else writes state.

pub mod acl;
mod atomic;
mod lock;

pub use atomic::{write_atomic, AtomicWriteError};
pub use lock::{ExclusiveLock, LockError};

/// `path` made absolute against the current folder (for paths written into
/// specs and hooks, which run elsewhere).
pub fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// [`write_atomic`] after creating the file's folder if it is missing (for
/// files gpuwarden keeps under /run and /var/lib).
pub fn write_atomic_creating_folder(path: &std::path::Path, content: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AtomicWriteError { path: dir.to_path_buf(), source })?;
    }
    write_atomic(path, content, mode)
}
