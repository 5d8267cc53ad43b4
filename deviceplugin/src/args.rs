//! The command line, in the library so that the package's man page is made
//! from the same definition (tools/docgen).

use std::path::PathBuf;

use clap::Parser;

/// Offers gpuwarden's profiles to Kubernetes as resources counted from this
/// node's GPU budget.
///
/// Each profile of config.toml becomes a resource (`gpuwarden.io/comfyui`)
/// with slots per GPU: as many as the profile's share fits on the empty GPU.
/// A slot is Healthy while the node's ledger leaves room for it, so the
/// scheduler sees what fits now, Podman's and Docker's containers included.
/// A pod asks `resources.limits: {gpuwarden.io/comfyui: 1}`; the kubelet gets
/// the profile's CDI device (`nvidia.com/gpu=comfyui`) for it, and
/// gpuwarden's admission on the node decides, as for Podman: a pod placed on
/// counts already stale is refused there, with the numbers, and retried.
///
/// The node needs gpuwarden installed (its CDI spec, the MPS daemon, the
/// watchdog), and containerd 1.7 with `enable_cdi = true` (2.0: on by
/// default); `gpuwarden doctor` checks it.
#[derive(Parser)]
#[command(name = "gpuwarden-device-plugin", version)]
pub struct Args {
    /// gpuwarden's config.toml (profiles, budget, state folder).
    #[arg(long, env = "GPUWARDEN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The GPUs: an inventory file or builtin:NAME (default: config.toml's
    /// `inventory`, else the snapshot `gpuwarden cdi generate` writes).
    #[arg(long, value_name = "SOURCE")]
    pub inventory: Option<String>,
    /// The kubelet's device plugin folder, where kubelet.sock is.
    #[arg(long, value_name = "DIR", default_value = crate::DEFAULT_DIR)]
    pub kubelet_dir: PathBuf,
    /// The CDI kind of gpuwarden's spec (`gpuwarden cdi generate --class`).
    #[arg(long, value_name = "KIND", default_value = "nvidia.com/gpu")]
    pub cdi_kind: String,
    /// How often the ledger is looked at, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Offer only this profile (repeat for more; default: every profile).
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// More logging (-v info, -vv debug), on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}


/// The command, for the man page.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}
