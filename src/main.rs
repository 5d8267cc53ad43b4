//! The `gpuwarden` binary: parse arguments, set up logging, run, and turn an
//! error into one line on stderr.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = gpuwarden::cli::Cli::parse();
    gpuwarden::cli::init_logging(cli.verbose);
    match gpuwarden::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpuwarden: {}", gpuwarden::text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
