//! The runtime side as a library: `gpuwarden-hook`'s command line
//! ([`cli`]) and its stages ([`stage`]), over the shared `gpuwarden` library.
//! The binaries in this package are thin: `main.rs` (the hooks and the
//! broker) and `runtime.rs` (Docker's runtime).

// The doc comments of the arguments are the `--help` users read, and name the
// configuration's tables as config.toml writes them (`[watch] interval_seconds`),
// not Rust items.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod cli;
pub mod stage;
