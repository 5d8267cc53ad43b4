//! The command line: the commands and dispatch (each command's arguments
//! are in `args`). Each command lives in its own module and only calls the library.

mod args;
mod cdi_cmd;
mod config_cmd;
mod doctor_cmd;
mod install_cmd;
mod inventory_cmd;
mod live_cmd;
mod mps_cmd;
mod podman_cmd;
mod status_cmd;
mod watch_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::*;


type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Share NVIDIA GPUs between containers safely.
///
/// Set up once: `gpuwarden install` (or the Debian package) puts the binaries, the
/// configuration, the systemd units, the CDI spec, Podman's precreate hook and Docker's
/// runtime in place; the units run the MPS daemon (`gpuwarden mps start`), rewrite the
/// spec when the driver changes (`gpuwarden cdi generate`) and run the watchdog
/// (`gpuwarden watch`). `gpuwarden doctor` says what is still missing.
///
/// Then `podman run --device nvidia.com/gpu=comfyui ...` gets the GPU, its driver, its
/// profile (MPS limits, no capabilities, a read-only root, Landlock) and a share of the
/// GPU's budget, or a refusal that names the numbers; `gpuwarden status` shows who holds what.
#[derive(Debug, Parser)]
#[command(name = "gpuwarden", version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (budget, profiles). A missing default file means built-in defaults.
    #[arg(long, global = true, value_name = "FILE", env = "GPUWARDEN_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); GPUWARDEN_LOG takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the GPUs (index, UUID, memory, minor, PCI bus id, compute capability, driver).
    Inventory(InventoryArgs),
    /// Generate, list and validate CDI specs.
    #[command(subcommand)]
    Cdi(CdiCommand),
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Budget used and left per GPU, and who holds it.
    Status(StatusArgs),
    /// The reservation ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The render queue: containers waiting for their share (`gpuwarden status` lists it).
    ///
    /// A profile container that does not fit waits when it asks to
    /// (`--annotation gpuwarden.io/wait=2m`, `-e GPUWARDEN_WAIT=2m`, or its profile's
    /// `wait`), and is admitted in [watch] priority order (blender before comfyui),
    /// first come first served within a profile. Podman gives a container's hooks
    /// 240 s, so waits under Podman are cut to 230 s.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run NVIDIA's MPS control daemon with gpuwarden's folders and ceiling.
    #[command(subcommand)]
    Mps(MpsCommand),
    /// Keep the live view of the GPUs (who uses how much memory) for admission.
    ///
    /// Asks NVML what runs on each GPU and writes it to [live] file in config.toml
    /// (/run/gpuwarden/live.json) every --interval seconds, atomically. The hooks never
    /// load NVML: admission reads this file while it is fresh ([live] max_age_seconds,
    /// 10), and counts memory used outside gpuwarden's reservations beyond the reserves.
    /// Without it the check is ledger-only, and `status` says so.
    Live(LiveArgs),
    /// Hold every container to its share on the GPU, for as long as it runs.
    ///
    /// MPS limits are cooperative: any client can raise the daemon's defaults, and any
    /// process can drop its own CUDA_MPS_* env. Every interval ([watch] interval_seconds, 2)
    /// the watchdog reads the daemon's defaults back and restores the ceiling; reads each
    /// GPU process's memory (NVML, or --inventory FILE standing in for it), finds its
    /// container by its cgroup, and runs the profile's action ([watch] over_share: warn,
    /// pause, kill) on a container over its share ([watch] tolerance_percent, 10); pauses
    /// the containers of [watch] yield_to_games while a game runs on their GPU (Steam's, by
    /// its reaper, SteamAppId or scope; gamemoderun's; [watch] games by name; never
    /// [watch] desktop, such as the Steam client), and resumes them after; reports each GPU
    /// process gpuwarden did not admit, once ([watch] unauthorized = warn, or kill). Pauses go through the engine
    /// (`podman pause`, `docker pause`), so `podman ps` shows them. What it paused and why
    /// survives its own restart ([watch] state_file); what it did is in [watch] events_file
    /// and `gpuwarden status`.
    Watch(WatchArgs),
    /// Set Podman up for gpuwarden.
    #[command(subcommand)]
    Podman(PodmanCommand),
    /// Put every piece in place: the binaries, /etc/gpuwarden/config.toml (never
    /// overwritten), the systemd units (gpuwarden-mps.service: the MPS daemon;
    /// gpuwarden-cdi-refresh.service and gpuwarden-cdi-refresh.path: the CDI spec at boot and
    /// when the driver changes; gpuwarden-watch.service: the watchdog; gpuwarden-live.service:
    /// the live view of GPU memory for admission; gpuwarden-broker.socket and
    /// gpuwarden-broker.service: admission for rootless containers), the CDI spec,
    /// and for Podman the hooks.d file, for Docker the runtime in /etc/docker/daemon.json
    /// (merged: every other key kept, the old file backed up). A record of what was put
    /// where lets `uninstall` take exactly that away. Nothing changes if any piece is
    /// refused. It ends with what `gpuwarden doctor` finds still missing.
    Install(InstallArgs),
    /// Take away what `install` put in place, leaving what was there before (daemon.json
    /// restored byte for byte, or, if edited since, only gpuwarden's keys taken out).
    Uninstall(UninstallArgs),
    /// Check this host for what GPU containers need, and say what to run for each problem.
    ///
    /// The driver and NVML; the MPS package, daemon and defaults; gpuwarden's CDI spec
    /// (present, made for the loaded driver, no host path gone) and specs that define a
    /// device twice; Podman's version and hooks.d file; Docker's runtime and CDI setting;
    /// whether containerd's CRI applies CDI devices (a failure where a kubelet uses it:
    /// with CDI off, containerd drops a pod's devices silently); the watchdog; the GPU device nodes' mode and group (who can reach the GPU around
    /// gpuwarden); and, for the user running it (or behind sudo), rootless readiness.
    /// Exits 1 when something blocks GPU containers.
    Doctor(DoctorArgs),
    /// Print a shell's completion script for gpuwarden.
    ///
    /// The Debian package installs them for bash, zsh and fish. From source:
    ///   gpuwarden completions bash > /usr/share/bash-completion/completions/gpuwarden
    ///   gpuwarden completions zsh > /usr/local/share/zsh/site-functions/_gpuwarden
    ///   gpuwarden completions fish > /usr/share/fish/vendor_completions.d/gpuwarden.fish
    Completions {
        /// bash, zsh or fish.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The shells completions are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes `shell`'s completion script for the `gpuwarden` command to `out`.
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "gpuwarden", out);
}

