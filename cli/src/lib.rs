//! The admin CLI `gpuwarden` as a library: its argument definitions
//! ([`cmd::Cli`]) and what each command runs, over the shared `gpuwarden`
//! library. `main.rs` parses and calls it; the man pages and shell
//! completions the package ships are made from [`command`] (tools/docgen).

// The doc comments of the arguments are the `--help` users read, and name the
// configuration's tables as config.toml writes them (`[watch] interval_seconds`),
// not Rust items.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod cmd;
mod spec_check;

/// The `gpuwarden` command, as clap defines it.
pub fn command() -> clap::Command {
    <cmd::Cli as clap::CommandFactory>::command()
}
