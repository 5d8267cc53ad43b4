//! One look of the watchdog and what follows from it, with the OS behind
//! seams: what runs on the GPUs, the process table, the engines, the MPS
//! daemon's defaults, the clock. `gpuwarden watch` calls [`Watchdog::tick`]
//! every interval and saves the state after each.

use std::collections::BTreeMap;

use super::engine::{engine_of, is_frozen, Containers, Engine};
use super::events::Event;
use super::state::{Paused, WatchState};
use super::{decide, usage, Decision, PauseReason};
use crate::config::{Config, ShareAction};
use crate::host::inventory::GpuProcess;
use crate::ledger::Ledger;
use crate::model::{label, Reservation};
use crate::base::proc::{Lineage, Processes};

/// What the GPUs run now, per GPU (uuid); `Err` when it cannot be seen.
pub type Look<'a> = &'a dyn Fn() -> Result<Vec<(String, Vec<GpuProcess>)>, String>;
/// Puts the MPS daemon's defaults back if they moved: `Some(what was found and set)`.
pub type MpsGuard<'a> = &'a dyn Fn() -> Option<Result<String, String>>;

pub struct Watchdog<'a> {
    pub config: &'a Config,
    pub ledger: &'a dyn Fn() -> Result<Ledger, String>,
    pub look: Look<'a>,
    pub processes: &'a dyn Processes,
    pub containers: &'a dyn Containers,
    pub mps: MpsGuard<'a>,
    pub now: u64,
}