fn load_config(cli_config: &Option<PathBuf>) -> std::result::Result<gpuwarden::config::Config, gpuwarden::config::ConfigError> {
    gpuwarden::config::Config::load_from(cli_config.as_deref())
}

/// Runs the parsed command. Each command reads the configuration only if it
/// needs it.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let settings = || load_config(&cli.config);
    match cli.command {
        Command::Inventory(args) => inventory_cmd::run(&args, &settings()?),
        Command::Cdi(CdiCommand::Generate(args)) => cdi_cmd::generate(&args, &settings()?, cli.config.as_deref()),
        Command::Cdi(CdiCommand::List(args)) => cdi_cmd::list(&args),
        Command::Cdi(CdiCommand::Validate(args)) => cdi_cmd::validate(&args),
        Command::Config(ConfigCommand::Show) => config_cmd::show(cli.config.as_deref()),
        Command::Status(args) => status_cmd::status(&args, &settings()?),
        Command::Ledger(LedgerCommand::Reset { state_dir, force }) => status_cmd::ledger_reset(state_dir, force, &settings()?),
        Command::Queue(QueueCommand::Cancel { container, state_dir }) => status_cmd::queue_cancel(&container, state_dir, &settings()?),
        Command::Live(args) => live_cmd::run(&args, &settings()?, cli.config.as_deref()),
        Command::Watch(args) => watch_cmd::run(&args, &settings()?, cli.config.as_deref()),
        Command::Mps(MpsCommand::Start(args)) => mps_cmd::start(&args, &settings()?, cli.config.as_deref()),
        Command::Mps(MpsCommand::Stop) => mps_cmd::stop(settings(), cli.config.as_deref()),
        Command::Mps(MpsCommand::Status(args)) => mps_cmd::status(&args, &settings()?),
        Command::Install(args) => install_cmd::install(&args),
        Command::Uninstall(args) => install_cmd::uninstall(&args),
        Command::Doctor(args) => doctor_cmd::run(&args, &settings()?),
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Podman(PodmanCommand::InstallHook { hooks_dir, hook_path, launcher_path, print }) => {
            let launcher = companion(launcher_path.as_deref(), "gpuwarden-launch", "--launcher-path")?;
            podman_cmd::install_hook(&hooks_dir, hook_path, &launcher, print, cli.config.as_deref())
        }
    }
}

use gpuwarden::base::clock::unix_seconds as now;

use gpuwarden::base::fsutil::absolute;

/// The hook binary: `--hook-path`, else `gpuwarden-hook` next to this binary
/// (where `scripts/build.sh` and the package put it).
fn hook_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    companion(given, gpuwarden::hookcall::HOOK_BINARY, "--hook-path")
}

/// `given`, else the binary `name` next to this one.
fn companion(given: Option<&std::path::Path>, name: &str, flag: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(absolute(p));
    }
    gpuwarden::hookcall::sibling(name).map_err(|e| format!("{e}: install it there, or pass {flag}").into())
}
