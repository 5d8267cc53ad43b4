//! Pausing, resuming and killing a container, through the engine that runs
//! it, so that the engine knows (`podman ps` and `docker ps` show it paused).
//! The engine comes from the container's cgroup path. Where its command line
//! fails, the cgroup's freezer does it, and the result says so.

use std::path::PathBuf;
use std::process::Command;


pub use crate::host::watched::Engine;

/// The engine of a process, from its `/proc/PID/cgroup`.
pub fn engine_of(cgroup: &str) -> Engine {
    if cgroup.contains("libpod") {
        Engine::Podman
    } else if cgroup.contains("docker") {
        Engine::Docker
    } else {
        Engine::Other
    }
}

/// The freezer control file of the cgroup in `cgroup` (cgroup v1's freezer
/// hierarchy, else v2's `cgroup.freeze`), and the value that means frozen.
pub fn freezer(cgroup: &str) -> Option<(PathBuf, &'static str, &'static str)> {
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "freezer") {
            return Some((PathBuf::from(format!("/sys/fs/cgroup/freezer{path}/freezer.state")), "FROZEN", "THAWED"));
        }
    }
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let base = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/unified" };
    Some((PathBuf::from(format!("{base}{path}/cgroup.freeze")), "1", "0"))
}

/// Whether the cgroup in `cgroup` is frozen (None: no freezer found).
pub fn is_frozen(cgroup: &str) -> Option<bool> {
    let (file, frozen, _) = freezer(cgroup)?;
    let now = std::fs::read_to_string(file).ok()?;
    Some(now.trim() == frozen || now.trim() == "FREEZING")
}

/// What the watchdog does to containers; a seam for the tests of the loop.
pub trait Containers {
    fn pause(&self, id: &str, engine: Engine, cgroup: &str) -> Result<String, String>;
    fn resume(&self, id: &str, engine: Engine, cgroup: &str) -> Result<String, String>;
    fn kill(&self, id: &str, engine: Engine, pid: i32) -> Result<String, String>;
    /// Stops (SIGSTOP) or continues (SIGCONT) `pids`, the processes of a
    /// container that has no cgroup of its own to freeze.
    fn signal_tree(&self, pids: &[i32], stop: bool) -> Result<String, String>;
}

/// The container id in a process's cgroup, if it runs in one: Podman's
/// `libpod-ID` (and `libpod-payload-ID` under `--cgroups=split`, as quadlets
/// run), Docker's `docker-ID.scope` or `docker/ID`, containerd's
/// `cri-containerd-ID.scope`, CRI-O's `crio-ID.scope`.
pub fn container_id(cgroup: &str) -> Option<String> {
    ["libpod-payload-", "libpod-", "docker-", "docker/", "cri-containerd-", "crio-"].iter().find_map(|marker| {
        cgroup.match_indices(marker).find_map(|(at, _)| {
            let id: String = cgroup[at + marker.len()..].chars().take_while(char::is_ascii_hexdigit).collect();
            (id.len() == 64).then_some(id)
        })
    })
}

/// The engines' command lines (`podman`, `docker`: the ones in PATH, with the
/// watchdog's environment, so DOCKER_HOST applies), the freezer where they fail.
pub struct EngineCli;

fn engine_cli(engine: Engine, verb: &str, id: &str) -> Result<(), String> {
    let program = match engine {
        Engine::Podman => "podman",
        Engine::Docker => "docker",
        Engine::Other => return Err("no engine".into()),
    };
    let o = Command::new(program).args([verb, id]).output().map_err(|e| format!("{program}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {verb}: {}", String::from_utf8_lossy(&o.stderr).trim()))
    }
}

fn freeze(cgroup: &str, on: bool) -> Result<(), String> {
    let (file, frozen, thawed) = freezer(cgroup).ok_or("no freezer cgroup")?;
    std::fs::write(&file, if on { frozen } else { thawed }).map_err(|e| format!("{}: {e}", file.display()))
}

