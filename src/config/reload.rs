//! config.toml as a long-running service sees it (`gpuwarden live`,
//! `gpuwarden watch`): read again when the file changes, so an edit takes
//! effect at the next look without a restart. An edit that does not parse
//! keeps the configuration in force, and says why.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, DEFAULT_CONFIG_PATH};

/// The file a service was started with, and what it looked like then.
pub struct Reloading {
    named: Option<PathBuf>,
    stamp: Option<Stamp>,
}

/// What tells an edit: an editor that writes a new file changes the inode,
/// one that writes in place the time or the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: i64,
    modified_ns: i64,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { inode: m.ino(), modified: m.mtime(), modified_ns: m.mtime_nsec(), len: m.len() })
}

impl Reloading {
    /// Watches `named` (`--config`), else the default file, from its state now.
    pub fn new(named: Option<&Path>) -> Reloading {
        let named = named.map(Path::to_path_buf);
        let stamp = stamp(named.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG_PATH)));
        Reloading { named, stamp }
    }

    pub fn path(&self) -> &Path {
        self.named.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG_PATH))
    }

    /// The configuration read again, when the file changed (or appeared, or
    /// went) since the last call; `None` when it did not.
    pub fn changed(&mut self) -> Option<Result<Config, ConfigError>> {
        let now = stamp(self.path());
        if now == self.stamp {
            return None;
        }
        self.stamp = now;
        Some(Config::load_from(self.named.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_read_at_the_next_look_and_a_broken_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[watch]\ninterval_seconds = 2\n").unwrap();
        let mut r = Reloading::new(Some(&file));
        assert!(r.changed().is_none(), "nothing changed since the start");
        std::fs::write(&file, "[watch]\ninterval_seconds = 5\n").unwrap();
        let c = r.changed().expect("an edit in place (one more byte)").unwrap();
        assert_eq!(c.watch.interval_seconds, 5);
        assert!(r.changed().is_none(), "read once");
        // An editor that writes a new file and renames it over the old one.
        let next = dir.path().join("config.toml.new");
        std::fs::write(&next, "[watch]\ninterval_seconds = 7\n").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_eq!(r.changed().unwrap().unwrap().watch.interval_seconds, 7);
        std::fs::write(&file, "[watch\n").unwrap();
        let e = r.changed().unwrap().unwrap_err().to_string();
        assert!(e.contains("config.toml:1:7: unclosed table"), "the edit is named with its line and column: {e}");
    }
}
