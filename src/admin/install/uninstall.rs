//! `uninstall`: takes away what `install` recorded, and what gpuwarden's own
//! commands generated since (its CDI spec, the inventory snapshot), leaving
//! whatever someone else changed; daemon.json restored byte for byte, or only
//! gpuwarden's keys taken out when it was edited since.

use std::io::Write;
use std::path::Path;

use super::daemon_json;
use super::record::{file_mode, hash, io, load_manifest, read_if_there, under, Change, InstallError, DAEMON_JSON, DAEMON_JSON_BACKUP, MANIFEST};

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
    // What gpuwarden's own commands write after install (the refresh unit's
    // spec once the driver is there, the inventory the hooks read), which
    // install could not record.
    for generated in GENERATED {
        let target = under(root, Path::new(generated));
        if changes.iter().any(|c| matches!(c, Change::Remove(p) | Change::Keep(p, _) if *p == target)) {
            continue;
        }
        match read_if_there(&target)? {
            Some(b) if *generated != crate::cdi::DEFAULT_SPEC || is_our_spec(&b) => changes.push(Change::Remove(target)),
            Some(_) => changes.push(Change::Keep(target, "not a spec gpuwarden wrote")),
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
                    crate::base::fsutil::write_atomic(p, bytes, file_mode(p)).map_err(|e| io(p)(e.source))?;
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

/// Files gpuwarden's commands write outside install's record: `cdi generate`'s
/// spec (the refresh unit's), and the inventory it leaves for the hooks.
const GENERATED: &[&str] = &[crate::cdi::DEFAULT_SPEC, crate::hookcall::INVENTORY_SNAPSHOT];

/// A CDI spec gpuwarden generated (the refresh unit rewrites it, so its hash changes).
fn is_our_spec(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains(&format!("{}=gpuwarden/", crate::oci::OWNER_ENV))
}
