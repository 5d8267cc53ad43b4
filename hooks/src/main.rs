//! `gpuwarden-hook`: the binary Podman and runc run at every start of a GPU
//! container. It parses its arguments, runs one stage through the library,
//! and turns an error into the one line the runtime shows the user.

mod stage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// gpuwarden's OCI hooks. Run by the container runtime, not by hand: each
/// stage reads what the runtime writes on stdin. `gpuwarden cdi generate`
/// and `gpuwarden podman install-hook` set them up.
#[derive(Debug, Parser)]
#[command(name = "gpuwarden-hook", version, max_term_width = 100)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug); GPUWARDEN_LOG takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Debug, Subcommand)]
enum Stage {
    /// Podman's precreate stage: config.json on stdin, the config to use on stdout
    /// (the profile applied: MPS limits, capabilities, read-only root, no-new-privileges).
    Precreate(Options),
    /// createRuntime/prestart: OCI state on stdin; exit 0 admits, else one line says why not.
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
struct Options {
    /// Configuration file (budget, profiles). A missing default file means built-in defaults.
    #[arg(long, value_name = "FILE", env = "GPUWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// The GPUs: the inventory file `gpuwarden cdi generate` writes, or builtin:NAME
    /// (default: the configuration's). The hooks never load NVML.
    #[arg(long, value_name = "FILE|builtin:NAME")]
    inventory: Option<String>,
    /// State folder holding the ledger (default: the configuration's, /run/gpuwarden).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// precreate: the launcher on the host, mounted into a profile container that lacks it.
    #[arg(long, value_name = "PATH")]
    launcher_path: Option<PathBuf>,
    /// admit, release: go through the admission broker even outside a user namespace
    /// (inside one, as under rootless Podman, they always do).
    #[arg(long)]
    via_broker: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gpuwarden::logging::init(cli.verbose);
    match stage::run(cli.stage) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuwarden: {}", gpuwarden::text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
