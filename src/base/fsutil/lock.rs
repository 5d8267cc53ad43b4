//! An exclusive `flock` on a lock file, held for as long as the guard lives.
//! The lock file is separate from the data file, because the data file is
//! replaced by rename and a lock on a replaced inode protects nothing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
#[error("cannot lock {}: {source}", path.display())]
pub struct LockError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Holds an exclusive lock on a file until dropped.
pub struct ExclusiveLock {
    _lock: Flock<File>,
}

impl ExclusiveLock {
    /// Blocks until the lock on `path` (created if absent, mode 0600) is ours.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let err = |source| LockError { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(err)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| err(e.into()))?;
        Ok(ExclusiveLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = ExclusiveLock::acquire(&path).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let seen = released.clone();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _second = ExclusiveLock::acquire(&p).unwrap();
            seen.load(Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(100));
        released.store(true, Ordering::SeqCst);
        drop(first);
        assert!(waiter.join().unwrap(), "the second lock was granted while the first was held");
    }
}
