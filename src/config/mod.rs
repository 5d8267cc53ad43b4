//! The configuration: `/etc/gpuwarden/config.toml` (or `--config FILE`) over
//! built-in defaults. It sets the per-GPU budget (thread ceiling, client cap,
//! named memory reserves), the workload profiles, the MPS pipe directory and
//! optionally which inventory the hooks use. A malformed file is refused with
//! its line and column; nothing is guessed.

mod profile;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use profile::{builtin_profiles, LandlockPaths, Port, Profile, Require};
use profile::RawProfile;
pub use values::{AbsPath, Capability, ClientCount, Percent, PinnedMemory, ProfileName, WaitTime, MPS_MAX_CLIENTS};

use crate::size::ByteSize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gpuwarden/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/run/gpuwarden";
/// gpuwarden's own MPS folders, root-owned under /run (not NVIDIA's default
/// /tmp/nvidia-mps, which any local user can create first).
pub const DEFAULT_MPS_PIPE_DIR: &str = "/run/gpuwarden/mps/pipe";
pub const DEFAULT_MPS_LOG_DIR: &str = "/run/gpuwarden/mps/log";
pub const DEFAULT_MPS_SHM_DIR: &str = "/run/gpuwarden/mps/shm";
pub const DEFAULT_MPS_CONTROL: &str = "nvidia-cuda-mps-control";

/// Where the effective configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// The default file does not exist: built-in defaults apply.
    Defaults(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "read from {}", p.display()),
            Origin::Defaults(p) => write!(f, "{} not found: built-in defaults", p.display()),
        }
    }
}

/// The effective configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Where hooks learn the GPUs (`builtin:NAME` or a file); NVML when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    pub state_dir: PathBuf,
    pub cdi: CdiConfig,
    pub mps: MpsConfig,
    pub live: LiveConfig,
    pub watch: WatchConfig,
    pub broker: BrokerConfig,
    pub budget: BudgetConfig,
    pub profiles: BTreeMap<ProfileName, Profile>,
}

/// What `gpuwarden watch` holds containers to, on the GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchConfig {
    pub interval_seconds: u64,
    /// How far over its pinned memory a container may go before its action runs.
    pub tolerance_percent: u32,
    /// What happens to a container over its share, by profile (`warn` where unnamed).
    pub over_share: BTreeMap<String, ShareAction>,
    /// Processes, by command name, that come before containers (games).
    pub games: Vec<String>,
    /// Command names never counted as games: the Steam client, display servers,
    /// compositors, browsers' GPU processes (`kwin_*` matches a prefix).
    pub desktop: Vec<String>,
    /// Profiles whose containers are paused while a game runs (and, when
    /// they wait for their share, also wait while one runs).
    pub yield_to_games: Vec<String>,
    /// The render queue's order: containers of profiles named first are
    /// admitted first; unnamed profiles come last; first come, first served
    /// within a profile.
    pub priority: Vec<String>,
    /// Its state (paused containers, a heartbeat) and its events (admission's
    /// refusals too): by default `watch.json` and `events.jsonl` in `state_dir`.
    pub state_file: PathBuf,
    pub events_file: PathBuf,
    /// What to do about a GPU process gpuwarden did not admit.
    pub unauthorized: UnauthorizedAction,
    /// Admission refuses profile containers while no watchdog looks at the GPUs.
    pub required: bool,
}

/// What the watchdog does to a container over its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareAction {
    Warn,
    Pause,
    Kill,
}

/// What the watchdog does about a GPU process gpuwarden did not admit (no
/// admitted container, no game, not the desktop's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnauthorizedAction {
    /// An event, once per process; the gauge counts it.
    #[default]
    Warn,
    /// The same, then SIGKILL (its container, through the engine, when it has one).
    Kill,
}

/// Where `cdi generate` finds the driver when no flag says (what the refresh
/// unit runs with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CdiConfig {
    /// The folder holding the driver's files (libraries, binaries): `/` is the host.
    pub driver_root: PathBuf,
    /// The folder holding `dev/`, as in nvidia-ctk: `/` is the host.
    pub dev_root: PathBuf,
}

