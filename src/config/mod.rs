//! The configuration: `/etc/gpuwarden/config.toml` (or `--config FILE`) over
//! built-in defaults. It sets the per-GPU budget (thread ceiling, client cap,
//! named memory reserves), the workload profiles, the MPS pipe directory and
//! optionally which inventory the hooks use. A malformed file is refused with
//! its line and column; nothing is guessed.

mod profile;
mod raw;
mod sections;
pub mod reload;
mod user_cap;
pub mod values;

pub use sections::{BrokerConfig, BudgetConfig, CdiConfig, EffectiveBudget, GpuBudget, LiveConfig, MpsConfig, ShareAction, UnauthorizedAction, WatchConfig, DEFAULT_CONNECTIONS_PER_USER};
pub use user_cap::{CapMemory, UserCap};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use profile::{builtin_profiles, LandlockPaths, Port, Profile, Require};
use raw::RawConfig;
pub use values::{AbsPath, Capability, ClientCount, Percent, PinnedMemory, ProfileName, WaitTime, MPS_MAX_CLIENTS};

use crate::base::size::ByteSize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gpuwarden/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/run/gpuwarden";
/// gpuwarden's own MPS folders, root-owned under /run (not NVIDIA's default
/// /tmp/nvidia-mps, which any local user can create first).
pub const DEFAULT_MPS_PIPE_DIR: &str = "/run/gpuwarden/mps/pipe";
pub const DEFAULT_MPS_LOG_DIR: &str = "/run/gpuwarden/mps/log";
pub const DEFAULT_MPS_SHM_DIR: &str = "/run/gpuwarden/mps/shm";
pub const DEFAULT_MPS_CONTROL: &str = "nvidia-cuda-mps-control";

/// Where the admission broker listens unless `[broker] socket` says otherwise.
pub const DEFAULT_BROKER_SOCKET: &str = "/run/gpuwarden/broker.sock";

/// Where `gpuwarden live` writes the live view, and how old admission takes it.
pub const DEFAULT_LIVE_FILE: &str = "/run/gpuwarden/live.json";
pub const DEFAULT_LIVE_MAX_AGE_SECONDS: u64 = 10;

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
            live: LiveConfig { file: DEFAULT_LIVE_FILE.into(), max_age_seconds: DEFAULT_LIVE_MAX_AGE_SECONDS },
            broker: BrokerConfig { socket: DEFAULT_BROKER_SOCKET.into(), connections_per_user: DEFAULT_CONNECTIONS_PER_USER },
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
                thread_ceiling: Percent::ALL,
                max_clients: ClientCount::MAX,
                reserves: BTreeMap::from([("system".to_string(), ByteSize::mib(512))]),
                gpu: BTreeMap::new(),
                per_user: Some(UserCap::default_cap()),
            },
            profiles: builtin_profiles()
                .into_iter()
                // Both names are valid (a test says so): none is dropped.
                .filter_map(|(n, p)| Some((n.parse().ok()?, p)))
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
            let (line, column) = e.span().map_or((1, 1), |s| crate::base::text::line_col(text, s.start));
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
        if let Some(n) = raw.broker.connections_per_user {
            config.broker.connections_per_user = n.get();
        }
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
        // Each field set here replaces the default's; the others stay.
        b.per_user = Some(raw.budget.per_user.map_or_else(UserCap::default_cap, |c| c.over(&UserCap::default_cap())));
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
        #[allow(clippy::expect_used, reason = "every table of Config follows its plain keys, as toml requires, and its maps have string keys: it always serializes (config show's tests read it back)")]
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
        assert_eq!((cap.threads.map(|t| t.get()), cap.pinned_memory), (Some(50), Some(CapMemory::Size(ByteSize::gib(6)))));
        assert_eq!(cap.queued, Some(4), "a field not set keeps the default's");
        assert_eq!(Config::default().budget.per_user, Some(UserCap::default_cap()), "by default no user holds the whole GPU");
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
