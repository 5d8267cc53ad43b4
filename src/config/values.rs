//! Value types of the configuration that check themselves while being read,
//! so a bad value is reported at its line and column in the file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::base::size::ByteSize;

/// A share of a GPU's SMs, 1 to 100 percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Percent(u32);

impl Percent {
    /// All of it.
    pub const ALL: Percent = Percent(100);
    pub fn new(v: u32) -> Option<Percent> {
        (1..=100).contains(&v).then_some(Percent(v))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u32::try_from(v).ok().and_then(Percent::new).ok_or_else(|| serde::de::Error::custom(format!("{v} is not a percentage from 1 to 100")))
    }
}

/// Most MPS clients one GPU serves (48 on Volta and later).
pub const MPS_MAX_CLIENTS: u32 = 48;

/// A number of MPS clients, 1 to [`MPS_MAX_CLIENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ClientCount(u32);

impl ClientCount {
    pub const MAX: ClientCount = ClientCount(MPS_MAX_CLIENTS);
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for ClientCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u32::try_from(v)
            .ok()
            .filter(|v| (1..=MPS_MAX_CLIENTS).contains(v))
            .map(ClientCount)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} clients: MPS serves 1 to {MPS_MAX_CLIENTS} per GPU")))
    }
}

/// A count of something a user may hold at once (connections to the
/// broker): 1 to 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Count(u32);

impl Count {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u32::try_from(v).ok().filter(|v| (1..=4096).contains(v)).map(Count).ok_or_else(|| serde::de::Error::custom(format!("{v}: give a number from 1 to 4096")))
    }
}

/// Pinned device memory: a size in whole MiB (MPS takes nothing finer), above zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PinnedMemory(ByteSize);

impl PinnedMemory {
    /// `n` GiB, at least 1 (a whole number of GiB is a whole number of MiB).
    pub fn whole_gib(n: u64) -> PinnedMemory {
        PinnedMemory(ByteSize::gib(n.max(1)))
    }
    pub fn new(size: ByteSize) -> Result<PinnedMemory, String> {
        if size == ByteSize::ZERO || !size.is_whole_mib() {
            return Err(format!("pinned memory {size} must be a whole number of MiB above zero"));
        }
        Ok(PinnedMemory(size))
    }
    pub fn size(self) -> ByteSize {
        self.0
    }
}

impl<'de> Deserialize<'de> for PinnedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PinnedMemory::new(ByteSize::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A profile's name: a CDI device name that cannot be taken for another device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProfileName(String);

impl ProfileName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProfileName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let looks_per_gpu = s.strip_prefix("gpu").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        if !crate::base::names::is_device_name(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) || s == "all" || looks_per_gpu {
            return Err(format!(
                "profile name {s:?}: use a lowercase letter then letters, digits, '-', '_' or '.'; not \"all\" nor gpuN..., which name other devices"
            ));
        }
        Ok(ProfileName(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for ProfileName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A Linux capability, written `CAP_SYS_NICE` (or `sys_nice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capability(pub caps::Capability);

impl PartialOrd for Capability {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Capability {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.index().cmp(&other.0.index())
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        caps::Capability::from_str(&name).map(Capability).map_err(|_| format!("unknown capability {s:?}"))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An absolute path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AbsPath(PathBuf);

impl AbsPath {
    pub fn new(p: impl Into<PathBuf>) -> Result<Self, String> {
        let p = p.into();
        if p.is_absolute() { Ok(AbsPath(p)) } else { Err(format!("{} is not an absolute path", p.display())) }
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AbsPath::new(PathBuf::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How long a container may wait for its share (the render queue): `90s`,
/// `10m`, `1h`, or plain seconds; `0` does not wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitTime(u64);

impl WaitTime {
    pub const NONE: WaitTime = WaitTime(0);
    pub fn seconds(s: u64) -> WaitTime {
        WaitTime(s)
    }
    pub fn as_seconds(self) -> u64 {
        self.0
    }
}

impl FromStr for WaitTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let scale = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => 0,
        };
        match n.parse::<u64>() {
            Ok(n) if scale > 0 && n <= 7 * 86_400 => n.checked_mul(scale).map(WaitTime).ok_or_else(|| format!("{s:?} is too long a wait")),
            _ => Err(format!("{s:?} is not a wait: write seconds, or a number with s, m or h (90s, 10m, 1h)")),
        }
    }
}

impl fmt::Display for WaitTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            s if s >= 3600 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s >= 60 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for WaitTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WaitTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => Ok(WaitTime(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_in_seconds_minutes_or_hours() {
        for (text, secs, shown) in [("0", 0, "0s"), ("90", 90, "90s"), ("90s", 90, "90s"), ("10m", 600, "10m"), ("1h", 3600, "1h"), (" 2m ", 120, "2m")] {
            let w: WaitTime = text.parse().unwrap();
            assert_eq!((w.as_seconds(), w.to_string()), (secs, shown.to_string()), "{text}");
        }
        for bad in ["", "m", "-5s", "5d", "1.5m", "9999999999h"] {
            assert!(bad.parse::<WaitTime>().is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_read_with_or_without_prefix() {
        assert_eq!("sys_nice".parse::<Capability>().unwrap().to_string(), "CAP_SYS_NICE");
        assert_eq!("CAP_CHOWN".parse::<Capability>().unwrap().to_string(), "CAP_CHOWN");
        assert!("CAP_FLY".parse::<Capability>().is_err());
    }

    #[test]
    fn profile_names_cannot_shadow_other_devices() {
        assert!("comfyui".parse::<ProfileName>().is_ok());
        assert!("sd-xl.2".parse::<ProfileName>().is_ok());
        for bad in ["all", "gpu1-x", "0", "Comfy", "a b", ""] {
            assert!(bad.parse::<ProfileName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pinned_memory_is_whole_mib() {
        assert!(PinnedMemory::new(ByteSize::gib(3)).is_ok());
        assert!(PinnedMemory::new(ByteSize::bytes(1000)).is_err());
        assert!(PinnedMemory::new(ByteSize::ZERO).is_err());
    }
}
