//! `gpuwarden-hook admit`: createRuntime (or prestart). Reads the OCI state
//! on stdin and the bundle's config, refuses with the reason precreate left
//! there if any, checks the container against its profile, then against the
//! budget of each GPU it got, under the ledger's lock. Exit 0 admits; an
//! error is the one line the user reads.

use std::path::Path;

use super::{Settings, REFUSAL_ANNOTATION};
use crate::budget::{self, GpuCapacity};
use crate::config::{Config, WaitTime};
use crate::inventory::{Inventory, InventoryError};
use crate::ledger::{LedgerError, LedgerStore, Reservation};
use crate::oci::{ConfigError, ContainerConfig, HookState, StateError};
use crate::policy::{conform, Violation};
use crate::proc::Processes;
use crate::rewrite::{governing_profile, RewriteError};

/// What admission needs besides its stdin.
pub struct HookEnv<'a> {
    /// gpuwarden's configuration, loaded only for a container with a profile.
    pub settings: Settings<'a>,
    /// The state folder, when the hook was given one (else the configuration's).
    pub state_dir: Option<&'a Path>,
    pub processes: &'a dyn Processes,
    /// Loads the inventory; called only for containers with a profile.
    pub inventory: &'a dyn Fn(&Config) -> Result<Inventory, InventoryError>,
    /// Looks at the MPS control daemon (see [`crate::mps::probe`]).
    pub daemon: &'a dyn Fn(&crate::config::MpsConfig) -> Result<crate::mps::Daemon, crate::mps::ProbeError>,
    /// Seconds since the epoch.
    pub now: u64,
    /// How a container that may wait for its share waits (see [`crate::queue`]).
    pub waiter: &'a dyn crate::queue::Waiter,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The container has no profile: not gpuwarden's to judge.
    NotGoverned,
    Admitted(Reservation),
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("refused {id}{profile}: {reason}")]
    Precreate { id: String, profile: String, reason: String },
    #[error("refused {id}: {source}")]
    Profile { id: String, source: RewriteError },
    #[error("refused {id} ({profile}): {source}")]
    Settings { id: String, profile: String, source: crate::config::ConfigError },
    #[error("refused {id} ({profile}): {violation}")]
    Violation { id: String, profile: String, violation: Violation },
    #[error("refused {id} ({profile}): {why}")]
    Gpu { id: String, profile: String, why: String },
    #[error("refused {id} ({profile}): {why}")]
    Access { id: String, profile: String, why: String },
    #[error("refused {id} ({profile}): {why}")]
    Queue { id: String, profile: String, why: String },
    #[error("refused {id} ({profile}): MPS would not hold: {why}")]
    Mps { id: String, profile: String, why: String },
    #[error("refused {id} ({profile}): the GPUs are unknown: {source}")]
    Inventory { id: String, profile: String, source: InventoryError },
    #[error("refused {id} ({profile}): {source}")]
    Ledger { id: String, profile: String, source: LedgerError },
    #[error("{0}")]
    Budget(String),
}

impl AdmitError {
    /// A verdict on the container (its profile, its conformance, the GPU, MPS,
    /// the budget), as opposed to input or state that could not be read.
    pub fn is_verdict(&self) -> bool {
        matches!(self, AdmitError::Precreate { .. } | AdmitError::Profile { .. } | AdmitError::Violation { .. } | AdmitError::Gpu { .. } | AdmitError::Access { .. } | AdmitError::Queue { .. } | AdmitError::Mps { .. } | AdmitError::Budget(_))
    }
}

/// Counts a refusal for the watchdog's metrics: a verdict on a container is
/// appended to the events file beside the ledger; unreadable input is not.
pub fn record_refusal(e: &AdmitError, env: &HookEnv) {
    if !e.is_verdict() {
        return;
    }
    let Ok(config) = (env.settings)() else { return };
    let file = env.state_dir.map_or(config.watch.events_file, |d| d.join("events.jsonl"));
    let event = crate::watched::events::Event { time: env.now, kind: "refused".into(), container: None, detail: crate::text::one_line(e) };
    let _ = crate::watched::events::append(&file, &event);
}

/// Admits the container in `input`'s state, or says why not.
pub fn admit(input: &[u8], env: &HookEnv) -> Result<Admission, AdmitError> {
    let state = HookState::parse(input)?;
    let cfg = ContainerConfig::from_bundle(state.bundle()?)?;
    admit_config(&state, &cfg, env, None)
}

