//! What the watchdog did, one JSON line per event in a file under /run, for
//! `status` (the recent ones) and the metrics (counts by kind). Admission
//! appends its refusals, and the broker's callers reach it, so it is bounded
//! by bytes: a line is cut to [`MAX_DETAIL`], appended without reading the
//! file, and past [`MAX_BYTES`] the file becomes `events.jsonl.1` (the one
//! before it goes) and a new one starts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The largest events file before it is moved aside.
pub const MAX_BYTES: u64 = 1 << 20;

/// The longest detail recorded, in bytes.
pub const MAX_DETAIL: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: u64,
    /// `paused`, `resumed`, `killed`, `over_share`, `mps_defaults_restored`, `found_frozen`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// One line for people.
    pub detail: String,
}

/// The file the events before the current file's are in.
pub fn older(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    name.into()
}

/// Appends `event`, its detail cut to [`MAX_DETAIL`], in one write; moves
/// the file aside first when it has grown past [`MAX_BYTES`].
pub fn append(path: &Path, event: &Event) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bounded = Event { detail: crate::base::text::truncate(&event.detail, MAX_DETAIL).to_string(), kind: crate::base::text::truncate(&event.kind, 64).to_string(), ..event.clone() };
    let mut line = crate::base::json::compact(&bounded);
    line.push(b'\n');
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= MAX_BYTES) {
        // Two writers may both move it: the later move takes the new, short file aside, and nothing grows past the bound.
        let _ = std::fs::rename(path, older(path));
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?.write_all(&line)
}

/// Every event in the older file and the file, oldest first (unreadable
/// lines are skipped); none if neither is there.
pub fn read(path: &Path) -> Vec<Event> {
    [older(path), path.to_path_buf()]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>())
        .collect()
}

/// How many events of each kind the file holds.
pub fn counts(events: &[Event]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.kind.clone()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_read_back_counted_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        assert!(read(&path).is_empty());
        let e = |kind: &str| Event { time: 1, kind: kind.into(), container: Some("c1".into()), detail: "d".into() };
        append(&path, &e("paused")).unwrap();
        append(&path, &e("resumed")).unwrap();
        append(&path, &e("paused")).unwrap();
        let all = read(&path);
        assert_eq!(all.len(), 3);
        assert_eq!(counts(&all), BTreeMap::from([("paused".to_string(), 2), ("resumed".to_string(), 1)]));
    }

    #[test]
    fn the_file_is_bounded_by_bytes_and_a_megabyte_detail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let huge = Event { time: 1, kind: "refused".into(), container: None, detail: "n".repeat(1 << 20) };
        for _ in 0..2000 {
            append(&path, &huge).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(&path) <= MAX_BYTES + MAX_DETAIL as u64 + 200, "{}", size(&path));
        assert!(size(&older(&path)) <= MAX_BYTES + MAX_DETAIL as u64 + 200);
        let all = read(&path);
        assert!(all.len() > 500 && all.iter().all(|e| e.detail.len() == MAX_DETAIL), "{}", all.len());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "not world-readable");
    }
}
