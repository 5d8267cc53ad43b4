//! What install keeps and says: the record of what it put where (the
//! manifest under the root), the changes it reports, and its errors. Both
//! `install` and `uninstall` read and write through here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::daemon_json::{Added, DaemonJsonError};

/// Where the record of an install lives, under the root.
pub const MANIFEST: &str = "/var/lib/gpuwarden/installed.json";
/// Docker's configuration, under the root.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// The copy of daemon.json as it was before install.
pub const DAEMON_JSON_BACKUP: &str = "/etc/docker/daemon.json.gpuwarden-backup";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} exists and was not written by gpuwarden install: move it away (or remove it), then run this again; nothing was changed", .0.display())]
    Foreign(PathBuf),
    #[error("cannot write {}: {why}; nothing was changed", .path.display())]
    NotWritable { path: PathBuf, why: String },
    #[error(transparent)]
    DaemonJson(#[from] DaemonJsonError),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the install record {} is unreadable ({why}): remove what gpuwarden installed by hand, or restore the record", .path.display())]
    Manifest { path: PathBuf, why: String },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_path_buf(), source }
}

/// A file to put in place; `path` is where it lives on the target system.
#[derive(Clone, Debug)]
pub struct FilePiece {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    /// A file the user owns once it is there (config.toml): never overwritten.
    pub keep_existing: bool,
}

/// Everything install puts in place.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub files: Vec<FilePiece>,
    /// The runtime's path for daemon.json, and whether the engine has CDI.
    pub docker: Option<(String, bool)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Files install wrote, with a hash of what it wrote.
    pub files: Vec<OwnedFile>,
    /// Folders install made, outermost first.
    pub dirs: Vec<PathBuf>,
    pub daemon_json: Option<DaemonRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedFile {
    pub path: PathBuf,
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// Whether daemon.json was there before (its copy is then the backup).
    pub existed: bool,
    pub written_hash: String,
    pub added: Added,
}

/// FNV-1a: enough to tell whether a file changed since gpuwarden wrote it.
pub fn hash(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// `path` (absolute on the target) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

pub(super) fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

pub fn load_manifest(root: &Path) -> Result<Option<Manifest>, InstallError> {
    let path = under(root, Path::new(MANIFEST));
    match read_if_there(&path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| InstallError::Manifest { path, why: e.to_string() }),
    }
}

/// One change, for `--dry-run` and for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create(PathBuf),
    Replace(PathBuf),
    Keep(PathBuf, &'static str),
    Remove(PathBuf),
    MergeDaemonJson(PathBuf),
    RestoreDaemonJson(PathBuf),
    Dir(PathBuf),
    RemoveDir(PathBuf),
    Note(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(p) => write!(f, "create  {}", p.display()),
            Change::Replace(p) => write!(f, "replace {}", p.display()),
            Change::Keep(p, why) => write!(f, "keep    {} ({why})", p.display()),
            Change::Remove(p) => write!(f, "remove  {}", p.display()),
            Change::MergeDaemonJson(p) => write!(f, "merge   {} (runtime gpuwarden; a copy of the old file is kept)", p.display()),
            Change::RestoreDaemonJson(p) => write!(f, "restore {}", p.display()),
            Change::Dir(p) => write!(f, "mkdir   {}", p.display()),
            Change::RemoveDir(p) => write!(f, "rmdir   {}", p.display()),
            Change::Note(n) => write!(f, "note    {n}"),
        }
    }
}

/// The permission bits of `path` (0644 when it cannot be read).
pub(super) fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777).unwrap_or(0o644)
}
