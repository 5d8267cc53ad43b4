//! `gpuwarden install` and `uninstall`: put each piece in place under a root
//! and take exactly those pieces away again. What install did is recorded in
//! a manifest under the root, so uninstall removes only files it wrote and
//! that nobody changed since, folders it made that are empty again, and
//! restores daemon.json byte for byte (or, if someone edited it since, takes
//! out only gpuwarden's keys). Everything is checked before anything is
//! changed: a refusal changes nothing.

pub mod daemon_json;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use daemon_json::{Added, DaemonJsonError};

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
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

fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
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

/// The nearest folder of `path` that exists must be writable.
fn check_writable(path: &Path) -> Result<(), InstallError> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.exists() {
            return nix::unistd::access(d, nix::unistd::AccessFlags::W_OK)
                .map_err(|e| InstallError::NotWritable { path: path.to_path_buf(), why: e.desc().to_lowercase() });
        }
        dir = d.parent();
    }
    Ok(())
}

/// The folders `path`'s parent needs that do not exist, outermost first.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.exists()) {
        out.push(d.to_path_buf());
        dir = d.parent();
    }
    out.reverse();
    out
}

/// Adds a `Dir` change for each folder `path` needs, once.
fn push_missing_dirs(changes: &mut Vec<Change>, path: &Path) {
    for d in missing_dirs(path) {
        if !changes.contains(&Change::Dir(d.clone())) {
            changes.push(Change::Dir(d));
        }
    }
}

enum Step {
    Write(PathBuf, Vec<u8>, u32),
    DaemonJson { path: PathBuf, old: Option<Vec<u8>>, new: String, added: Added },
}

/// Puts `plan` in place under `root`; with `dry_run`, only says what it would do.
pub fn install(root: &Path, plan: &Plan, dry_run: bool, out: &mut dyn Write) -> Result<Vec<Change>, InstallError> {
    let mut manifest = load_manifest(root)?.unwrap_or_default();
    let ours = |m: &Manifest, p: &Path| m.files.iter().any(|f| f.path == p);
    let (mut changes, mut steps) = (Vec::new(), Vec::new());
    for piece in &plan.files {
        let target = under(root, &piece.path);
        match read_if_there(&target)? {
            Some(existing) if existing == piece.content => {}
            Some(_) if piece.keep_existing => changes.push(Change::Keep(target.clone(), "yours: never overwritten")),
            Some(_) if !ours(&manifest, &piece.path) => return Err(InstallError::Foreign(target)),
            Some(_) => {
                check_writable(&target)?;
                changes.push(Change::Replace(target.clone()));
                steps.push(Step::Write(target, piece.content.clone(), piece.mode));
            }
            None => {
                check_writable(&target)?;
                push_missing_dirs(&mut changes, &target);
                changes.push(Change::Create(target.clone()));
                steps.push(Step::Write(target, piece.content.clone(), piece.mode));
            }
        }
    }
    if let Some((runtime, cdi)) = &plan.docker {
        let path = under(root, Path::new(DAEMON_JSON));
        let old = read_if_there(&path)?;
        let text = old.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
        let (new, added, note) = daemon_json::merge(text.as_deref(), &path.display().to_string(), runtime, *cdi)?;
        if let Some(n) = note {
            changes.push(Change::Note(n));
        }
        if text.as_deref() != Some(new.as_str()) {
            check_writable(&path)?;
            push_missing_dirs(&mut changes, &path);
            changes.push(Change::MergeDaemonJson(path.clone()));
            steps.push(Step::DaemonJson { path, old, new, added });
        }
    }
    let manifest_path = under(root, Path::new(MANIFEST));
    if !steps.is_empty() {
        check_writable(&manifest_path)?;
    }
    for c in &changes {
        writeln!(out, "{}{c}", if dry_run { "would " } else { "" }).map_err(io(Path::new("stdout")))?;
    }
    if dry_run || steps.is_empty() {
        return Ok(changes);
    }
    for step in steps {
        match step {
            Step::Write(target, content, mode) => {
                make_dirs(&target, &mut manifest)?;
                crate::fsutil::write_atomic(&target, &content, mode).map_err(|e| io(&target)(e.source))?;
                let path = Path::new("/").join(target.strip_prefix(root).unwrap_or(&target));
                manifest.files.retain(|f| f.path != path);
                manifest.files.push(OwnedFile { path, hash: hash(&content) });
            }
            Step::DaemonJson { path, old, new, added } => {
                make_dirs(&path, &mut manifest)?;
                let record = manifest.daemon_json.take();
                if let Some(old) = &old {
                    if record.is_none() {
                        let backup = under(root, Path::new(DAEMON_JSON_BACKUP));
                        crate::fsutil::write_atomic(&backup, old, file_mode(&path)).map_err(|e| io(&backup)(e.source))?;
                    }
                }
                crate::fsutil::write_atomic(&path, new.as_bytes(), if old.is_some() { file_mode(&path) } else { 0o644 }).map_err(|e| io(&path)(e.source))?;
                let (existed, before) = match record {
                    Some(r) => (r.existed, r.added),
                    None => (old.is_some(), Added::default()),
                };
                let added = Added {
                    runtime: before.runtime || added.runtime,
                    runtimes_object: before.runtimes_object || added.runtimes_object,
                    cdi: before.cdi || added.cdi,
                    features_object: before.features_object || added.features_object,
                    default_runtime: before.default_runtime || added.default_runtime,
                };
                manifest.daemon_json = Some(DaemonRecord { existed, written_hash: hash(new.as_bytes()), added });
            }
        }
    }
    save_manifest(root, &mut manifest)?;
    Ok(changes)
}