/// Admits the container of `state` whose config is `cfg` (read by the hook,
/// or sent to the broker for `who`: then the profile's users and the
/// per-user cap are checked, and the user is recorded with the reservation).
pub fn admit_config(state: &HookState, cfg: &ContainerConfig, env: &HookEnv, who: Option<&crate::access::Who>) -> Result<Admission, AdmitError> {
    let name = super::container_name(state, cfg);
    let id = crate::ledger::label(&state.id, name.as_deref());
    if let Some(reason) = cfg.annotation(REFUSAL_ANNOTATION) {
        let profile = cfg.profile_name().ok().flatten().map_or_else(String::new, |p| format!(" ({p})"));
        return Err(AdmitError::Precreate { id, profile, reason: reason.to_string() });
    }
    let Some(named) = cfg.profile_name().map_err(|e| AdmitError::Profile { id: id.clone(), source: RewriteError::TwoProfiles(e) })? else {
        tracing::debug!("{id} has no gpuwarden profile: nothing to admit");
        return Ok(Admission::NotGoverned);
    };
    let config = (env.settings)().map_err(|source| AdmitError::Settings { id: id.clone(), profile: named.to_string(), source })?;
    let (profile, profile_def) = governing_profile(cfg, &config)
        .map_err(|source| AdmitError::Profile { id: id.clone(), source })?
        .expect("the container names a profile");
    let share = conform(cfg, &profile, profile_def)
        .map_err(|violation| AdmitError::Violation { id: id.clone(), profile: profile.clone(), violation })?;
    if let Some(who) = who {
        crate::access::may_use(who, &profile, profile_def).map_err(|why| AdmitError::Access { id: id.clone(), profile: profile.clone(), why })?;
    }
    let gpu_err = |why: String| AdmitError::Gpu { id: id.clone(), profile: profile.clone(), why };
    let pid = state.pid.ok_or_else(|| gpu_err("the OCI state has no pid; run this hook at createRuntime or prestart".into()))?;
    let pid_start = env.processes.start_time(pid).ok_or_else(|| gpu_err(format!("the container's process {pid} is gone")))?;

    let inventory = (env.inventory)(&config).map_err(|source| AdmitError::Inventory { id: id.clone(), profile: profile.clone(), source })?;
    let gpus: Vec<GpuCapacity> = cfg
        .gpu_minors()
        .into_iter()
        .map(|minor| {
            let gpu = inventory.gpu_by_minor(minor).ok_or_else(|| gpu_err(format!("/dev/nvidia{minor} is not a GPU of the inventory")))?;
            let capacity = GpuCapacity::new(gpu, &config.budget);
            match capacity.reserves_problem() {
                Some(problem) => Err(gpu_err(problem)),
                None => Ok(capacity),
            }
        })
        .collect::<Result<_, AdmitError>>()?;

    if config.mps.enabled {
        // The uid its process runs as on the host: under rootless Podman, mapped by its user namespace.
        let host_uid = crate::proc::host_uid(env.processes.uid_map(pid).as_deref(), cfg.uid());
        crate::mps::admission::check(cfg, &config.mps, (env.daemon)(&config.mps), host_uid)
            .map_err(|why| AdmitError::Mps { id: id.clone(), profile: profile.clone(), why })?;
    }
    if config.watch.required {
        let watch = crate::watched::state::WatchState::load(&config.watch.state_file).unwrap_or_default();
        if !(watch.is_fresh(env.now) && watch.live) {
            return Err(gpu_err(format!(
                "the watchdog is required ([watch] required = true) and {}",
                crate::watched::enforcement(&watch, env.now).replace("enforcement is at start only (admission); ", "")
            )));
        }
    }

    let asked = crate::queue::requested(cfg, profile_def.wait).map_err(|why| AdmitError::Queue { id: id.clone(), profile: profile.clone(), why })?;
    // Only a container that asks to wait costs a look at the processes above the hook.
    let (wait, cut) = if asked == WaitTime::NONE { (asked, None) } else { crate::queue::effective(asked, crate::queue::runtime_limit(env.processes, env.waiter.pid())) };
    if let Some(warning) = cut {
        tracing::warn!("{id} ({profile}): {warning}");
    }
    let store = LedgerStore::new(env.state_dir.unwrap_or(&config.state_dir));
    let ledger_err = |source| AdmitError::Ledger { id: id.clone(), profile: profile.clone(), source };
    // What it holds once admitted, and asks for while it waits.
    let asks = Reservation {
        id: state.id.clone(),
        name: name.clone(),
        profile: profile.clone(),
        gpus: gpus.iter().map(|g| g.uuid.clone()).collect(),
        threads: share.threads,
        pinned_bytes: share.pinned,
        pid,
        pid_start,
        admitted_at: 0,
        holder: who.map(|w| crate::ledger::Holder { uid: w.uid, user: w.user.clone() }),
    };
    let started = env.waiter.now();
    let mut locked = loop {
        let mut locked = store.lock().map_err(ledger_err)?;
        let stale = locked.ledger.reclaim(env.processes);
        for r in &stale {
            tracing::warn!("reclaimed stale reservation {} ({}): process {} is gone", r.label(), r.profile, r.pid);
        }
        for w in locked.ledger.reclaim_queue(env.processes) {
            tracing::warn!("{} ({}) left the queue: its container or its hook is gone", w.label(), w.profile);
        }
        locked.ledger.remove(&state.id);
        let mine = locked.ledger.queue.iter().position(|w| w.id == state.id);
        // The waiter's clock: a look minutes into a wait judges the watchdog's freshness now.
        let now = env.waiter.now();
        let judged = Judged { config: &config, profile: &profile, share: &share, gpus: &gpus, who, id: &state.id, waits: wait > WaitTime::NONE, now };
        let (on, detail) = match judge(&locked.ledger, &judged, env) {
            Ok(()) => break locked,
            Err(Blocked::Refuse(why)) => return Err(leave_queue(&mut locked, &state.id, AdmitError::Access { id: id.clone(), profile: profile.clone(), why }, ledger_err)),
            Err(Blocked::Wait { on, detail }) => (on, detail),
        };
        let waited = now.saturating_sub(started);
        if wait == WaitTime::NONE {
            if !stale.is_empty() {
                locked.save().map_err(ledger_err)?;
            }
            return Err(AdmitError::Budget(format!("refused {id} ({profile}) on {on}: {detail}")));
        }
        if mine.is_some_and(|at| locked.ledger.queue[at].cancelled) {
            let why = format!("taken out of the queue with `gpuwarden queue cancel` after waiting {waited} s");
            return Err(leave_queue(&mut locked, &state.id, AdmitError::Queue { id: id.clone(), profile: profile.clone(), why }, ledger_err));
        }
        if now >= started + wait.as_seconds() {
            let line = format!("refused {id} ({profile}) after waiting {waited} s (gpuwarden.io/wait={wait}) on {on}: {detail}");
            return Err(leave_queue(&mut locked, &state.id, AdmitError::Budget(line), ledger_err));
        }
        let waits_for = format!("{on}: {detail}");
        match mine {
            Some(at) => locked.ledger.queue[at].waits_for = waits_for,
            None => {
                tracing::info!("{id} ({profile}) waits up to {wait} for its share: {waits_for}");
                locked.ledger.queue.push(crate::ledger::Waiting {
                    asks: Reservation { admitted_at: started, ..asks.clone() },
                    waiter: env.waiter.pid(),
                    waiter_start: env.processes.start_time(env.waiter.pid()).unwrap_or(0),
                    queued_at: started,
                    until: started + wait.as_seconds(),
                    waits_for,
                    cancelled: false,
                });
            }
        }
        locked.save().map_err(ledger_err)?;
        drop(locked);
        let gone = if !env.waiter.pause() {
            Some("its runtime is gone")
        } else if env.processes.start_time(pid) != Some(pid_start) {
            Some("its process is gone")
        } else {
            None
        };
        if let Some(gone) = gone {
            let mut locked = store.lock().map_err(ledger_err)?;
            let why = format!("{gone}: it left the queue after waiting {} s", env.waiter.now().saturating_sub(started));
            return Err(leave_queue(&mut locked, &state.id, AdmitError::Gpu { id: id.clone(), profile: profile.clone(), why }, ledger_err));
        }
    };
    locked.ledger.queue.retain(|w| w.id != state.id);
    // Admitted now, which for a container that waited is later than the hook's start.
    let reservation = Reservation { admitted_at: env.waiter.now(), ..asks };
    locked.ledger.insert(reservation.clone());
    locked.save().map_err(ledger_err)?;
    tracing::info!("admitted {} ({}): {}%, {} in {}", reservation.label(), reservation.profile, reservation.threads, reservation.pinned_bytes, store.path().display());
    if !config.mps.enabled {
        tracing::warn!("admitted {} ({}), but MPS is off ([mps] enabled = false): nothing limits it on the GPU, its share is bookkeeping only", reservation.label(), reservation.profile);
    }
    Ok(Admission::Admitted(reservation))
}

