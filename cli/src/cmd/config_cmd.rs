//! `gpuwarden config show`: the effective configuration, where it came from,
//! and whether it fits the GPUs this host has.

use std::path::Path;
use std::process::ExitCode;

use super::Result;
use gpuwarden::config::Config;

pub fn show(named: Option<&Path>) -> Result<ExitCode> {
    let (config, origin) = Config::locate(named)?;
    println!("# {origin}");
    print!("{}", config.to_toml());
    // The reserves are checked against the GPUs when they can be known.
    match super::inventory_cmd::for_status(None, None, &config) {
        Ok(inventory) => {
            let problems = gpuwarden::admission::budget::reserve_problems(&inventory, &config.budget);
            for p in &problems {
                eprintln!("gpuwarden: {p}");
            }
            if !problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Err(e) => tracing::info!("reserves not checked against the GPUs: {}", gpuwarden::base::text::one_line(e.as_ref())),
    }
    Ok(ExitCode::SUCCESS)
}
