//! The watchdog's hold on the MPS daemon's defaults. MPS limits are
//! cooperative: any client may raise the defaults with `set_default_*`. At
//! every look the watchdog reads them back, sets the ceiling again when they
//! moved, and says who set what from the daemon's own `control.log`.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::{Ceiling, Control};
use crate::base::size::ByteSize;

/// The daemon's `control.log`, read from where the last read stopped.
pub struct ControlLog {
    path: PathBuf,
    offset: Cell<u64>,
}

impl ControlLog {
    /// The log in `log_directory`; only what is logged from now on is news.
    pub fn from_now(log_directory: &std::path::Path) -> ControlLog {
        let path = log_directory.join("control.log");
        let offset = Cell::new(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        ControlLog { path, offset }
    }

    /// The `set_default_...` commands logged since the last call. A log that
    /// shrank is a new daemon's: it is read from its start.
    pub fn news(&self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = if len < self.offset.get() { 0 } else { self.offset.get() };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        self.offset.set(from + text.len() as u64);
        text.lines().filter_map(|l| l.split_once("Cmd:").map(|(_, c)| c.trim().to_string())).filter(|c| c.starts_with("set_default")).collect()
    }
}

/// The `nvidia-cuda-mps-control` clients running now (not the daemon, not
/// `by`'s own children), with their uids: who was talking to the daemon when
/// its log moved. The daemon's log does not name the caller; a client that
/// speaks to the socket itself, or is gone by the time this looks, is not seen.
pub fn clients_now(processes: &dyn crate::base::proc::Processes, by: i32) -> Vec<(i32, u32)> {
    processes
        .pids()
        .into_iter()
        .filter(|&pid| processes.parent(pid) != Some(by))
        .filter(|&pid| {
            processes.cmdline(pid).is_some_and(|a| a.first().is_some_and(|p| p.ends_with("nvidia-cuda-mps-control")) && !a.iter().any(|x| x == "-d" || x == "-f"))
        })
        .filter_map(|pid| Some((pid, processes.uid(pid)?)))
        .collect()
}

/// The defaults the daemon holds now: its thread percentage, and each GPU's pinned limit.
pub struct Held {
    pub threads: f64,
    pub pinned: Vec<(u32, Option<ByteSize>)>,
}

/// Puts the daemon's defaults back to `ceiling` when they moved: `None` when
/// they hold (or cannot be read); else what was found and set back, or why
/// it could not be. `logged` is what the daemon's log says was set since the
/// last look (see [`ControlLog::news`]).
pub fn restore(ceiling: &Ceiling, held: &Held, control: &dyn Control, devices: u32, logged: &[String]) -> Option<Result<String, String>> {
    if ceiling.holds(held.threads, &held.pinned) {
        return None;
    }
    let found: Vec<String> = held.pinned.iter().map(|(o, l)| format!("{o}={}", l.map_or("none".to_string(), |l| l.mps_limit()))).collect();
    let log = if logged.is_empty() { String::new() } else { format!("; the daemon logged: {}", logged.join(", ")) };
    Some(match ceiling.apply(control, devices) {
        Ok(()) => Ok(format!(
            "the MPS daemon's defaults were {:.1}% and pinned {}: set back to {}% and {} (a client changed them{log})",
            held.threads,
            found.join(" "),
            ceiling.threads,
            ceiling.pinned.mps_limit()
        )),
        Err(e) => Err(format!("the MPS daemon's defaults moved ({:.1}%, {}{log}) and could not be set back: {e}", held.threads, found.join(" "))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mps::MpsError;
    use std::cell::RefCell;

    /// A daemon that takes every command, remembers it, and answers as the
    /// real one does (a set thread default echoes the value; a pinned one says nothing).
    struct Recording(RefCell<Vec<String>>);
    impl Control for Recording {
        fn ask(&self, command: &str) -> Result<String, MpsError> {
            self.0.borrow_mut().push(command.to_string());
            Ok(match command.strip_prefix("set_default_active_thread_percentage ") {
                Some(v) => format!("{v}.0"),
                None if command.starts_with("get_default_device_pinned_mem_limit") => "5G".into(),
                None if command == "get_default_active_thread_percentage" => "50.0".into(),
                None => String::new(),
            })
        }
    }

    fn ceiling() -> Ceiling {
        Ceiling { threads: 50, pinned: ByteSize::gib(5) }
    }

    #[test]
    fn moved_defaults_are_set_back_and_the_log_says_who() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("control.log"), "[2026-12-01] old line Cmd:set_default_active_thread_percentage 90\n").unwrap();
        let log = ControlLog::from_now(dir.path());
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("control.log")).unwrap();
        use std::io::Write;
        writeln!(f, "[2026-12-01 10:00:00.000 Control 77] Cmd:set_default_active_thread_percentage 100").unwrap();
        writeln!(f, "[2026-12-01 10:00:00.001 Control 77] Cmd:get_server_list").unwrap();
        let daemon = Recording(RefCell::new(Vec::new()));
        let held = Held { threads: 100.0, pinned: vec![(0, Some(ByteSize::gib(5)))] };
        let said = restore(&ceiling(), &held, &daemon, 1, &log.news()).unwrap().unwrap();
        assert_eq!(said, "the MPS daemon's defaults were 100.0% and pinned 0=5G: set back to 50% and 5G (a client changed them; the daemon logged: set_default_active_thread_percentage 100)");
        assert!(daemon.0.borrow().iter().any(|c| c == "set_default_active_thread_percentage 50"), "{:?}", daemon.0.borrow());
        // Read once: the next look has no news, and defaults that hold are left alone.
        assert!(log.news().is_empty());
        let held = Held { threads: 50.0, pinned: vec![(0, Some(ByteSize::gib(5)))] };
        assert!(restore(&ceiling(), &held, &daemon, 1, &log.news()).is_none());
    }

    #[test]
    fn a_new_daemons_shorter_log_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("control.log"), "x".repeat(500)).unwrap();
        let log = ControlLog::from_now(dir.path());
        std::fs::write(dir.path().join("control.log"), "Cmd:set_default_device_pinned_mem_limit 0 12G\n").unwrap();
        assert_eq!(log.news(), ["set_default_device_pinned_mem_limit 0 12G"]);
    }
}
