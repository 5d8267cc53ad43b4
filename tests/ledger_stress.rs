//! The ledger under real processes: many admissions at once, and writers
//! killed with SIGKILL at random moments.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A config whose `tenth` profile takes 10% of the SMs and 1 GiB (room for
/// exactly 10 on the built-in 12 GiB GPU without reserves), and a bundle of a
/// conforming `tenth` container.
fn setup(dir: &Path, profile: &str) -> (String, String) {
    let config = write(
        dir,
        "config.toml",
        &format!(
            // The ledger under stress; MPS is tested against the real daemon in tests/podman.rs.
            "inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\nenabled = false\n[budget]\nreserves = {{}}\n\
             [profiles.tenth]\nthreads = 10\npinned_memory = \"1GiB\"\n[profiles.tiny]\nthreads = 1\npinned_memory = \"1MiB\"\n",
            dir.join("state").display()
        ),
    );
    let raw = format!(r#"{{"process":{{"env":["GPUWARDEN_PROFILE={profile}"]}},"root":{{"path":"rootfs"}},"linux":{{"devices":[{{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}}]}}}}"#);
    let o = hook(&["precreate", "--config", &config], raw.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), &o.stdout).unwrap();
    (config, bundle.display().to_string())
}

/// Each container's first process: a live `sleep` per id, since a process
/// is the first process of one container only. All are killed and reaped
/// when the test ends, also when it fails.
#[derive(Default)]
struct Inits(BTreeMap<String, Child>);

impl Inits {
    fn pid(&mut self, id: &str) -> u32 {
        self.0.entry(id.to_string()).or_insert_with(|| Command::new("sleep").arg("600").spawn().unwrap()).id()
    }
}

impl Drop for Inits {
    fn drop(&mut self) {
        for child in self.0.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_hook(config: &str, verb: &str, id: &str, bundle: &str, inits: &mut Inits) -> Child {
    let pid = inits.pid(id);
    let mut child = Command::new(hook_bin())
        .args([verb, "--config", config])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid, "bundle": bundle});
    child.stdin.take().unwrap().write_all(state.to_string().as_bytes()).unwrap();
    child
}

fn ledger_ids(dir: &Path) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(dir.join("state/ledger.json")).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))?;
    Ok(v["reservations"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect())
}

#[test]
fn sixty_four_admissions_at_once_admit_exactly_ten() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bundle) = setup(dir.path(), "tenth");
    let mut inits = Inits::default();
    let children: Vec<(String, Child)> = (0..64).map(|i| (format!("c{i:02}"), spawn_hook(&config, "admit", &format!("c{i:02}"), &bundle, &mut inits))).collect();
    let mut admitted = BTreeSet::new();
    let mut refusals = 0;
    for (id, child) in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            admitted.insert(id);
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("needs 10% of the SMs, 0% left of 100%"), "{id}: unexpected failure: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            refusals += 1;
        }
    }
    assert_eq!(admitted.len(), 10, "admitted: {admitted:?}");
    assert_eq!(refusals, 54);
    assert_eq!(ledger_ids(dir.path()).unwrap(), admitted, "the ledger holds exactly the admitted ones");
}

/// xorshift64*, seeded from the clock; the seed is printed to replay a failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn writers_killed_at_random_never_tear_the_ledger_or_lose_an_admission() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bundle) = setup(dir.path(), "tiny");
    let seed = std::env::var("GPUWARDEN_STRESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("seed {seed} (GPUWARDEN_STRESS_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut inits = Inits::default();
    // What must hold for each id: Some(true) present, Some(false) absent, None unknown (its writer was killed).
    let mut expect: BTreeMap<String, Option<bool>> = BTreeMap::new();
    let (mut completed, mut killed) = (0, 0);
    // Killed admissions found committed vs not: kills landed on both sides of the rename.
    let (mut killed_committed, mut killed_uncommitted) = (0, 0);
    // Ids to release, oldest first; a killed release is retried later.
    let mut to_release: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for i in 0..400 {
        // At most 30 ids outstanding, so the 48 client slots never run out.
        let (verb, id) = if to_release.len() < 30 {
            let id = format!("k{i}");
            to_release.push_back(id.clone());
            ("admit", id)
        } else {
            ("release", to_release.pop_front().unwrap())
        };
        let mut child = spawn_hook(&config, verb, &id, &bundle, &mut inits);
        std::thread::sleep(std::time::Duration::from_micros(rng.next() % 6000));
        // The child is not reaped yet, so its pid cannot belong to anyone else.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        let was = expect.get(&id).copied().flatten();
        let now = match (verb, status.signal()) {
            (_, Some(_)) => {
                killed += 1;
                if verb == "release" {
                    to_release.push_back(id.clone());
                }
                // A killed release cannot add; anything else is unknown.
                if verb == "release" && was == Some(false) { Some(false) } else { None }
            }
            ("admit", None) => {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                assert!(status.success(), "admit {id} failed: {err}");
                completed += 1;
                Some(true)
            }
            _ => {
                assert!(status.success(), "release {id} failed");
                completed += 1;
                Some(false)
            }
        };
        expect.insert(id.clone(), now);
        if !dir.path().join("state/ledger.json").exists() {
            continue;
        }
        let held = ledger_ids(dir.path()).unwrap_or_else(|e| panic!("after {verb} {i}: the ledger does not parse: {e}"));
        if verb == "admit" && status.signal().is_some() {
            if held.contains(&id) { killed_committed += 1 } else { killed_uncommitted += 1 }
        }
        for (id, want) in &expect {
            if let Some(want) = want {
                assert_eq!(held.contains(id), *want, "after op {i} ({verb}): {id} should be {}", if *want { "held" } else { "released" });
            }
        }
    }
    eprintln!("{completed} writers completed, {killed} were killed ({killed_committed} killed admissions had committed, {killed_uncommitted} had not)");
    assert!(completed > 20 && killed > 20, "the delays must kill some writers and spare others: {completed} completed, {killed} killed");
    // The ledger still takes work, and the next writer sweeps what killed ones left.
    let mut last = spawn_hook(&config, "release", &to_release.pop_front().unwrap(), &bundle, &mut inits);
    assert!(last.wait().unwrap().success());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state")).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
