//! The render queue: a profile container that does not fit now may wait for
//! its share instead of failing. It asks with `gpuwarden.io/wait=30m` (or
//! `GPUWARDEN_WAIT`), or its profile sets `wait`. Its admission hook keeps
//! its place in the ledger's queue and looks again every fifth of a second;
//! containers are admitted in `[watch] priority` order, first come first
//! served within a profile. What is pure lives here; the loop is admission's.

use std::time::Duration;

use crate::config::WaitTime;
use crate::ledger::Waiting;
use crate::oci::ContainerConfig;
use crate::proc::Processes;

pub const WAIT_ANNOTATION: &str = "gpuwarden.io/wait";
pub const WAIT_ENV: &str = "GPUWARDEN_WAIT";

/// How often a waiting admission looks again.
pub const POLL: Duration = Duration::from_millis(200);

/// How long the container asks to wait: its annotation, else its env, else
/// its profile's `wait` (`default`).
pub fn requested(cfg: &ContainerConfig, default: WaitTime) -> Result<WaitTime, String> {
    let asked = cfg.annotation(WAIT_ANNOTATION).map(|v| (WAIT_ANNOTATION, v.to_string())).or_else(|| cfg.env(WAIT_ENV).map(|v| (WAIT_ENV, v.to_string())));
    match asked {
        Some((key, v)) => v.parse().map_err(|e| format!("{key}: {e}")),
        None => Ok(default),
    }
}

/// Where `profile` stands in `priority` (lower goes first; unnamed last).
pub fn rank(priority: &[String], profile: &str) -> usize {
    priority.iter().position(|p| p == profile).unwrap_or(priority.len())
}

/// The entries of `queue` that go before a container of `profile` on
/// `gpus` (one of them shared): a better rank, or the same rank and earlier
/// in the queue. `id` is the container's own entry, if it has one; without
/// one, it would join at the end.
pub fn ahead<'a>(queue: &'a [Waiting], id: &str, profile: &str, gpus: &[String], priority: &[String]) -> Vec<&'a Waiting> {
    let mine = rank(priority, profile);
    let me = queue.iter().position(|w| w.id == id).unwrap_or(queue.len());
    queue
        .iter()
        .enumerate()
        .filter(|(i, w)| *i != me && !w.cancelled && w.gpus.iter().any(|g| gpus.contains(g)))
        .filter(|(i, w)| {
            let theirs = rank(priority, &w.profile);
            theirs < mine || (theirs == mine && *i < me)
        })
        .map(|(_, w)| w)
        .collect()
}

/// The queue in the order it is served: by rank, then as they joined.
pub fn ordered<'a>(queue: &'a [Waiting], priority: &[String]) -> Vec<&'a Waiting> {
    let mut v: Vec<&Waiting> = queue.iter().collect();
    v.sort_by_key(|w| rank(priority, &w.profile));
    v
}

/// Marks the waiting container named by `key` (its id, an id prefix of 12
/// characters or more, or its name) cancelled: its hook refuses it at its
/// next look. Podman holds a container's lock while its hooks run, so
/// `podman rm -f` and Ctrl-C wait for the hook; this is how to end a wait.
/// `by` is the uid asking, through the broker: a user cancels only their own
/// (root, and the CLI run as root, any).
pub fn cancel<'a>(queue: &'a mut [Waiting], key: &str, by: Option<u32>) -> Result<&'a Waiting, String> {
    let matches = |w: &Waiting| w.name.as_deref() == Some(key) || (key.len() >= 12 && w.id.starts_with(key));
    let found: Vec<usize> = queue.iter().enumerate().filter(|(_, w)| matches(w)).map(|(i, _)| i).collect();
    match found[..] {
        [i] => {
            if let Some(uid) = by.filter(|uid| *uid != 0) {
                if queue[i].holder.as_ref().is_none_or(|h| h.uid != uid) {
                    let holder = queue[i].holder.as_ref().map_or_else(|| "root".to_string(), crate::ledger::Holder::describe);
                    return Err(format!("{} waits for {holder}, not for uid {uid}: a user cancels only their own", queue[i].label()));
                }
            }
            queue[i].cancelled = true;
            Ok(&queue[i])
        }
        [] => Err(format!("no container waits in the queue as {key:?}: `gpuwarden status` lists the queue (a 12-character id, the whole id, or a name)")),
        _ => Err(format!("{} containers in the queue match {key:?}: give more of the id", found.len())),
    }
}

/// Cancels `key` in the queue of the ledger in `store`, under its lock; the
/// line says who leaves.
pub fn cancel_in(store: &crate::ledger::LedgerStore, key: &str, by: Option<u32>) -> Result<String, String> {
    if !store.path().exists() {
        return Err(format!("there is no ledger at {}: nothing waits", store.path().display()));
    }
    let mut locked = store.lock().map_err(|e| e.to_string())?;
    let w = cancel(&mut locked.ledger.queue, key, by)?;
    let line = format!("{} ({}) leaves the queue at its next look: its hook refuses it", w.label(), w.profile);
    locked.save().map_err(|e| e.to_string())?;
    Ok(line)
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
        crate::clock::unix_seconds()
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
    fn pause(&self) -> bool {
        std::thread::sleep(POLL);
        (self.connected)()
    }
    fn now(&self) -> u64 {
        crate::clock::unix_seconds()
    }
}