impl Containers for EngineCli {
    fn pause(&self, id: &str, engine: Engine, cgroup: &str) -> Result<String, String> {
        match engine_cli(engine, "pause", id) {
            Ok(()) => Ok(format!("{engine:?} paused it").to_lowercase()),
            Err(why) => freeze(cgroup, true).map(|()| format!("froze its cgroup ({why})")),
        }
    }

    fn resume(&self, id: &str, engine: Engine, cgroup: &str) -> Result<String, String> {
        match engine_cli(engine, "unpause", id) {
            Ok(()) => Ok(format!("{engine:?} resumed it").to_lowercase()),
            Err(why) => freeze(cgroup, false).map(|()| format!("thawed its cgroup ({why})")),
        }
    }

    fn signal_tree(&self, pids: &[i32], stop: bool) -> Result<String, String> {
        use nix::sys::signal::{kill, Signal};
        let (signal, verb) = if stop { (Signal::SIGSTOP, "stopped") } else { (Signal::SIGCONT, "continued") };
        let sent = pids.iter().filter(|&&pid| kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()).count();
        match sent {
            0 => Err(format!("none of its {} processes took {signal}", pids.len())),
            n if stop => Ok(format!(
                "{verb} its {n} processes ({signal}; it has no cgroup of its own to freeze; resume it by hand: kill -CONT {})",
                pids.iter().map(i32::to_string).collect::<Vec<_>>().join(" ")
            )),
            n => Ok(format!("{verb} its {n} processes ({signal}; it has no cgroup of its own to freeze)")),
        }
    }

    fn kill(&self, id: &str, engine: Engine, pid: i32) -> Result<String, String> {
        match engine_cli(engine, "kill", id) {
            Ok(()) => Ok(format!("{engine:?} killed it").to_lowercase()),
            Err(why) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                .map(|()| format!("sent SIGKILL to its pid {pid} ({why})"))
                .map_err(|e| format!("{why}; SIGKILL to {pid}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN_V1: &str = "9:name=systemd:/libpod_parent/libpod-abc\n6:freezer:/libpod_parent/libpod-abc\n0::/libpod_parent/libpod-abc\n";

    #[test]
    fn a_container_id_is_read_from_the_cgroup() {
        let id = "a".repeat(64);
        assert_eq!(container_id(&format!("0::/machine.slice/libpod-{id}.scope/container\n")).as_deref(), Some(id.as_str()));
        assert_eq!(container_id(&format!("0::/system.slice/docker-{id}.scope\n")).as_deref(), Some(id.as_str()));
        assert_eq!(container_id(&format!("12:cpu:/docker/{id}\n")).as_deref(), Some(id.as_str()));
        assert_eq!(container_id("0::/user.slice/user-1000.slice/session-2.scope\n"), None);
        assert_eq!(container_id("0::/libpod_parent/libpod-conmon\n"), None);
        let quadlet = format!("0::/system.slice/comfyui@8188.service/libpod-payload-{id}\n");
        assert_eq!(container_id(&quadlet).as_deref(), Some(id.as_str()), "--cgroups=split, as quadlets run");
        assert_eq!(container_id(&format!("0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-{id}.scope\n")).as_deref(), Some(id.as_str()));
        assert_eq!(container_id(&format!("0::/libpod-conmon/x/libpod-{id}.scope\n")).as_deref(), Some(id.as_str()), "a later marker is found past an earlier one");
    }

    #[test]
    fn the_engine_and_the_freezer_come_from_the_cgroup() {
        assert_eq!(engine_of(PODMAN_V1), Engine::Podman);
        assert_eq!(engine_of("0::/system.slice/docker-abc.scope\n"), Engine::Docker);
        assert_eq!(engine_of("0::/user.slice\n"), Engine::Other);
        let (file, frozen, _) = freezer(PODMAN_V1).unwrap();
        assert_eq!(file, PathBuf::from("/sys/fs/cgroup/freezer/libpod_parent/libpod-abc/freezer.state"));
        assert_eq!(frozen, "FROZEN");
        let (file, frozen, _) = freezer("0::/system.slice/docker-abc.scope\n").unwrap();
        assert!(file.ends_with("system.slice/docker-abc.scope/cgroup.freeze") && frozen == "1");
    }
}
