//! Everything the checks look at, gathered by the admin CLI (files,
//! commands, NVML), so that every verdict is a pure function of them.

use std::path::PathBuf;

/// Everything the checks look at, gathered by the caller.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The GPUs and driver: from NVML, or why not.
    pub gpus: Option<Result<Gpus, String>>,
    /// `inventory = ...` (or `--inventory`) naming a stand-in for NVML.
    pub stand_in: Option<String>,
    pub mps: MpsFacts,
    pub cdi: CdiFacts,
    pub podman: Option<Engine>,
    pub docker: Option<DockerFacts>,
    /// containerd, where it is installed (its CRI serves the kubelet).
    pub containerd: Option<super::containerd::ContainerdFacts>,
    pub watch: WatchFacts,
    pub nodes: Vec<Node>,
    pub user: Option<UserFacts>,
    /// The admission broker's socket, and whether it answers (or why not).
    pub broker: Option<(PathBuf, Result<(), String>)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gpus {
    pub driver_version: String,
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct MpsFacts {
    pub enabled: bool,
    /// `nvidia-cuda-mps-control`, where found.
    pub control: Option<PathBuf>,
    /// The daemon's pid, or why none answers.
    pub daemon: Option<Result<i32, String>>,
    /// Whether its defaults hold the ceiling, with what was read.
    pub defaults: Option<Result<(), String>>,
    /// Whether every local user can reach the daemon's control socket (its pipe folder open to others).
    pub pipe_open: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CdiFacts {
    pub dirs: Vec<PathBuf>,
    pub specs: Vec<crate::cdi::SpecFile>,
    pub broken: Vec<(PathBuf, String)>,
    /// Of gpuwarden's spec: the driver version its libraries carry, and host paths that are gone.
    pub ours: Vec<OurSpec>,
    /// NVIDIA's toolkit, where installed.
    pub toolkit: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OurSpec {
    pub path: PathBuf,
    pub driver_version: Option<String>,
    pub missing: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Engine {
    pub version: Option<String>,
    /// Podman: the hooks.d files naming gpuwarden's hook, with their mode and whether the hook binary exists.
    pub hook_files: Vec<HookFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFile {
    pub path: PathBuf,
    pub mode: u32,
    pub hook: PathBuf,
    pub hook_exists: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerFacts {
    pub version: Option<String>,
    /// /etc/docker/daemon.json, parsed, or why not (`None`: there is none).
    pub daemon_json: Option<Result<serde_json::Value, String>>,
    /// Whether the runtime it registers exists on the host.
    pub runtime_exists: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFacts {
    pub required: bool,
    /// Seconds since the watchdog's last look, and whether that is within three of its
    /// intervals (`WatchState::is_fresh`); `None`: it never ran.
    pub last_look: Option<(u64, bool)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub mode: u32,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserFacts {
    pub name: String,
    pub uid: u32,
    pub subuids: bool,
    pub subgids: bool,
    /// The groups the user is in, by name.
    pub groups: Vec<String>,
    /// On a host that runs systemd: whether the user's services outlive their
    /// sessions (`loginctl enable-linger`); without, rootless containers stop at logout.
    pub lingers: Option<bool>,
}