/// A waiter for tests: a clock that moves `step` seconds at each pause, and
/// what happens at each pause in turn (true: the caller is still there).
#[cfg(test)]
pub(crate) struct FakeWaiter {
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
    use crate::size::ByteSize;

    fn waiting(id: &str, profile: &str, gpu: &str) -> Waiting {
        let asks = crate::ledger::Reservation { id: id.into(), name: None, profile: profile.into(), gpus: vec![gpu.into()], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 1, admitted_at: 0, holder: None };
        Waiting { asks, waiter: 2, waiter_start: 2, queued_at: 0, until: 100, waits_for: String::new(), cancelled: false }
    }

    fn ids(v: Vec<&Waiting>) -> Vec<&str> {
        v.into_iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn renders_go_before_inference_and_first_come_first_served_within_a_profile() {
        let prio = ["blender".to_string(), "comfyui".to_string()];
        let q = vec![waiting("c1", "comfyui", "G0"), waiting("b1", "blender", "G0"), waiting("c2", "comfyui", "G0"), waiting("x1", "other", "G0"), waiting("b9", "blender", "G1")];
        let g0 = ["G0".to_string()];
        assert!(ids(ahead(&q, "b1", "blender", &g0, &prio)).is_empty(), "the render queued second goes first");
        assert_eq!(ids(ahead(&q, "c1", "comfyui", &g0, &prio)), ["b1"]);
        assert_eq!(ids(ahead(&q, "c2", "comfyui", &g0, &prio)), ["c1", "b1"]);
        assert_eq!(ids(ahead(&q, "x1", "other", &g0, &prio)), ["c1", "b1", "c2"], "unnamed profiles come last");
        assert_eq!(ids(ahead(&q, "new", "comfyui", &g0, &prio)), ["c1", "b1", "c2"], "a newcomer joins at the end of its rank");
        assert_eq!(ids(ahead(&q, "new", "blender", &["G1".to_string()], &prio)), ["b9"], "only a shared GPU counts");
        let mut q = q;
        q[1].cancelled = true;
        assert_eq!(ids(ahead(&q, "c1", "comfyui", &g0, &prio)), Vec::<&str>::new(), "a cancelled entry holds nobody up");
    }

    #[test]
    fn a_waiting_container_is_cancelled_by_id_or_name() {
        let mut q = vec![waiting("c0ffee0011223344", "comfyui", "G0"), waiting("c0ffee0011229999", "comfyui", "G0")];
        q[1].asks.name = Some("comfy-2".into());
        assert!(cancel(&mut q, "c0ffee001122", None).unwrap_err().starts_with("2 containers in the queue match"));
        // A user cancels their own only; root any.
        q[1].asks.holder = Some(crate::ledger::Holder { uid: 1000, user: Some("ana".into()) });
        assert_eq!(cancel(&mut q, "comfy-2", Some(1001)).unwrap_err(), "c0ffee001122 comfy-2 waits for ana (uid 1000), not for uid 1001: a user cancels only their own");
        assert!(cancel(&mut q, "c0ffee00112233", Some(1000)).unwrap_err().contains("waits for root"));
        assert!(!q[0].cancelled && !q[1].cancelled);
        assert_eq!(cancel(&mut q, "comfy-2", Some(1000)).unwrap().id, "c0ffee0011229999");
        assert!(q[1].cancelled && !q[0].cancelled);
        assert_eq!(cancel(&mut q, "c0ffee00112233", Some(0)).unwrap().id, "c0ffee0011223344");
        assert!(cancel(&mut q, "c0ffee", None).unwrap_err().starts_with("no container waits in the queue as \"c0ffee\""));
    }

    #[test]
    fn a_wait_comes_from_the_annotation_the_env_or_the_profile() {
        let cfg = |json: &str| ContainerConfig::parse(json.as_bytes(), "t").unwrap();
        assert_eq!(requested(&cfg("{}"), WaitTime::NONE).unwrap(), WaitTime::NONE);
        let profiles = WaitTime::seconds(60);
        assert_eq!(requested(&cfg("{}"), profiles).unwrap(), WaitTime::seconds(60));
        assert_eq!(requested(&cfg(r#"{"process":{"env":["GPUWARDEN_WAIT=2m"]}}"#), profiles).unwrap(), WaitTime::seconds(120));
        let both = r#"{"process":{"env":["GPUWARDEN_WAIT=2m"]},"annotations":{"gpuwarden.io/wait":"0"}}"#;
        assert_eq!(requested(&cfg(both), profiles).unwrap(), WaitTime::NONE, "the annotation wins");
        let e = requested(&cfg(r#"{"annotations":{"gpuwarden.io/wait":"soon"}}"#), profiles).unwrap_err();
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
