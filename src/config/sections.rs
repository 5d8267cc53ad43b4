//! The sections of the effective configuration, one struct each: `[watch]`,
//! `[cdi]`, `[broker]`, `[live]`, `[mps]`, `[budget]` (per GPU too).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::user_cap::UserCap;
use super::values::{ClientCount, Percent};
use crate::base::size::ByteSize;

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
    /// Connections one user (any uid but root) may hold open at once: a
    /// start holds one while it is admitted, a waiting one while it waits.
    pub connections_per_user: u32,
}

/// By default: four places in the queue and as many starts at once.
pub const DEFAULT_CONNECTIONS_PER_USER: u32 = 8;

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
    pub per_user: Option<UserCap>,
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
