//! Admission end to end on a fake host: a ledger in a temporary folder, a
//! built-in RTX 4070, fake processes, a fake clock.

use super::*;
use crate::config::Config;
use crate::hookcall::REFUSAL_ANNOTATION;
use crate::ledger::LedgerStore;
use crate::oci::ContainerConfig;
use super::waiter::{FakeWaiter, WAIT_ANNOTATION};
use crate::host::inventory::builtin;
use crate::ledger::tests::FakeProcesses;
use crate::oci::tests_support::podman_like;
use crate::profile::rewrite::apply_profile;
use std::collections::HashMap;
use crate::base::size::ByteSize;
use std::path::Path;

struct World {
    dir: tempfile::TempDir,
    config: Config,
    store: LedgerStore,
    procs: FakeProcesses,
    daemon: Result<crate::host::mps::Daemon, crate::host::mps::ProbeError>,
    /// What the inventory says runs on GPU 0.
    live: Option<Vec<crate::host::inventory::GpuProcess>>,
    /// How the next admission waits (a fresh fake waiter at 1000 when unset).
    waiter: Option<FakeWaiter>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse("[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n", Path::new("c")).unwrap();
        let store = LedgerStore::new(&dir.path().join("state"));
        World { dir, config, store, procs: FakeProcesses(HashMap::new()), daemon: Ok(crate::host::mps::Daemon { pid: 1, servers: Vec::new() }), live: None, waiter: None }
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

    fn admit(&mut self, id: &str, profile: &str, pid: i32) -> Result<Admission, Refusal> {
        let bundle = self.bundle(id, profile);
        self.admit_bundle(id, &bundle, pid)
    }

    fn admit_bundle(&mut self, id: &str, bundle: &Path, pid: i32) -> Result<Admission, Refusal> {
        self.procs.0.insert(pid, 7);
        self.procs.0.insert(77, 7);
        let waiter = self.waiter.take().unwrap_or_else(|| FakeWaiter::at(1000));
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": bundle});
        let mut host = FakeHost::new(self.config.clone(), &self.dir.path().join("state"), &self.procs, 1000);
        host.waiter = waiter;
        host.daemon = Some(self.daemon.clone());
        if let Some(inventory) = &mut host.inventory {
            inventory.gpus[0].processes = self.live.clone();
        }
        admit_input(&serde_json::to_vec(&state).unwrap(), &host)
    }
}


#[test]
fn a_required_watchdog_that_does_not_look_refuses_admission() {
    let mut w = World::new();
    let state_file = w.dir.path().join("watch.json");
    w.config = Config::parse(&format!("[watch]\nrequired = true\nstate_file = \"{}\"\n", state_file.display()), Path::new("c")).unwrap();
    let e = w.admit("comfy1000000cc", "comfyui", 41).unwrap_err().to_string();
    assert!(e.contains("(comfyui): the watchdog is required ([watch] required = true) and not running (no recent look): start `gpuwarden watch`"), "{e}");
    let seen = crate::host::watched::state::WatchState { written_at: 999, interval_seconds: 2, pid: 5, live: false, ..Default::default() };
    seen.save(&state_file).unwrap();
    let e = w.admit("comfy1000000cc", "comfyui", 41).unwrap_err().to_string();
    assert!(e.contains("cannot see the GPUs' processes (no NVML)"), "{e}");
    crate::host::watched::state::WatchState { live: true, ..seen }.save(&state_file).unwrap();
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
    let mut locked = w.store.lock().unwrap();
    let removed = locked.ledger.remove(id);
    locked.save().unwrap();
    removed
}

