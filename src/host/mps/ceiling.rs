//! The daemon's defaults: the most any one MPS client may take, whatever its
//! own environment says. gpuwarden sets them to the largest profile, on every
//! device, and reads them back.

use super::control::{pinned_default, set_pinned_default, set_thread_default, thread_default, Control, MpsError};
use crate::config::Config;
use crate::base::size::ByteSize;

/// What no client may exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    pub threads: u32,
    /// Whole GiB: the daemon keeps pinned limits in whole GiB (it floors
    /// `1536M` to `1G`), so the largest profile is rounded up, never down.
    pub pinned: ByteSize,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error(transparent)]
    Daemon(#[from] MpsError),
    #[error("the MPS daemon holds {what} = {held} after gpuwarden set {set}: it refused or changed the value, so the ceiling does not hold")]
    Mismatch { what: String, set: String, held: String },
}

impl Ceiling {
    /// The largest profile's share. `None` without profiles.
    pub fn of(config: &Config) -> Option<Ceiling> {
        let threads = config.profiles.values().map(|p| p.threads.get()).max()?;
        let pinned = config.profiles.values().map(|p| p.pinned_memory.size()).max()?;
        let gib = pinned.as_u64().div_ceil(1 << 30);
        Some(Ceiling { threads, pinned: ByteSize::gib(gib) })
    }

    /// Sets the ceiling as the daemon's defaults on devices `0..devices`, then
    /// reads each back and fails on any difference.
    pub fn apply(&self, c: &dyn Control, devices: u32) -> Result<(), CeilingError> {
        let held = set_thread_default(c, self.threads)?;
        self.check_threads(held)?;
        for ordinal in 0..devices {
            set_pinned_default(c, ordinal, self.pinned)?;
        }
        self.verify(c, devices)
    }

    /// Reads the daemon's defaults and fails unless they are this ceiling.
    pub fn verify(&self, c: &dyn Control, devices: u32) -> Result<(), CeilingError> {
        self.check_threads(thread_default(c)?)?;
        for ordinal in 0..devices {
            let held = pinned_default(c, ordinal)?;
            if held != Some(self.pinned) {
                return Err(CeilingError::Mismatch {
                    what: format!("default_device_pinned_mem_limit {ordinal}"),
                    set: self.pinned.mps_limit(),
                    held: held.map_or_else(|| "no limit".to_string(), |h| h.mps_limit()),
                });
            }
        }
        Ok(())
    }

    /// Whether a daemon holding `threads` and these per-device pinned limits
    /// holds this ceiling (it answers percentages with one decimal).
    pub fn holds(&self, threads: f64, pinned: &[(u32, Option<ByteSize>)]) -> bool {
        self.threads_hold(threads) && pinned.iter().all(|(_, l)| *l == Some(self.pinned))
    }

    fn threads_hold(&self, held: f64) -> bool {
        (held - f64::from(self.threads)).abs() <= 0.05
    }

    fn check_threads(&self, held: f64) -> Result<(), CeilingError> {
        if !self.threads_hold(held) {
            return Err(CeilingError::Mismatch { what: "default_active_thread_percentage".into(), set: self.threads.to_string(), held: format!("{held:.1}") });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mps::control::tests::FakeDaemon;

    #[test]
    fn the_ceiling_is_the_largest_profile_rounded_up_to_whole_gib() {
        assert_eq!(Ceiling::of(&Config::default()), Some(Ceiling { threads: 50, pinned: ByteSize::gib(5) }));
        let c = Config::parse("[profiles.sdxl]\nthreads = 40\npinned_memory = \"5632MiB\"\n", std::path::Path::new("c")).unwrap();
        assert_eq!(Ceiling::of(&c).unwrap().pinned, ByteSize::gib(6), "5.5 GiB is held as 6G, never floored to 5G");
    }

    #[test]
    fn applied_on_every_device_and_read_back() {
        let d = FakeDaemon::default();
        let ceiling = Ceiling { threads: 50, pinned: ByteSize::gib(5) };
        ceiling.apply(&d, 2).unwrap();
        assert_eq!(*d.threads.borrow(), 50.0);
        assert_eq!(d.pinned.borrow().get(&1), Some(&5));
        // Someone raises a default: the read-back tells.
        d.pinned.borrow_mut().insert(1, 11);
        let e = ceiling.verify(&d, 2).unwrap_err().to_string();
        assert!(e.contains("default_device_pinned_mem_limit 1 = 11G after gpuwarden set 5G"), "{e}");
    }

    #[test]
    fn a_value_the_daemon_changes_is_an_error() {
        let d = FakeDaemon::default();
        let e = Ceiling { threads: 150, pinned: ByteSize::gib(5) }.apply(&d, 1).unwrap_err().to_string();
        assert!(e.contains("default_active_thread_percentage = 100.0 after gpuwarden set 150"), "{e}");
    }
}
