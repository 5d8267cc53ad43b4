//! `gpuwarden-hook`'s command line: the stages and the options every stage
//! takes. The binary parses it; the man page is made from it (tools/docgen).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// gpuwarden's OCI hooks. Run by the container runtime, not by hand: each
/// stage reads what the runtime writes on stdin. `gpuwarden cdi generate`
/// and `gpuwarden podman install-hook` set them up.
#[derive(Debug, Parser)]
#[command(name = "gpuwarden-hook", version, max_term_width = 100)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); GPUWARDEN_LOG takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub stage: Stage,
}

#[derive(Debug, Subcommand)]
pub enum Stage {
    /// Podman's precreate stage: config.json on stdin, the config to use on stdout
    /// (the profile applied: MPS limits, capabilities, read-only root, no-new-privileges).
    Precreate(Options),
    /// createRuntime/prestart: OCI state on stdin; exit 0 admits, else one line says why not.
    ///
    /// Under a runtime that drops a hook's output (crun), a refused container whose first
    /// process is gpuwarden's launcher is told through itself instead: the line goes into
    /// its /dev, and the launcher prints it and exits 77 before the workload starts.
    Admit(Options),
    /// poststop: OCI state on stdin; gives the container's share back.
    Release(Options),
    /// The admission broker (root): admits and releases for rootless containers, whose
    /// hooks cannot take the ledger's lock, on the socket [broker] socket names
    /// (/run/gpuwarden/broker.sock). Run by gpuwarden-broker.socket/.service, or in the
    /// foreground, binding the socket itself.
    Broker(Options),
}

/// Options every stage takes; precreate passes its own on to the admission
/// hooks it adds.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Configuration file (budget, profiles). A missing default file means built-in defaults.
    #[arg(long, value_name = "FILE", env = "GPUWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The GPUs: the inventory file `gpuwarden cdi generate` writes, or builtin:NAME
    /// (default: the configuration's). The hooks never load NVML.
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub inventory: Option<String>,
    /// State folder holding the ledger (default: the configuration's, /run/gpuwarden).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// precreate: the launcher on the host, mounted into a profile container that lacks it.
    #[arg(long, value_name = "PATH")]
    pub launcher_path: Option<PathBuf>,
    /// admit, release: go through the admission broker even outside a user namespace
    /// (inside one, as under rootless Podman, they always do).
    #[arg(long)]
    pub via_broker: bool,
}

/// The `gpuwarden-hook` command, as clap defines it.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
