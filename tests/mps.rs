//! `gpuwarden mps` against NVIDIA's real control daemon (Debian's
//! nvidia-cuda-mps, which runs without a GPU and answers its commands), in
//! folders of the test's own.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Mps {
    dir: tempfile::TempDir,
    config: String,
}

impl Mps {
    /// A configuration with `gpus` GPUs (an inventory file) and `extra` TOML.
    fn new(test: &str, gpus: u32, extra: &str) -> Option<Mps> {
        if !is_root() {
            skip(test, "the daemon runs in a mount namespace of its own, which needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<serde_json::Value> = (0..gpus)
            .map(|i| {
                serde_json::json!({"index": i, "uuid": format!("GPU-00000000-0000-0000-0000-{i:012}"), "name": "NVIDIA GeForce RTX 4070",
                    "memory_total_bytes": 12884901888u64, "minor": i, "pci_bus_id": format!("00000000:{:02X}:00.0", i + 1), "compute_capability": "8.9"})
            })
            .collect();
        let inv = write(dir.path(), "inventory.json", &serde_json::json!({"driver_version": "535.261.03", "gpus": list}).to_string());
        let m = dir.path().join("mps");
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"{inv}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n{extra}",
                m = m.display()
            ),
        );
        Some(Mps { dir, config })
    }

    fn gpuwarden(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", &self.config, "mps"];
        all.extend_from_slice(args);
        gpuwarden(&all, b"")
    }

    fn pipe(&self) -> PathBuf {
        self.dir.path().join("mps/pipe")
    }

