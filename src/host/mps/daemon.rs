//! Starting and stopping gpuwarden's MPS control daemon: its own root-owned
//! folders, a private mount namespace in which the `shm` folder is its
//! `/dev/shm` (MPS servers and clients share `/dev/shm`, and the host's must
//! not be shared with every container), and the ceiling set and read back.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::ceiling::{Ceiling, CeilingError};
use super::control::{Control, ControlBinary, MpsError};
use super::probe::{self, ProbeError};
use crate::config::MpsConfig;
use crate::base::proc::{ProcFs, Processes};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare {}: {source}", path.display())]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("{} is owned by uid {uid} or writable by others (mode {mode:o}): MPS clients would trust whoever made it; remove it and run this again", path.display())]
    Untrusted { path: PathBuf, uid: u32, mode: u32 },
    #[error("cannot start {}: {source}; install NVIDIA's MPS control daemon (Debian: apt install nvidia-cuda-mps) or set [mps] control in config.toml", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("{} -d exited with {status}; see {}", binary.display(), log.join("control.log").display())]
    Exited { binary: PathBuf, status: String, log: PathBuf },
    #[error("the MPS control daemon did not come up within {}s: {source}", WAIT.as_secs())]
    NotUp { source: ProbeError },
    #[error("the MPS control daemon (pid {pid}) is still running after quit, SIGTERM and SIGKILL")]
    StillRunning { pid: i32 },
    #[error(transparent)]
    Control(#[from] MpsError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{0} (the daemon was stopped again)")]
    Ceiling(CeilingError),
}

/// What `start` found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    Now { pid: i32 },
    AlreadyRunning { pid: i32 },
}

/// Creates the pipe, log and shm folders (root-owned; shm sticky and open to
/// all like /dev/shm, for servers of other UIDs), and refuses folders that
/// someone else made. The pipe folder is made 0755 here; `mps start` closes
/// it to those not allowed in (see [`super::access`]).
pub fn prepare_folders(config: &MpsConfig) -> Result<(), DaemonError> {
    for (path, mode) in [(&config.pipe_directory, 0o755), (&config.log_directory, 0o755), (&config.shm_directory, 0o1777)] {
        let folder = |source| DaemonError::Folder { path: path.clone(), source };
        std::fs::create_dir_all(path).map_err(folder)?;
        let meta = std::fs::metadata(path).map_err(folder)?;
        let others_write = meta.mode() & 0o022 != 0 && mode & 0o1000 == 0;
        if meta.uid() != 0 || others_write {
            return Err(DaemonError::Untrusted { path: path.clone(), uid: meta.uid(), mode: meta.mode() & 0o7777 });
        }
        // A pipe folder closed by `mps start` keeps its grants (its ACL) and stays closed.
        if path == &config.pipe_directory && meta.mode() & 0o777 == 0o750 {
            continue;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(folder)?;
    }
    Ok(())
}

/// Where `start` records the daemon it started (pid and start time), in the
/// log folder, which no container sees: the socket files in the pipe folder
/// can be removed from under a live daemon by anything that mounts the folder.
fn pid_file(config: &MpsConfig) -> PathBuf {
    config.log_directory.join("gpuwarden-control.pid")
}

/// The daemon `start` recorded, if that very process still runs.
fn recorded(config: &MpsConfig) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file(config)).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let (pid, start): (i32, u64) = (pid.parse().ok()?, start.parse().ok()?);
    let now = ProcFs.start_time(pid)?;
    (now == start && is_running(Path::new(&format!("/proc/{pid}")))).then_some(pid)
}

/// Starts the daemon unless one answers already, then sets `ceiling` on
/// devices `0..devices` and reads it back. A daemon whose ceiling does not
/// hold is stopped again, and one that runs but no longer answers (its
/// socket gone) is ended and started afresh.
pub fn start(config: &MpsConfig, ceiling: &Ceiling, devices: u32, config_file: &Path) -> Result<Started, DaemonError> {
    let control = ControlBinary::new(config);
    let started = match probe::daemon(&config.pipe_directory, Path::new("/proc")) {
        Ok(d) => Started::AlreadyRunning { pid: d.pid },
        Err(_) => {
            if let Some(orphan) = recorded(config) {
                tracing::warn!("the MPS control daemon (pid {orphan}) runs but does not answer in {}: ending it", config.pipe_directory.display());
                end(orphan, &[])?;
            }
            prepare_folders(config)?;
            spawn(config, &control, config_file)?;
            let pid = wait_up(&config.pipe_directory)?;
            if let Some(start) = ProcFs.start_time(pid) {
                let _ = crate::base::fsutil::write_atomic(&pid_file(config), format!("{pid} {start}\n").as_bytes(), 0o644);
            }
            Started::Now { pid }
        }
    };
    if let Err(e) = ceiling.apply(&control, devices) {
        if let Started::Now { .. } = started {
            let _ = stop(config);
        }
        return Err(DaemonError::Ceiling(e));
    }
    Ok(started)
}

/// The env entry with which `start` marks the daemon: the configuration file
/// it was started from. The daemon's own environment is the record `stop`
/// reads when that file no longer parses.
pub const STARTED_BY_ENV: &str = "GPUWARDEN_MPS_CONFIG";

