//! `gpuwarden-device-plugin`: see the library's documentation and `--help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gpuwarden_device_plugin::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    gpuwarden::base::logging::init(args.verbose.max(1));
    let run = || -> Result<(), String> {
        let config = gpuwarden::config::Config::load_from(args.config.as_deref()).map_err(|e| e.to_string())?;
        let node = gpuwarden_device_plugin::node::Node::new(config, args.inventory.clone())?;
        let settings = gpuwarden_device_plugin::serve::Settings { dir: args.kubelet_dir.clone(), kind: args.cdi_kind.clone(), poll: Duration::from_millis(args.poll_ms), profiles: args.profiles.clone() };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start: {e}"))?;
        rt.block_on(gpuwarden_device_plugin::serve::run(node, settings))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuwarden-device-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}