    /// One command through NVIDIA's own client, as any user of the pipe could.
    fn control(&self, command: &str) -> String {
        let mut child = Command::new("nvidia-cuda-mps-control")
            .env("CUDA_MPS_PIPE_DIRECTORY", self.pipe())
            .env("CUDA_MPS_LOG_DIRECTORY", self.dir.path().join("mps/log"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("nvidia-cuda-mps-control is installed (scripts/setup.sh)");
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{command}").unwrap();
        stdout(&child.wait_with_output().unwrap()).trim().to_string()
    }

    /// The pid of the daemon serving this pipe directory, if one runs.
    fn daemon_pid(&self) -> Option<i32> {
        gpuwarden::host::mps::daemon(&self.pipe(), Path::new("/proc")).ok().map(|d| d.pid)
    }
}

impl Drop for Mps {
    fn drop(&mut self) {
        let _ = self.gpuwarden(&["stop"]);
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
}

#[test]
fn start_sets_the_largest_profile_on_every_gpu_and_reads_it_back() {
    let Some(m) = Mps::new("start_sets_the_largest_profile_on_every_gpu_and_reads_it_back", 2, "[profiles.blender]\nthreads = 30\n[profiles.sdxl]\nthreads = 40\npinned_memory = \"5632MiB\"\n") else { return };
    let o = m.gpuwarden(&["start"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("defaults 40% of the SMs and 6G pinned on devices 0..1, read back"), "{}", stdout(&o));
    assert_eq!(m.control("get_default_active_thread_percentage"), "40.0");
    assert_eq!(m.control("get_default_device_pinned_mem_limit 0"), "6G", "5.5 GiB rounded up to what the daemon keeps");
    assert_eq!(m.control("get_default_device_pinned_mem_limit 1"), "6G");
    // Anyone who reaches the pipe can raise the defaults; status says so, and start puts them back.
    m.control("set_default_active_thread_percentage 90");
    let o = m.gpuwarden(&["status", "--inventory", "builtin:rtx4070"]);
    assert!(stdout(&o).contains("defaults: 90% of the SMs") && stdout(&o).contains("! not the ceiling (40%, 6G)"), "{}", stdout(&o));
    let o = m.gpuwarden(&["start"]);
    assert!(stdout(&o).starts_with("the MPS control daemon was running (pid "), "{}", stdout(&o));
    assert_eq!(m.control("get_default_active_thread_percentage"), "40.0");
}

#[test]
fn stop_leaves_no_process_and_says_when_there_was_none() {
    let Some(m) = Mps::new("stop_leaves_no_process_and_says_when_there_was_none", 1, "") else { return };
    assert!(m.gpuwarden(&["start"]).status.success());
    let pid = m.daemon_pid().expect("the daemon answers");
    // Its /dev/shm is the shm folder, in a mount namespace of its own.
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let shm = m.dir.path().join("mps/shm");
    assert!(mountinfo.lines().any(|l| l.contains(&format!("{} /dev/shm ", shm.display()))), "{mountinfo}");
    let o = m.gpuwarden(&["stop"]);
    assert_eq!(stdout(&o).trim(), format!("stopped the MPS control daemon (pid {pid})"));
    assert!(!alive(pid), "the daemon is gone");
    assert_eq!(m.daemon_pid(), None);
    let o = m.gpuwarden(&["stop"]);
    assert!(o.status.success() && stdout(&o).contains("nothing to stop"), "{}", stdout(&o));
    let o = m.gpuwarden(&["status", "--inventory", "builtin:rtx4070"]);
    assert!(stdout(&o).contains("the MPS control daemon is not running") && stdout(&o).contains("run `gpuwarden mps start`"), "{}", stdout(&o));
}

#[test]
fn a_value_the_daemon_does_not_keep_is_an_error_and_the_daemon_is_stopped_again() {
    // The daemon keeps pinned limits for device ordinals 0 to 31 and silently drops others.
    let Some(m) = Mps::new("a_value_the_daemon_does_not_keep_is_an_error_and_the_daemon_is_stopped_again", 33, "") else { return };
    let o = m.gpuwarden(&["start"]);
    assert_one_line_error(&o, "the MPS daemon holds default_device_pinned_mem_limit 32 = no limit after gpuwarden set 5G");
    assert!(stderr(&o).contains("(the daemon was stopped again)"), "{}", stderr(&o));
    assert_eq!(m.daemon_pid(), None, "no daemon without its ceiling");
}

#[test]
fn a_missing_binary_and_folders_someone_else_made_are_refused_with_the_way_out() {
    let Some(m) = Mps::new("a_missing_binary_and_folders_someone_else_made_are_refused_with_the_way_out", 1, "control = \"/nonexistent/nvidia-cuda-mps-control\"\n") else { return };
    assert_one_line_error(&m.gpuwarden(&["start"]), "cannot start /nonexistent/nvidia-cuda-mps-control: No such file or directory");
    assert!(stderr(&m.gpuwarden(&["start"])).contains("apt install nvidia-cuda-mps"));
    let Some(m) = Mps::new("a_missing_binary_and_folders_someone_else_made_are_refused_with_the_way_out", 1, "") else { return };
    std::fs::create_dir_all(m.pipe()).unwrap();
    nix::unistd::chown(&m.pipe(), Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
    assert_one_line_error(&m.gpuwarden(&["start"]), &format!("{} is owned by uid 1000", m.pipe().display()));
    assert_eq!(m.daemon_pid(), None);
}

#[test]
fn systemd_accepts_the_units_in_the_repo() {
    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        skip("systemd_accepts_the_units_in_the_repo", "systemd-analyze is not installed (it comes with systemd)");
        return;
    };
    assert!(o.status.success());
    // The units name /usr/local/bin, where the README installs; here they run the built binary.
    let dir = tempfile::tempdir().unwrap();
    // All of them in one folder first: the .path unit names the service it starts.
    let units: Vec<_> = std::fs::read_dir(repo().join("systemd")).unwrap().flatten().collect();
    for unit in &units {
        let text = std::fs::read_to_string(unit.path()).unwrap().replace("/usr/local/bin/gpuwarden", bin());
        std::fs::write(dir.path().join(unit.file_name()), text).unwrap();
    }
    let mut checked = 0;
    for unit in &units {
        let copy = dir.path().join(unit.file_name());
        // --man=no: the man pages the units name are the package's (tests/deb.rs installs them and
        // lintian checks them); on this host they are not installed, and `man` would fail.
        let o = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
        assert!(o.status.success() && stderr(&o).trim().is_empty(), "{}: {}", unit.path().display(), stderr(&o));
        checked += 1;
    }
    assert!(checked >= 4, "the units in systemd/: {checked}");
}

#[test]
fn a_daemon_whose_sockets_were_removed_is_found_and_ended() {
    let Some(m) = Mps::new("a_daemon_whose_sockets_were_removed_is_found_and_ended", 1, "") else { return };
    assert!(m.gpuwarden(&["start"]).status.success());
    let pid = m.daemon_pid().unwrap();
    // What a CUDA client given the pipe directory read-write was seen doing.
    for f in std::fs::read_dir(m.pipe()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    assert_eq!(m.daemon_pid(), None, "nothing answers any more");
    assert!(alive(pid));
    // start ends the orphan and starts afresh; stop ends what it started.
    let o = m.gpuwarden(&["start"]);
    assert!(o.status.success() && stdout(&o).starts_with("started the MPS control daemon"), "{}", stderr(&o));
    assert!(!alive(pid), "the orphan was ended");
    let fresh = m.daemon_pid().unwrap();
    for f in std::fs::read_dir(m.pipe()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let o = m.gpuwarden(&["stop"]);
    assert!(stdout(&o).contains(&format!("stopped the MPS control daemon (pid {fresh}): it did not quit when asked")), "{}", stdout(&o));
    assert!(!alive(fresh));
}

#[test]
fn stop_works_after_config_toml_broke_from_what_start_recorded() {
    let Some(m) = Mps::new("stop_works_after_config_toml_broke_from_what_start_recorded", 1, "") else { return };
    let o = m.gpuwarden(&["start"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = m.daemon_pid().expect("the daemon answers");
    // The user breaks the file while the daemon runs.
    let good = std::fs::read_to_string(&m.config).unwrap();
    std::fs::write(&m.config, format!("{good}\n[budget\n")).unwrap();
    let o = m.gpuwarden(&["stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with(&format!("stopped the MPS control daemon (pid {pid}) that `gpuwarden mps start` started from {}: that file does not parse now (", m.config)), "{out}");
    assert!(out.contains(&format!("its pipe directory {} came from the daemon's environment", m.pipe().display())), "{out}");
    assert_eq!(m.daemon_pid(), None, "gone");
    // The process itself: gone, or a zombie its parent has not reaped yet.
    let gone = || std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone(), "the daemon (pid {pid}) still runs");
    // Nothing left to stop: the parse error, and that no daemon was found.
    let o = m.gpuwarden(&["stop"]);
    assert_one_line_error(&o, "and no MPS control daemon that `gpuwarden mps start` started from");
    std::fs::write(&m.config, good).unwrap();
}
