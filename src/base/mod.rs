//! The base: what every layer above may use and which uses nothing of
//! gpuwarden's above it. Time, text, JSON text of its own values, sizes, device names, atomic files and
//! locks, users, and the process table, each behind a narrow seam.

pub mod clock;
pub mod fsutil;
pub mod json;
pub mod logging;
pub mod names;
pub mod proc;
pub mod size;
pub mod text;
pub mod users;
