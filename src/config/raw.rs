//! The configuration file as it is read: every key optional, unknown keys
//! refused; `Config::parse` fills in the defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::profile::RawProfile;
use super::values::{self, AbsPath, ClientCount, Percent, ProfileName};
use super::sections::{GpuBudget, ShareAction, UnauthorizedAction};
use super::user_cap::UserCap;
use crate::base::size::ByteSize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) inventory: Option<String>,
    pub(super) state_dir: Option<AbsPath>,
    #[serde(default)]
    pub(super) cdi: RawCdi,
    #[serde(default)]
    pub(super) mps: RawMps,
    #[serde(default)]
    pub(super) live: RawLive,
    #[serde(default)]
    pub(super) watch: RawWatch,
    #[serde(default)]
    pub(super) broker: RawBroker,
    #[serde(default)]
    pub(super) budget: RawBudget,
    #[serde(default)]
    pub(super) profiles: BTreeMap<ProfileName, RawProfile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMps {
    pub(super) enabled: Option<bool>,
    pub(super) pipe_directory: Option<AbsPath>,
    pub(super) log_directory: Option<AbsPath>,
    pub(super) shm_directory: Option<AbsPath>,
    pub(super) control: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) interval_seconds: Option<u64>,
    pub(super) tolerance_percent: Option<u32>,
    pub(super) over_share: Option<BTreeMap<String, ShareAction>>,
    pub(super) games: Option<Vec<String>>,
    pub(super) desktop: Option<Vec<String>>,
    pub(super) yield_to_games: Option<Vec<String>>,
    pub(super) priority: Option<Vec<String>>,
    pub(super) unauthorized: Option<UnauthorizedAction>,
    pub(super) state_file: Option<AbsPath>,
    pub(super) events_file: Option<AbsPath>,
    pub(super) required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCdi {
    pub(super) driver_root: Option<AbsPath>,
    pub(super) dev_root: Option<AbsPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    pub(super) socket: Option<AbsPath>,
    pub(super) connections_per_user: Option<values::Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLive {
    pub(super) file: Option<AbsPath>,
    pub(super) max_age_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    pub(super) thread_ceiling: Option<Percent>,
    pub(super) max_clients: Option<ClientCount>,
    pub(super) reserves: Option<BTreeMap<String, ByteSize>>,
    #[serde(default)]
    pub(super) gpu: BTreeMap<String, GpuBudget>,
    pub(super) per_user: Option<UserCap>,
}
