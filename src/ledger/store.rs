//! The ledger file: `ledger.json` in the state folder, read-modify-written
//! only under an exclusive lock on `ledger.lock`, replaced atomically. A
//! ledger that cannot be parsed closes admission until a person resets it:
//! never a silent reset, never a panic.

use std::path::{Path, PathBuf};

use super::{Ledger, LEDGER_VERSION};
use crate::fsutil::{write_atomic, AtomicWriteError, ExclusiveLock, LockError};

const LEDGER_FILE: &str = "ledger.json";
const LOCK_FILE: &str = "ledger.lock";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {} cannot be read ({why}): admission is closed until it is repaired; once the GPU containers it tracked are stopped, run `gpuwarden ledger reset` (it keeps a copy of the bad file)", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot create state folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read ledger {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("ledger {} is readable and holds {count} reservation(s); stop those containers (their poststop hooks release them) or pass --force to discard them", path.display())]
    Healthy { path: PathBuf, count: usize },
    #[error("cannot keep a copy of the bad ledger at {}: {source}", path.display())]
    Backup { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// The ledger's home.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    dir: PathBuf,
}

/// The ledger, with the lock that makes it ours to change.
pub struct LockedLedger<'a> {
    store: &'a LedgerStore,
    _lock: ExclusiveLock,
    pub ledger: Ledger,
}

impl LedgerStore {
    pub fn new(dir: &Path) -> Self {
        LedgerStore { dir: dir.to_path_buf() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(LEDGER_FILE)
    }

    fn ensure_dir(&self) -> Result<(), LedgerError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LedgerError::CreateDir { path: self.dir.clone(), source })
    }

    /// Reads the ledger without the lock (it is only ever replaced whole). An
    /// absent file is an empty ledger.
    pub fn read(&self) -> Result<Ledger, LedgerError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).map_err(|why| LedgerError::Corrupt { path, why }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(source) => Err(LedgerError::Read { path, source }),
        }
    }

    /// Takes the lock, then reads the ledger.
    pub fn lock(&self) -> Result<LockedLedger<'_>, LedgerError> {
        self.ensure_dir()?;
        let lock = ExclusiveLock::acquire(&self.dir.join(LOCK_FILE))?;
        self.remove_torn_writes();
        let ledger = self.read()?;
        Ok(LockedLedger { store: self, _lock: lock, ledger })
    }

    /// Temporary files of writers that died before their rename. Only called
    /// under the lock, when no writer can be between write and rename.
    fn remove_torn_writes(&self) {
        let prefix = format!(".{LEDGER_FILE}.tmp-");
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!("removing {}, left by a writer that died", e.path().display());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Moves a ledger aside (as `ledger.json.bad-SECONDS`) and starts an empty
    /// one; returns where the old one went, if there was one. A readable
    /// ledger that holds reservations is kept unless `force`.
    pub fn reset(&self, now: u64, force: bool) -> Result<Option<PathBuf>, LedgerError> {
        self.ensure_dir()?;
        let _lock = ExclusiveLock::acquire(&self.dir.join(LOCK_FILE))?;
        let path = self.path();
        if let Ok(ledger) = self.read() {
            if !ledger.reservations.is_empty() && !force {
                return Err(LedgerError::Healthy { path, count: ledger.reservations.len() });
            }
        }
        let kept = if path.exists() {
            let backup = self.dir.join(format!("{LEDGER_FILE}.bad-{now}"));
            std::fs::rename(&path, &backup).map_err(|source| LedgerError::Backup { path: backup.clone(), source })?;
            Some(backup)
        } else {
            None
        };
        write_atomic(&path, &render(&Ledger::default()), 0o644)?;
        Ok(kept)
    }
}

impl LockedLedger<'_> {
    /// Replaces the ledger file with the current content.
    pub fn save(&self) -> Result<(), LedgerError> {
        write_atomic(&self.store.path(), &render(&self.ledger), 0o644)?;
        Ok(())
    }
}

fn render(l: &Ledger) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(l).expect("a ledger always serializes");
    v.push(b'\n');
    v
}

fn parse(bytes: &[u8]) -> Result<Ledger, String> {
    let l: Ledger = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if l.version != LEDGER_VERSION {
        return Err(format!("version {} is not {LEDGER_VERSION}", l.version));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Reservation;
    use crate::size::ByteSize;

    fn res(id: &str) -> Reservation {
        Reservation { id: id.into(), name: None, profile: "p".into(), gpus: vec!["GPU-a".into()], threads: 1, pinned_bytes: ByteSize::mib(1), pid: 1, pid_start: 1, admitted_at: 0 }
    }

    #[test]
    fn changes_made_under_the_lock_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(&dir.path().join("state"));
        assert_eq!(store.read().unwrap(), Ledger::default(), "absent means empty");
        let mut locked = store.lock().unwrap();
        locked.ledger.insert(res("a"));
        locked.save().unwrap();
        drop(locked);
        assert_eq!(store.read().unwrap().reservations, [res("a")]);
    }

    #[test]
    fn a_torn_ledger_fails_closed_and_reset_keeps_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(dir.path());
        std::fs::write(store.path(), b"{\"version\":1,\"reserva").unwrap();
        let e = store.lock().err().unwrap().to_string();
        assert!(e.contains("ledger.json cannot be read") && e.contains("gpuwarden ledger reset"), "{e}");
        assert_eq!(std::fs::read(store.path()).unwrap(), b"{\"version\":1,\"reserva", "untouched");
        let kept = store.reset(1234, false).unwrap().unwrap();
        assert!(kept.ends_with("ledger.json.bad-1234"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"{\"version\":1,\"reserva");
        assert_eq!(store.read().unwrap(), Ledger::default());
    }

    #[test]
    fn a_healthy_ledger_with_reservations_is_reset_only_by_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(dir.path());
        let mut locked = store.lock().unwrap();
        locked.ledger.insert(res("a"));
        locked.save().unwrap();
        drop(locked);
        let e = store.reset(1, false).unwrap_err().to_string();
        assert!(e.contains("holds 1 reservation(s)") && e.contains("--force"), "{e}");
        assert_eq!(store.read().unwrap().reservations.len(), 1);
        assert!(store.reset(2, true).unwrap().is_some());
        assert!(store.read().unwrap().reservations.is_empty());
    }

    #[test]
    fn temporary_files_of_dead_writers_are_swept_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(dir.path());
        std::fs::write(dir.path().join(".ledger.json.tmp-4242"), b"{\"version\":1,").unwrap();
        drop(store.lock().unwrap());
        assert!(!dir.path().join(".ledger.json.tmp-4242").exists());
    }

    #[test]
    fn empty_files_and_unknown_versions_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(dir.path());
        std::fs::write(store.path(), b"").unwrap();
        assert!(matches!(store.read(), Err(LedgerError::Corrupt { .. })));
        std::fs::write(store.path(), b"{\"version\":9,\"reservations\":[]}").unwrap();
        assert!(store.read().unwrap_err().to_string().contains("version 9"));
    }
}