/// Takes container `id` off the queue and saves, then answers `e` (or why
/// the ledger could not be saved).
fn leave_queue(locked: &mut crate::ledger::LockedLedger, id: &str, e: AdmitError, ledger_err: impl Fn(LedgerError) -> AdmitError) -> AdmitError {
    locked.ledger.queue.retain(|w| w.id != id);
    match locked.save() {
        Ok(()) => e,
        Err(source) => ledger_err(source),
    }
}

/// What one look at the ledger judges a container by.
struct Judged<'a> {
    config: &'a Config,
    profile: &'a str,
    share: &'a crate::rewrite::Share,
    gpus: &'a [GpuCapacity],
    who: Option<&'a crate::access::Who>,
    id: &'a str,
    /// It may wait: games and the queue ahead hold it back too.
    waits: bool,
    now: u64,
}

/// Why a container is not admitted at this look.
enum Blocked {
    /// A rule that waiting does not change (a user's cap).
    Refuse(String),
    /// Its share is not free on a GPU (`on`: `GPU 0 (RTX 4070)`), for `detail`.
    Wait { on: String, detail: String },
}

/// Whether the container fits now, beside the ledger's holders: its user's
/// cap, the budget of each GPU; and, when it may wait, no game on its GPUs
/// (if its profile yields to games) and nobody ahead of it in the queue.
fn judge(ledger: &crate::ledger::Ledger, j: &Judged, env: &HookEnv) -> Result<(), Blocked> {
    if let (Some(who), Some(cap)) = (j.who, &j.config.budget.per_user) {
        let held: Vec<&Reservation> = ledger.reservations.iter().filter(|r| r.holder.as_ref().is_some_and(|h| h.uid == who.uid)).collect();
        crate::access::within_cap(who, cap, &held, j.share).map_err(Blocked::Refuse)?;
    }
    let game = if j.waits && j.config.watch.yield_to_games.iter().any(|p| p == j.profile) {
        let watch = crate::watched::state::WatchState::load(&j.config.watch.state_file).unwrap_or_default();
        if watch.is_fresh(j.now) { watch.unknown.into_iter().filter(|u| u.game).collect() } else { Vec::new() }
    } else {
        Vec::new()
    };
    for gpu in j.gpus {
        if let Some(g) = game.iter().find(|u| u.gpu == gpu.uuid) {
            return Err(Blocked::Wait { on: gpu.describe(), detail: format!("a game runs: {} (profile {} yields to games)", crate::watched::game_label(&g.name, g.pid), j.profile) });
        }
        let uuids = [gpu.uuid.clone()];
        let ahead = crate::queue::ahead(&ledger.queue, j.id, j.profile, &uuids, &j.config.watch.priority);
        if let Some(first) = ahead.first() {
            let more = if ahead.len() > 1 { format!(" and {} more", ahead.len() - 1) } else { String::new() };
            let hint = if j.waits { "" } else { "; to wait for the share, set gpuwarden.io/wait or GPUWARDEN_WAIT" };
            return Err(Blocked::Wait { on: gpu.describe(), detail: format!("{} ({}) waits ahead of it in the queue{more}{hint}", first.label(), first.profile) });
        }
        // What runs on the GPU outside the reservations counts beyond the reserves.
        let gpu = gpu.clone().leave_out(|pid| ledger.holds_process(env.processes, pid));
        let holders = ledger.on_gpu(&gpu.uuid);
        if let Err(shortfall) = budget::check(&gpu, &holders, j.share) {
            return Err(Blocked::Wait { on: gpu.describe(), detail: budget::refusal_detail(&gpu, &shortfall, &holders) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::builtin;
    use crate::ledger::tests::FakeProcesses;
    use crate::oci::tests_support::podman_like;
    use crate::rewrite::apply_profile;
    use std::collections::HashMap;
    use crate::size::ByteSize;
    use std::path::Path;

    struct World {
        dir: tempfile::TempDir,
        config: Config,
        store: LedgerStore,
        procs: FakeProcesses,
        daemon: Result<crate::mps::Daemon, crate::mps::ProbeError>,
        /// What the inventory says runs on GPU 0.
        live: Option<Vec<crate::inventory::GpuProcess>>,
        /// How the next admission waits (a fresh fake waiter at 1000 when unset).
        waiter: Option<crate::queue::FakeWaiter>,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::parse("[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
            let store = LedgerStore::new(&dir.path().join("state"));
            World { dir, config, store, procs: FakeProcesses(HashMap::new()), daemon: Ok(crate::mps::Daemon { pid: 1, servers: Vec::new() }), live: None, waiter: None }
        }

        /// A bundle for container `id` with `profile`, rewritten as precreate does.
        fn bundle(&self, id: &str, profile: &str) -> std::path::PathBuf {
            let mut v: serde_json::Value = serde_json::from_slice(&podman_like().to_json()).unwrap();
            v["process"]["env"] = serde_json::json!([format!("GPUWARDEN_PROFILE={profile}")]);
            // What the profile device mounts.
            v["mounts"] = serde_json::json!([
                {"destination": "/run/gpuwarden/mps/pipe", "source": "/run/gpuwarden/mps/pipe"},
                {"destination": "/dev/shm", "source": "/run/gpuwarden/mps/shm"},
            ]);
            let mut cfg = ContainerConfig::parse(&serde_json::to_vec(&v).unwrap(), "t").unwrap();
            apply_profile(&mut cfg, &self.config).unwrap();
            let b = self.dir.path().join(id);
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("config.json"), cfg.to_json()).unwrap();
            b
        }

        fn admit(&mut self, id: &str, profile: &str, pid: i32) -> Result<Admission, AdmitError> {
            let bundle = self.bundle(id, profile);
            self.admit_bundle(id, &bundle, pid)
        }

        fn admit_bundle(&mut self, id: &str, bundle: &Path, pid: i32) -> Result<Admission, AdmitError> {
            self.procs.0.insert(pid, 7);
            self.procs.0.insert(77, 7);
            let waiter = self.waiter.take().unwrap_or_else(|| crate::queue::FakeWaiter::at(1000));
            let state = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": bundle});
            let config = self.config.clone();
            let settings = move || Ok(config.clone());
            let dir = self.dir.path().join("state");
            let daemon = |_: &crate::config::MpsConfig| self.daemon.clone();
            let inventory = |_: &Config| {
                let mut inv = builtin("rtx4070").unwrap();
                inv.gpus[0].processes = self.live.clone();
                Ok(inv)
            };
            let env = HookEnv { settings: &settings, state_dir: Some(&dir), processes: &self.procs, inventory: &inventory, daemon: &daemon, now: 1000, waiter: &waiter };
            admit(&serde_json::to_vec(&state).unwrap(), &env)
        }
    }

    fn rtx4070(_: &Config) -> Result<Inventory, InventoryError> {
        Ok(builtin("rtx4070").unwrap())
    }

    #[test]
    fn a_required_watchdog_that_does_not_look_refuses_admission() {
        let mut w = World::new();
        let state_file = w.dir.path().join("watch.json");
        w.config = Config::parse(&format!("[watch]\nrequired = true\nstate_file = \"{}\"\n", state_file.display()), Path::new("c")).unwrap();
        let e = w.admit("comfy1000000cc", "comfyui", 41).unwrap_err().to_string();
        assert!(e.contains("(comfyui): the watchdog is required ([watch] required = true) and not running (no recent look): start `gpuwarden watch`"), "{e}");
        let seen = crate::watched::state::WatchState { written_at: 999, interval_seconds: 2, pid: 5, live: false, ..Default::default() };
        seen.save(&state_file).unwrap();
        let e = w.admit("comfy1000000cc", "comfyui", 41).unwrap_err().to_string();
        assert!(e.contains("cannot see the GPUs' processes (no NVML)"), "{e}");
        crate::watched::state::WatchState { live: true, ..seen }.save(&state_file).unwrap();
        assert!(matches!(w.admit("comfy1000000cc", "comfyui", 41), Ok(Admission::Admitted(_))));
    }

    #[test]
    fn the_reason_precreate_left_is_the_refusal() {
        let mut w = World::new();
        let bundle = w.bundle("comfy1000000bb", "comfyui");
        let mut cfg = ContainerConfig::from_bundle(&bundle).unwrap();
        cfg.set_annotation(REFUSAL_ANNOTATION, "annotation gpuwarden.io/threads asks 60%, more than profile comfyui allows (25%)");
        std::fs::write(bundle.join("config.json"), cfg.to_json()).unwrap();
        let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
        assert_eq!(e, "refused comfy1000000 (comfyui): annotation gpuwarden.io/threads asks 60%, more than profile comfyui allows (25%)");
        cfg.set_annotation("gpuwarden.io/name", "comfy-3");
        std::fs::write(bundle.join("config.json"), cfg.to_json()).unwrap();
        let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
        assert!(e.starts_with("refused comfy1000000 comfy-3 (comfyui): annotation"), "named as in budget refusals: {e}");
        assert!(!w.store.path().exists(), "a refusal changes no state");
    }

    #[test]
    fn reserves_larger_than_the_gpu_are_a_refusal_that_names_them() {
        let mut w = World::new();
        w.config = Config::parse("[budget.reserves]\nsteam = \"40GiB\"\n", Path::new("c")).unwrap();
        let e = w.admit("comfy1000000bb", "comfyui", 11).unwrap_err().to_string();
        assert!(e.starts_with("refused comfy1000000 (comfyui): GPU 0 (RTX 4070) has 12.0 GiB and the reserves (steam 40.0 GiB) add up to 40.0 GiB"), "{e}");
        assert!(!w.store.path().exists());
    }

    #[test]
    fn the_demo_sequence() {
        let mut w = World::new();
        assert!(matches!(w.admit("render000000aa", "blender", 10).unwrap(), Admission::Admitted(_)));
        let e = w.admit("comfy1000000bb", "comfyui", 11).unwrap_err().to_string();
        assert!(e.starts_with("refused comfy1000000 (comfyui) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 2.5 GiB left of 7.5 GiB"), "{e}");
        assert!(e.contains("held by render000000 (blender) 5.0 GiB; reserved: steam 4.0 GiB, system 0.5 GiB"), "{e}");
        let removed = release(&w, "render000000aa");
        assert_eq!(removed.unwrap().profile, "blender");
        w.admit("comfy1000000bb", "comfyui", 11).unwrap();
        w.admit("comfy2000000cc", "comfyui", 12).unwrap();
        let e = w.admit("comfy3000000dd", "comfyui", 13).unwrap_err().to_string();
        assert!(e.contains("1.5 GiB left of 7.5 GiB"), "{e}");
        assert_eq!(w.store.read().unwrap().reservations.len(), 2);
    }

    fn release(w: &World, id: &str) -> Option<Reservation> {
        super::super::release(serde_json::json!({"id": id, "bundle": "/x"}).to_string().as_bytes(), &w.store).unwrap()
    }

    #[test]
    fn without_a_live_daemon_nothing_is_admitted_and_with_mps_off_all_is_said() {
        let mut w = World::new();
        w.daemon = Err(crate::mps::ProbeError::NotListening { path: "/run/gpuwarden/mps/pipe/control".into(), errno: nix::Error::ECONNREFUSED });
        let e = w.admit("comfy1000000bb", "comfyui", 11).unwrap_err().to_string();
        assert!(e.starts_with("refused comfy1000000 (comfyui): MPS would not hold: the MPS control daemon is not running"), "{e}");
        assert!(e.contains("run `gpuwarden mps start`"), "{e}");
        assert!(!w.store.path().exists(), "a refusal changes no state");
        w.config = Config::parse("[mps]\nenabled = false\n", Path::new("c")).unwrap();
        assert!(matches!(w.admit("comfy1000000bb", "comfyui", 11), Ok(Admission::Admitted(_))), "off is a choice the config makes");
    }

    #[test]
    fn a_game_on_the_gpu_counts_beyond_the_reserves_and_is_named() {
        let mut w = World::new();
        w.config = Config::parse("[budget.reserves]\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
        w.admit("c-11-0000000000", "comfyui", 11).unwrap();
        // By the ledger 8.5 GiB are left, room for the render; a game uses 6 GiB, 5.5 beyond the reserves.
        let game = crate::inventory::GpuProcess { pid: 4242, name: "steam_game".into(), used_memory_bytes: ByteSize::gib(6) };
        w.live = Some(vec![game]);
        let e = w.admit("render000000aa", "blender", 10).unwrap_err().to_string();
        assert_eq!(
            e,
            "refused render000000 (blender) on GPU 0 (RTX 4070): needs 5.0 GiB pinned memory, 3.0 GiB left of 11.5 GiB \
             (held by c-11-0000000 (comfyui) 3.0 GiB; in use outside gpuwarden: 4242 steam_game 6.0 GiB, 5.5 GiB beyond the reserves; reserved: system 0.5 GiB)"
        );
        w.live = Some(Vec::new());
        assert!(matches!(w.admit("render000000aa", "blender", 10), Ok(Admission::Admitted(_))), "the game is gone: it fits");
    }

    #[test]
    fn a_containers_own_gpu_processes_are_not_counted_twice() {
        let mut w = World::new();
        w.config = Config::parse("[budget.reserves]\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
        // A worker holds 3 GiB, and its CUDA process (pid 11, in its cgroup) uses them.
        w.admit("c-11-0000000000", "comfyui", 11).unwrap();
        w.live = Some(vec![crate::inventory::GpuProcess { pid: 11, name: "python3".into(), used_memory_bytes: ByteSize::gib(3) }]);
        assert!(matches!(w.admit("render000000aa", "blender", 12), Ok(Admission::Admitted(_))), "8.5 GiB left by the ledger, nothing outside");
    }

    #[test]
    fn a_dead_holder_is_reclaimed_at_the_next_admission() {
        let mut w = World::new();
        w.admit("render000000aa", "blender", 10).unwrap();
        w.procs.0.remove(&10);
        w.admit("comfy1000000bb", "comfyui", 11).unwrap();
        let ids: Vec<String> = w.store.read().unwrap().reservations.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["comfy1000000bb"]);
    }

    #[test]
    fn containers_without_profile_are_not_judged_and_leave_no_trace() {
        let w = World::new();
        let b = w.dir.path().join("plain");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("config.json"), br#"{"process":{"env":["A=1"]}}"#).unwrap();
        let inventory = |_: &Config| -> Result<Inventory, InventoryError> { panic!("no inventory is needed") };
        let settings = || -> Result<Config, crate::config::ConfigError> { panic!("no configuration is needed") };
        let daemon = |_: &crate::config::MpsConfig| -> Result<crate::mps::Daemon, crate::mps::ProbeError> { panic!("no daemon is asked") };
        let waiter = crate::queue::FakeWaiter::at(0);
        let env = HookEnv { settings: &settings, state_dir: Some(w.store.dir()), processes: &w.procs, inventory: &inventory, daemon: &daemon, now: 0, waiter: &waiter };
        let state = serde_json::json!({"id": "plain", "pid": 1, "bundle": b}).to_string();
        assert_eq!(admit(state.as_bytes(), &env).unwrap(), Admission::NotGoverned);
        assert!(!w.store.path().exists());
    }

    #[test]
    fn bad_stdin_and_missing_bundles_leave_the_ledger_alone() {
        let w = World::new();
        let settings = || Ok(Config::default());
        let daemon = |_: &crate::config::MpsConfig| Ok(crate::mps::Daemon { pid: 1, servers: Vec::new() });
        let waiter = crate::queue::FakeWaiter::at(0);
        let env = HookEnv { settings: &settings, state_dir: Some(w.store.dir()), processes: &w.procs, inventory: &rtx4070, daemon: &daemon, now: 0, waiter: &waiter };
        for (input, want) in [
            (&b""[..], "no OCI state on stdin"),
            (b"nope", "not valid"),
            (br#"{"id":"x","pid":1}"#, "has no bundle"),
            (br#"{"id":"x","pid":1,"bundle":"/nonexistent/b"}"#, "cannot read /nonexistent/b/config.json"),
        ] {
            let e = admit(input, &env).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(!w.store.path().exists());
    }

    /// A bundle that asks to wait `wait` for its share.
    fn waiting_bundle(w: &World, id: &str, profile: &str, wait: &str) -> std::path::PathBuf {
        let b = w.bundle(id, profile);
        let mut cfg = ContainerConfig::from_bundle(&b).unwrap();
        cfg.set_annotation(crate::queue::WAIT_ANNOTATION, wait);
        std::fs::write(b.join("config.json"), cfg.to_json()).unwrap();
        b
    }

    /// Puts `id` (`profile`, 3 GiB, waiter pid 88) in the queue on GPU 0, as a hook that waits would.
    fn queue_entry(w: &mut World, id: &str, profile: &str, pid: i32) {
        w.procs.0.insert(pid, 7);
        w.procs.0.insert(88, 7);
        let uuid = builtin("rtx4070").unwrap().gpus[0].uuid.clone();
        let mut locked = w.store.lock().unwrap();
        let asks = Reservation { id: id.into(), name: None, profile: profile.into(), gpus: vec![uuid], threads: 25, pinned_bytes: ByteSize::gib(3), pid, pid_start: 7, admitted_at: 990, holder: None };
        locked.ledger.queue.push(crate::ledger::Waiting { asks, waiter: 88, waiter_start: 7, queued_at: 990, until: 2000, waits_for: "x".into(), cancelled: false });
        locked.save().unwrap();
    }

    fn releaser(w: &World, id: &'static str) -> impl FnMut() -> bool + 'static {
        let store = LedgerStore::new(w.store.dir());
        move || {
            let mut l = store.lock().unwrap();
            l.ledger.remove(id);
            l.save().unwrap();
            true
        }
    }

    #[test]
    fn a_render_that_waits_is_admitted_when_its_share_frees_before_inference_queued_earlier() {
        let mut w = World::new();
        w.config = Config::parse("[budget.reserves]\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
        w.admit("render000000aa", "blender", 10).unwrap();
        w.admit("comfy1000000bb", "comfyui", 11).unwrap();
        w.admit("comfy0000000ee", "comfyui", 14).unwrap();
        // 0.5 GiB left. A worker queued first; the render comes second, and the first render's share frees at the second look.
        queue_entry(&mut w, "comfy2000000cc", "comfyui", 12);
        let bundle = waiting_bundle(&w, "render2000000dd", "blender", "30s");
        w.waiter = Some(crate::queue::FakeWaiter::at(1000).then(|| true).then(releaser(&w, "render000000aa")));
        let Ok(Admission::Admitted(admitted)) = w.admit_bundle("render2000000dd", &bundle, 13) else { panic!("the render is admitted") };
        assert_eq!(admitted.admitted_at, 1002, "admitted when its share freed, two looks after it queued");
        let ledger = w.store.read().unwrap();
        assert_eq!(ledger.reservations.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["comfy1000000bb", "comfy0000000ee", "render2000000dd"]);
        assert_eq!(ledger.queue.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(), ["comfy2000000cc"], "the render left the queue, the worker waits on");

        // A worker, even one that would fit, waits behind the queue: without a wait it is refused and told how to wait.
        let mut w = World::new();
        queue_entry(&mut w, "render000000aa", "blender", 12);
        let e = w.admit("comfy1000000bb", "comfyui", 11).unwrap_err().to_string();
        assert_eq!(e, "refused comfy1000000 (comfyui) on GPU 0 (RTX 4070): render000000 (blender) waits ahead of it in the queue; to wait for the share, set gpuwarden.io/wait or GPUWARDEN_WAIT");
    }

    /// 11.5 GiB to share, two renders holding 10: a worker (3 GiB) does not fit.
    fn two_renders() -> World {
        let mut w = World::new();
        w.config = Config::parse("[budget.reserves]\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
        w.admit("render000000aa", "blender", 10).unwrap();
        w.admit("render1000000aa", "blender", 9).unwrap();
        w
    }

    #[test]
    fn a_wait_that_runs_out_says_how_long_and_what_held_the_gpu_and_leaves_the_queue() {
        let mut w = two_renders();
        let bundle = waiting_bundle(&w, "comfy1000000bb", "comfyui", "5s");
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let store = LedgerStore::new(w.store.dir());
        let record = seen.clone();
        w.waiter = Some(crate::queue::FakeWaiter::at(1000).then(move || {
            record.borrow_mut().extend(store.read().unwrap().queue);
            true
        }));
        let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
        assert_eq!(
            e,
            "refused comfy1000000 (comfyui) after waiting 5 s (gpuwarden.io/wait=5s) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, \
             1.5 GiB left of 11.5 GiB (held by render000000 (blender) 5.0 GiB, render100000 (blender) 5.0 GiB; reserved: system 0.5 GiB)"
        );
        let entry = &seen.borrow()[0];
        assert_eq!((entry.id.as_str(), entry.waiter, entry.until), ("comfy1000000bb", 77, 1005));
        assert!(entry.waits_for.starts_with("GPU 0 (RTX 4070): needs 3.0 GiB"), "{}", entry.waits_for);
        assert!(w.store.read().unwrap().queue.is_empty());
    }

    #[test]
    fn a_waiter_whose_runtime_is_gone_or_that_is_cancelled_leaves_the_queue() {
        let mut w = two_renders();
        let bundle = waiting_bundle(&w, "comfy1000000bb", "comfyui", "1m");
        w.waiter = Some(crate::queue::FakeWaiter::at(1000).then(|| false));
        let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
        assert_eq!(e, "refused comfy1000000 (comfyui): its runtime is gone: it left the queue after waiting 1 s");
        assert!(w.store.read().unwrap().queue.is_empty());

        let store = LedgerStore::new(w.store.dir());
        w.waiter = Some(crate::queue::FakeWaiter::at(1000).then(move || {
            let mut l = store.lock().unwrap();
            l.ledger.queue[0].cancelled = true;
            l.save().unwrap();
            true
        }));
        let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
        assert_eq!(e, "refused comfy1000000 (comfyui): taken out of the queue with `gpuwarden queue cancel` after waiting 1 s");
        assert!(w.store.read().unwrap().queue.is_empty());
    }

    #[test]
    fn a_dead_waiters_place_is_reclaimed() {
        let mut w = World::new();
        queue_entry(&mut w, "render000000aa", "blender", 12);
        w.procs.0.remove(&88);
        assert!(matches!(w.admit("comfy1000000bb", "comfyui", 11), Ok(Admission::Admitted(_))), "the render's hook was killed: its place is gone");
        assert!(w.store.read().unwrap().queue.is_empty());
    }

    #[test]
    fn a_container_that_yields_to_games_waits_while_one_runs() {
        let mut w = World::new();
        let state_file = w.dir.path().join("watch.json");
        w.config = Config::parse(&format!("[watch]\nstate_file = \"{}\"\n", state_file.display()), Path::new("c")).unwrap();
        let uuid = builtin("rtx4070").unwrap().gpus[0].uuid.clone();
        let game = crate::watched::Unknown { gpu: uuid, pid: 4242, name: "dota2 (Steam app 570, pid 4242)".into(), used_bytes: 1 << 30, game: true, desktop: false };
        let seen = crate::watched::state::WatchState { written_at: 1000, interval_seconds: 2, pid: 5, live: true, unknown: vec![game], ..Default::default() };
        seen.save(&state_file).unwrap();
        assert!(matches!(w.admit("render000000aa", "blender", 10), Ok(Admission::Admitted(_))), "without a wait it starts, and the watchdog pauses it");
        let bundle = waiting_bundle(&w, "render1000000bb", "blender", "3s");
        let e = w.admit_bundle("render1000000bb", &bundle, 12).unwrap_err().to_string();
        assert_eq!(e, "refused render100000 (blender) after waiting 3 s (gpuwarden.io/wait=3s) on GPU 0 (RTX 4070): a game runs: dota2 (Steam app 570, pid 4242) (profile blender yields to games)");
    }

}
