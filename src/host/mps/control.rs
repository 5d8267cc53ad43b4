//! Talking to the MPS control daemon through NVIDIA's own client,
//! `nvidia-cuda-mps-control`: one command on its stdin, the answer on its
//! stdout. The client prints errors on stdout and still exits 0, and the
//! daemon clamps or ignores bad values silently (an unparsable pinned limit
//! even clears the limit), so every answer is parsed and every setting read
//! back by the callers.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::base::size::ByteSize;

#[derive(Debug, thiserror::Error)]
pub enum MpsError {
    #[error("the MPS control daemon is not running (pipe directory {}): run `gpuwarden mps start`", pipe.display())]
    NotRunning { pipe: PathBuf },
    #[error("cannot run {}: {source}; install NVIDIA's MPS control daemon (Debian: apt install nvidia-cuda-mps) or set [mps] control in config.toml", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("{} {command:?} failed ({status}): {stderr}", binary.display())]
    Failed { binary: PathBuf, command: String, status: String, stderr: String },
    #[error("the MPS control daemon answered {command:?} with {answer:?}")]
    Rejected { command: String, answer: String },
    #[error("the MPS control daemon did not answer {command:?} within {}s", ASK_TIMEOUT.as_secs())]
    Timeout { command: String },
}

/// How long one command may take: the client blocks while the daemon waits
/// (`quit` waits for busy servers), and nothing of gpuwarden may hang.
pub const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One command to the daemon, its answer back: the seam between gpuwarden
/// and the daemon, so the logic above it is tested without one.
pub trait Control {
    fn ask(&self, command: &str) -> Result<String, MpsError>;
}

/// The real client binary, pointed at gpuwarden's pipe and log folders.
#[derive(Clone, Debug)]
pub struct ControlBinary {
    pub binary: PathBuf,
    pub pipe: PathBuf,
    pub log: PathBuf,
}

impl ControlBinary {
    pub fn new(config: &crate::config::MpsConfig) -> Self {
        ControlBinary { binary: config.control.clone(), pipe: config.pipe_directory.clone(), log: config.log_directory.clone() }
    }

    /// A command for the binary with gpuwarden's folders in its environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.env("CUDA_MPS_PIPE_DIRECTORY", &self.pipe).env("CUDA_MPS_LOG_DIRECTORY", &self.log);
        c
    }
}

/// What the client prints when the daemon is there but did not take its
/// command: it serves one control client at a time, so another client
/// (a user's, or a second gpuwarden) at the same instant makes this one fail.
const BUSY: &str = "Cannot send command to MPS control daemon process";

impl Control for ControlBinary {
    /// Asks once, and again while the daemon is busy with another client, until
    /// [`ASK_TIMEOUT`]: every command gpuwarden sends is safe to repeat.
    fn ask(&self, command: &str) -> Result<String, MpsError> {
        let deadline = std::time::Instant::now() + ASK_TIMEOUT;
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match self.ask_once(command, deadline) {
                Err(MpsError::Failed { stderr, .. }) if stderr.contains(BUSY) && std::time::Instant::now() + pause < deadline => {
                    tracing::debug!(command, "the MPS control daemon is busy with another client; asking again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                answer => return answer,
            }
        }
    }
}

impl ControlBinary {
    fn ask_once(&self, command: &str, deadline: std::time::Instant) -> Result<String, MpsError> {
        let spawn = |source| MpsError::Spawn { binary: self.binary.clone(), source };
        let mut child = self.command().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A daemon that is gone closes the pipe early; the exit status says so.
            let _ = writeln!(stdin, "{command}");
        }
        while child.try_wait().map_err(spawn)?.is_none() {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MpsError::Timeout { command: command.into() });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Answers are a few lines: they fit in the pipes while the client runs.
        let out = child.wait_with_output().map_err(spawn)?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("Cannot find MPS control daemon process") {
            return Err(MpsError::NotRunning { pipe: self.pipe.clone() });
        }
        if !out.status.success() {
            return Err(MpsError::Failed { binary: self.binary.clone(), command: command.into(), status: out.status.to_string(), stderr });
        }
        if stdout.starts_with("Unknown command") || stdout.contains("privilege") {
            return Err(MpsError::Rejected { command: command.into(), answer: stdout });
        }
        Ok(stdout)
    }
}

/// The default active-thread percentage, as the daemon holds it.
pub fn thread_default(c: &dyn Control) -> Result<f64, MpsError> {
    let command = "get_default_active_thread_percentage";
    let answer = c.ask(command)?;
    answer.parse().map_err(|_| MpsError::Rejected { command: command.into(), answer })
}

/// Sets the default active-thread percentage; the daemon answers with the
/// value it now holds (it clamps and ignores silently), which is returned.
pub fn set_thread_default(c: &dyn Control, percent: u32) -> Result<f64, MpsError> {
    let command = format!("set_default_active_thread_percentage {percent}");
    let answer = c.ask(&command)?;
    answer.parse().map_err(|_| MpsError::Rejected { command, answer })
}

/// The default pinned-memory limit of device `ordinal`; `None` when unset.
pub fn pinned_default(c: &dyn Control, ordinal: u32) -> Result<Option<ByteSize>, MpsError> {
    let command = format!("get_default_device_pinned_mem_limit {ordinal}");
    let answer = c.ask(&command)?;
    if answer.is_empty() {
        return Ok(None);
    }
    let size = answer.strip_suffix('B').filter(|s| s.ends_with(['K', 'M', 'G', 'T'])).unwrap_or(&answer);
    size.parse().map(Some).map_err(|_| MpsError::Rejected { command, answer })
}

