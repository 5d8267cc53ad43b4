//! `gpuwarden doctor`: what stands between this host and a working GPU
//! container, each problem with what to run. The checks are pure functions
//! of [`Facts`], which the admin CLI gathers (files, commands, NVML), so
//! every verdict is tested without a GPU or root.

mod checks;
mod containerd;
mod facts;
mod finding;
mod version;

pub use checks::check;
pub use containerd::ContainerdFacts;
pub use version::version_at_least;
pub use facts::{CdiFacts, DockerFacts, Engine, Facts, Gpus, HookFile, MpsFacts, Node, OurSpec, UserFacts, WatchFacts};
pub use finding::{blocks, render_json, render_text, Finding, Level};
