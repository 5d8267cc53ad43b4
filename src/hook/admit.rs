//! `gpuwarden-hook admit`: createRuntime (or prestart). Reads the OCI state
//! on stdin and the bundle's config, refuses with the reason precreate left
//! there if any, checks the container against its profile, then against the
//! budget of each GPU it got, under the ledger's lock. Exit 0 admits; an
//! error is the one line the user reads.

use std::path::Path;

use super::{Settings, REFUSAL_ANNOTATION};
use crate::budget::{self, GpuCapacity};
use crate::config::Config;
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
        matches!(self, AdmitError::Precreate { .. } | AdmitError::Profile { .. } | AdmitError::Violation { .. } | AdmitError::Gpu { .. } | AdmitError::Access { .. } | AdmitError::Mps { .. } | AdmitError::Budget(_))
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
    let event = crate::watch::events::Event { time: env.now, kind: "refused".into(), container: None, detail: crate::text::one_line(e) };
    let _ = crate::watch::events::append(&file, &event);
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
        let watch = crate::watch::state::WatchState::load(&config.watch.state_file).unwrap_or_default();
        if !(watch.is_fresh(env.now) && watch.live) {
            return Err(gpu_err(format!(
                "the watchdog is required ([watch] required = true) and {}",
                crate::watch::report::enforcement(&watch, env.now).replace("enforcement is at start only (admission); ", "")
            )));
        }
    }

    let store = LedgerStore::new(env.state_dir.unwrap_or(&config.state_dir));
    let ledger_err = |source| AdmitError::Ledger { id: id.clone(), profile: profile.clone(), source };
    let mut locked = store.lock().map_err(ledger_err)?;
    let stale = locked.ledger.reclaim(env.processes);
    for r in &stale {
        tracing::warn!("reclaimed stale reservation {} ({}): process {} is gone", r.label(), r.profile, r.pid);
    }
    locked.ledger.remove(&state.id);
    if let (Some(who), Some(cap)) = (who, &config.budget.per_user) {
        let held: Vec<&Reservation> = locked.ledger.reservations.iter().filter(|r| r.holder.as_ref().is_some_and(|h| h.uid == who.uid)).collect();
        if let Err(why) = crate::access::within_cap(who, cap, &held, &share) {
            if !stale.is_empty() {
                locked.save().map_err(ledger_err)?;
            }
            return Err(AdmitError::Access { id: id.clone(), profile: profile.clone(), why });
        }
    }
    for gpu in &gpus {
        // What runs on the GPU outside the reservations counts beyond the reserves.
        let gpu = gpu.clone().leave_out(|pid| locked.ledger.holds_process(env.processes, pid));
        let holders = locked.ledger.on_gpu(&gpu.uuid);
        if let Err(shortfall) = budget::check(&gpu, &holders, &share) {
            let line = budget::refusal(&id, &profile, &gpu, &shortfall, &holders);
            if !stale.is_empty() {
                locked.save().map_err(ledger_err)?;
            }
            return Err(AdmitError::Budget(line));
        }
    }
    let reservation = Reservation {
        id: state.id.clone(),
        name,
        profile: profile.clone(),
        gpus: gpus.iter().map(|g| g.uuid.clone()).collect(),
        threads: share.threads,
        pinned_bytes: share.pinned,
        pid,
        pid_start,
        admitted_at: env.now,
        holder: who.map(|w| crate::ledger::Holder { uid: w.uid, user: w.user.clone() }),
    };
    locked.ledger.insert(reservation.clone());
    locked.save().map_err(ledger_err)?;
    tracing::info!("admitted {} ({}): {}%, {} in {}", reservation.label(), reservation.profile, reservation.threads, reservation.pinned_bytes, store.path().display());
    if !config.mps.enabled {
        tracing::warn!("admitted {} ({}), but MPS is off ([mps] enabled = false): nothing limits it on the GPU, its share is bookkeeping only", reservation.label(), reservation.profile);
    }
    Ok(Admission::Admitted(reservation))
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
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::parse("[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
            let store = LedgerStore::new(&dir.path().join("state"));
            World { dir, config, store, procs: FakeProcesses(HashMap::new()), daemon: Ok(crate::mps::Daemon { pid: 1, servers: Vec::new() }), live: None }
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
            let env = HookEnv { settings: &settings, state_dir: Some(&dir), processes: &self.procs, inventory: &inventory, daemon: &daemon, now: 1000 };
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
        let seen = crate::watch::state::WatchState { written_at: 999, interval_seconds: 2, pid: 5, live: false, ..Default::default() };
        seen.save(&state_file).unwrap();
        let e = w.admit("comfy1000000cc", "comfyui", 41).unwrap_err().to_string();
        assert!(e.contains("cannot see the GPUs' processes (no NVML)"), "{e}");
        crate::watch::state::WatchState { live: true, ..seen }.save(&state_file).unwrap();
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
        let env = HookEnv { settings: &settings, state_dir: Some(w.store.dir()), processes: &w.procs, inventory: &inventory, daemon: &daemon, now: 0 };
        let state = serde_json::json!({"id": "plain", "pid": 1, "bundle": b}).to_string();
        assert_eq!(admit(state.as_bytes(), &env).unwrap(), Admission::NotGoverned);
        assert!(!w.store.path().exists());
    }

    #[test]
    fn bad_stdin_and_missing_bundles_leave_the_ledger_alone() {
        let w = World::new();
        let settings = || Ok(Config::default());
        let daemon = |_: &crate::config::MpsConfig| Ok(crate::mps::Daemon { pid: 1, servers: Vec::new() });
        let env = HookEnv { settings: &settings, state_dir: Some(w.store.dir()), processes: &w.procs, inventory: &rtx4070, daemon: &daemon, now: 0 };
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
}