/// The admission broker rootless containers are admitted through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerConfig {
    /// Its unix socket (mode 0666; who connects is asked of the kernel).
    pub socket: PathBuf,
}

/// The live view of the GPUs that `gpuwarden live` writes and admission reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveConfig {
    pub file: PathBuf,
    /// Older than this, the view is ignored and the check is ledger-only.
    pub max_age_seconds: u64,
}

/// The MPS control daemon gpuwarden runs, and whether MPS is required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MpsConfig {
    /// `false` turns MPS off: nothing limits a container on the GPU, and
    /// `status` and every admission say so.
    pub enabled: bool,
    /// The daemon's pipe directory (`CUDA_MPS_PIPE_DIRECTORY`), mounted into
    /// every profile container at the same path.
    pub pipe_directory: PathBuf,
    pub log_directory: PathBuf,
    /// The daemon's and its clients' `/dev/shm`: the daemon runs with this
    /// folder as its `/dev/shm`, and profile containers get it there.
    pub shm_directory: PathBuf,
    /// The control binary, a path or a name looked up in PATH.
    pub control: PathBuf,
}

/// The budget of each GPU; `gpu` overrides it per GPU (by index or UUID).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BudgetConfig {
    pub thread_ceiling: Percent,
    pub max_clients: ClientCount,
    pub reserves: BTreeMap<String, ByteSize>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gpu: BTreeMap<String, GpuBudget>,
    /// The most one user may hold across the GPUs (rootless containers); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_user: Option<crate::access::UserCap>,
}

/// A GPU's own budget, where it differs from the common one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuBudget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ceiling: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<ClientCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserves: Option<BTreeMap<String, ByteSize>>,
}

/// The budget that applies to one GPU, overrides resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveBudget {
    pub thread_ceiling: Percent,
    pub max_clients: ClientCount,
    pub reserves: BTreeMap<String, ByteSize>,
}

