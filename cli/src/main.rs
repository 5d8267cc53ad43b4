//! `gpuwarden`, the admin command line: parse arguments, set up logging, run,
//! and turn an error into one line on stderr. The commands are the
//! `gpuwarden_cli` library's.

use gpuwarden_cli::cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `gpuwarden status | head` ends quietly, as other command-line tools do,
    // instead of failing on a closed pipe.
    // SAFETY: set before any other thread exists; SIG_DFL installs no handler.
    #[allow(unsafe_code)]
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
    let cli = cmd::Cli::parse();
    gpuwarden::base::logging::init(cli.verbose);
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpuwarden: {}", gpuwarden::base::text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
