//! `gpuwarden install` and `uninstall`: put each piece in place under a root
//! and take exactly those pieces away again. What install did is recorded in
//! a manifest under the root, so uninstall removes only files it wrote and
//! that nobody changed since, folders it made that are empty again, and
//! restores daemon.json byte for byte (or, if someone edited it since, takes
//! out only gpuwarden's keys). Everything is checked before anything is
//! changed: a refusal changes nothing.

pub mod daemon_json;
mod record;
mod uninstall;

pub use record::{hash, load_manifest, under, Change, DaemonRecord, FilePiece, InstallError, Manifest, OwnedFile, Plan, DAEMON_JSON, DAEMON_JSON_BACKUP, MANIFEST};
use record::{file_mode, io, read_if_there};
pub use uninstall::uninstall;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use daemon_json::{Added, DaemonJsonError};

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
                crate::base::fsutil::write_atomic(&target, &content, mode).map_err(|e| io(&target)(e.source))?;
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
                        crate::base::fsutil::write_atomic(&backup, old, file_mode(&path)).map_err(|e| io(&backup)(e.source))?;
                    }
                }
                crate::base::fsutil::write_atomic(&path, new.as_bytes(), if old.is_some() { file_mode(&path) } else { 0o644 }).map_err(|e| io(&path)(e.source))?;
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
    let text = crate::base::json::pretty(manifest);
    crate::base::fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| io(&path)(e.source))
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


fn make_dirs(target: &Path, manifest: &mut Manifest) -> Result<(), InstallError> {
    for d in missing_dirs(target) {
        std::fs::create_dir(&d).map_err(io(&d))?;
        manifest.dirs.push(d);
    }
    Ok(())
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
    fn what_gpuwarden_wrote_after_install_goes_too_and_a_foreign_spec_stays() {
        let root = host();
        install(root.path(), &plan(), false, &mut Vec::new()).unwrap();
        // The refresh unit wrote the spec after install (no driver then), and `cdi generate` the hooks' inventory.
        let spec = under(root.path(), Path::new(crate::cdi::DEFAULT_SPEC));
        let inventory = under(root.path(), Path::new(crate::hookcall::INVENTORY_SNAPSHOT));
        for p in [&spec, &inventory] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        std::fs::write(&spec, format!("cdiVersion: \"0.5.0\"\n# env {}=gpuwarden/1\n", crate::oci::OWNER_ENV)).unwrap();
        std::fs::write(&inventory, "{}").unwrap();
        let mut out = Vec::new();
        uninstall(root.path(), false, &mut out).unwrap();
        assert!(!spec.exists() && !inventory.exists(), "{}", String::from_utf8_lossy(&out));
        // A spec someone else put at that path is not gpuwarden's to remove.
        let root = host();
        install(root.path(), &plan(), false, &mut Vec::new()).unwrap();
        std::fs::create_dir_all(spec_in(&root).parent().unwrap()).unwrap();
        std::fs::write(spec_in(&root), "cdiVersion: \"0.6.0\"\nkind: example.com/x\n").unwrap();
        let mut out = Vec::new();
        uninstall(root.path(), false, &mut out).unwrap();
        assert!(spec_in(&root).exists());
        assert!(String::from_utf8_lossy(&out).contains("not a spec gpuwarden wrote"), "{}", String::from_utf8_lossy(&out));
    }

    fn spec_in(root: &tempfile::TempDir) -> PathBuf {
        under(root.path(), Path::new(crate::cdi::DEFAULT_SPEC))
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
