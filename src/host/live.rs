//! The live view the hooks read: what runs on each GPU now, written by
//! `gpuwarden live` (which asks NVML; the hooks never load it) to a file under
//! /run, atomically. Admission uses it while it is fresh; a stale, missing or
//! unreadable file leaves the check ledger-only, and `status` says which.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::inventory::{GpuProcess, Inventory};


/// The file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveFile {
    /// Seconds since the epoch.
    pub written_at: u64,
    pub gpus: Vec<LiveGpu>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveGpu {
    pub uuid: String,
    pub processes: Vec<GpuProcess>,
}

/// Whether the inventory's GPUs carry a live view, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// The inventory itself had it (NVML, or an inventory file standing in).
    FromInventory,
    /// From the live file, this many seconds old.
    Fresh { age: u64 },
    Stale { age: u64 },
    Absent,
    Unreadable { why: String },
}

impl Live {
    /// One line for people.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            Live::FromInventory => "live view from the inventory".into(),
            Live::Fresh { age } => format!("live view from {} ({age}s old)", path.display()),
            Live::Stale { age } => format!("the live view {} is {age}s old, too old to trust (is `gpuwarden live` running?): the check is ledger-only", path.display()),
            Live::Absent => format!("no live view ({} is absent; `gpuwarden live` writes it): the check is ledger-only", path.display()),
            Live::Unreadable { why } => format!("the live view {} cannot be read ({why}): the check is ledger-only", path.display()),
        }
    }
}

/// Fills the GPUs of `inventory` that have no live view from the file at
/// `path`, if it is at most `max_age` seconds old.
pub fn merge(inventory: &mut Inventory, path: &Path, now: u64, max_age: u64) -> Live {
    if inventory.gpus.iter().all(|g| g.processes.is_some()) {
        return Live::FromInventory;
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Live::Absent,
        Err(e) => return Live::Unreadable { why: e.to_string() },
    };
    let file: LiveFile = match serde_json::from_slice(&text) {
        Ok(f) => f,
        Err(e) => return Live::Unreadable { why: e.to_string() },
    };
    let age = now.saturating_sub(file.written_at);
    if age > max_age {
        return Live::Stale { age };
    }
    for gpu in inventory.gpus.iter_mut().filter(|g| g.processes.is_none()) {
        gpu.processes = Some(file.gpus.iter().find(|l| l.uuid == gpu.uuid).map(|l| l.processes.clone()).unwrap_or_default());
    }
    Live::Fresh { age }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::inventory::builtin;
    use crate::base::size::ByteSize;

    fn game() -> GpuProcess {
        GpuProcess { pid: 4242, name: "steam_game".into(), used_memory_bytes: ByteSize::gib(6) }
    }

    fn written(dir: &Path, at: u64) -> std::path::PathBuf {
        let uuid = builtin("rtx4070").unwrap().gpus[0].uuid.clone();
        let file = LiveFile { written_at: at, gpus: vec![LiveGpu { uuid, processes: vec![game()] }] };
        let path = dir.join("live.json");
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        path
    }

    #[test]
    fn a_fresh_file_gives_the_gpus_their_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 100);
        let mut inv = builtin("rtx4070").unwrap();
        assert_eq!(merge(&mut inv, &path, 105, 10), Live::Fresh { age: 5 });
        assert_eq!(inv.gpus[0].processes, Some(vec![game()]));
    }

    #[test]
    fn stale_absent_and_broken_files_leave_the_check_ledger_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 100);
        let mut inv = builtin("rtx4070").unwrap();
        assert_eq!(merge(&mut inv, &path, 111, 10), Live::Stale { age: 11 });
        assert_eq!(inv.gpus[0].processes, None);
        assert_eq!(merge(&mut inv, &dir.path().join("none.json"), 0, 10), Live::Absent);
        std::fs::write(&path, b"{\"written_at\": 1").unwrap();
        let live = merge(&mut inv, &path, 0, 10);
        assert!(matches!(live, Live::Unreadable { .. }), "{live:?}");
        assert!(live.describe(&path).contains("the check is ledger-only"));
        assert_eq!(inv.gpus[0].processes, None);
    }

    #[test]
    fn a_live_inventory_needs_no_file() {
        let mut inv = builtin("rtx4070").unwrap();
        inv.gpus[0].processes = Some(Vec::new());
        assert_eq!(merge(&mut inv, Path::new("/nonexistent"), 0, 10), Live::FromInventory);
    }
}