impl Watchdog<'_> {
    fn event(&self, kind: &str, container: Option<&str>, detail: String) -> Event {
        Event { time: self.now, kind: kind.into(), container: container.map(str::to_owned), detail }
    }

    /// Pauses (`pause`) or resumes the container of `r`, and says how: a
    /// container with a cgroup of its own through its engine, else that
    /// cgroup's freezer; one without (rootless Podman on cgroup v1, where its
    /// processes share their user's cgroup) by stopping and continuing its
    /// processes. A cgroup shared with anything else is never frozen.
    fn hold(&self, r: &Reservation, pause: bool) -> Result<(String, Engine), String> {
        let cgroup = self.processes.cgroup(r.pid).unwrap_or_default();
        if Lineage::of(self.processes, r.pid).cgroup_is_own(&r.id) {
            let engine = engine_of(&cgroup);
            let how = if pause { self.containers.pause(&r.id, engine, &cgroup) } else { self.containers.resume(&r.id, engine, &cgroup) };
            return how.map(|h| (h, engine));
        }
        let tree = crate::base::proc::container_tree(self.processes, &r.process());
        if tree.is_empty() {
            return Err(format!("its first process {} is gone", r.pid));
        }
        self.containers.signal_tree(&tree, pause).map(|h| (h, Engine::Other))
    }

    /// At start: containers of the ledger that are paused (their cgroup
    /// frozen, or, without a cgroup of their own, their first process
    /// stopped) though the state does not say the watchdog paused them (it
    /// was killed between pausing and saving, or someone else paused them)
    /// are reported.
    pub fn reconcile(&self, state: &WatchState) -> Vec<Event> {
        let Ok(ledger) = (self.ledger)() else { return Vec::new() };
        let mut out = Vec::new();
        for r in &ledger.reservations {
            let Some(cgroup) = self.processes.cgroup(r.pid) else { continue };
            let own = Lineage::of(self.processes, r.pid).cgroup_is_own(&r.id);
            let paused = if own { is_frozen(&cgroup) == Some(true) } else { self.processes.state(r.pid) == Some('T') };
            if paused && !state.paused.contains_key(&r.id) {
                let how = match engine_of(&cgroup) {
                    _ if !own => format!("kill -CONT {}", crate::base::proc::container_tree(self.processes, &r.process()).iter().map(i32::to_string).collect::<Vec<_>>().join(" ")),
                    Engine::Podman => format!("podman unpause {}", crate::oci::short_id(&r.id)),
                    Engine::Docker => format!("docker unpause {}", crate::oci::short_id(&r.id)),
                    Engine::Other => "thaw its cgroup".into(),
                };
                out.push(self.event("found_frozen", Some(&r.id), format!("{} is paused, and not by this watchdog's record: left as it is (resume it: {how})", r.label())));
            }
        }
        out
    }

    /// Each GPU process gpuwarden did not admit: one event while it runs (pid,
    /// user, command line, GPU memory, its container if any), then, with
    /// `[watch] unauthorized = "kill"`, SIGKILL (its container through the engine).
    fn unauthorized(&self, unknown: &[super::Unknown], state: &mut WatchState, out: &mut Vec<Event>) {
        let mut running = std::collections::BTreeSet::new();
        for u in unknown.iter().filter(|u| u.unauthorized()) {
            let key = format!("{}:{}", u.pid, self.processes.start_time(u.pid).unwrap_or(0));
            running.insert(key.clone());
            let kill = self.config.watch.unauthorized == crate::config::UnauthorizedAction::Kill;
            if !state.unauthorized_seen.insert(key) && !kill {
                continue;
            }
            let cgroup = self.processes.cgroup(u.pid).unwrap_or_default();
            let container = super::engine::container_id(&cgroup);
            let user = self.processes.uid(u.pid).map_or_else(
                || "user unknown".to_string(),
                |uid| crate::base::users::lookup(std::path::Path::new("/"), uid).map_or_else(|| format!("uid {uid}"), |(a, _)| format!("{}, uid {uid}", a.name)),
            );
            let command = self.processes.cmdline(u.pid).map_or_else(|| u.name.clone(), |a| a.join(" "));
            let within = container.as_deref().map_or_else(|| "on the host".to_string(), |id| format!("in container {}", crate::oci::short_id(id)));
            let what = format!(
                "pid {} ({user}, {within}) runs `{command}` on GPU {} with {}, outside gpuwarden's admission",
                u.pid,
                u.gpu,
                crate::base::size::ByteSize::bytes(u.used_bytes).approx()
            );
            if !kill {
                out.push(self.event("unauthorized", container.as_deref(), what));
                continue;
            }
            let id = container.clone().unwrap_or_default();
            match self.containers.kill(&id, engine_of(&cgroup), u.pid) {
                Ok(how) => out.push(self.event("unauthorized_killed", container.as_deref(), format!("{what}: {how}"))),
                Err(why) => out.push(self.event("unauthorized_kill_failed", container.as_deref(), format!("{what}: {why}"))),
            }
        }
        state.unauthorized_seen.retain(|k| running.contains(k));
    }

    /// One look and what follows; `state` is updated in place.
    pub fn tick(&self, state: &mut WatchState) -> Vec<Event> {
        let mut out = Vec::new();
        match (self.mps)() {
            Some(Ok(what)) => out.push(self.event("mps_defaults_restored", None, what)),
            Some(Err(why)) => out.push(self.event("mps_defaults_unchecked", None, why)),
            None => {}
        }
        let first_look = state.written_at == 0;
        state.written_at = self.now;
        state.interval_seconds = self.config.watch.interval_seconds;
        state.pid = std::process::id() as i32;
        let ledger = match (self.ledger)() {
            Ok(l) => l,
            Err(why) => {
                out.push(self.event("ledger_unreadable", None, why));
                return out;
            }
        };
        let gpus = match (self.look)() {
            Ok(g) => {
                state.live = true;
                g
            }
            Err(why) => {
                // Said once when sight is lost, not at every look.
                if state.live || first_look {
                    tracing::warn!("cannot see the GPUs' processes: {why}: enforcement is at start only until it can");
                }
                state.live = false;
                state.unknown.clear();
                state.used.clear();
                return out;
            }
        };
        // Each GPU process's container: by its cgroup, its pid namespace, or its descent from the container's first process.
        let owners: BTreeMap<i32, String> =
            gpus.iter().flat_map(|(_, ps)| ps.iter()).filter_map(|p| Some((p.pid, ledger.holder_of(self.processes, p.pid)?.id.clone()))).collect();
        let owner = |pid: i32| owners.get(&pid).cloned();
        // A reserve named like a program (`steam = "4GiB"`) makes it a game, unless it is the desktop's.
        let games: Vec<String> = self.config.watch.games.iter().chain(self.config.budget.reserves.keys()).cloned().collect();
        let classify = |p: &GpuProcess| super::games::classify(p.pid, &p.name, self.processes, &games, &self.config.watch.desktop);
        let use_now = usage(&gpus, &ledger, &owner, &classify);
        state.unknown = use_now.unknown.clone();
        state.used = use_now.used.iter().map(|(id, b)| (id.clone(), b.as_u64())).collect();
        let paused: BTreeMap<String, PauseReason> = state.paused.iter().map(|(id, p)| (id.clone(), p.reason.clone())).collect();
        for d in decide(&ledger, &use_now, &paused, &self.config.watch) {
            let r = |id: &str| ledger.reservations.iter().find(|r| r.id == id).cloned();
            match d {
                Decision::OverShare { id, action, used, reserved } => {
                    let Some(res) = r(&id) else { continue };
                    let cgroup = self.processes.cgroup(res.pid).unwrap_or_default();
                    let numbers = format!("{} ({}) uses {} of GPU memory, its share is {reserved} (+{}%)", res.label(), res.profile, used.approx(), self.config.watch.tolerance_percent);
                    match action {
                        ShareAction::Warn => {
                            if state.warned.insert(id.clone()) {
                                out.push(self.event("over_share", Some(&id), numbers));
                            }
                        }
                        ShareAction::Pause => match self.hold(&res, true) {
                            Ok((how, engine)) => {
                                let reason = PauseReason::OverShare { used_bytes: used.as_u64(), reserved_bytes: reserved.as_u64() };
                                state.paused.insert(id.clone(), Paused { reason, engine, since: self.now });
                                out.push(self.event("paused", Some(&id), format!("{numbers}: {how}")));
                            }
                            Err(why) => out.push(self.event("pause_failed", Some(&id), format!("{numbers}: {why}"))),
                        },
                        ShareAction::Kill => match self.containers.kill(&id, engine_of(&cgroup), res.pid) {
                            Ok(how) => out.push(self.event("killed", Some(&id), format!("{numbers}: {how}"))),
                            Err(why) => out.push(self.event("kill_failed", Some(&id), format!("{numbers}: {why}"))),
                        },
                    }
                }
                Decision::YieldToGame { id, game, pid } => {
                    let Some(res) = r(&id) else { continue };
                    let why = format!("{} ({}) yields to {}", res.label(), res.profile, super::game_label(&game, pid));
                    match self.hold(&res, true) {
                        Ok((how, engine)) => {
                            state.paused.insert(id.clone(), Paused { reason: PauseReason::Game { name: game, pid }, engine, since: self.now });
                            out.push(self.event("paused", Some(&id), format!("{why}: {how}")));
                        }
                        Err(e) => out.push(self.event("pause_failed", Some(&id), format!("{why}: {e}"))),
                    }
                }
                Decision::Resume { id } => {
                    let Some(res) = r(&id) else { continue };
                    match self.hold(&res, false) {
                        Ok((how, _)) => {
                            state.paused.remove(&id);
                            out.push(self.event("resumed", Some(&id), format!("{}: the game is gone: {how}", res.label())));
                        }
                        Err(e) => out.push(self.event("resume_failed", Some(&id), format!("{}: {e}", res.label()))),
                    }
                }
                Decision::Forget { id } => {
                    state.paused.remove(&id);
                    out.push(self.event("forgotten", Some(&id), format!("{} is gone", label(&id, None))));
                }
            }
        }
        self.unauthorized(&use_now.unknown, state, &mut out);
        // A warning is given once per time over the share.
        state.warned.retain(|id| {
            let res = ledger.reservations.iter().find(|r| &r.id == id);
            res.is_some_and(|r| use_now.used.get(id).is_some_and(|u| u.as_u64() > r.pinned_bytes.as_u64()))
        });
        for e in &out {
            *state.counts.entry(e.kind.clone()).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::proc::fake::Table;
    use crate::base::size::ByteSize;
    use std::cell::RefCell;

    /// What the watchdog asked of the containers, in order.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Containers for Recorder {
        fn pause(&self, _: &str, _: Engine, cgroup: &str) -> Result<String, String> {
            self.0.borrow_mut().push(format!("freeze {}", cgroup.trim()));
            Ok("froze it".into())
        }
        fn resume(&self, _: &str, _: Engine, cgroup: &str) -> Result<String, String> {
            self.0.borrow_mut().push(format!("thaw {}", cgroup.trim()));
            Ok("thawed it".into())
        }
        fn kill(&self, id: &str, _: Engine, pid: i32) -> Result<String, String> {
            self.0.borrow_mut().push(format!("kill {pid} {id}"));
            Ok("killed it".into())
        }
        fn signal_tree(&self, pids: &[i32], stop: bool) -> Result<String, String> {
            self.0.borrow_mut().push(format!("{} {pids:?}", if stop { "stop" } else { "cont" }));
            Ok("signalled it".into())
        }
    }

    const WORKER: &str = "c0ffee0000000000000000000000000000000000000000000000000000000000";

    /// A rootless ComfyUI worker on cgroup v1 (see [`crate::base::proc::fake::rootless_v1`]).
    fn desktop() -> Table {
        crate::base::proc::fake::rootless_v1()
    }

    fn ledger() -> Ledger {
        let worker = Reservation {
            id: WORKER.into(),
            name: Some("comfy-1".into()),
            profile: "comfyui".into(),
            gpus: vec!["GPU-a".into()],
            threads: 25,
            pinned_bytes: ByteSize::gib(3),
            pid: 100,
            pid_start: 7,
            admitted_at: 0,
            holder: Some(crate::model::Who::new(1000, Some("ana".into()))),
        };
        Ledger { reservations: vec![worker], ..Ledger::default() }
    }

    fn look_at(t: &Table, gpu: Vec<(i32, u64)>, config: &Config, containers: &Recorder, state: &mut WatchState) -> Vec<Event> {
        let ledger = || Ok(ledger());
        let processes: Vec<GpuProcess> = gpu.into_iter().map(|(pid, mib)| GpuProcess { pid, name: t.comm(pid).unwrap(), used_memory_bytes: ByteSize::mib(mib) }).collect();
        let look = move || Ok(vec![("GPU-a".to_string(), processes.clone())]);
        let mps = || None;
        Watchdog { config, ledger: &ledger, look: &look, processes: t, containers, mps: &mps, now: 100 }.tick(state)
    }

    #[test]
    fn a_rootless_worker_without_its_own_cgroup_is_its_reservations_and_kill_spares_it() {
        let t = desktop();
        let config = Config::parse("[watch]\nunauthorized = \"kill\"\n", std::path::Path::new("c")).unwrap();
        let recorder = Recorder::default();
        let mut state = WatchState::default();
        let events = look_at(&t, vec![(101, 2048), (200, 1024)], &config, &recorder, &mut state);
        assert_eq!(state.used.get(WORKER), Some(&(2 << 30)), "its CUDA process counts as the worker's");
        assert_eq!(state.unknown.iter().map(|u| u.pid).collect::<Vec<_>>(), [200]);
        assert_eq!(*recorder.0.borrow(), ["kill 200 "], "only the host job is killed, never through an engine or a container id");
        assert!(events.iter().all(|e| !e.detail.contains("pid 101")), "{events:?}");
    }

    #[test]
    fn a_game_stops_the_workers_processes_and_its_end_continues_them_never_freezing_the_session() {
        let t = desktop();
        let config = Config::default();
        let recorder = Recorder::default();
        let mut state = WatchState::default();
        let events = look_at(&t, vec![(101, 1024), (400, 2048)], &config, &recorder, &mut state);
        assert_eq!(*recorder.0.borrow(), ["stop [100, 101, 102, 110]"], "its tree, not the session cgroup: {events:?}");
        let paused = events.iter().find(|e| e.kind == "paused").unwrap();
        assert!(paused.detail.contains("comfy-1 (comfyui) yields to wine64-preloader (pid 400)"), "{}", paused.detail);
        for pid in [100, 101, 102, 110] {
            t.procs.borrow_mut().get_mut(&pid).unwrap().stopped = true;
        }
        // Killed and started again while it is paused: the state remembers, nothing is reported as found frozen.
        let ledger = || Ok(ledger());
        let none = || Ok(Vec::new());
        let mps = || None;
        let dog = Watchdog { config: &config, ledger: &ledger, look: &none, processes: &t, containers: &recorder, mps: &mps, now: 100 };
        assert!(dog.reconcile(&state).is_empty());
        let found = dog.reconcile(&WatchState::default());
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.ends_with("(resume it: kill -CONT 100 101 102 110)"), "{}", found[0].detail);
        look_at(&t, vec![(101, 1024)], &config, &recorder, &mut state);
        assert_eq!(recorder.0.borrow().last().unwrap(), "cont [100, 101, 102, 110]", "the game is gone");
        assert!(state.paused.is_empty());
    }

    #[test]
    fn a_worker_over_its_share_is_stopped_and_a_container_with_its_own_cgroup_is_frozen() {
        let t = desktop();
        let config = Config::default();
        let recorder = Recorder::default();
        let mut state = WatchState::default();
        look_at(&t, vec![(101, 4096)], &config, &recorder, &mut state);
        assert_eq!(*recorder.0.borrow(), ["stop [100, 101, 102, 110]"]);
        // The same worker on cgroup v2: its own scope is frozen, through the engine first.
        let own = format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{WORKER}.scope\n");
        for pid in [100, 101, 102, 110] {
            t.procs.borrow_mut().get_mut(&pid).unwrap().cgroup = own.clone();
        }
        let recorder = Recorder::default();
        look_at(&t, vec![(101, 4096)], &config, &recorder, &mut WatchState::default());
        assert_eq!(*recorder.0.borrow(), [format!("freeze {}", own.trim())]);
    }
}
