//! `gpuwarden-hook`: the binary Podman and runc run at every start of a GPU
//! container. It parses its arguments, runs one stage through the library,
//! and turns an error into the one line the runtime shows the user.

use std::process::ExitCode;

use clap::Parser;
use gpuwarden_hook::{cli::Cli, stage};

fn main() -> ExitCode {
    let cli = Cli::parse();
    gpuwarden::base::logging::init(cli.verbose);
    match stage::run(cli.stage) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuwarden: {}", gpuwarden::base::text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
