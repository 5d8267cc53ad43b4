//! NVIDIA's Multi-Process Service, as gpuwarden uses it: the client
//! environment that limits one container ([`env`]), the control daemon that
//! gpuwarden runs and whose defaults bind every client ([`control`],
//! [`ceiling`]), and the cheap look at that daemon the admission hook takes
//! ([`probe`]).
//!
//! A client's own `CUDA_MPS_*` variables can be dropped by the process; the
//! daemon's defaults cannot (by the client alone), so they are set to the
//! ceiling the profiles allow and read back.

pub mod access;
pub mod admission;
pub mod ceiling;
pub mod control;
pub mod daemon;
pub mod guard;
mod env;
pub mod probe;

pub use ceiling::Ceiling;
pub use control::{Control, ControlBinary, MpsError};
pub use env::{parse_pinned_limits, pinned_limit_value, PINNED_ENV, PIPE_ENV, THREADS_ENV};
pub use probe::{daemon, Daemon, ProbeError};
