//! Workload profiles: what a kind of container may take of a GPU and of the
//! host. Built-in: `comfyui` (25% of the SMs, 3 GiB) and `blender` (50%, 5 GiB).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::values::{AbsPath, Capability, Percent, PinnedMemory};
use crate::size::ByteSize;

/// One profile, as the effective configuration holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`.
    pub threads: Percent,
    /// `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`, per GPU.
    pub pinned_memory: PinnedMemory,
    /// The capabilities a container of this profile may keep; all others are dropped.
    pub capabilities: BTreeSet<Capability>,
    pub landlock: LandlockPaths,
}

/// Paths the launcher opens to the workload; everything else is closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockPaths {
    #[serde(default)]
    pub read: Vec<AbsPath>,
    #[serde(default)]
    pub write: Vec<AbsPath>,
}

/// A profile as a file writes it: any field may be left to the built-in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub threads: Option<Percent>,
    pub pinned_memory: Option<PinnedMemory>,
    pub capabilities: Option<BTreeSet<Capability>>,
    pub landlock: Option<LandlockPaths>,
}

fn paths(list: &[&str]) -> Vec<AbsPath> {
    list.iter().filter_map(|p| AbsPath::new(*p).ok()).collect()
}

fn builtin(threads: u32, pinned_gib: u64, write: &[&str]) -> Profile {
    Profile {
        threads: Percent::new(threads).unwrap_or(Percent::new(100).expect("100 is a percentage")),
        pinned_memory: PinnedMemory::new(ByteSize::gib(pinned_gib)).expect("whole GiB are whole MiB"),
        capabilities: BTreeSet::new(),
        landlock: LandlockPaths { read: paths(&["/"]), write: paths(write) },
    }
}

/// The profiles gpuwarden ships.
pub fn builtin_profiles() -> Vec<(&'static str, Profile)> {
    vec![
        ("comfyui", builtin(25, 3, &["/tmp", "/proc", "/dev/shm", "/opt/ComfyUI/output", "/opt/ComfyUI/input", "/opt/ComfyUI/user", "/opt/ComfyUI/temp"])),
        ("blender", builtin(50, 5, &["/tmp", "/proc", "/dev/shm", "/render"])),
    ]
}

impl Profile {
    /// `base` with the fields `raw` sets replaced.
    pub fn merged(base: Option<&Profile>, raw: RawProfile) -> Result<Profile, &'static str> {
        let threads = raw.threads.or(base.map(|b| b.threads)).ok_or("threads")?;
        let pinned_memory = raw.pinned_memory.or(base.map(|b| b.pinned_memory)).ok_or("pinned_memory")?;
        Ok(Profile {
            threads,
            pinned_memory,
            capabilities: raw.capabilities.or(base.map(|b| b.capabilities.clone())).unwrap_or_default(),
            landlock: raw.landlock.or(base.map(|b| b.landlock.clone())).unwrap_or_default(),
        })
    }
}
