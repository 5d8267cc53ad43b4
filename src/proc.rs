//! Processes, behind a seam: a reservation belongs to a live container only
//! while its pid exists with the start time recorded at admission (a pid
//! alone can be reused by another process).

/// What gpuwarden reads of a process.
pub trait Processes {
    /// Its start time, in clock ticks since boot.
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Its `/proc/PID/cgroup`, whose paths carry the container id under
    /// Podman (`libpod-ID`) and Docker (`docker/ID`, `docker-ID.scope`).
    fn cgroup(&self, pid: i32) -> Option<String>;
}

/// The real process table, through `/proc`.
pub struct ProcFs;

impl Processes for ProcFs {
    fn start_time(&self, pid: i32) -> Option<u64> {
        if pid <= 0 {
            return None;
        }
        parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn cgroup(&self, pid: i32) -> Option<String> {
        (pid > 0).then(|| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()).flatten()
    }
}

/// Whether process `pid` runs in the container `id` (its full id), as its cgroup says.
pub fn in_container(processes: &dyn Processes, pid: i32, id: &str) -> bool {
    id.len() >= 12 && processes.cgroup(pid).is_some_and(|cg| cg.contains(id))
}

/// Field 22 of `/proc/PID/stat`; the command name (field 2) may hold spaces
/// and parentheses, so fields are counted from its closing parenthesis.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time() {
        let me = std::process::id() as i32;
        let t = ProcFs.start_time(me).unwrap();
        assert_eq!(ProcFs.start_time(me), Some(t), "stable");
        assert_eq!(ProcFs.start_time(-1), None);
        assert_eq!(ProcFs.start_time(i32::MAX), None);
    }

    #[test]
    fn odd_command_names_do_not_shift_fields() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
