//! What the watchdog did, one JSON line per event in a file under /run, for
//! `status` (the recent ones) and the metrics (counts by kind). The file is
//! kept short: past 4096 lines the older half goes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

const KEEP_LINES: usize = 4096;

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

/// Appends `event`; trims the file when it grows long.
pub fn append(path: &Path, event: &Event) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_string(event).expect("an event serializes");
    line.push('\n');
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())?;
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > KEEP_LINES {
        let kept = lines[lines.len() - KEEP_LINES / 2..].join("\n") + "\n";
        crate::fsutil::write_atomic(path, kept.as_bytes(), 0o644).map_err(|e| e.source)?;
    }
    Ok(())
}

/// Every event in the file (unreadable lines are skipped); none if it is absent.
pub fn read(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path).map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()).unwrap_or_default()
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
        for _ in 0..KEEP_LINES {
            append(&path, &e("x")).unwrap();
        }
        assert!(read(&path).len() <= KEEP_LINES);
    }
}