fn save_manifest(root: &Path, manifest: &mut Manifest) -> Result<(), InstallError> {
    let path = under(root, Path::new(MANIFEST));
    make_dirs(&path, manifest)?;
    let text = serde_json::to_vec_pretty(manifest).expect("the manifest serializes");
    crate::fsutil::write_atomic(&path, &text, 0o644).map_err(|e| io(&path)(e.source))
}

/// Makes the folders `path` (on the target) needs, recording them, for a file
/// another command writes there (the CDI spec).
pub fn prepare_dirs(root: &Path, path: &Path) -> Result<(), InstallError> {
    let mut manifest = load_manifest(root)?.unwrap_or_default();
    if missing_dirs(&under(root, path)).is_empty() {
        return Ok(());
    }
    make_dirs(&under(root, path), &mut manifest)?;
    save_manifest(root, &mut manifest)
}

/// Records `path` (on the target), written by another command, as installed.
pub fn adopt(root: &Path, path: &Path) -> Result<(), InstallError> {
    let mut manifest = load_manifest(root)?.unwrap_or_default();
    let target = under(root, path);
    let bytes = std::fs::read(&target).map_err(io(&target))?;
    manifest.files.retain(|f| f.path != path);
    manifest.files.push(OwnedFile { path: path.to_path_buf(), hash: hash(&bytes) });
    save_manifest(root, &mut manifest)
}

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777).unwrap_or(0o644)
}

fn make_dirs(target: &Path, manifest: &mut Manifest) -> Result<(), InstallError> {
    for d in missing_dirs(target) {
        std::fs::create_dir(&d).map_err(io(&d))?;
        manifest.dirs.push(d);
    }
    Ok(())
}