impl BudgetConfig {
    pub fn for_gpu(&self, index: u32, uuid: &str) -> EffectiveBudget {
        let o = self.gpu.get(uuid).or_else(|| self.gpu.get(&index.to_string()));
        EffectiveBudget {
            thread_ceiling: o.and_then(|o| o.thread_ceiling).unwrap_or(self.thread_ceiling),
            max_clients: o.and_then(|o| o.max_clients).unwrap_or(self.max_clients),
            reserves: o.and_then(|o| o.reserves.clone()).unwrap_or_else(|| self.reserves.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    inventory: Option<String>,
    state_dir: Option<AbsPath>,
    #[serde(default)]
    cdi: RawCdi,
    #[serde(default)]
    mps: RawMps,
    #[serde(default)]
    live: RawLive,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default)]
    profiles: BTreeMap<ProfileName, RawProfile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMps {
    enabled: Option<bool>,
    pipe_directory: Option<AbsPath>,
    log_directory: Option<AbsPath>,
    shm_directory: Option<AbsPath>,
    control: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    interval_seconds: Option<u64>,
    tolerance_percent: Option<u32>,
    over_share: Option<BTreeMap<String, ShareAction>>,
    games: Option<Vec<String>>,
    desktop: Option<Vec<String>>,
    yield_to_games: Option<Vec<String>>,
    priority: Option<Vec<String>>,
    unauthorized: Option<UnauthorizedAction>,
    state_file: Option<AbsPath>,
    events_file: Option<AbsPath>,
    required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCdi {
    driver_root: Option<AbsPath>,
    dev_root: Option<AbsPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    socket: Option<AbsPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLive {
    file: Option<AbsPath>,
    max_age_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    thread_ceiling: Option<Percent>,
    max_clients: Option<ClientCount>,
    reserves: Option<BTreeMap<String, ByteSize>>,
    #[serde(default)]
    gpu: BTreeMap<String, GpuBudget>,
    per_user: Option<crate::access::UserCap>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}{}", path.display(), if source.kind() == std::io::ErrorKind::NotFound { " (leave --config and GPUWARDEN_CONFIG out to use /etc/gpuwarden/config.toml, or the built-in defaults where it does not exist: `gpuwarden config show` prints them)" } else { "" })]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {}:{line}:{column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("config {}: profiles.{profile}: {field} is required for a profile that is not built in", path.display())]
    MissingField { path: PathBuf, profile: String, field: &'static str },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inventory: None,
            state_dir: DEFAULT_STATE_DIR.into(),
            cdi: CdiConfig { driver_root: "/".into(), dev_root: "/".into() },
            mps: MpsConfig {
                enabled: true,
                pipe_directory: DEFAULT_MPS_PIPE_DIR.into(),
                log_directory: DEFAULT_MPS_LOG_DIR.into(),
                shm_directory: DEFAULT_MPS_SHM_DIR.into(),
                control: DEFAULT_MPS_CONTROL.into(),
            },
            live: LiveConfig { file: crate::live::DEFAULT_LIVE_FILE.into(), max_age_seconds: crate::live::DEFAULT_MAX_AGE_SECONDS },
            broker: BrokerConfig { socket: crate::broker::DEFAULT_SOCKET.into() },
            watch: WatchConfig {
                interval_seconds: 2,
                tolerance_percent: 10,
                over_share: BTreeMap::from([("comfyui".to_string(), ShareAction::Pause), ("blender".to_string(), ShareAction::Warn)]),
                // Steam's games are found by its reaper, environment and scope; names are the fallback.
                games: ["wine64-preloader", "wine-preloader"].map(String::from).to_vec(),
                desktop: [
                    "steam", "steamwebhelper", "Xorg", "Xwayland", "gnome-shell", "kwin_wayland", "kwin_x11", "plasmashell", "sway", "Hyprland", "mutter",
                    "cinnamon", "xfwm4", "chrome", "chromium", "firefox", "firefox-esr", "GPU Process",
                ]
                .map(String::from)
                .to_vec(),
                yield_to_games: vec!["blender".to_string(), "comfyui".to_string()],
                priority: vec!["blender".to_string(), "comfyui".to_string()],
                unauthorized: UnauthorizedAction::Warn,
                state_file: "/run/gpuwarden/watch.json".into(),
                events_file: "/run/gpuwarden/events.jsonl".into(),
                required: false,
            },
            budget: BudgetConfig {
                thread_ceiling: Percent::new(100).expect("100 is a percentage"),
                max_clients: ClientCount::MAX,
                reserves: BTreeMap::from([("system".to_string(), ByteSize::mib(512))]),
                gpu: BTreeMap::new(),
                per_user: None,
            },
            profiles: builtin_profiles()
                .into_iter()
                .map(|(n, p)| (n.parse().expect("built-in names are valid"), p))
                .collect(),
        }
    }
}

impl Config {
    /// Loads the file the user named, else the default file (whose absence
    /// means built-in defaults), and says which it was.
    pub fn locate(named: Option<&Path>) -> Result<(Config, Origin), ConfigError> {
        let path = named.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Config::parse(&text, path)?, Origin::File(path.to_path_buf()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => Ok((Config::default(), Origin::Defaults(path.to_path_buf()))),
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// [`Config::locate`] without the origin.
    pub fn load_from(named: Option<&Path>) -> Result<Config, ConfigError> {
        Config::locate(named).map(|(c, _)| c)
    }

    /// Parses config text over the defaults; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| crate::text::line_col(text, s.start));
            ConfigError::Parse { path: path.to_path_buf(), line, column, message: e.message().trim().to_string() }
        })?;
        let mut config = Config::default();
        config.inventory = raw.inventory.or(config.inventory);
        if let Some(dir) = raw.state_dir {
            config.state_dir = dir.path().to_path_buf();
        }
        if let Some(d) = raw.cdi.driver_root {
            config.cdi.driver_root = d.path().to_path_buf();
        }
        if let Some(d) = raw.cdi.dev_root {
            config.cdi.dev_root = d.path().to_path_buf();
        }
        let m = &mut config.mps;
        m.enabled = raw.mps.enabled.unwrap_or(m.enabled);
        for (raw_dir, dir) in [(raw.mps.pipe_directory, &mut m.pipe_directory), (raw.mps.log_directory, &mut m.log_directory), (raw.mps.shm_directory, &mut m.shm_directory)] {
            if let Some(d) = raw_dir {
                *dir = d.path().to_path_buf();
            }
        }
        if let Some(control) = raw.mps.control {
            m.control = control;
        }
        if let Some(file) = raw.live.file {
            config.live.file = file.path().to_path_buf();
        }
        config.live.max_age_seconds = raw.live.max_age_seconds.unwrap_or(config.live.max_age_seconds);
        if let Some(socket) = raw.broker.socket {
            config.broker.socket = socket.path().to_path_buf();
        }
        let w = &mut config.watch;
        w.interval_seconds = raw.watch.interval_seconds.unwrap_or(w.interval_seconds).max(1);
        w.tolerance_percent = raw.watch.tolerance_percent.unwrap_or(w.tolerance_percent);
        if let Some(m) = raw.watch.over_share {
            w.over_share.extend(m);
        }
        w.games = raw.watch.games.unwrap_or(std::mem::take(&mut w.games));
        w.desktop = raw.watch.desktop.unwrap_or(std::mem::take(&mut w.desktop));
        w.unauthorized = raw.watch.unauthorized.unwrap_or(w.unauthorized);
        w.yield_to_games = raw.watch.yield_to_games.unwrap_or(std::mem::take(&mut w.yield_to_games));
        w.priority = raw.watch.priority.unwrap_or(std::mem::take(&mut w.priority));
        // Beside the ledger unless named: a config with its own state folder keeps all its state there.
        w.state_file = raw.watch.state_file.map_or_else(|| config.state_dir.join("watch.json"), |f| f.path().to_path_buf());
        w.events_file = raw.watch.events_file.map_or_else(|| config.state_dir.join("events.jsonl"), |f| f.path().to_path_buf());
        w.required = raw.watch.required.unwrap_or(w.required);
        let b = &mut config.budget;
        b.thread_ceiling = raw.budget.thread_ceiling.unwrap_or(b.thread_ceiling);
        b.max_clients = raw.budget.max_clients.unwrap_or(b.max_clients);
        if let Some(reserves) = raw.budget.reserves {
            b.reserves = reserves;
        }
        b.gpu = raw.budget.gpu;
        b.per_user = raw.budget.per_user;
        for (name, raw_profile) in raw.profiles {
            let merged = Profile::merged(config.profiles.get(&name), raw_profile).map_err(|field| ConfigError::MissingField {
                path: path.to_path_buf(),
                profile: name.to_string(),
                field,
            })?;
            config.profiles.insert(name, merged);
        }
        Ok(config)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|(n, _)| n.as_str() == name).map(|(_, p)| p)
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().map(|n| n.to_string()).collect()
    }

