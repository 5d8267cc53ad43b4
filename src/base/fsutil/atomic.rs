//! Atomic replacement of a file: write a temporary file in the same folder,
//! fsync it, rename it over the target, fsync the folder. A reader sees the old
//! content or the new, never a torn one, even if the writer is killed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `content`, with permission bits `mode`.
///
/// Fails if the folder does not exist or is not writable; the target is then
/// left as it was and no temporary file remains.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    let err = |source| AtomicWriteError { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| err(std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The umask may have narrowed the mode given to open(2).
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_missing_folder_fails_and_names_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent/spec.yaml");
        let e = write_atomic(&path, b"x", 0o644).unwrap_err();
        assert!(e.to_string().contains("absent/spec.yaml"), "{e}");
    }
}
