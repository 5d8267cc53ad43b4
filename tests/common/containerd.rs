//! A real containerd 1.7 for the CRI tests and the benchmark: Debian 13's
//! containerd (scripts/containerd17.sh) on its own config, root, state and
//! socket, with CDI on and the spec folder of the test's [`Gpu`], the
//! gpuwarden runtime as runc's binary (as the README sets a node up), and a
//! CRI client that speaks to it as the kubelet does. Everything started is
//! stopped on drop: pods, containers, the daemon and its shims.
//!
//! The kubelet is the stand-in here: none can be installed on this host, so
//! the tests make the kubelet's CRI calls themselves, with its fields.

#![allow(dead_code)]

use crate::common::docker::Gpu;
use crate::common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

/// The sandbox ("pause") image: busybox sleeping, imported from a tar.
pub const PAUSE: &str = "localhost/gwtest-pause:cri";
/// The workload image: busybox with the applets the tests run.
pub const BUSYBOX: &str = "localhost/gwtest-busybox:cri";
/// The CRI namespace of containerd the kubelet uses.
const NAMESPACE: &str = "k8s.io";
/// The oldest containerd that injects CDI devices through its CRI.
pub const OLDEST: (u32, u32, u32) = (1, 7, 2);

/// Debian 13's containerd, unpacked by scripts/containerd17.sh.
pub fn fixture() -> PathBuf {
    let out = repo().join("target/fixtures/containerd17");
    let _lock = process_lock("containerd17-fetch");
    let st = Command::new(repo().join("scripts/containerd17.sh")).arg(&out).status().unwrap();
    assert!(st.success(), "scripts/containerd17.sh failed (it needs Debian's archive)");
    out.join("root")
}

/// `containerd --version`'s version, as numbers.
pub fn version(root: &Path) -> (String, (u32, u32, u32)) {
    let o = Command::new(root.join("usr/bin/containerd")).arg("--version").output().unwrap();
    let said = stdout(&o).trim().to_string();
    let v = said.split_whitespace().nth(2).unwrap_or_default();
    let mut n = v.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse().unwrap_or(0));
    (said.clone(), (n.next().unwrap_or(0), n.next().unwrap_or(0), n.next().unwrap_or(0)))
}

