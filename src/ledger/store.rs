//! The ledger file: `ledger.json` in the state folder, read-modify-written
//! only under an exclusive lock on `ledger.lock`, replaced atomically. A
//! ledger that cannot be parsed closes admission until a person resets it:
//! never a silent reset, never a panic.

use std::path::{Path, PathBuf};

use super::book::{Ledger, LEDGER_VERSION};
use crate::base::fsutil::{write_atomic, AtomicWriteError, ExclusiveLock, LockError};

const LEDGER_FILE: &str = "ledger.json";

/// Root's alone: it holds every container's id, name and holder. Users see
/// the budget, their own containers and others' by user and profile through
/// the broker (`gpuwarden status`, [`super::Ledger::seen_by`]).
pub const LEDGER_MODE: u32 = 0o600;
const LOCK_FILE: &str = "ledger.lock";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {} cannot be read ({why}): admission is closed until it is repaired; once the GPU containers it tracked are stopped, run `{}` (it keeps a copy of the bad file)", path.display(), reset_command(path))]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot create state folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read ledger {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("ledger {} is readable and holds {count} reservation(s); stop those containers (their poststop hooks release them) or run `{} --force` to discard them", path.display(), reset_command(path))]
    Healthy { path: PathBuf, count: usize },
    #[error("cannot keep a copy of the bad ledger at {}: {source}", path.display())]
    Backup { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// The exact command that resets the ledger at `path`: `--state-dir` is
/// named unless it is the default, so the hint acts on this ledger whatever
/// configuration the user's shell would pick up.
pub fn reset_command(path: &Path) -> String {
    match path.parent() {
        Some(dir) if dir != Path::new(crate::config::DEFAULT_STATE_DIR) => format!("gpuwarden ledger reset --state-dir {}", dir.display()),
        _ => "gpuwarden ledger reset".to_string(),
    }
}

/// What `reset` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetOutcome {
    /// There was no ledger; an empty one now stands.
    Started,
    /// The ledger was readable and empty: nothing to do.
    AlreadyEmpty,
    /// An unreadable ledger, moved here.
    KeptBad(PathBuf),
    /// A readable ledger with reservations, discarded by force and kept here.
    KeptDiscarded(PathBuf),
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

    /// The ledger in `over` when a state folder was named (`--state-dir`),
    /// else in the configuration's `state_dir`; the configuration is read
    /// only when none was named.
    pub fn chosen(over: Option<&Path>, settings: impl FnOnce() -> Result<crate::config::Config, crate::config::ConfigError>) -> Result<Self, crate::config::ConfigError> {
        match over {
            Some(dir) => Ok(LedgerStore::new(dir)),
            None => settings().map(|c| LedgerStore::new(&c.state_dir)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Moves an unreadable ledger aside (as `ledger.json.bad-SECONDS`) and
    /// starts an empty one. A readable ledger is left alone when it is empty,
    /// and kept unless `force` when it holds reservations (then it is kept as
    /// `ledger.json.discarded-SECONDS`).
    pub fn reset(&self, now: u64, force: bool) -> Result<ResetOutcome, LedgerError> {
        self.ensure_dir()?;
        let _lock = ExclusiveLock::acquire(&self.dir.join(LOCK_FILE))?;
        let path = self.path();
        let (suffix, make): (&str, fn(PathBuf) -> ResetOutcome) = match self.read() {
            Ok(ledger) if !path.exists() => {
                debug_assert!(ledger.reservations.is_empty());
                write_atomic(&path, &render(&Ledger::default()), LEDGER_MODE)?;
                return Ok(ResetOutcome::Started);
            }
            Ok(ledger) if ledger.reservations.is_empty() => return Ok(ResetOutcome::AlreadyEmpty),
            Ok(ledger) if !force => return Err(LedgerError::Healthy { path, count: ledger.reservations.len() }),
            Ok(_) => ("discarded", ResetOutcome::KeptDiscarded),
            Err(_) => ("bad", ResetOutcome::KeptBad),
        };
        let backup = self.dir.join(format!("{LEDGER_FILE}.{suffix}-{now}"));
        std::fs::rename(&path, &backup).map_err(|source| LedgerError::Backup { path: backup.clone(), source })?;
        write_atomic(&path, &render(&Ledger::default()), LEDGER_MODE)?;
        Ok(make(backup))
    }
}

impl LockedLedger<'_> {
    /// Replaces the ledger file with the current content.
    pub fn save(&self) -> Result<(), LedgerError> {
        write_atomic(&self.store.path(), &render(&self.ledger), LEDGER_MODE)?;
        Ok(())
    }
}

fn render(l: &Ledger) -> Vec<u8> {
    crate::base::json::pretty(l).into_bytes()
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
    use crate::model::Reservation;
    use crate::base::size::ByteSize;

    fn res(id: &str) -> Reservation {
        Reservation { id: id.into(), name: None, profile: "p".into(), gpus: vec!["GPU-a".into()], threads: 1, pinned_bytes: ByteSize::mib(1), pid: 1, pid_start: 1, admitted_at: 0, holder: None }
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
        assert!(e.contains("ledger.json cannot be read"), "{e}");
        assert!(e.contains(&format!("run `gpuwarden ledger reset --state-dir {}`", dir.path().display())), "the hint names this ledger: {e}");
        assert_eq!(std::fs::read(store.path()).unwrap(), b"{\"version\":1,\"reserva", "untouched");
        let ResetOutcome::KeptBad(kept) = store.reset(1234, false).unwrap() else { panic!("kept as bad") };
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
        assert!(e.contains("holds 1 reservation(s)") && e.contains(&format!("`gpuwarden ledger reset --state-dir {} --force`", dir.path().display())), "{e}");
        assert_eq!(store.read().unwrap().reservations.len(), 1);
        let ResetOutcome::KeptDiscarded(kept) = store.reset(2, true).unwrap() else { panic!("kept as discarded") };
        assert!(kept.ends_with("ledger.json.discarded-2"));
        assert!(store.read().unwrap().reservations.is_empty());
    }

    #[test]
    fn a_healthy_empty_ledger_is_left_alone_and_an_absent_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let store = LedgerStore::new(dir.path());
        assert_eq!(store.reset(1, false).unwrap(), ResetOutcome::Started);
        let before = std::fs::read(store.path()).unwrap();
        assert_eq!(store.reset(2, false).unwrap(), ResetOutcome::AlreadyEmpty);
        assert_eq!(std::fs::read(store.path()).unwrap(), before);
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.contains(".bad-")), "{names:?}");
    }

    #[test]
    fn the_default_ledger_needs_no_flag_in_the_hint() {
        assert_eq!(reset_command(Path::new("/run/gpuwarden/ledger.json")), "gpuwarden ledger reset");
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
