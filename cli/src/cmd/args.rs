//! The arguments of each command, as `--help` shows them (the commands' own
//! modules run them).

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    #[arg(long, short, value_name = "PATH|-", default_value = gpuwarden::cdi::DEFAULT_SPEC)]
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
    #[arg(long, value_name = "FILE", default_value = gpuwarden::hookcall::INVENTORY_SNAPSHOT)]
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
