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
    /// Its pid namespace (the inode of `/proc/PID/ns/pid`).
    fn pid_namespace(&self, _pid: i32) -> Option<u64> {
        None
    }
    /// Its state letter (`R`, `S`, `T` when stopped, `Z`...), field 3 of `/proc/PID/stat`.
    fn state(&self, _pid: i32) -> Option<char> {
        None
    }
    /// Every process's pid.
    fn pids(&self) -> Vec<i32> {
        Vec::new()
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

    fn pid_namespace(&self, pid: i32) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        (pid > 0).then(|| std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()).flatten().map(|m| m.ino())
    }

    fn state(&self, pid: i32) -> Option<char> {
        stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.next()?.chars().next()
    }

    fn pids(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
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
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid as *mut nix::libc::uid_t) };
    (rc == 0).then_some(uid)
}

/// A container as its processes are known: its full id, and its first
/// process (the pid the OCI state gave admission) with that pid's start time.
#[derive(Clone, Copy, Debug)]
pub struct ContainerProcess<'a> {
    pub id: &'a str,
    pub init: i32,
    pub init_start: u64,
}

/// How deep a process tree is followed up to its container's first process.
const MAX_DEPTH: usize = 64;

/// What is known of one process, read once, to tell which container it is in.
pub struct Lineage {
    cgroup: Option<String>,
    pid_namespace: Option<u64>,
    /// It and its ancestors, with their start times, nearest first.
    line: Vec<(i32, u64)>,
}

impl Lineage {
    pub fn of(processes: &dyn Processes, pid: i32) -> Lineage {
        let mut line = Vec::new();
        let mut at = pid;
        while at > 1 && line.len() < MAX_DEPTH {
            let Some(start) = processes.start_time(at) else { break };
            line.push((at, start));
            match processes.parent(at) {
                Some(p) if p != at => at = p,
                _ => break,
            }
        }
        Lineage { cgroup: processes.cgroup(pid), pid_namespace: processes.pid_namespace(pid), line }
    }

    /// Whether the process is in container `c`: its cgroup names the
    /// container (Podman's `libpod-ID`, Docker's `docker-ID`); or it shares
    /// the container's own pid namespace (`podman exec` too); or it descends
    /// from the container's first process. Where a container has no cgroup
    /// of its own (rootless Podman on cgroup v1, `--cgroups=disabled`), the
    /// last two are what tie its processes to it.
    pub fn in_container(&self, processes: &dyn Processes, c: &ContainerProcess, host_pid_namespace: Option<u64>) -> bool {
        if c.id.len() >= 12 && self.cgroup.as_deref().is_some_and(|cg| cg.contains(c.id)) {
            return true;
        }
        if self.line.iter().any(|&(pid, start)| pid == c.init && start == c.init_start) {
            return true;
        }
        // The container's own namespace, never the host's (`--pid=host`), and only while its first process is the one admitted.
        let ns = self.pid_namespace.filter(|ns| Some(*ns) != host_pid_namespace);
        ns.is_some() && processes.start_time(c.init) == Some(c.init_start) && processes.pid_namespace(c.init) == ns
    }

    /// Whether the cgroup it is in is the container's own (its path names
    /// the container), so that freezing it touches nothing else.
    pub fn cgroup_is_own(&self, id: &str) -> bool {
        id.len() >= 12 && self.cgroup.as_deref().is_some_and(|cg| cg.contains(id))
    }
}

/// Whether process `pid` runs in container `c` (see [`Lineage::in_container`]).
pub fn in_container(processes: &dyn Processes, pid: i32, c: &ContainerProcess) -> bool {
    Lineage::of(processes, pid).in_container(processes, c, processes.pid_namespace(1))
}

