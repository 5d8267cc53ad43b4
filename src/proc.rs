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
    /// Its `/proc/PID/uid_map`, as this process sees it (from the initial
    /// namespace: host uids); `None` where it cannot be read.
    fn uid_map(&self, _pid: i32) -> Option<String> {
        None
    }
    /// Its command name (`/proc/PID/comm`, 15 characters at most).
    fn comm(&self, _pid: i32) -> Option<String> {
        None
    }
    /// Its parent's pid.
    fn parent(&self, _pid: i32) -> Option<i32> {
        None
    }
    /// Its arguments (`/proc/PID/cmdline`).
    fn cmdline(&self, _pid: i32) -> Option<Vec<String>> {
        None
    }
    /// Its environment (`/proc/PID/environ`, readable by root or its owner).
    fn environ(&self, _pid: i32) -> Option<Vec<String>> {
        None
    }
    /// Its real uid (`Uid:` in `/proc/PID/status`).
    fn uid(&self, _pid: i32) -> Option<u32> {
        None
    }
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

    fn uid_map(&self, pid: i32) -> Option<String> {
        (pid > 0).then(|| std::fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()).flatten()
    }

    fn comm(&self, pid: i32) -> Option<String> {
        (pid > 0).then(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()).flatten().map(|c| c.trim_end_matches('\n').to_string())
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        // Field 4 of /proc/PID/stat.
        stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.nth(1)?.parse().ok()
    }

    fn cmdline(&self, pid: i32) -> Option<Vec<String>> {
        nul_separated(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)
    }

    fn environ(&self, pid: i32) -> Option<Vec<String>> {
        nul_separated(&std::fs::read(format!("/proc/{pid}/environ")).ok()?)
    }

    fn uid(&self, pid: i32) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
    }
}

fn nul_separated(bytes: &[u8]) -> Option<Vec<String>> {
    Some(bytes.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// The host uid of `uid` inside a user namespace with `uid_map` (lines of
/// `inside outside count`); `uid` itself where there is no map or no line for it.
pub fn host_uid(uid_map: Option<&str>, uid: u32) -> u32 {
    uid_map
        .into_iter()
        .flat_map(str::lines)
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .find(|(inside, _, count)| (*inside..inside + count).contains(&u64::from(uid)))
        .and_then(|(inside, outside, _)| u32::try_from(outside + (u64::from(uid) - inside)).ok())
        .unwrap_or(uid)
}

/// The uid that owns the user namespace process `pid` runs in
/// (`NS_GET_OWNER_UID` on `/proc/PID/ns/user`): the user for a rootless
/// container's processes, root for the initial namespace. `None` when the
/// process is gone or cannot be read.
pub fn user_namespace_owner(pid: i32) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // _IO(0xb7, 0x4), linux/nsfs.h.
    const NS_GET_OWNER_UID: nix::libc::c_ulong = 0xb704;
    if pid <= 0 {
        return None;
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    let mut uid: nix::libc::uid_t = 0;
    // SAFETY: the ioctl writes one uid_t into `uid`, which lives across the call.
    let rc = unsafe { nix::libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid as *mut nix::libc::uid_t) };
    (rc == 0).then_some(uid)
}

/// Whether process `pid` runs in the container `id` (its full id), as its cgroup says.
pub fn in_container(processes: &dyn Processes, pid: i32, id: &str) -> bool {
    id.len() >= 12 && processes.cgroup(pid).is_some_and(|cg| cg.contains(id))
}

/// Field 22 of `/proc/PID/stat`; the command name (field 2) may hold spaces
/// and parentheses, so fields are counted from its closing parenthesis.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    stat_fields(stat)?.nth(19)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the command name (field 3 first):
/// the name may hold spaces and parentheses, so they start after its last `)`.
fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
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
    fn uids_map_to_the_host_as_the_namespace_says() {
        let rootless = "         0       1001          1\n         1     300000      65536\n";
        assert_eq!(host_uid(Some(rootless), 0), 1001, "the container's root is the user");
        assert_eq!(host_uid(Some(rootless), 1000), 300999, "any other uid is a subuid");
        assert_eq!(host_uid(Some("         0          0 4294967295\n"), 1000), 1000, "the initial namespace");
        assert_eq!(host_uid(None, 7), 7);
        assert_eq!(host_uid(Some(rootless), 70000), 70000, "unmapped: as it is");
        let me = std::process::id() as i32;
        assert_eq!(host_uid(ProcFs.uid_map(me).as_deref(), 1234), 1234, "this test runs in the initial namespace");
    }

    #[test]
    fn a_process_is_read_whole_from_proc() {
        let child = std::process::Command::new("sleep").arg("30").env("GW_PROBE", "1").spawn().unwrap();
        let pid = child.id() as i32;
        // Until it has exec'd, the child still carries this test thread's name.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // The kernel names the process before its new arguments are readable: wait for both.
        while (ProcFs.comm(pid).as_deref() != Some("sleep") || ProcFs.cmdline(pid).unwrap_or_default().is_empty()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ProcFs.comm(pid).as_deref(), Some("sleep"));
        assert_eq!(ProcFs.parent(pid), Some(std::process::id() as i32));
        assert_eq!(ProcFs.cmdline(pid).unwrap(), ["sleep", "30"]);
        assert!(ProcFs.environ(pid).unwrap().contains(&"GW_PROBE=1".to_string()));
        assert_eq!(ProcFs.uid(pid), Some(nix::unistd::getuid().as_raw()));
        let mut child = child;
        let _ = (child.kill(), child.wait());
    }

    #[test]
    fn the_initial_user_namespace_is_roots() {
        assert_eq!(user_namespace_owner(std::process::id() as i32), Some(0), "this test runs in the initial namespace");
        assert_eq!(user_namespace_owner(i32::MAX), None);
        assert_eq!(user_namespace_owner(0), None);
    }

    #[test]
    fn odd_command_names_do_not_shift_fields() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
