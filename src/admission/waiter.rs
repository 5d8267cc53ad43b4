//! How long a container may wait for its share, and how a waiting admission
//! waits: it asks with `gpuwarden.io/wait=30m` (or `GPUWARDEN_WAIT`), or its
//! profile sets `wait`; the engine above may allow less (Podman gives a
//! container's hooks 240 s). The hook waits as itself; the broker waits for
//! its caller, as long as the caller stays connected.

use std::time::Duration;

use crate::base::proc::Processes;
use crate::config::WaitTime;
use crate::oci::ContainerConfig;

pub const WAIT_ANNOTATION: &str = "gpuwarden.io/wait";
pub const WAIT_ENV: &str = "GPUWARDEN_WAIT";

/// How often a waiting admission looks again.
pub const POLL: Duration = Duration::from_millis(200);

/// A wait that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct WaitError {
    pub key: &'static str,
    pub why: String,
}

/// How long the container asks to wait: its annotation, else its env, else
/// its profile's `wait` (`default`).
pub fn requested(cfg: &ContainerConfig, default: WaitTime) -> Result<WaitTime, WaitError> {
    let asked = cfg.annotation(WAIT_ANNOTATION).map(|v| (WAIT_ANNOTATION, v.to_string())).or_else(|| cfg.env(WAIT_ENV).map(|v| (WAIT_ENV, v.to_string())));
    match asked {
        Some((key, v)) => v.parse().map_err(|why: String| WaitError { key, why }),
        None => Ok(default),
    }
}

/// How long the engine that runs a createRuntime hook lets it run before it
/// gives up on the container, as measured here (README, "Waiting for a share").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLimit {
    /// Who gives up: "Podman".
    pub engine: &'static str,
    pub seconds: u64,
}

/// Podman 4.3 waits 240 s for conmon to report a created container
/// ("container creation timeout"), with runc or crun alike; the hook runs on
/// after it, and the container is gone.
pub const PODMAN_CREATE_TIMEOUT: u64 = 240;

/// What a wait keeps free of the engine's limit: admission itself, then
/// the runtime's own work after the hook.
pub const LIMIT_MARGIN: u64 = 10;

/// The engine above `pid` (the hook, or the broker's caller), from its
/// ancestors' command names: conmon is Podman's.
pub fn runtime_limit(processes: &dyn Processes, pid: i32) -> Option<RuntimeLimit> {
    let mut at = pid;
    for _ in 0..6 {
        at = processes.parent(at).filter(|p| *p > 1)?;
        if processes.comm(at).as_deref() == Some("conmon") {
            return Some(RuntimeLimit { engine: "Podman", seconds: PODMAN_CREATE_TIMEOUT });
        }
    }
    None
}

/// The wait admission keeps to: the one asked, within what the engine allows
/// (with a warning when it is cut).
pub fn effective(asked: WaitTime, limit: Option<RuntimeLimit>) -> (WaitTime, Option<String>) {
    match limit {
        Some(l) if asked.as_seconds() > l.seconds - LIMIT_MARGIN => {
            let cut = WaitTime::seconds(l.seconds - LIMIT_MARGIN);
            (cut, Some(format!("a wait of {asked} is cut to {cut}: {} gives a container's hooks {} s to create it", l.engine, l.seconds)))
        }
        _ => (asked, None),
    }
}

/// How a waiting admission waits.
pub trait Waiter {
    /// The process that holds the place (the hook, or the broker's caller).
    fn pid(&self) -> i32;
    /// Sleeps [`POLL`]; false when whoever asked is gone.
    fn pause(&self) -> bool;
    /// Seconds since the epoch, now.
    fn now(&self) -> u64;
    /// How long the engine above lets the hook run: found from the
    /// processes above the waiter (conmon is Podman's).
    fn limit(&self, processes: &dyn Processes) -> Option<RuntimeLimit> {
        runtime_limit(processes, self.pid())
    }
}

/// The hook's own waiter: itself, the real clock; gone when the runtime
/// that ran it (its parent) is.
pub struct HookWaiter {
    parent: u32,
}

impl HookWaiter {
    pub fn new() -> HookWaiter {
        HookWaiter { parent: std::os::unix::process::parent_id() }
    }
}

impl Default for HookWaiter {
    fn default() -> Self {
        HookWaiter::new()
    }
}

impl Waiter for HookWaiter {
    fn pid(&self) -> i32 {
        std::process::id() as i32
    }
    fn pause(&self) -> bool {
        std::thread::sleep(POLL);
        std::os::unix::process::parent_id() == self.parent
    }
    fn now(&self) -> u64 {
        crate::base::clock::unix_seconds()
    }
}

/// The broker's waiter for one caller: the caller's hook holds the place;
/// gone when it hangs up.
pub struct CallerWaiter<'a> {
    pub pid: i32,
    pub connected: &'a dyn Fn() -> bool,
}