/// Takes away what install put under `root`.
pub fn uninstall(root: &Path, dry_run: bool, out: &mut dyn Write) -> Result<Vec<Change>, InstallError> {
    let Some(manifest) = load_manifest(root)? else {
        writeln!(out, "nothing to take away: {} does not exist (gpuwarden install was not run here)", under(root, Path::new(MANIFEST)).display()).map_err(io(Path::new("stdout")))?;
        return Ok(Vec::new());
    };
    let mut changes = Vec::new();
    for f in &manifest.files {
        let target = under(root, &f.path);
        match read_if_there(&target)? {
            Some(b) if hash(&b) == f.hash => changes.push(Change::Remove(target)),
            Some(b) if is_our_spec(&b) => changes.push(Change::Remove(target)),
            Some(_) => changes.push(Change::Keep(target, "changed since gpuwarden wrote it")),
            None => {}
        }
    }
    let mut daemon_write = None;
    if let Some(r) = &manifest.daemon_json {
        let path = under(root, Path::new(DAEMON_JSON));
        let backup = under(root, Path::new(DAEMON_JSON_BACKUP));
        if let Some(current) = read_if_there(&path)? {
            if hash(&current) == r.written_hash {
                changes.push(if r.existed { Change::RestoreDaemonJson(path.clone()) } else { Change::Remove(path.clone()) });
                daemon_write = Some(if r.existed { read_if_there(&backup)? } else { None });
            } else {
                let text = daemon_json::unmerge(&String::from_utf8_lossy(&current), &path.display().to_string(), &r.added)?;
                changes.push(Change::Note(format!("{} changed since install: only gpuwarden's keys are taken out", path.display())));
                changes.push(Change::MergeDaemonJson(path.clone()));
                daemon_write = Some(Some(text.into_bytes()));
            }
        }
        if backup.exists() {
            changes.push(Change::Remove(backup));
        }
    }
    changes.push(Change::Remove(under(root, Path::new(MANIFEST))));
    for d in manifest.dirs.iter().rev() {
        changes.push(Change::RemoveDir(d.clone()));
    }
    for c in &changes {
        writeln!(out, "{}{c}", if dry_run { "would " } else { "" }).map_err(io(Path::new("stdout")))?;
    }
    if dry_run {
        return Ok(changes);
    }
    let daemon_path = under(root, Path::new(DAEMON_JSON));
    for c in &changes {
        match c {
            Change::Remove(p) => std::fs::remove_file(p).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }).map_err(io(p))?,
            Change::RestoreDaemonJson(p) | Change::MergeDaemonJson(p) if *p == daemon_path => {
                if let Some(Some(bytes)) = &daemon_write {
                    crate::fsutil::write_atomic(p, bytes, file_mode(p)).map_err(|e| io(p)(e.source))?;
                }
            }
            // A folder someone put files in stays.
            Change::RemoveDir(d) => {
                let _ = std::fs::remove_dir(d);
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// A CDI spec gpuwarden generated (the refresh unit rewrites it, so its hash changes).
fn is_our_spec(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains(&format!("{}=gpuwarden/", crate::cdi::OWNER_ENV))
}

/// Every entry under `root` (relative path, mode, content; a link's target):
/// what "left as it was, byte for byte" is checked against, here and in the
/// integration tests.
#[doc(hidden)]
pub fn snapshot(root: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        let content = if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
            Vec::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&p).map(|l| l.into_os_string().into_encoded_bytes()).unwrap_or_default()
        } else {
            std::fs::read(&p).unwrap_or_default()
        };
        out.push((p.strip_prefix(root).unwrap_or(&p).to_path_buf(), mode, content));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            files: vec![
                FilePiece { path: "/usr/local/bin/gpuwarden".into(), content: b"\x7fELF binary".to_vec(), mode: 0o755, keep_existing: false },
                FilePiece { path: "/etc/gpuwarden/config.toml".into(), content: b"# defaults\n".to_vec(), mode: 0o644, keep_existing: true },
                FilePiece { path: "/etc/systemd/system/gpuwarden-mps.service".into(), content: b"[Unit]\n".to_vec(), mode: 0o644, keep_existing: false },
            ],
            docker: Some(("/usr/local/bin/gpuwarden-runtime".into(), false)),
        }
    }

    fn host() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/docker")).unwrap();
        std::fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
        std::fs::write(root.path().join("etc/docker/daemon.json"), "{ \"log-driver\":\"journald\",\n  \"data-root\": \"/srv/docker\" }\n").unwrap();
        std::fs::write(root.path().join("usr/local/bin/other"), "x").unwrap();
        root
    }

    #[test]
    fn install_then_uninstall_leaves_the_root_byte_for_byte() {
        let root = host();
        let before = snapshot(root.path());
        let mut out = Vec::new();
        install(root.path(), &plan(), false, &mut out).unwrap();
        assert!(root.path().join("etc/gpuwarden/config.toml").exists());
        let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(root.path().join("etc/docker/daemon.json")).unwrap()).unwrap();
        assert_eq!(merged["runtimes"]["gpuwarden"]["path"], "/usr/local/bin/gpuwarden-runtime");
        assert_eq!(merged["data-root"], "/srv/docker");
        let after_first = snapshot(root.path());
        let again = install(root.path(), &plan(), false, &mut Vec::new()).unwrap();
        assert!(again.is_empty(), "a second install changes nothing: {again:?}");
        assert_eq!(snapshot(root.path()), after_first);
        uninstall(root.path(), false, &mut Vec::new()).unwrap();
        assert_eq!(snapshot(root.path()), before);
    }

    #[test]
    fn a_dry_run_says_each_change_and_makes_none() {
        let root = host();
        let before = snapshot(root.path());
        let mut out = Vec::new();
        let changes = install(root.path(), &plan(), true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("would mkdir") && text.contains("would create") && text.contains("would merge"), "{text}");
        assert_eq!(changes.iter().filter(|c| matches!(c, Change::Create(_))).count(), 3);
        assert_eq!(snapshot(root.path()), before);
    }

    #[test]
    fn refusals_change_nothing() {
        let root = host();
        std::fs::write(root.path().join("etc/docker/daemon.json"), "{\"a\": ").unwrap();
        let before = snapshot(root.path());
        let e = install(root.path(), &plan(), false, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("is not valid JSON") && e.ends_with("it was not changed"), "{e}");
        assert_eq!(snapshot(root.path()), before);

        let root = host();
        std::fs::write(root.path().join("usr/local/bin/gpuwarden"), "someone else's").unwrap();
        let before = snapshot(root.path());
        let e = install(root.path(), &plan(), false, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("usr/local/bin/gpuwarden exists and was not written by gpuwarden install"), "{e}");
        assert_eq!(snapshot(root.path()), before);
    }

    #[test]
    fn what_the_user_changed_after_install_stays() {
        let root = host();
        install(root.path(), &plan(), false, &mut Vec::new()).unwrap();
        std::fs::write(root.path().join("etc/gpuwarden/config.toml"), "# mine now\n").unwrap();
        let daemon = root.path().join("etc/docker/daemon.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&daemon).unwrap()).unwrap();
        v["debug"] = true.into();
        std::fs::write(&daemon, serde_json::to_vec(&v).unwrap()).unwrap();
        uninstall(root.path(), false, &mut Vec::new()).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("etc/gpuwarden/config.toml")).unwrap(), "# mine now\n");
        let left: serde_json::Value = serde_json::from_slice(&std::fs::read(&daemon).unwrap()).unwrap();
        assert_eq!(left, serde_json::json!({"log-driver": "journald", "data-root": "/srv/docker", "debug": true}));
        assert!(!root.path().join("usr/local/bin/gpuwarden").exists());
        assert!(root.path().join("usr/local/bin/other").exists());
    }
}
