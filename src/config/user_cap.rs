//! What one user's containers may hold together (`[budget] per_user`): the
//! configuration's, checked by [`crate::admission::access`].

use serde::{Deserialize, Serialize};

use super::values::Percent;
use crate::base::size::ByteSize;

/// The most one user may hold across the GPUs, and wait for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCap {
    /// The sum of the thread percentages of the user's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<Percent>,
    /// The sum of their pinned memory: a size, or a share of the memory the
    /// GPUs have to share (their memory less the reserves), such as "90%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_memory: Option<CapMemory>,
    /// Places the user's containers may hold in the render queue at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
}

impl UserCap {
    /// The cap that applies when config.toml sets none: no user holds more
    /// than 90% of the SMs or of the memory to share, or more than 4 places
    /// in the queue, whatever they ask.
    pub fn default_cap() -> UserCap {
        UserCap { threads: Percent::new(90), pinned_memory: Percent::new(90).map(CapMemory::Share), queued: Some(4) }
    }

    /// `over` with the fields `self` sets in place of its own.
    pub fn over(self, over: &UserCap) -> UserCap {
        UserCap { threads: self.threads.or(over.threads), pinned_memory: self.pinned_memory.or(over.pinned_memory), queued: self.queued.or(over.queued) }
    }
}

/// A cap on memory: a size, or a share of what the GPUs have to share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapMemory {
    Size(ByteSize),
    Share(Percent),
}

impl CapMemory {
    /// The cap in bytes, when the GPUs have `shareable` to share.
    pub fn of(self, shareable: ByteSize) -> ByteSize {
        match self {
            CapMemory::Size(s) => s,
            CapMemory::Share(p) => ByteSize::bytes((u128::from(shareable.as_u64()) * u128::from(p.get()) / 100) as u64),
        }
    }
}

impl std::fmt::Display for CapMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapMemory::Size(s) => write!(f, "{s}"),
            CapMemory::Share(p) => write!(f, "{}%", p.get()),
        }
    }
}

impl Serialize for CapMemory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CapMemory::Size(b) => b.serialize(s),
            CapMemory::Share(p) => s.serialize_str(&format!("{}%", p.get())),
        }
    }
}

impl<'de> Deserialize<'de> for CapMemory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_suffix('%') {
            Some(n) => n
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(Percent::new)
                .map(CapMemory::Share)
                .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a share: write a percentage from 1% to 100%, or a size such as \"6GiB\""))),
            None => text.parse::<ByteSize>().map(CapMemory::Size).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_cap_is_a_size_or_a_share() {
        let cap: UserCap = toml::from_str("pinned_memory = \"75%\"\nqueued = 2\n").unwrap();
        assert_eq!(cap.pinned_memory.unwrap().of(ByteSize::gib(8)), ByteSize::gib(6));
        let cap: UserCap = toml::from_str("pinned_memory = \"6GiB\"\n").unwrap();
        assert_eq!(cap.pinned_memory, Some(CapMemory::Size(ByteSize::gib(6))));
        assert!(toml::from_str::<UserCap>("pinned_memory = \"150%\"\n").unwrap_err().to_string().contains("from 1% to 100%"));
        assert_eq!(toml::to_string(&UserCap::default_cap()).unwrap(), "threads = 90\npinned_memory = \"90%\"\nqueued = 4\n");
    }
}
