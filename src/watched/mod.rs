//! What the watchdog publishes, below both it and admission: its state file
//! (a heartbeat, what it paused and why, the GPU processes of no admitted
//! container) and the events log (admission appends its refusals there too).
//! Admission, `status` and the metrics read them; none of this acts.

pub mod events;
pub mod state;

use serde::{Deserialize, Serialize};

use state::WatchState;

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
    /// It is a game (see [`games`]); `name` then says which, with its Steam app.
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

