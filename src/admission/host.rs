//! What admission reads besides the request, behind one trait so that all
//! of admission runs in tests without a GPU, a daemon or a runtime: the
//! configuration, the state folder, the process table, the GPUs, the MPS
//! daemon, the watchdog's last look, and the waiter, whose clock is
//! admission's one clock. The hook and the broker each have one [`Host`]
//! (the system's); the tests have [`fake::FakeHost`].

use std::path::{Path, PathBuf};

use super::waiter::Waiter;
use crate::base::proc::Processes;
use crate::config::{Config, ConfigError, MpsConfig};
use crate::host::inventory::{Inventory, InventoryError};
use crate::host::mps::{Daemon, ProbeError};
use crate::host::watched::state::WatchState;
use crate::ledger::LedgerStore;

/// The world admission looks at.
pub trait Host {
    /// gpuwarden's configuration; read only for a container with a profile.
    fn settings(&self) -> Result<Config, ConfigError>;
    /// The state folder, when one was named (`--state-dir`); else the
    /// configuration's.
    fn state_dir(&self) -> Option<&Path>;
    fn processes(&self) -> &dyn Processes;
    /// The GPUs; read only for a container with a profile.
    fn inventory(&self, config: &Config) -> Result<Inventory, InventoryError>;
    /// The MPS control daemon as it is now (see [`crate::host::mps::probe`]).
    fn daemon(&self, mps: &MpsConfig) -> Result<Daemon, ProbeError>;
    /// Lets host uid `uid` reach the MPS pipe folder (see [`crate::host::mps::access::grant`]).
    fn grant(&self, mps: &MpsConfig, uid: u32) -> Result<(), String>;
    /// How a container that may wait for its share waits, and the clock.
    fn waiter(&self) -> &dyn Waiter;

    /// The watchdog's last look, as it left it in its state file.
    fn watch(&self, config: &Config) -> WatchState {
        WatchState::load(&config.watch.state_file).unwrap_or_default()
    }

    /// Seconds since the epoch, by the waiter's clock.
    fn now(&self) -> u64 {
        self.waiter().now()
    }

    /// The ledger: in the state folder named, else in the configuration's.
    fn store(&self, config: &Config) -> LedgerStore {
        LedgerStore::new(self.state_dir().unwrap_or(&config.state_dir))
    }

    /// The events file: beside the ledger when a state folder was named,
    /// else the configuration's.
    fn events_file(&self, config: &Config) -> PathBuf {
        self.state_dir().map_or_else(|| config.watch.events_file.clone(), |d| d.join("events.jsonl"))
    }
}

/// The one stand-in host of the tests: a configuration, a state folder,
/// fake processes, a built-in inventory, a daemon's answer, a fake clock.
#[cfg(test)]
pub mod fake {
    use super::*;
    use crate::admission::waiter::FakeWaiter;

    pub struct FakeHost<'a> {
        /// `None`: reading the configuration is a bug for this test.
        pub config: Option<Config>,
        pub state_dir: Option<PathBuf>,
        pub processes: &'a dyn Processes,
        /// `None`: reading the GPUs is a bug for this test.
        pub inventory: Option<Inventory>,
        pub daemon: Option<Result<Daemon, ProbeError>>,
        pub waiter: FakeWaiter,
    }

    impl<'a> FakeHost<'a> {
        /// A host with `config`, a ledger in `state_dir`, an RTX 4070, a
        /// daemon with no servers, the clock at `now`.
        pub fn new(config: Config, state_dir: &Path, processes: &'a dyn Processes, now: u64) -> FakeHost<'a> {
            FakeHost {
                config: Some(config),
                state_dir: Some(state_dir.to_path_buf()),
                processes,
                inventory: crate::host::inventory::builtin("rtx4070"),
                daemon: Some(Ok(Daemon { pid: 1, servers: Vec::new() })),
                waiter: FakeWaiter::at(now),
            }
        }
    }

    impl Host for FakeHost<'_> {
        fn settings(&self) -> Result<Config, ConfigError> {
            Ok(self.config.clone().expect("this test reads no configuration"))
        }
        fn state_dir(&self) -> Option<&Path> {
            self.state_dir.as_deref()
        }
        fn processes(&self) -> &dyn Processes {
            self.processes
        }
        fn inventory(&self, _: &Config) -> Result<Inventory, InventoryError> {
            Ok(self.inventory.clone().expect("this test reads no inventory"))
        }
        fn daemon(&self, _: &MpsConfig) -> Result<Daemon, ProbeError> {
            self.daemon.clone().expect("this test asks no daemon")
        }
        fn grant(&self, _: &MpsConfig, _: u32) -> Result<(), String> {
            Ok(())
        }
        fn waiter(&self) -> &dyn Waiter {
            &self.waiter
        }
    }
}