/// Sets the default pinned-memory limit of device `ordinal` (the daemon
/// answers nothing; read it back with [`pinned_default`]).
pub fn set_pinned_default(c: &dyn Control, ordinal: u32, limit: ByteSize) -> Result<(), MpsError> {
    let command = format!("set_default_device_pinned_mem_limit {ordinal} {}", limit.mps_limit());
    let answer = c.ask(&command)?;
    if answer.is_empty() { Ok(()) } else { Err(MpsError::Rejected { command, answer }) }
}

/// The pids of the MPS servers the daemon runs.
pub fn servers(c: &dyn Control) -> Result<Vec<i32>, MpsError> {
    pids(c, "get_server_list".into())
}

/// The pids of the clients of server `server`.
pub fn clients(c: &dyn Control, server: i32) -> Result<Vec<i32>, MpsError> {
    pids(c, format!("get_client_list {server}"))
}

fn pids(c: &dyn Control, command: String) -> Result<Vec<i32>, MpsError> {
    let answer = c.ask(&command)?;
    answer.split_whitespace().map(|p| p.parse().map_err(|_| MpsError::Rejected { command: command.clone(), answer: answer.clone() })).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A daemon as this machine's answered: it clamps percentages, floors
    /// pinned limits to whole GiB, and clears a limit it cannot read.
    #[derive(Default)]
    pub(crate) struct FakeDaemon {
        pub threads: RefCell<f64>,
        pub pinned: RefCell<BTreeMap<u32, u64>>,
        pub asked: RefCell<Vec<String>>,
    }

    impl Control for FakeDaemon {
        fn ask(&self, command: &str) -> Result<String, MpsError> {
            self.asked.borrow_mut().push(command.to_string());
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["get_default_active_thread_percentage"] => Ok(format!("{:.1}", self.threads.borrow())),
                ["set_default_active_thread_percentage", v] => {
                    if let Ok(v) = v.parse::<f64>() {
                        *self.threads.borrow_mut() = v.clamp(0.0, 100.0);
                    }
                    Ok(format!("{:.1}", self.threads.borrow()))
                }
                ["get_default_device_pinned_mem_limit", d] => {
                    Ok(self.pinned.borrow().get(&d.parse().unwrap()).map_or(String::new(), |g| format!("{g}G")))
                }
                ["set_default_device_pinned_mem_limit", d, v] => {
                    let gib = v.parse::<ByteSize>().ok().map(|b| b.as_u64() >> 30);
                    let mut p = self.pinned.borrow_mut();
                    match gib {
                        Some(g) => p.insert(d.parse().unwrap(), g),
                        None => p.remove(&d.parse().unwrap()),
                    };
                    Ok(String::new())
                }
                ["get_server_list"] => Ok("4242\n4343".into()),
                _ => Ok(format!("Unknown command \"{command}\"")),
            }
        }
    }

    /// A client binary that finds the daemon busy `busy` times, then answers.
    fn client(dir: &std::path::Path, busy: u32) -> ControlBinary {
        use std::os::unix::fs::PermissionsExt;
        let binary = dir.join("nvidia-cuda-mps-control");
        let count = dir.join("count");
        let script = format!(
            "#!/bin/sh\nread c\nn=$(cat {count} 2>/dev/null || echo 0)\necho $((n+1)) > {count}\nif [ \"$n\" -lt {busy} ]; then echo '{BUSY}' >&2; exit 1; fi\necho 25.0\n",
            count = count.display()
        );
        std::fs::write(&binary, script).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        ControlBinary { binary, pipe: dir.into(), log: dir.into() }
    }

    #[test]
    fn a_daemon_busy_with_another_client_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(dir.path(), 3);
        assert_eq!(thread_default(&c).unwrap(), 25.0);
        assert_eq!(std::fs::read_to_string(dir.path().join("count")).unwrap().trim(), "4", "three busy answers, then the fourth ask");
    }

    #[test]
    fn a_daemon_busy_past_the_deadline_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(dir.path(), u32::MAX);
        let started = std::time::Instant::now();
        let e = thread_default(&c).unwrap_err();
        // Busy to the end, or (on a loaded machine) the last ask cut at the deadline: either says why.
        assert!(matches!(&e, MpsError::Failed { stderr, .. } if stderr.contains(BUSY)) || matches!(e, MpsError::Timeout { .. }), "{e}");
        assert!(started.elapsed() <= ASK_TIMEOUT + std::time::Duration::from_secs(2), "bounded: {:?}", started.elapsed());
    }

    #[test]
    fn answers_are_parsed_and_errors_in_them_are_errors() {
        let d = FakeDaemon::default();
        assert_eq!(set_thread_default(&d, 150).unwrap(), 100.0, "the daemon clamps; the caller sees it");
        set_pinned_default(&d, 0, ByteSize::gib(5)).unwrap();
        assert_eq!(pinned_default(&d, 0).unwrap(), Some(ByteSize::gib(5)));
        assert_eq!(pinned_default(&d, 1).unwrap(), None);
        assert_eq!(servers(&d).unwrap(), [4242, 4343]);
        let e = clients(&d, 4242).unwrap_err().to_string();
        assert!(e.contains("answered \"get_client_list 4242\" with \"Unknown command"), "{e}");
    }
}
