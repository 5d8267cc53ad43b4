//! What the watchdog publishes, below both it and admission: its state file
//! (a heartbeat, what it paused and why, the GPU processes of no admitted
//! container) and the events log (admission appends its refusals there too).
//! Admission, `status` and the metrics read them; none of this acts.

pub mod events;
pub mod state;

pub use state::{enforcement, game_label, Engine, PauseReason, Unknown, WatchState};