#[test]
fn without_a_live_daemon_nothing_is_admitted_and_with_mps_off_all_is_said() {
    let mut w = World::new();
    w.daemon = Err(crate::host::mps::ProbeError::NotListening { path: "/run/gpuwarden/mps/pipe/control".into(), errno: nix::Error::ECONNREFUSED });
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
    let game = crate::host::inventory::GpuProcess { pid: 4242, name: "steam_game".into(), used_memory_bytes: ByteSize::gib(6) };
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
    w.live = Some(vec![crate::host::inventory::GpuProcess { pid: 11, name: "python3".into(), used_memory_bytes: ByteSize::gib(3) }]);
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
    // Neither the configuration, nor the GPUs, nor the daemon is read.
    let env = FakeHost { config: None, inventory: None, daemon: None, ..FakeHost::new(Config::default(), w.store.dir(), &w.procs, 0) };
    let state = serde_json::json!({"id": "plain", "pid": 1, "bundle": b}).to_string();
    assert_eq!(admit_input(state.as_bytes(), &env).unwrap(), Admission::NotGoverned);
    assert!(!w.store.path().exists());
}

#[test]
fn bad_stdin_and_missing_bundles_leave_the_ledger_alone() {
    let w = World::new();
    let env = FakeHost::new(Config::default(), w.store.dir(), &w.procs, 0);
    for (input, want) in [
        (&b""[..], "no OCI state on stdin"),
        (b"nope", "not valid"),
        (br#"{"id":"x","pid":1}"#, "has no bundle"),
        (br#"{"id":"x","pid":1,"bundle":"/nonexistent/b"}"#, "cannot read /nonexistent/b/config.json"),
    ] {
        let e = admit_input(input, &env).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(!w.store.path().exists());
}

/// A bundle that asks to wait `wait` for its share.
fn waiting_bundle(w: &World, id: &str, profile: &str, wait: &str) -> std::path::PathBuf {
    let b = w.bundle(id, profile);
    let mut cfg = ContainerConfig::from_bundle(&b).unwrap();
    cfg.set_annotation(WAIT_ANNOTATION, wait);
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
    locked.ledger.queue.push(crate::model::Waiting { asks, waiter: 88, waiter_start: 7, queued_at: 990, until: 2000, waits_for: "x".into(), cancelled: false });
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
    w.waiter = Some(FakeWaiter::at(1000).then(|| true).then(releaser(&w, "render000000aa")));
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
    w.waiter = Some(FakeWaiter::at(1000).then(move || {
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
    w.waiter = Some(FakeWaiter::at(1000).then(|| false));
    let e = w.admit_bundle("comfy1000000bb", &bundle, 11).unwrap_err().to_string();
    assert_eq!(e, "refused comfy1000000 (comfyui): its runtime is gone: it left the queue after waiting 1 s");
    assert!(w.store.read().unwrap().queue.is_empty());

    let store = LedgerStore::new(w.store.dir());
    w.waiter = Some(FakeWaiter::at(1000).then(move || {
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
    let game = crate::host::watched::Unknown { gpu: uuid, pid: 4242, name: "dota2 (Steam app 570, pid 4242)".into(), used_bytes: 1 << 30, game: true, desktop: false };
    let seen = crate::host::watched::state::WatchState { written_at: 1000, interval_seconds: 2, pid: 5, live: true, unknown: vec![game], ..Default::default() };
    seen.save(&state_file).unwrap();
    assert!(matches!(w.admit("render000000aa", "blender", 10), Ok(Admission::Admitted(_))), "without a wait it starts, and the watchdog pauses it");
    let bundle = waiting_bundle(&w, "render1000000bb", "blender", "3s");
    let e = w.admit_bundle("render1000000bb", &bundle, 12).unwrap_err().to_string();
    assert_eq!(e, "refused render100000 (blender) after waiting 3 s (gpuwarden.io/wait=3s) on GPU 0 (RTX 4070): a game runs: dota2 (Steam app 570, pid 4242) (profile blender yields to games)");
}


/// What the hook does with its stdin.
fn admit_input(input: &[u8], host: &dyn Host) -> Result<Admission, Refusal> {
    Request::read(input).and_then(|request| admit(&request, host))
}