/// Runs `control -d` in a mount namespace of its own where the shm folder is
/// `/dev/shm`; the daemon (and every server it forks) stays in it.
fn spawn(config: &MpsConfig, control: &ControlBinary, config_file: &Path) -> Result<(), DaemonError> {
    let shm = config.shm_directory.clone();
    let mut cmd = control.command();
    cmd.env(STARTED_BY_ENV, config_file);
    cmd.arg("-d").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec the child only makes system calls.
    #[allow(unsafe_code)]
    let _ = unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            // Nothing done here reaches the host; the host's later mounts still reach in.
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)?;
            mount(Some(&shm), "/dev/shm", None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })
    };
    let status = cmd.status().map_err(|source| DaemonError::Spawn { binary: config.control.clone(), source })?;
    if !status.success() {
        return Err(DaemonError::Exited { binary: config.control.clone(), status: status.to_string(), log: config.log_directory.clone() });
    }
    Ok(())
}

fn wait_up(pipe: &Path) -> Result<i32, DaemonError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe::daemon(pipe, Path::new("/proc")) {
            Ok(d) => return Ok(d.pid),
            Err(source) if Instant::now() >= deadline => return Err(DaemonError::NotUp { source }),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// How `stop` ended the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It quit when asked.
    Quit { pid: i32 },
    /// It did not quit in time (servers busy or hung), or no longer answered
    /// (its socket gone): it and its servers were ended with SIGTERM, then SIGKILL.
    Ended { pid: i32 },
}

/// Asks the daemon to quit and waits until it is gone; if it does not go in
/// time, ends it and its servers, so nothing is left. `None` when no daemon
/// was running.
pub fn stop(config: &MpsConfig) -> Result<Option<Stopped>, DaemonError> {
    let stopped = match probe::daemon(&config.pipe_directory, Path::new("/proc")) {
        Ok(d) => {
            match ControlBinary::new(config).ask("quit") {
                Ok(_) | Err(MpsError::NotRunning { .. }) | Err(MpsError::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if gone_within(d.pid, WAIT) {
                Some(Stopped::Quit { pid: d.pid })
            } else {
                let servers: Vec<i32> = probe::daemon(&config.pipe_directory, Path::new("/proc")).map(|now| now.servers.iter().map(|s| s.pid).collect()).unwrap_or_default();
                end(d.pid, &servers)?;
                Some(Stopped::Ended { pid: d.pid })
            }
        }
        // Its socket is gone, but the process may not be: the record says.
        Err(_) => match recorded(config) {
            Some(pid) => {
                end(pid, &[])?;
                Some(Stopped::Ended { pid })
            }
            None => None,
        },
    };
    let _ = std::fs::remove_file(pid_file(config));
    Ok(stopped)
}

/// Ends `pid` and `servers` with SIGTERM, then SIGKILL.
fn end(pid: i32, servers: &[i32]) -> Result<(), DaemonError> {
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGKILL] {
        for p in std::iter::once(pid).chain(servers.iter().copied()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), signal);
        }
        if gone_within(pid, Duration::from_secs(2)) && servers.iter().all(|s| gone_within(*s, Duration::from_millis(500))) {
            return Ok(());
        }
    }
    Err(DaemonError::StillRunning { pid })
}

fn gone_within(pid: i32, wait: Duration) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + wait;
    while is_running(&proc_dir) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether the process at `/proc/PID` exists and is not a zombie.
fn is_running(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// A daemon `start` started from a configuration file, found by the mark in
/// its environment: enough of its `[mps]` section to stop it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub pid: i32,
    pub mps: MpsConfig,
}

/// The control daemons that `start` started from `config_file`, read from
/// `proc` (`/proc`): their pipe and log folders from their environment, the
/// binary from their `exe`.
pub fn started_from(config_file: &Path, proc: &Path) -> Vec<Recorded> {
    let mark = format!("{STARTED_BY_ENV}={}", config_file.display());
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    let mut found: Vec<Recorded> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            // The kernel keeps 15 characters of the name.
            if std::fs::read_to_string(e.path().join("comm")).ok()?.trim() != "nvidia-cuda-mps" {
                return None;
            }
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            let vars: Vec<&str> = environ.split(|b| *b == 0).filter_map(|v| std::str::from_utf8(v).ok()).collect();
            if !vars.contains(&mark.as_str()) {
                return None;
            }
            let var = |name: &str| vars.iter().find_map(|v| v.strip_prefix(name)?.strip_prefix('=')).map(PathBuf::from);
            let mut mps = MpsConfig { pipe_directory: var("CUDA_MPS_PIPE_DIRECTORY")?, ..crate::config::Config::default().mps };
            mps.log_directory = var("CUDA_MPS_LOG_DIRECTORY").unwrap_or(mps.log_directory);
            mps.control = std::fs::read_link(e.path().join("exe")).unwrap_or(mps.control);
            Some(Recorded { pid, mps })
        })
        .collect();
    found.sort_by_key(|r| r.pid);
    found
}

/// What `status` shows of the daemon: its pid, its defaults, its servers with
/// their UIDs and clients.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonStatus {
    pub pid: i32,
    pub threads: f64,
    pub pinned: Vec<(u32, Option<crate::base::size::ByteSize>)>,
    pub servers: Vec<(probe::Server, Vec<i32>)>,
}

/// Reads the daemon's state; `Err` says why there is none to read.
pub fn status(config: &MpsConfig, devices: u32) -> Result<DaemonStatus, DaemonError> {
    let d = probe::daemon(&config.pipe_directory, Path::new("/proc"))?;
    let c = ControlBinary::new(config);
    let threads = super::control::thread_default(&c)?;
    let pinned = (0..devices).map(|o| Ok((o, super::control::pinned_default(&c, o)?))).collect::<Result<_, MpsError>>()?;
    let servers = d.servers.iter().map(|s| (*s, super::control::clients(&c, s.pid).unwrap_or_default())).collect();
    Ok(DaemonStatus { pid: d.pid, threads, pinned, servers })
}