/// A containerd of its own, stopped on drop with every pod it ran.
pub struct Containerd {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub state: PathBuf,
    child: Child,
    pub cri: Cri,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Containerd {
    /// Starts containerd with CDI on for `gpu`'s spec folder; `runtime` is
    /// runc's binary for the default handler (gpuwarden's runtime, or runc).
    /// A second handler, `plain`, runs Debian's runc itself.
    pub fn start(gpu: &Gpu, runtime: &Path) -> Containerd {
        let root = fixture();
        let (said, v) = version(&root);
        eprintln!("{said}");
        assert!(v >= OLDEST, "containerd {v:?} is older than 1.7.2 and cannot inject CDI devices: {said}");
        let lock = process_lock("containerd17");
        let dir = PathBuf::from("/run/gwtest-containerd");
        unmount_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Images persist between runs; containers never do (removed on drop, and here).
        let data = repo().join("target/fixtures/containerd-data");
        let state = dir.join("state");
        let config = format!(
            r#"version = 2
root = "{data}"
state = "{state}"
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["{cdi}"]
  sandbox_image = "{PAUSE}"
  # This host may not lower a process's oom_score_adj (the sandbox's -998): keep it at containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runtime}"
        Root = "{dir}/runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.plain]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.plain.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{dir}/runc"
"#,
            data = data.display(),
            state = state.display(),
            dir = dir.display(),
            cdi = gpu.cdi_dir().display(),
            runtime = runtime.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new(root.join("usr/bin/containerd"))
            .args(["--config", dir.join("config.toml").to_str().unwrap()])
            .env("PATH", format!("{}:{}", root.join("usr/bin").display(), std::env::var("PATH").unwrap_or_default()))
            .envs(gpu.dockerd_env())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        let cri = loop {
            if let Some(cri) = Cri::connect(&socket).filter(|c| c.ready()) {
                break cri;
            }
            assert!(Instant::now() < deadline, "containerd did not answer in 60 s: {}", std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        };
        let c = Containerd { root, dir, state, child, cri, _lock: lock };
        c.remove_all();
        c.image(PAUSE, &["CMD [\"/bin/sleep\", \"2147483647\"]"]);
        c.image(BUSYBOX, &[]);
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in the kubelet's namespace.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.root.join("usr/bin/ctr")).args(["--address", self.dir.join("containerd.sock").to_str().unwrap(), "--namespace", NAMESPACE]).args(args).output().unwrap()
    }

    /// Imports a busybox root as `image` (through Podman's archive) unless containerd has it.
    fn image(&self, image: &str, changes: &[&str]) {
        if stdout(&self.ctr(&["images", "ls", "-q"])).lines().any(|l| l == image) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed (scripts/setup.sh)");
        for applet in ["sh", "sleep", "env", "cat", "touch", "id", "grep", "ls", "md5sum"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = dir.path().join("rootfs.tar");
        assert!(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
        let tmp = format!("{image}-import");
        let mut import = Command::new("podman");
        import.arg("import");
        for c in changes {
            import.args(["--change", c]);
        }
        let o = import.args([tar.to_str().unwrap(), &tmp]).output().unwrap();
        assert!(o.status.success(), "podman import: {}", stderr(&o));
        let archive = dir.path().join("image.tar");
        let o = Command::new("podman").args(["tag", &tmp, image]).output().unwrap();
        assert!(o.status.success(), "podman tag: {}", stderr(&o));
        let o = Command::new("podman").args(["save", "--format", "docker-archive", "-o", archive.to_str().unwrap(), image]).output().unwrap();
        let _ = Command::new("podman").args(["rmi", "-f", &tmp, image]).output();
        assert!(o.status.success(), "podman save: {}", stderr(&o));
        let o = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(o.status.success(), "ctr images import: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&self.ctr(&["images", "ls", "-q"])).lines().any(|l| l == image), "{image} imported: {}", stdout(&o));
    }

    /// Stops and removes every pod (and so every container) the daemon has.
    pub fn remove_all(&self) {
        for pod in self.cri.pods() {
            let _ = self.cri.stop_pod(&pod);
            let _ = self.cri.remove_pod(&pod);
        }
    }

    /// The config.json runc got for container `id`.
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        let path = self.bundle(id).join("config.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task").join(NAMESPACE).join(id)
    }

    /// The pid of container `id`'s first process, as its shim recorded it.
    pub fn pid(&self, id: &str) -> i32 {
        std::fs::read_to_string(self.bundle(id).join("init.pid")).unwrap().trim().parse().unwrap()
    }

    /// The pid of the shim that runs container `id`'s pod.
    pub fn shim_pid(&self, id: &str) -> Option<i32> {
        let init = self.pid(id);
        let status = std::fs::read_to_string(format!("/proc/{init}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        stop_daemon(&mut self.child);
        // Shims outlive their daemon: any left are this daemon's (its socket path is in their arguments).
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(self.dir.to_str().unwrap()) {
                if let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        // A pod whose shim was killed keeps its bundle's rootfs mounted; nothing of this daemon stays.
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!("containerd stopped");
    }
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).output();
    }
}

/// The CRI runtime service over containerd's socket, called as the kubelet
/// calls it (each call blocks on a runtime of its own).
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<tonic::transport::Channel>,
}

impl Cri {
    pub fn connect(socket: &Path) -> Option<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path = socket.to_path_buf();
        let channel = rt.block_on(gpuwarden_device_plugin::unix_channel(path)).ok()?;
        Some(Cri { rt, client: RuntimeServiceClient::new(channel) })
    }

    fn call<T>(&self, f: impl FnOnce(RuntimeServiceClient<tonic::transport::Channel>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>>) -> Result<T, tonic::Status> {
        self.rt.block_on(f(self.client.clone())).map(tonic::Response::into_inner)
    }

    /// Whether the runtime says it is ready (its CRI plugin loaded).
    pub fn ready(&self) -> bool {
        self.call(|mut c| Box::pin(async move { c.status(cri::StatusRequest { verbose: false }).await }))
            .map(|s| s.status.is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status)))
            .unwrap_or(false)
    }

    pub fn version(&self) -> String {
        self.call(|mut c| Box::pin(async move { c.version(cri::VersionRequest { version: "v1".into() }).await })).map(|v| format!("{} {}", v.runtime_name, v.runtime_version)).unwrap_or_default()
    }

    /// Runs a pod on the host's network (no CNI here) with its logs in a
    /// folder of its own under `logs` (`logs/NAME`, as the kubelet gives each pod one).
    pub fn run_pod(&self, namespace: &str, name: &str, logs: &Path) -> Result<(String, cri::PodSandboxConfig), tonic::Status> {
        self.run_pod_on("", namespace, name, logs)
    }

    /// The same under runtime handler `handler` (a RuntimeClass's; empty: the default).
    pub fn run_pod_on(&self, handler: &str, namespace: &str, name: &str, logs: &Path) -> Result<(String, cri::PodSandboxConfig), tonic::Status> {
        let logs = logs.join(name);
        std::fs::create_dir_all(&logs).unwrap();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}-{}", std::process::id()), namespace: namespace.into(), attempt: 0 }),
            // On the host's network the kubelet leaves the hostname empty: the pod has no UTS namespace.
            log_directory: logs.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption { network: cri::NamespaceMode::Node as i32, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (c, handler) = (config.clone(), handler.to_string());
        let id = self.call(|mut cl| Box::pin(async move { cl.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(c), runtime_handler: handler }).await }))?.pod_sandbox_id;
        Ok((id, config))
    }

    /// Creates a container in `pod`; `cdi` goes into `CDIDevices`, `annotations` as given.
    pub fn create(&self, pod: &(String, cri::PodSandboxConfig), name: &str, args: &[&str], cdi: &[&str], annotations: &[(&str, &str)]) -> Result<String, tonic::Status> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
            command: args.iter().map(|a| a.to_string()).collect(),
            log_path: format!("{name}.log"),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cdi_devices: cdi.iter().map(|d| cri::CdiDevice { name: d.to_string() }).collect(),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let (pod_id, pod_config) = (pod.0.clone(), pod.1.clone());
        self.call(|mut c| Box::pin(async move { c.create_container(cri::CreateContainerRequest { pod_sandbox_id: pod_id, config: Some(config), sandbox_config: Some(pod_config) }).await }))
            .map(|r| r.container_id)
    }

    pub fn start(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.start_container(cri::StartContainerRequest { container_id: id }).await })).map(drop)
    }

    pub fn stop(&self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.stop_container(cri::StopContainerRequest { container_id: id, timeout }).await })).map(drop)
    }

    pub fn remove(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.remove_container(cri::RemoveContainerRequest { container_id: id }).await })).map(drop)
    }

    pub fn status(&self, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.container_status(cri::ContainerStatusRequest { container_id: id, verbose: false }).await }))
            .map(|r| r.status.unwrap_or_default())
    }

    pub fn pods(&self) -> Vec<String> {
        self.call(|mut c| Box::pin(async move { c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await }))
            .map(|r| r.items.into_iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id }).await })).map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| Box::pin(async move { c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await })).map(drop)
    }

    /// Waits until container `id` has exited; its status then.
    pub fn wait_exit(&self, id: &str, within: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status(id).unwrap();
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} still runs after {within:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
