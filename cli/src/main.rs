//! `gpuwarden`, the admin command line: parse arguments, set up logging, run,
//! and turn an error into one line on stderr.

mod cmd;
mod spec_check;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    gpuwarden::logging::init(cli.verbose);
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpuwarden: {}", gpuwarden::text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
