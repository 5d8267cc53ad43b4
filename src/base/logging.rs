//! Logging for every gpuwarden binary: `tracing` to stderr only, since stdout
//! belongs to the hook stages that print configs.

/// `verbose` 0 logs warnings, 1 info, 2 or more debug; `GPUWARDEN_LOG` takes a
/// tracing filter instead.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUWARDEN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}
