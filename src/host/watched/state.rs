//! What the watchdog keeps across its own restarts: the containers it paused
//! and why, and a heartbeat (admission and `status` tell from it whether it
//! runs). One small JSON file under /run, replaced atomically.

use std::collections::BTreeMap;

use std::path::Path;

use serde::{Deserialize, Serialize};


#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// Seconds since the epoch of the last look.
    pub written_at: u64,
    pub interval_seconds: u64,
    pub pid: i32,
    /// Whether it sees the GPUs' processes (NVML, or a file standing in).
    pub live: bool,
    pub paused: BTreeMap<String, Paused>,
    /// Container id -> GPU memory its processes used at the last look.
    #[serde(default)]
    pub used: BTreeMap<String, u64>,
    /// GPU processes of no admitted container, at the last look.
    #[serde(default)]
    pub unknown: Vec<Unknown>,
    /// Containers warned of being over their share, until they are back under it.
    #[serde(default)]
    pub warned: std::collections::BTreeSet<String>,
    /// Unauthorized GPU processes already reported (`PID:START`), while they run.
    #[serde(default)]
    pub unauthorized_seen: std::collections::BTreeSet<String>,
    /// Events by kind since the state was first written (the metrics' counters).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub reason: PauseReason,
    pub engine: Engine,
    pub since: u64,
}

impl WatchState {
    /// The state at `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<WatchState, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is unreadable ({e}): remove it; the watchdog then finds paused containers by their cgroups", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WatchState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), crate::base::fsutil::AtomicWriteError> {
        crate::base::fsutil::write_atomic_creating_folder(path, crate::base::json::pretty(self).as_bytes(), 0o644)
    }

    /// Whether a watchdog looked within three of its intervals of `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        self.written_at > 0 && now.saturating_sub(self.written_at) <= 3 * self.interval_seconds.max(1)
    }
}

/// Why the watchdog paused a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PauseReason {
    /// It used more GPU memory than its share.
    OverShare { used_bytes: u64, reserved_bytes: u64 },
    /// A game runs on its GPU (`name` says which: `dota2 (Steam app 570, pid 4242)`).
    Game { name: String, pid: i32 },
}

/// How events and `status` name a game: its label (which names the pid), or
/// a name from an older state file with its pid added.
pub fn game_label(name: &str, pid: i32) -> String {
    if name.contains(&format!("pid {pid})")) { name.to_string() } else { format!("{name} (pid {pid})") }
}

/// A GPU process that belongs to no admitted container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unknown {
    pub gpu: String,
    pub pid: i32,
    pub name: String,
    pub used_bytes: u64,
    /// It is a game (see `gpuwarden::admin::watch::games`); `name` then says which, with its Steam app.
    pub game: bool,
    /// It is the desktop's (the Steam client, a compositor, a browser): never a game.
    #[serde(default)]
    pub desktop: bool,
}

impl Unknown {
    /// Neither in an admitted container, nor a game, nor the desktop's: gpuwarden did not admit it.
    pub fn unauthorized(&self) -> bool {
        !self.game && !self.desktop
    }
}

/// The engine a container runs under, as the watchdog pauses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Podman,
    Docker,
    /// Neither: only the cgroup's freezer and signals.
    Other,
}

/// Whether the watchdog holds containers to their share now, in one line.
pub fn enforcement(state: &WatchState, now: u64) -> String {
    if !state.is_fresh(now) {
        return "not running (no recent look): enforcement is at start only (admission); start `gpuwarden watch` (gpuwarden-watch.service)".into();
    }
    if !state.live {
        return format!("running (pid {}), but it cannot see the GPUs' processes (no NVML): enforcement is at start only", state.pid);
    }
    format!("running (pid {}), looked {}s ago, every {}s", state.pid, now.saturating_sub(state.written_at), state.interval_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_round_trip_and_says_when_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.json");
        assert_eq!(WatchState::load(&path).unwrap(), WatchState::default());
        let mut s = WatchState { written_at: 100, interval_seconds: 2, pid: 7, live: true, ..Default::default() };
        s.paused.insert("c1".into(), Paused { reason: PauseReason::Game { name: "steam".into(), pid: 9 }, engine: Engine::Podman, since: 99 });
        s.save(&path).unwrap();
        let back = WatchState::load(&path).unwrap();
        assert_eq!(back, s);
        assert!(back.is_fresh(106) && !back.is_fresh(107));
        std::fs::write(&path, "{").unwrap();
        assert!(WatchState::load(&path).unwrap_err().contains("is unreadable"));
    }
}