    /// The effective configuration as TOML that `parse` reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/gpuwarden/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn who_may_use_what_is_read_and_checked_where_it_is_written() {
        let c = parse("[profiles.comfyui]\nallow = [\"@gpu-users\", \"ana\"]\n[budget.per_user]\nthreads = 50\npinned_memory = \"6GiB\"\n").unwrap();
        assert_eq!(c.profile("comfyui").unwrap().allow, ["@gpu-users", "ana"]);
        assert!(c.profile("blender").unwrap().allow.is_empty(), "the others stay open");
        let cap = c.budget.per_user.unwrap();
        assert_eq!((cap.threads.map(|t| t.get()), cap.pinned_memory), (Some(50), Some(ByteSize::gib(6))));
        assert_eq!(Config::default().budget.per_user, None, "by default nobody is capped");
        let e = parse("[budget.per_user]\nthreads = 500\n").unwrap_err();
        assert!(e.contains(":2:"), "line and column: {e}");
        assert!(parse("[budget.per_user]\ngpus = 1\n").unwrap_err().contains("gpus"));
    }

    #[test]
    fn defaults_ship_comfyui_and_blender() {
        let c = Config::default();
        let comfy = c.profile("comfyui").unwrap();
        assert_eq!((comfy.threads.get(), comfy.pinned_memory.size()), (25, ByteSize::gib(3)));
        let blender = c.profile("blender").unwrap();
        assert_eq!((blender.threads.get(), blender.pinned_memory.size()), (50, ByteSize::gib(5)));
        assert_eq!(c.budget.thread_ceiling.get(), 100);
        assert_eq!(c.budget.max_clients.get(), 48);
    }

    #[test]
    fn a_file_overrides_fields_and_adds_profiles() {
        let c = parse(
            r#"
            [budget]
            reserves = { steam = "4GiB", system = "512MiB" }
            [profiles.comfyui]
            pinned_memory = "3072M"
            threads = 20
            [profiles.sdxl]
            threads = 40
            pinned_memory = "6G"
            capabilities = ["sys_nice"]
            "#,
        )
        .unwrap();
        assert_eq!(c.budget.reserves["steam"], ByteSize::gib(4));
        assert_eq!(c.profile("comfyui").unwrap().threads.get(), 20);
        assert_eq!(c.profile("comfyui").unwrap().landlock, Config::default().profile("comfyui").unwrap().landlock);
        assert_eq!(c.profile("sdxl").unwrap().capabilities.iter().next().unwrap().to_string(), "CAP_SYS_NICE");
        assert!(c.profile("blender").is_some(), "built-ins stay");
    }

    #[test]
    fn malformed_files_are_refused_with_line_and_column() {
        let cases = [
            ("[budget]\nthread_ceiling = 150\n", "config.toml:2:18", "1 to 100"),
            ("[profiles.comfyui]\npinned_memory = \"3XB\"\n", "config.toml:2:17", "invalid size"),
            ("[profiles.comfyui]\nthreads = 10\nbogus = 1\n", "config.toml:3:1", "unknown field `bogus`"),
            ("[profiles.all]\nthreads = 10\n", "config.toml:1:11", "profile name \"all\""),
            ("[budget\n", "config.toml:1:8", ""),
            ("[profiles.x]\ncapabilities = [\"CAP_FLY\"]\n", "config.toml:2:16", "unknown capability"),
            ("state_dir = \"run/x\"\n", "config.toml:1:13", "not an absolute path"),
            ("[budget]\nmax_clients = 64\n", "config.toml:2:15", "1 to 48"),
            ("[profiles.comfyui.landlock]\nwrite = [\"tmp\"]\n", "config.toml:2:9", "tmp is not an absolute path"),
            ("[profiles.comfyui.landlock]\nbind = [70000]\n", "config.toml:2:8", "70000 is not a TCP port"),
            ("[profiles.comfyui.landlock]\nrequire = \"most\"\n", "config.toml:2:11", "unknown variant `most`"),
        ];
        for (text, at, why) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(&format!("config /etc/gpuwarden/{at}: ")), "{text:?} -> {e}");
            assert!(e.contains(why), "{text:?} -> {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_new_profile_must_give_threads_and_memory() {
        let e = parse("[profiles.sdxl]\nthreads = 40\n").unwrap_err();
        assert!(e.contains("profiles.sdxl: pinned_memory is required"), "{e}");
    }

    #[test]
    fn per_gpu_overrides_apply_to_that_gpu_only() {
        let c = parse("[budget.gpu.1]\nthread_ceiling = 80\nreserves = {}\n").unwrap();
        let gpu1 = c.budget.for_gpu(1, "GPU-x");
        assert_eq!(gpu1.thread_ceiling.get(), 80);
        assert!(gpu1.reserves.is_empty());
        assert_eq!(c.budget.for_gpu(0, "GPU-y").reserves["system"], ByteSize::mib(512));
    }

    #[test]
    fn show_prints_a_file_that_reads_back_the_same() {
        let c = parse("inventory = \"builtin:rtx4070\"\n[budget.reserves]\nsteam = \"4GiB\"\n[profiles.sdxl]\nthreads = 40\npinned_memory = \"6GiB\"\n").unwrap();
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_named_one_is_an_error() {
        let (c, origin) = Config::locate(None).unwrap_or_else(|_| (Config::default(), Origin::Defaults(DEFAULT_CONFIG_PATH.into())));
        if !Path::new(DEFAULT_CONFIG_PATH).exists() {
            assert_eq!((c, origin.to_string()), (Config::default(), format!("{DEFAULT_CONFIG_PATH} not found: built-in defaults")));
        }
        let e = Config::load_from(Some(Path::new("/nonexistent/config.toml"))).unwrap_err().to_string();
        assert!(e.contains("cannot read config /nonexistent/config.toml"), "{e}");
    }
}
