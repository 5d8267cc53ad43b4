//! The command line: argument definitions and dispatch. Each command lives
//! in its own module and only calls the library.

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

use clap::{Args, Parser, Subcommand};


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
    /// the watchdog; the GPU device nodes' mode and group (who can reach the GPU around
    /// gpuwarden); and, for the user running it (or behind sudo), rootless readiness.
    /// Exits 1 when something blocks GPU containers.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON for scripts: {"ready": bool, "findings": [{check, level, text, fix}]}.
    #[arg(long)]
    pub json: bool,
    /// Check the files of the host installed under this folder (as `install --root`).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// GPU inventory instead of NVML (a stand-in, said as such; see `gpuwarden inventory --help`).
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub inventory: Option<String>,
    /// Spec folders to check (repeatable; default: /etc/cdi and /var/run/cdi under --root).
    #[arg(long = "cdi-dir", value_name = "DIR")]
    pub cdi_dirs: Vec<PathBuf>,
    /// The root that holds dev/ with the GPU nodes (default: [cdi] dev_root, else /).
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Podman's pieces (default: if /usr/bin/podman is on the target).
    #[arg(long)]
    pub podman: bool,
    /// Docker's pieces (default: if dockerd is on the target).
    #[arg(long)]
    pub docker: bool,
    /// Install under this folder instead of / (for tests and packagers).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where the binaries go, on the target.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    pub bin_dir: PathBuf,
    /// Whether the Docker engine has CDI (25+): then daemon.json also gets features.cdi
    /// and the runtime as default-runtime. auto asks `dockerd --version` (no, under --root).
    #[arg(long, value_name = "auto|yes|no", default_value = "auto", value_parser = ["auto", "yes", "no"])]
    pub docker_cdi: String,
    /// Print each change instead of making it.
    #[arg(long)]
    pub dry_run: bool,
    /// Only what a package cannot ship as files: the runtime in daemon.json and the CDI
    /// spec (the Debian package's postinst runs `install --package --bin-dir /usr/bin`).
    #[arg(long)]
    pub package: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The folder `install --root` installed under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print each change instead of making it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where the GPUs are learnt from.