/// Every process of container `c` that has no cgroup of its own: its first
/// process, what descends from it, and what shares its pid namespace.
pub fn container_tree(processes: &dyn Processes, c: &ContainerProcess) -> Vec<i32> {
    if processes.start_time(c.init) != Some(c.init_start) {
        return Vec::new();
    }
    let host = processes.pid_namespace(1);
    let mut tree: Vec<i32> = processes.pids().into_iter().filter(|&pid| Lineage::of(processes, pid).in_container(processes, c, host)).collect();
    tree.sort_unstable();
    tree
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

/// A process table for tests: what a test sets of each process.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, Default)]
    pub(crate) struct Proc {
        pub parent: i32,
        pub comm: String,
        pub cgroup: String,
        pub pid_namespace: u64,
        pub stopped: bool,
    }

    /// Processes by pid, each started at tick 7 unless set otherwise.
    #[derive(Default)]
    pub(crate) struct Table {
        pub procs: RefCell<BTreeMap<i32, Proc>>,
        pub starts: BTreeMap<i32, u64>,
    }

    impl Table {
        /// Adds `pid`, a child of `parent`, named `comm`, in `cgroup` and pid namespace `ns`.
        pub(crate) fn with(self, pid: i32, parent: i32, comm: &str, cgroup: &str, ns: u64) -> Table {
            self.procs.borrow_mut().insert(pid, Proc { parent, comm: comm.into(), cgroup: cgroup.into(), pid_namespace: ns, stopped: false });
            self
        }
    }

    /// A desktop on cgroup v1 with a rootless container whose processes share
    /// their user's session cgroup: its first process 100 under conmon (60),
    /// its CUDA processes 101 and 102, a `podman exec` shell 110 (in its pid
    /// namespace, under conmon), and beside it a host job 200 and a game 400.
    pub(crate) fn rootless_v1() -> Table {
        let session = "1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n";
        Table::default()
            .with(1, 0, "systemd", "1:name=systemd:/init.scope\n", 4000)
            .with(50, 1, "bash", session, 4000)
            .with(60, 50, "conmon", session, 4000)
            .with(100, 60, "gpuwarden-launc", session, 4100)
            .with(101, 100, "python3", session, 4100)
            .with(102, 101, "python3", session, 4100)
            .with(110, 60, "sh", session, 4100)
            .with(200, 50, "python3", session, 4000)
            .with(400, 50, "wine64-preloader", session, 4000)
    }

    impl super::Processes for Table {
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.procs.borrow().contains_key(&pid).then(|| self.starts.get(&pid).copied().unwrap_or(7))
        }
        fn cgroup(&self, pid: i32) -> Option<String> {
            self.procs.borrow().get(&pid).map(|p| p.cgroup.clone())
        }
        fn comm(&self, pid: i32) -> Option<String> {
            self.procs.borrow().get(&pid).map(|p| p.comm.clone())
        }
        fn parent(&self, pid: i32) -> Option<i32> {
            self.procs.borrow().get(&pid).map(|p| p.parent)
        }
        fn pid_namespace(&self, pid: i32) -> Option<u64> {
            self.procs.borrow().get(&pid).map(|p| p.pid_namespace)
        }
        fn state(&self, pid: i32) -> Option<char> {
            self.procs.borrow().get(&pid).map(|p| if p.stopped { 'T' } else { 'S' })
        }
        fn pids(&self) -> Vec<i32> {
            self.procs.borrow().keys().copied().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use fake::rootless_v1;

    #[test]
    fn a_container_without_a_cgroup_of_its_own_is_known_by_descent_and_pid_namespace() {
        let t = rootless_v1();
        let c = ContainerProcess { id: "c0ffee0000000000000000000000000000000000000000000000000000000000", init: 100, init_start: 7 };
        for pid in [100, 101, 102, 110] {
            assert!(in_container(&t, pid, &c), "{pid} is the container's");
        }
        for pid in [1, 50, 60, 200, 400] {
            assert!(!in_container(&t, pid, &c), "{pid} is not: the same cgroup is the user's session");
        }
        assert_eq!(container_tree(&t, &c), [100, 101, 102, 110]);
        assert!(!Lineage::of(&t, 101).cgroup_is_own(c.id), "its cgroup is shared: never to be frozen");
        // The first process is another one now (the pid reused): nothing is the container's.
        let reused = ContainerProcess { init_start: 8, ..c };
        assert!(!in_container(&t, 101, &reused) && container_tree(&t, &reused).is_empty());
    }

    #[test]
    fn the_hosts_pid_namespace_ties_nothing_to_a_container() {
        // --pid=host: the container's first process is in the host's namespace, like everything else.
        let t = rootless_v1().with(300, 60, "sleep", "0::/x\n", 4000);
        let c = ContainerProcess { id: "feed000000000000", init: 300, init_start: 7 };
        assert!(!in_container(&t, 200, &c), "only descent counts in the host's namespace");
        assert!(in_container(&t, 300, &c));
    }

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
