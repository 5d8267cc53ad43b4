//! The whole desktop at once, as a user runs it: Debian 12 booted with
//! systemd for real (PID 1, in a privileged Podman container made by
//! scripts/desktop-image.sh), Podman 4.3 with its default runtime crun, a
//! rootless user with a login session (`machinectl shell`), NVIDIA's 535
//! userspace with its real MPS daemon, and gpuwarden's .deb.
//!
//! What stands in: the GPU (device nodes made with mknod, and the packaged
//! config.toml's `inventory = "builtin:rtx4070"` line uncommented, as the
//! user of a machine without a GPU does). One concession to this host's
//! cgroup v1: Podman inside uses the cgroupfs manager (see
//! scripts/desktop-image.sh), since a systemd in a container cannot delegate
//! scopes here.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/gpuwarden-desktop:bookworm";

/// The booted desktop; removed when the test ends, however it ends.
struct Desktop {
    name: String,
    _shared: tempfile::TempDir,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

impl Desktop {
    /// Builds the image (once), boots it with `shared` mounted at /mnt/t, and waits for systemd.
    fn boot(shared: tempfile::TempDir) -> Desktop {
        let o = Command::new(repo().join("scripts/desktop-image.sh")).arg(IMAGE).output().unwrap();
        assert!(o.status.success(), "scripts/desktop-image.sh: {}", stderr(&o));
        let name = format!("gpuwarden-desktop-test-{}", std::process::id());
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &name]).output();
        let mount = format!("{}:/mnt/t:ro", shared.path().display());
        let o = Command::new("podman")
            .args(["run", "-d", "--name", &name, "--privileged", "--systemd=always", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "-v", &mount, IMAGE])
            .output()
            .unwrap();
        assert!(o.status.success(), "boot: {}", stderr(&o));
        let desktop = Desktop { name, _shared: shared };
        desktop.wait("systemd to finish booting", "case $(systemctl is-system-running) in running|degraded) exit 0;; esac; exit 1", 60);
        desktop
    }

    fn sh(&self, script: &str) -> Output {
        Command::new("podman").args(["exec", &self.name, "sh", "-c", script]).output().unwrap()
    }

    /// Runs `script` as root; it must succeed. Its stdout and stderr, together.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        let out = format!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "{script}\n{out}\n--- the journal's end:\n{}", self.journal(""));
        out
    }

    /// Runs `script` as the desktop user `desk`, in a login session of theirs.
    fn user(&self, script: &str) -> Output {
        Command::new("podman").args(["exec", &self.name, "machinectl", "shell", "-q", "desk@", "/bin/sh", "-c", script]).output().unwrap()
    }

    fn journal(&self, unit: &str) -> String {
        let filter = if unit.is_empty() { String::new() } else { format!("-u {unit}") };
        stdout(&self.sh(&format!("journalctl --no-pager {filter} | tail -40")))
    }

    fn wait(&self, what: &str, condition: &str, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !self.sh(condition).status.success() {
            assert!(Instant::now() < deadline, "waited {seconds} s for {what}\n{}", self.journal(""));
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn active(&self, unit: &str) -> String {
        stdout(&self.sh(&format!("systemctl is-active {unit}"))).trim().to_string()
    }

    /// When the refresh unit last started (monotonic µs).
    fn refreshed_at(&self) -> u64 {
        stdout(&self.sh("systemctl show gpuwarden-cdi-refresh.service -p ExecMainStartTimestampMonotonic --value")).trim().parse().unwrap_or(0)
    }
}

/// The README's step-2 line, verbatim.
fn readme_step_two() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme.lines().find(|l| l.starts_with("systemctl daemon-reload && systemctl enable --now ")).expect("README's step 2").to_string()
}

const UNITS: &[&str] = &["gpuwarden-mps.service", "gpuwarden-cdi-refresh.path", "gpuwarden-watch.service", "gpuwarden-live.service", "gpuwarden-broker.socket"];

