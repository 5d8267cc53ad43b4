//! Would MPS hold for this container? Checked at admission, because a CUDA
//! client that cannot reach the daemon carries on without MPS, with the whole
//! GPU and no limit, while the ledger shows it within its share. Pure: the
//! config and what the probe saw in, the reason out.

use std::path::Path;

use super::probe::{Daemon, ProbeError};
use super::PIPE_ENV;
use crate::config::MpsConfig;
use crate::oci::ContainerConfig;

/// Why MPS would not hold for a container.
#[derive(Debug, thiserror::Error)]
pub enum MpsRefusal {
    #[error("the MPS pipe directory {pipe} is not mounted, so CUDA would run without MPS and its limits: {REGENERATE}")]
    PipeNotMounted { pipe: String },
    #[error("/dev/shm is not the MPS daemon's ({shm}), so CUDA cannot reach the MPS server: {REGENERATE}")]
    ShmNotMounted { shm: String },
    #[error("{PIPE_ENV} is {found}, not {pipe}: CUDA would look for another daemon; is the precreate hook installed? (gpuwarden podman install-hook)")]
    PipeEnv { found: String, pipe: String },
    #[error(transparent)]
    Daemon(#[from] ProbeError),
    #[error("an MPS server for uid {server_uid} is active (pid {server_pid}), and MPS serves one uid at a time: a client of {client} would wait until it has no clients; {how}, or start it once that uid's GPU containers are stopped")]
    OtherUid { server_uid: u32, server_pid: i32, client: String, how: String },
    /// Its processes could not be let into the pipe folder.
    #[error("{0}")]
    Grant(String),
}

const REGENERATE: &str = "generate the spec again (gpuwarden cdi generate) and start the container with a profile device";

/// `Ok` when the container reaches gpuwarden's daemon and can be served by
/// it now; else why not, and what to run. `host_uid` is the uid its process
/// runs as on the host (under rootless Podman not the config's: the user's
/// own, or a subordinate one).
pub fn check(cfg: &ContainerConfig, mps: &MpsConfig, daemon: Result<Daemon, ProbeError>, host_uid: u32) -> Result<(), MpsRefusal> {
    let pipe = mps.pipe_directory.display().to_string();
    let shm = mps.shm_directory.display().to_string();
    let mounts = cfg.mounts();
    if !mounts.iter().any(|(dest, src)| Path::new(dest) == mps.pipe_directory && Path::new(src) == mps.pipe_directory) {
        return Err(MpsRefusal::PipeNotMounted { pipe });
    }
    // The last mount at /dev/shm is the one the container sees.
    if mounts.iter().rev().find(|(dest, _)| *dest == "/dev/shm").is_none_or(|(_, src)| Path::new(src) != mps.shm_directory) {
        return Err(MpsRefusal::ShmNotMounted { shm });
    }
    match cfg.env(PIPE_ENV) {
        Some(p) if Path::new(p) == mps.pipe_directory => {}
        other => {
            return Err(MpsRefusal::PipeEnv { found: other.unwrap_or("unset").to_string(), pipe });
        }
    }
    let daemon = daemon?;
    let uid = cfg.uid();
    if let Some(other) = daemon.servers.iter().find(|s| s.uid != host_uid) {
        let how = if host_uid == uid {
            format!("run the container as uid {} (--user {})", other.uid, other.uid)
        } else {
            // A user namespace: under rootless Podman the container's root is the user's own
            // uid, and any other uid in it a subordinate one.
            format!("run it so that its processes are host uid {} (rootless Podman: as the container's root, or --userns keep-id for your own uid)", other.uid)
        };
        let client = if host_uid == uid { format!("uid {uid}") } else { format!("host uid {host_uid} (uid {uid} in the container)") };
        return Err(MpsRefusal::OtherUid { server_uid: other.uid, server_pid: other.pid, client, how });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::host::mps::probe::Server;
    use crate::oci::tests_support::podman_like;
    use crate::profile::rewrite::apply_profile;

    fn client(uid: u32) -> ContainerConfig {
        let mut v: serde_json::Value = serde_json::from_slice(&podman_like().to_json()).unwrap();
        v["mounts"] = serde_json::json!([
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/run/gpuwarden/mps/pipe", "source": "/run/gpuwarden/mps/pipe", "options": ["rw", "bind"]},
            {"destination": "/dev/shm", "source": "/run/gpuwarden/mps/shm", "options": ["rw", "bind"]},
        ]);
        v["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid});
        let mut cfg = ContainerConfig::parse(&serde_json::to_vec(&v).unwrap(), "t").unwrap();
        apply_profile(&mut cfg, &Config::default()).unwrap();
        cfg
    }

    fn up(servers: &[(i32, u32)]) -> Result<Daemon, ProbeError> {
        Ok(Daemon { pid: 10, servers: servers.iter().map(|&(pid, uid)| Server { pid, uid }).collect() })
    }

    fn edit(cfg: &ContainerConfig, f: impl FnOnce(&mut serde_json::Value)) -> ContainerConfig {
        let mut v: serde_json::Value = serde_json::from_slice(&cfg.to_json()).unwrap();
        f(&mut v);
        ContainerConfig::parse(&serde_json::to_vec(&v).unwrap(), "t").unwrap()
    }

    #[test]
    fn a_client_with_the_folders_and_a_live_daemon_of_its_uid_is_served() {
        let mps = Config::default().mps;
        assert!(check(&client(0), &mps, up(&[]), 0).is_ok());
        assert!(check(&client(1000), &mps, up(&[(20, 1000)]), 1000).is_ok());
    }

    #[test]
    fn missing_folders_a_dead_daemon_and_another_uid_are_refused_with_what_to_do() {
        let mps = Config::default().mps;
        let no_pipe = edit(&client(0), |v| {
            v["mounts"].as_array_mut().unwrap().remove(1);
        });
        assert!(check(&no_pipe, &mps, up(&[]), 0).unwrap_err().to_string().contains("pipe directory /run/gpuwarden/mps/pipe is not mounted"));
        let podman_shm = edit(&client(0), |v| v["mounts"].as_array_mut().unwrap().truncate(2));
        assert!(check(&podman_shm, &mps, up(&[]), 0).unwrap_err().to_string().contains("/dev/shm is not the MPS daemon's (/run/gpuwarden/mps/shm)"));
        let other_pipe = edit(&client(0), |v| v["process"]["env"] = serde_json::json!(["CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"]));
        assert!(check(&other_pipe, &mps, up(&[]), 0).unwrap_err().to_string().contains("CUDA_MPS_PIPE_DIRECTORY is /tmp/nvidia-mps"));
        let dead = Err(ProbeError::NotListening { path: "/run/gpuwarden/mps/pipe/control".into(), errno: nix::Error::ECONNREFUSED });
        assert!(check(&client(0), &mps, dead, 0).unwrap_err().to_string().contains("run `gpuwarden mps start`"));
        let e = check(&client(1000), &mps, up(&[(20, 0)]), 1000).unwrap_err().to_string();
        assert!(e.contains("an MPS server for uid 0 is active (pid 20)") && e.contains("--user 0"), "{e}");
    }

    #[test]
    fn a_rootless_container_is_judged_by_its_host_uid() {
        let mps = Config::default().mps;
        // Its root is the user (1001): refused beside a root server, served by the user's.
        let e = check(&client(0), &mps, up(&[(20, 0)]), 1001).unwrap_err().to_string();
        assert!(e.contains("a client of host uid 1001 (uid 0 in the container) would wait"), "{e}");
        assert!(e.contains("--userns keep-id"), "{e}");
        assert!(check(&client(0), &mps, up(&[(20, 1001)]), 1001).is_ok());
    }
}
