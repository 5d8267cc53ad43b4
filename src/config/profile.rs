//! Workload profiles: what a kind of container may take of a GPU and of the
//! host. Built-in: `comfyui` (25% of the SMs, 3 GiB) and `blender` (50%, 5 GiB).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::values::{AbsPath, Capability, Percent, PinnedMemory, WaitTime};

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
    /// The local users (`ana`) and groups (`@gpu-users`) who may use it through
    /// rootless Podman; empty: everyone (see [`crate::admission::access`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// How long its containers wait for their share when it is not free
    /// (the render queue); `gpuwarden.io/wait` or `GPUWARDEN_WAIT` overrides it.
    #[serde(skip_serializing_if = "is_no_wait")]
    pub wait: WaitTime,
}

fn is_no_wait(w: &WaitTime) -> bool {
    *w == WaitTime::NONE
}

/// What the launcher opens to the workload (Landlock); everything else is
/// closed. The rewrite adds what CUDA needs (`/dev`, `/proc`, the MPS pipe
/// directory, the driver's libraries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockPaths {
    /// Read files and list folders beneath.
    #[serde(default)]
    pub read: Vec<AbsPath>,
    /// Read and run programs beneath.
    #[serde(default)]
    pub exec: Vec<AbsPath>,
    /// Everything beneath: create, write, remove, and ioctl on devices.
    #[serde(default)]
    pub write: Vec<AbsPath>,
    /// TCP ports the workload may listen on; when set, it may bind no other (Landlock ABI 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind: Vec<Port>,
    /// TCP ports the workload may connect to; when set, it may connect to no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<Port>,
    /// `abi1` (default): run with what this kernel enforces, Landlock ABI 1 at
    /// least; `full`: refuse unless every rule is enforced.
    #[serde(default)]
    pub require: Require,
}

/// How much Landlock enforcement a profile requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    #[default]
    Abi1,
    Full,
}

/// A TCP port, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u16::try_from(v).ok().filter(|p| *p > 0).map(Port).ok_or_else(|| serde::de::Error::custom(format!("{v} is not a TCP port (1 to 65535)")))
    }
}

/// A profile as a file writes it: any field may be left to the built-in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub threads: Option<Percent>,
    pub pinned_memory: Option<PinnedMemory>,
    pub capabilities: Option<BTreeSet<Capability>>,
    pub landlock: Option<LandlockPaths>,
    pub allow: Option<Vec<String>>,
    pub wait: Option<WaitTime>,
}

fn paths(list: &[&str]) -> Vec<AbsPath> {
    list.iter().filter_map(|p| AbsPath::new(*p).ok()).collect()
}

/// Where programs live in the images gpuwarden ships for.
const EXEC: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt"];

fn builtin(threads: u32, pinned_gib: u64, write: &[&str], bind: &[u16]) -> Profile {
    Profile {
        threads: Percent::new(threads).unwrap_or(Percent::ALL),
        pinned_memory: PinnedMemory::whole_gib(pinned_gib),
        capabilities: BTreeSet::new(),
        landlock: LandlockPaths {
            read: paths(&["/"]),
            exec: paths(EXEC),
            write: paths(write),
            bind: bind.iter().map(|p| Port(*p)).collect(),
            connect: Vec::new(),
            require: Require::Abi1,
        },
        allow: Vec::new(),
        wait: WaitTime::NONE,
    }
}

/// The profiles gpuwarden ships. ComfyUI writes its output, uploads, user
/// settings and temp files and listens on 8188; Blender writes its output
/// folder, and /tmp (it makes /tmp/pulse-* at start).
pub fn builtin_profiles() -> Vec<(&'static str, Profile)> {
    vec![
        ("comfyui", builtin(25, 3, &["/tmp", "/opt/ComfyUI/output", "/opt/ComfyUI/input", "/opt/ComfyUI/user", "/opt/ComfyUI/temp"], &[8188])),
        ("blender", builtin(50, 5, &["/tmp", "/render"], &[])),
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
            allow: raw.allow.or(base.map(|b| b.allow.clone())).unwrap_or_default(),
            wait: raw.wait.or(base.map(|b| b.wait)).unwrap_or_default(),
        })
    }
}