impl Waiter for CallerWaiter<'_> {
    fn pid(&self) -> i32 {
        self.pid
    }
    /// The broker's callers are rootless Podman's hooks, whatever the
    /// processes above the caller (which the caller controls) say.
    fn limit(&self, _: &dyn Processes) -> Option<RuntimeLimit> {
        Some(RuntimeLimit { engine: "rootless Podman", seconds: PODMAN_CREATE_TIMEOUT })
    }
    fn pause(&self) -> bool {
        std::thread::sleep(POLL);
        (self.connected)()
    }
    fn now(&self) -> u64 {
        crate::base::clock::unix_seconds()
    }
}

/// A waiter for tests: a clock that moves `step` seconds at each pause, and
/// what happens at each pause in turn (true: the caller is still there).
#[cfg(test)]
pub struct FakeWaiter {
    pub clock: std::cell::Cell<u64>,
    pub step: u64,
    pub pauses: std::cell::RefCell<std::collections::VecDeque<Box<dyn FnMut() -> bool>>>,
}

#[cfg(test)]
impl FakeWaiter {
    pub fn at(now: u64) -> FakeWaiter {
        FakeWaiter { clock: std::cell::Cell::new(now), step: 1, pauses: Default::default() }
    }
    pub fn then(self, f: impl FnMut() -> bool + 'static) -> FakeWaiter {
        self.pauses.borrow_mut().push_back(Box::new(f));
        self
    }
}

#[cfg(test)]
impl Waiter for FakeWaiter {
    fn pid(&self) -> i32 {
        77
    }
    fn pause(&self) -> bool {
        self.clock.set(self.clock.get() + self.step);
        let next = self.pauses.borrow_mut().pop_front();
        next.is_none_or(|mut f| f())
    }
    fn now(&self) -> u64 {
        self.clock.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_comes_from_the_annotation_the_env_or_the_profile() {
        let cfg = |json: &str| ContainerConfig::parse(json.as_bytes(), "t").unwrap();
        assert_eq!(requested(&cfg("{}"), WaitTime::NONE).unwrap(), WaitTime::NONE);
        let profiles = WaitTime::seconds(60);
        assert_eq!(requested(&cfg("{}"), profiles).unwrap(), WaitTime::seconds(60));
        assert_eq!(requested(&cfg(r#"{"process":{"env":["GPUWARDEN_WAIT=2m"]}}"#), profiles).unwrap(), WaitTime::seconds(120));
        let both = r#"{"process":{"env":["GPUWARDEN_WAIT=2m"]},"annotations":{"gpuwarden.io/wait":"0"}}"#;
        assert_eq!(requested(&cfg(both), profiles).unwrap(), WaitTime::NONE, "the annotation wins");
        let e = requested(&cfg(r#"{"annotations":{"gpuwarden.io/wait":"soon"}}"#), profiles).unwrap_err().to_string();
        assert!(e.starts_with("gpuwarden.io/wait: \"soon\" is not a wait"), "{e}");
    }

    struct Tree(Vec<(i32, i32, &'static str)>);
    impl Processes for Tree {
        fn start_time(&self, _: i32) -> Option<u64> {
            Some(1)
        }
        fn cgroup(&self, _: i32) -> Option<String> {
            None
        }
        fn parent(&self, pid: i32) -> Option<i32> {
            self.0.iter().find(|p| p.0 == pid).map(|p| p.1)
        }
        fn comm(&self, pid: i32) -> Option<String> {
            self.0.iter().find(|p| p.0 == pid).map(|p| p.2.to_string())
        }
    }

    #[test]
    fn podmans_limit_is_found_above_the_hook_and_cuts_long_waits() {
        let podman = Tree(vec![(30, 20, "gpuwarden-hook"), (20, 10, "runc"), (10, 1, "conmon")]);
        let limit = runtime_limit(&podman, 30);
        assert_eq!(limit, Some(RuntimeLimit { engine: "Podman", seconds: 240 }));
        let (w, warning) = effective(WaitTime::seconds(1800), limit);
        assert_eq!(w, WaitTime::seconds(230));
        assert_eq!(warning.unwrap(), "a wait of 30m is cut to 230s: Podman gives a container's hooks 240 s to create it");
        assert_eq!(effective(WaitTime::seconds(60), limit), (WaitTime::seconds(60), None));
        let docker = Tree(vec![(30, 20, "gpuwarden-hook"), (20, 15, "runc"), (15, 10, "gpuwarden-runti"), (10, 1, "containerd-shim")]);
        assert_eq!(runtime_limit(&docker, 30), None);
        assert_eq!(effective(WaitTime::seconds(1800), None), (WaitTime::seconds(1800), None));
    }
}
