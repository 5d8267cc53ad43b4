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
use crate::inventory::GpuProcess;
use crate::ledger::{label, Ledger};
use crate::proc::Processes;

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

    /// At start: containers of the ledger whose cgroup is frozen though the
    /// state does not say the watchdog paused them (it was killed between
    /// pausing and saving, or someone else paused them) are reported.
    pub fn reconcile(&self, state: &WatchState) -> Vec<Event> {
        let Ok(ledger) = (self.ledger)() else { return Vec::new() };
        let mut out = Vec::new();
        for r in &ledger.reservations {
            let Some(cgroup) = self.processes.cgroup(r.pid) else { continue };
            if is_frozen(&cgroup) == Some(true) && !state.paused.contains_key(&r.id) {
                let how = match engine_of(&cgroup) {
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
                |uid| crate::users::lookup(std::path::Path::new("/"), uid).map_or_else(|| format!("uid {uid}"), |(a, _)| format!("{}, uid {uid}", a.name)),
            );
            let command = self.processes.cmdline(u.pid).map_or_else(|| u.name.clone(), |a| a.join(" "));
            let within = container.as_deref().map_or_else(|| "on the host".to_string(), |id| format!("in container {}", crate::oci::short_id(id)));
            let what = format!(
                "pid {} ({user}, {within}) runs `{command}` on GPU {} with {}, outside gpuwarden's admission",
                u.pid,
                u.gpu,
                crate::size::ByteSize::bytes(u.used_bytes)
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
        let cgroups: BTreeMap<i32, String> = gpus.iter().flat_map(|(_, ps)| ps.iter()).filter_map(|p| Some((p.pid, self.processes.cgroup(p.pid)?))).collect();
        let owner = |pid: i32| cgroups.get(&pid).and_then(|cg| ledger.reservations.iter().find(|r| r.id.len() >= 12 && cg.contains(&r.id)).map(|r| r.id.clone()));
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
                    let numbers = format!("{} ({}) uses {used} of GPU memory, its share is {reserved} (+{}%)", res.label(), res.profile, self.config.watch.tolerance_percent);
                    match action {
                        ShareAction::Warn => {
                            if state.warned.insert(id.clone()) {
                                out.push(self.event("over_share", Some(&id), numbers));
                            }
                        }
                        ShareAction::Pause => match self.containers.pause(&id, engine_of(&cgroup), &cgroup) {
                            Ok(how) => {
                                let reason = PauseReason::OverShare { used_bytes: used.as_u64(), reserved_bytes: reserved.as_u64() };
                                state.paused.insert(id.clone(), Paused { reason, engine: engine_of(&cgroup), since: self.now });
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
                    let cgroup = self.processes.cgroup(res.pid).unwrap_or_default();
                    let why = format!("{} ({}) yields to {}", res.label(), res.profile, super::game_label(&game, pid));
                    match self.containers.pause(&id, engine_of(&cgroup), &cgroup) {
                        Ok(how) => {
                            state.paused.insert(id.clone(), Paused { reason: PauseReason::Game { name: game, pid }, engine: engine_of(&cgroup), since: self.now });
                            out.push(self.event("paused", Some(&id), format!("{why}: {how}")));
                        }
                        Err(e) => out.push(self.event("pause_failed", Some(&id), format!("{why}: {e}"))),
                    }
                }
                Decision::Resume { id } => {
                    let Some(res) = r(&id) else { continue };
                    let cgroup = self.processes.cgroup(res.pid).unwrap_or_default();
                    match self.containers.resume(&id, engine_of(&cgroup), &cgroup) {
                        Ok(how) => {
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