#[test]
fn the_package_on_a_systemd_desktop_under_crun_from_install_to_purge() {
    let test = "the_package_on_a_systemd_desktop_under_crun_from_install_to_purge";
    if !is_root() {
        return skip(test, "booting a systemd container needs root");
    }
    let shared = tempfile::tempdir().unwrap();
    std::fs::copy(deb_package(), shared.path().join("gpuwarden.deb")).unwrap();
    busybox_tar(&shared.path().join("bb.tar"));
    let d = Desktop::boot(shared);

    // The driver's nodes, as its module makes them, before the package (0666: the rootless user bind-mounts them).
    // A privileged container gets the host's own: NVIDIA's libcuda, run as root, makes /dev/nvidiactl on a host
    // without a GPU, and a desktop with one has them all.
    d.ok("for n in 'nvidia0 195 0' 'nvidia-uvm 511 0' 'nvidia-uvm-tools 511 1' 'nvidiactl 195 255'; do set -- $n; [ -e /dev/$1 ] || mknod -m 666 /dev/$1 c $2 $3 || exit 1; done");
    let out = d.ok("dpkg -i /mnt/t/gpuwarden.deb");
    assert!(out.contains("the package enables and starts the units next"), "{out}");
    assert!(!out.contains("NOT ready"), "no report before the units run: {out}");

    // A machine without a GPU: the stand-in the packaged config.toml names, uncommented.
    d.ok(r#"sed -i 's/^# inventory = "builtin:rtx4070"/inventory = "builtin:rtx4070"/' /etc/gpuwarden/config.toml && grep -q '^inventory = "builtin:rtx4070"' /etc/gpuwarden/config.toml"#);
    d.ok(&readme_step_two());
    for unit in UNITS {
        d.wait(&format!("{unit} to be active"), &format!("systemctl is-active -q {unit}"), 30);
    }
    d.wait("the refresh unit to write the spec", "test -f /etc/cdi/gpuwarden.yaml && ! systemctl is-failed -q gpuwarden-cdi-refresh.service", 30);
    let doctor = d.sh("gpuwarden doctor");
    assert!(doctor.status.success(), "doctor exits 0:\n{}{}", stdout(&doctor), stderr(&doctor));
    // Its look at the broker is a liveness check, not a malformed request.
    assert!(!d.journal("gpuwarden-broker.service").contains("WARN"), "{}", d.journal("gpuwarden-broker.service"));

    // A rootful worker under crun: admitted with its profile.
    assert_eq!(stdout(&d.sh("podman info --format '{{.Host.OCIRuntime.Name}}'")).trim(), "crun", "Podman's default runtime here");
    d.ok("podman import -q /mnt/t/bb.tar localhost/bb:latest >/dev/null");
    d.ok("podman run -d --name w1 --network none --device nvidia.com/gpu=comfyui localhost/bb:latest sh -c 'sleep 600' >/dev/null");
    let env = d.ok("tr '\\0' '\\n' < /proc/$(podman inspect w1 --format '{{.State.Pid}}')/environ");
    assert!(env.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25") && env.contains("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G"), "{env}");

    // comfyui@8188 from the package's examples: started, stopped, started again.
    d.ok("mkdir -p /srv/comfyui/models /srv/comfyui/input /srv/comfyui/output /srv/comfyui/user && cp /usr/share/doc/gpuwarden/examples/podman/systemd/comfyui@.service /etc/systemd/system/ && systemctl daemon-reload");
    // A worker that ends on SIGTERM, as ComfyUI does.
    d.ok(r#"podman import -q --change 'CMD ["sh", "-c", "trap \"exit 143\" TERM; sleep 600 & wait"]' /mnt/t/bb.tar localhost/comfyui:latest >/dev/null"#);
    d.ok("systemctl start comfyui@8188");
    assert_eq!(d.active("comfyui@8188"), "active", "{}", d.journal("comfyui@8188"));
    d.ok("systemctl stop comfyui@8188");
    assert_eq!(d.active("comfyui@8188"), "inactive", "a stop is clean: {}", d.journal("comfyui@8188"));
    d.ok("systemctl start comfyui@8188");
    assert_eq!(d.active("comfyui@8188"), "active", "it starts a second time: {}", d.journal("comfyui@8188"));

    // A rootless worker from a login session, through the socket-activated broker; it outlives the session.
    d.ok("loginctl enable-linger desk");
    let o = d.user("podman import -q /mnt/t/bb.tar localhost/bb:latest >/dev/null && podman run -d --name rw --network none --device nvidia.com/gpu=comfyui localhost/bb:latest sh -c 'sleep 600'");
    assert!(o.status.success(), "the rootless worker: {}{}", stdout(&o), stderr(&o));
    assert_eq!(d.active("gpuwarden-broker.service"), "active", "started by its socket");
    let status = d.ok("gpuwarden status");
    assert!(status.contains("9.0 GiB of 11.5 GiB") && status.lines().any(|l| l.contains(" desk ") && l.contains("comfyui")), "{status}");

    // 2.5 GiB left: the next worker is refused, and under crun the user reads why where they look.
    let o = d.sh("podman run --rm --name r1 --network none --device nvidia.com/gpu=comfyui localhost/bb:latest sh -c 'echo WORKLOAD RAN'");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert!(err.starts_with("gpuwarden: refused ") && err.contains("needs 3.0 GiB pinned memory, 2.5 GiB left of 11.5 GiB"), "{err}");
    assert!(!stdout(&o).contains("WORKLOAD RAN"), "the workload never runs");
    let o = d.user("podman run --name rw2 --network none --device nvidia.com/gpu=comfyui localhost/bb:latest sh -c 'echo WORKLOAD RAN'; echo rc=$?; podman start -a rw2; echo rc=$?; podman logs rw2");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(out.matches("rc=77").count(), 2, "run and start -a: {out}");
    assert!(out.matches("gpuwarden: refused ").count() >= 4 && !out.contains("WORKLOAD RAN"), "run, start -a and logs say it: {out}");
    d.ok("systemctl start comfyui@8189 || true");
    d.wait("comfyui@8189 to end", "! systemctl is-active -q comfyui@8189", 20);
    let journal = d.journal("comfyui@8189");
    assert!(journal.contains("gpuwarden: refused ") && journal.contains("comfyui-8189 (comfyui)") && journal.contains("2.5 GiB left"), "{journal}");
    let restarts = stdout(&d.sh("systemctl show comfyui@8189 -p NRestarts --value"));
    assert_eq!(restarts.trim(), "0", "no restart loop after a refusal");

    // The watchdog sees the rootless worker, whose processes have no cgroup of their own here:
    // over its share it is stopped (never the cgroup it shares with the desktop), a game pauses
    // and resumes it beside root's workers.
    d.ok("systemctl stop gpuwarden-watch.service");
    let pid = stdout(&d.user("podman inspect rw --format '{{.State.Pid}}'")).trim().to_string();
    let id = stdout(&d.user("podman inspect rw --format '{{.Id}}'")).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let cgroup = stdout(&d.sh(&format!("cat /proc/{pid}/cgroup")));
    assert!(!cgroup.contains(&id), "no cgroup of its own: {cgroup}");
    let gpu_with = |processes: &str| {
        d.ok(&format!(r#"gpuwarden inventory --inventory builtin:rtx4070 --json | sed 's/"compute_capability": "8.9"/"compute_capability": "8.9", "processes": [{processes}]/' > /root/gpu.json"#));
    };
    gpu_with(&format!(r#"{{"pid": {pid}, "name": "sleep", "used_memory_bytes": 4000000000}}"#));
    let out = d.ok("gpuwarden watch --once --inventory /root/gpu.json");
    assert!(out.contains("uses 3.7 GiB of GPU memory, its share is 3.0 GiB (+10%): stopped its 1 processes (SIGSTOP"), "{out}");
    assert!(out.contains(&format!("kill -CONT {pid}")), "{out}");
    assert!(!out.contains("unauthorized"), "{out}");
    assert_eq!(stdout(&d.sh(&format!("ps -o stat= -p {pid}"))).trim().chars().next(), Some('T'));
    assert_eq!(stdout(&d.sh("cat /sys/fs/cgroup/freezer/freezer.state")).trim(), "THAWED", "the desktop's own cgroup is never frozen");
    d.ok(&format!("kill -CONT {pid} && rm -f /run/gpuwarden/watch.json && cp /bin/sleep /root/wine64-preloader"));
    let game = stdout(&d.sh("/root/wine64-preloader 600 >/dev/null 2>&1 & echo $!")).trim().to_string();
    gpu_with(&format!(r#"{{"pid": {pid}, "name": "sleep", "used_memory_bytes": 1000000000}}, {{"pid": {game}, "name": "wine64-preloader", "used_memory_bytes": 2000000000}}"#));
    let out = d.ok("gpuwarden watch --once --inventory /root/gpu.json");
    assert!(out.contains("comfyui-8188 (comfyui) yields to") && out.contains("podman paused it"), "root's through Podman: {out}");
    assert!(out.contains("stopped its 1 processes (SIGSTOP"), "the user's by its processes: {out}");
    d.ok(&format!("kill {game}"));
    gpu_with(&format!(r#"{{"pid": {pid}, "name": "sleep", "used_memory_bytes": 1000000000}}"#));
    let out = d.ok("gpuwarden watch --once --inventory /root/gpu.json");
    assert!(out.contains("podman resumed it") && out.contains("continued its 1 processes (SIGCONT"), "{out}");
    assert_ne!(stdout(&d.sh(&format!("ps -o stat= -p {pid}"))).trim().chars().next(), Some('T'));
    d.ok("systemctl start gpuwarden-watch.service");

    // The refresh path unit: the driver's node appearing (a refresh at boot before the module made it), and a driver change.
    let before = d.refreshed_at();
    d.ok("rm -f /dev/nvidiactl; sleep 1; [ -e /dev/nvidiactl ] || mknod -m 666 /dev/nvidiactl c 195 255");
    d.wait("a refresh on the device node", &format!("[ $(systemctl show gpuwarden-cdi-refresh.service -p ExecMainStartTimestampMonotonic --value) -gt {before} ]"), 15);
    let before = d.refreshed_at();
    d.ok("mkdir -p /lib/modules/$(uname -r) && touch /lib/modules/$(uname -r)/modules.dep");
    d.wait("a refresh on a driver change", &format!("[ $(systemctl show gpuwarden-cdi-refresh.service -p ExecMainStartTimestampMonotonic --value) -gt {before} ]"), 15);
    d.wait("the refresh to succeed", "test -f /etc/cdi/gpuwarden.yaml && ! systemctl is-failed -q gpuwarden-cdi-refresh.service && ! systemctl is-active -q gpuwarden-cdi-refresh.service", 15);

    // Purge: nothing of gpuwarden's is left, the spec the refresh unit wrote included.
    d.ok("systemctl stop comfyui@8188 comfyui@8189; podman rm -af -t 0 >/dev/null");
    assert!(d.user("podman rm -af -t 0").status.success());
    d.ok("dpkg --purge gpuwarden");
    let left = stdout(&d.sh(
        "ls -d /etc/cdi/gpuwarden.yaml /etc/gpuwarden /run/gpuwarden /var/lib/gpuwarden /usr/share/containers/oci/hooks.d/gpuwarden-precreate.json \
         /lib/systemd/system/gpuwarden-* /etc/systemd/system/*.wants/gpuwarden-* /usr/share/man/man1/gpuwarden* /usr/share/doc/gpuwarden 2>/dev/null; \
         pgrep -a nvidia-cuda-mps; pgrep -fa '[g]puwarden (watch|live)|[g]puwarden-hook broker'",
    ));
    assert!(left.trim().is_empty(), "purge leaves nothing: {left}");
    let o = d.sh("podman run --rm --network none --device nvidia.com/gpu=comfyui localhost/bb:latest true");
    assert!(stderr(&o).contains("unresolvable CDI devices nvidia.com/gpu=comfyui"), "no spec is left to name it: {}", stderr(&o));
}

/// A busybox root filesystem as a tar, for `podman import` inside the desktop.
fn busybox_tar(tar: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("bin/busybox")).expect("busybox-static is installed (scripts/setup.sh)");
    std::os::unix::fs::symlink("busybox", dir.path().join("bin/sh")).unwrap();
    assert!(Command::new("tar").arg("-C").arg(dir.path()).arg("-cf").arg(tar).arg(".").status().unwrap().success());
}