#[derive(Debug, Clone, Args)]
pub struct GpuSource {
    /// GPU inventory instead of NVML: a JSON file as `inventory --json` prints, `-` for stdin,
    /// or `builtin:rtx4070` (one RTX 4070, 12 GiB, driver 535.261.03) for machines without a GPU.
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub inventory: Option<String>,
    /// Folder holding the driver's files (libraries, binaries) (default: [cdi] driver_root
    /// in the configuration, else /).
    #[arg(long, value_name = "DIR")]
    pub driver_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub source: GpuSource,
    /// Print JSON (the inventory file format) instead of a table.
    #[arg(long)]
    pub json: bool,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CdiCommand {
    /// Discover GPUs, device nodes, driver libraries and binaries, and write a CDI spec.
    ///
    /// Devices: each GPU by index and UUID, `all`, and one per profile (`comfyui`,
    /// `blender`; `gpuN-PROFILE` per GPU on hosts with several). Where another spec of the
    /// kind defines the index, UUID or `all` devices, or NVIDIA's toolkit (nvidia-ctk) is
    /// installed and writes them, they are left to it: no name is defined twice, whichever
    /// spec is written last. Libraries are mounted
    /// read-only under their file name and SONAME, so `--read-only` containers work.
    /// The spec has the lowest cdiVersion its content needs (0.5.0, which Podman 4.3 reads).
    Generate(GenerateArgs),
    /// List every CDI device on this host and the spec that defines it.
    List(ListArgs),
    /// Check CDI specs: schema, names, versions, and host paths that do not exist.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub source: GpuSource,
    /// Where to write the spec; `-` prints it.
    #[arg(long, short, value_name = "PATH|-", default_value = "/etc/cdi/gpuwarden.yaml")]
    pub output: PathBuf,
    /// Spec format; by default JSON for a .json output, YAML otherwise.
    #[arg(long, value_enum)]
    pub format: Option<gpuwarden::cdi::Format>,
    /// The root that holds dev/ (device nodes are looked for in DIR/dev), as in
    /// nvidia-ctk: `/` is the host (default: [cdi] dev_root in the configuration, else /).
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,
    /// CDI vendor of the devices.
    #[arg(long, default_value = "nvidia.com")]
    pub vendor: String,
    /// CDI class of the devices. Beside NVIDIA's spec the default works: gpuwarden leaves it
    /// the names it defines (all, indexes, UUIDs) and writes its profile devices.
    #[arg(long, default_value = "gpu")]
    pub class: String,
    /// Spec folders read for the devices other specs define (repeatable; the environment
    /// variable takes a colon-separated list, as gpuwarden-runtime reads it).
    #[arg(long = "cdi-dir", value_name = "DIR", env = "GPUWARDEN_CDI_SPEC_DIRS", value_delimiter = ':', default_values = gpuwarden::cdi::DEFAULT_SPEC_DIRS)]
    pub cdi_dirs: Vec<PathBuf>,
    /// The hook binary the runtime runs (default: gpuwarden-hook next to this binary).
    #[arg(long, value_name = "PATH")]
    pub hook_path: Option<PathBuf>,
    /// The launcher mounted into profile containers, statically linked (default:
    /// gpuwarden-launch next to this binary).
    #[arg(long, value_name = "PATH")]
    pub launcher_path: Option<PathBuf>,
    /// Where to write the GPUs NVML found, for the hooks (which never load NVML).
    #[arg(long, value_name = "FILE", default_value = gpuwarden::hook::INVENTORY_SNAPSHOT)]
    pub inventory_file: PathBuf,
    /// State folder the admission hooks use (default: the configuration's, /run/gpuwarden).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Leave the admission hooks out of the profile devices.
    #[arg(long)]
    pub no_hooks: bool,
    /// Do not make the MPS folders (install does not; the MPS unit makes them).
    #[arg(long, hide = true)]
    pub no_mps_folders: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Spec folders to list (repeatable; or colon-separated in the environment variable).
    #[arg(long = "cdi-dir", value_name = "DIR", env = "GPUWARDEN_CDI_SPEC_DIRS", value_delimiter = ':', default_values = gpuwarden::cdi::DEFAULT_SPEC_DIRS)]
    pub cdi_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Spec files to check; by default every spec in the spec folders.
    pub files: Vec<PathBuf>,
    /// Spec folders checked when no file is named (repeatable).
    #[arg(long = "cdi-dir", value_name = "DIR", env = "GPUWARDEN_CDI_SPEC_DIRS", value_delimiter = ':', default_values = gpuwarden::cdi::DEFAULT_SPEC_DIRS)]
    pub cdi_dirs: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults with the file applied) as TOML.
    Show,
}

/// Where `status` finds the GPUs and the ledger (the hooks take the same options).
#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    /// GPU inventory instead of NVML (see `gpuwarden inventory --help`); overrides the configuration's.
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub inventory: Option<String>,
    /// State folder holding the ledger (default: the configuration's, /run/gpuwarden).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Folder holding the driver (NVML is loaded from there).
    #[arg(long, value_name = "DIR")]
    pub driver_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Move an unreadable ledger aside (kept as ledger.json.bad-SECONDS) and start an empty one.
    ///
    /// A readable, empty ledger is left as it is; one that holds reservations is
    /// reset only with --force (kept as ledger.json.discarded-SECONDS).
    Reset {
        /// State folder holding the ledger (default: the configuration's, /run/gpuwarden).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Also reset a readable ledger that still holds reservations (they are kept in the copy).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// End a container's wait: its `podman run` (or `docker run`) is refused at once.
    ///
    /// Podman holds a container's lock while its hooks run, so `podman rm -f` and
    /// Ctrl-C on `podman run` wait until the wait ends; this ends it. Root cancels
    /// any; a user (rootless Podman) cancels their own, through the broker.
    Cancel {
        /// The container: its id (12 characters or more) or its name.
        container: String,
        /// State folder holding the ledger (default: the configuration's, /run/gpuwarden).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MpsCommand {
    /// Start the control daemon and set its defaults to the largest profile on every GPU.
    ///
    /// The daemon gets gpuwarden's pipe, log and shm folders ([mps] in config.toml,
    /// under /run/gpuwarden/mps by default, root-owned) and runs with the shm folder
    /// as its /dev/shm, which profile containers share with it. Its defaults bind
    /// every MPS client whatever the client's own environment says; they are read
    /// back, and a daemon that does not hold them is stopped again. Running it
    /// again on a live daemon sets and checks the defaults again.
    Start(MpsArgs),
    /// Ask the daemon to quit, and wait until it is gone.
    ///
    /// When config.toml no longer parses, the daemon `mps start` started from that file
    /// is found by the mark it left in the daemon's environment, and stopped.
    Stop,
    /// The daemon, its defaults, its servers (with their UID) and their clients.
    Status(MpsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// GPU inventory instead of NVML, with `processes` per GPU (a stand-in for NVML).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<String>,
    /// Folder holding the driver (NVML is loaded from there).
    #[arg(long, value_name = "DIR")]
    pub driver_root: Option<PathBuf>,
    /// Seconds between two looks.
    #[arg(long, value_name = "SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Write once and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// GPU inventory with `processes` per GPU instead of NVML (a stand-in for NVML),
    /// read again at every look.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<String>,
    /// Folder holding the driver (NVML is loaded from there).
    #[arg(long, value_name = "DIR")]
    pub driver_root: Option<PathBuf>,
    /// Seconds between two looks (default: [watch] interval_seconds).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: Option<u64>,
    /// Look once, act, and exit.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: PORT alone means 127.0.0.1:PORT
    /// (loopback); name another address to serve beyond this host.
    #[arg(long, value_name = "ADDR|PORT")]
    pub metrics: Option<String>,
}

/// Where `mps` learns how many GPUs there are (the defaults are set per GPU).
#[derive(Debug, Clone, Args)]
pub struct MpsArgs {
    /// GPU inventory instead of NVML (see `gpuwarden inventory --help`).
    #[arg(long, value_name = "FILE|builtin:NAME")]
    pub inventory: Option<String>,
    /// Folder holding the driver (NVML is loaded from there).
    #[arg(long, value_name = "DIR")]
    pub driver_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PodmanCommand {
    /// Install the hooks.d file that runs `gpuwarden-hook precreate` for every container.
    InstallHook {
        /// Podman's hooks folder.
        #[arg(long, value_name = "DIR", default_value = "/usr/share/containers/oci/hooks.d")]
        hooks_dir: PathBuf,
        /// The hook binary Podman runs (default: gpuwarden-hook next to this binary).
        #[arg(long = "hook-path", visible_alias = "binary", value_name = "PATH")]
        hook_path: Option<PathBuf>,
        /// The launcher the hook mounts into profile containers that lack it (default:
        /// gpuwarden-launch next to this binary).
        #[arg(long, value_name = "PATH")]
        launcher_path: Option<PathBuf>,
        /// Print the file instead of installing it.
        #[arg(long)]
        print: bool,
    },
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
        Command::Live(args) => live_cmd::run(&args, &settings()?),
        Command::Watch(args) => watch_cmd::run(&args, &settings()?),
        Command::Mps(MpsCommand::Start(args)) => mps_cmd::start(&args, &settings()?, cli.config.as_deref()),
        Command::Mps(MpsCommand::Stop) => mps_cmd::stop(settings(), cli.config.as_deref()),
        Command::Mps(MpsCommand::Status(args)) => mps_cmd::status(&args, &settings()?),
        Command::Install(args) => install_cmd::install(&args),
        Command::Uninstall(args) => install_cmd::uninstall(&args),
        Command::Doctor(args) => doctor_cmd::run(&args, &settings()?),
        Command::Podman(PodmanCommand::InstallHook { hooks_dir, hook_path, launcher_path, print }) => {
            let launcher = companion(launcher_path.as_deref(), "gpuwarden-launch", "--launcher-path")?;
            podman_cmd::install_hook(&hooks_dir, hook_path, &launcher, print, cli.config.as_deref())
        }
    }
}

use gpuwarden::clock::unix_seconds as now;

use gpuwarden::fsutil::absolute;

/// The hook binary: `--hook-path`, else `gpuwarden-hook` next to this binary
/// (where `scripts/build.sh` and the package put it).
fn hook_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    companion(given, gpuwarden::hook::HOOK_BINARY, "--hook-path")
}

/// `given`, else the binary `name` next to this one.
fn companion(given: Option<&std::path::Path>, name: &str, flag: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(absolute(p));
    }
    let me = std::env::current_exe()?.canonicalize()?;
    let found = me.with_file_name(name);
    if !found.is_file() {
        return Err(format!("{} not found next to {}: install it there, or pass {flag}", found.display(), me.display()).into());
    }
    Ok(found)
}
