//! Real Docker daemons for the tests and the benchmark: a dockerd of its own
//! (socket, data root, exec root, containerd namespace), the gpuwarden set-up
//! Docker needs (a CDI spec folder, a config, the real MPS daemon), and the
//! images. Everything started is stopped on drop.

use super::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const STANDIN: &str = "localhost/gpuwarden-comfyui-standin:test";
pub const BLENDER: &str = "localhost/gpuwarden-blender:bookworm";

/// Debian 13's Docker 26, Compose v2 and quadlet, unpacked by scripts/docker26.sh.
pub fn trixie() -> PathBuf {
    let out = repo().join("target/fixtures/trixie");
    let _lock = process_lock("trixie");
    let st = Command::new(repo().join("scripts/docker26.sh")).arg(&out).status().unwrap();
    assert!(st.success(), "scripts/docker26.sh failed (it needs Debian's archive)");
    out.join("root")
}

/// A dockerd of its own, stopped on drop with everything it ran.
pub struct Dockerd {
    pub name: String,
    child: Child,
    pub exec_root: PathBuf,
    pub cli: PathBuf,
    /// DOCKER_CONFIG for the CLI (Compose v2 as a plugin there).
    pub cli_config: tempfile::TempDir,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Dockerd {
    /// Starts `dockerd` with `daemon_json` and `env` added to its environment
    /// (which reaches the runtimes it runs); `path_first` goes before PATH.
    pub fn start(name: &str, dockerd: &Path, cli: &Path, daemon_json: serde_json::Value, env: &[(&str, String)], path_first: Option<&Path>) -> Dockerd {
        let lock = process_lock(&format!("dockerd-{name}"));
        let exec_root = PathBuf::from(format!("/run/gwtest-{name}"));
        let data_root = repo().join(format!("target/fixtures/docker-data-{name}"));
        std::fs::create_dir_all(&exec_root).unwrap();
        std::fs::create_dir_all(&data_root).unwrap();
        let cli_config = tempfile::tempdir().unwrap();
        // A namespace of its own in containerd, in case the daemon finds the system's.
        let mut daemon_json = daemon_json;
        daemon_json["containerd-namespace"] = format!("gwtest-{name}").into();
        daemon_json["containerd-plugins-namespace"] = format!("gwtest-{name}-plugins").into();
        let config_file = cli_config.path().join("daemon.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&daemon_json).unwrap()).unwrap();
        let log = std::fs::File::create(cli_config.path().join("dockerd.log")).unwrap();
        let mut cmd = Command::new(dockerd);
        cmd.args(["--config-file", config_file.to_str().unwrap(), "--data-root", data_root.to_str().unwrap()])
            .args(["--exec-root", exec_root.to_str().unwrap(), "--pidfile", exec_root.join("dockerd.pid").to_str().unwrap()])
            .args(["-H", &format!("unix://{}/docker.sock", exec_root.display()), "--iptables=false", "--bridge=none"])
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(first) = path_first {
            cmd.env("PATH", format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default()));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{} runs: {e}", dockerd.display()));
        let d = Dockerd { name: name.into(), child, exec_root, cli: cli.to_path_buf(), cli_config, _lock: lock };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd {name} did not answer in 60 s: {}", d.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.exec_root.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cli_config.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("DOCKER_HOST", self.host()).env("DOCKER_CONFIG", self.cli_config.path()).env_remove("GPUWARDEN_CONFIG");
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(&self.cli).args(args).output().unwrap()
    }

    /// Imports a busybox root as `image` unless the daemon has it; `extra`
    /// adds to the root, `changes` are `docker import --change` lines.
    pub fn busybox_image(&self, image: &str, extra: impl FnOnce(&Path), changes: &[&str]) {
        if self.docker(&["image", "inspect", image]).status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed (scripts/setup.sh)");
        for applet in ["sh", "sleep", "httpd", "env", "cat", "touch", "id", "grep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        extra(&root);
        let tar = dir.path().join("root.tar");
        assert!(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
        let mut args = vec!["import".to_string()];
        for c in changes {
            args.extend(["--change".to_string(), c.to_string()]);
        }
        args.extend([tar.display().to_string(), image.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.docker(&args);
        assert!(o.status.success(), "docker import: {}", stderr(&o));
    }

    /// The bundle's config.json runc got for a running container: under the
    /// daemon's own containerd, or the system's where one runs (dockerd uses it then).
    pub fn bundle_config(&self, id: &str) -> serde_json::Value {
        let tasks = [self.exec_root.join("containerd/daemon/io.containerd.runtime.v2.task"), PathBuf::from("/run/containerd/io.containerd.runtime.v2.task")];
        let path = tasks.iter().map(|t| t.join(format!("gwtest-{}", self.name)).join(id).join("config.json")).find(|p| p.exists());
        let path = path.unwrap_or_else(|| panic!("no bundle for {id} under {tasks:?}"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.docker(&["network", "prune", "-f"]);
        let _ = self.docker(&["volume", "prune", "-f"]);
        stop_daemon(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.exec_root);
        eprintln!("dockerd {} stopped", self.name);
    }
}

/// gpuwarden set up as for Docker: a config with no reserves (so the four
/// ComfyUI workers fill the RTX 4070: 4 x 25%, 4 x 3 GiB), a CDI spec in a
/// folder of its own, and the real MPS daemon.
pub struct Gpu {
    pub dir: tempfile::TempDir,
    pub config: String,
}

impl Gpu {
    pub fn new() -> Gpu {
        let fixture = driver_fixture();
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("mps");
        let config = write(
            dir.path(),
            "config.toml",
            &format!(
                "inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n[budget.reserves]\n",
                dir.path().join("state").display(),
                m = m.display()
            ),
        );
        let cdi = dir.path().join("cdi");
        std::fs::create_dir_all(&cdi).unwrap();
        let o = gpuwarden(
            &[
                "--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(),
                "--output", cdi.join("gpuwarden.yaml").to_str().unwrap(), "--launcher-path", dist("gpuwarden-launch").to_str().unwrap(),
            ],
            b"",
        );
        assert!(o.status.success(), "cdi generate: {}", stderr(&o));
        let o = gpuwarden(&["--config", &config, "mps", "start"], b"");
        assert!(o.status.success(), "mps start: {}", stderr(&o));
        Gpu { dir, config }
    }

    pub fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }

    /// The runtime entry for daemon.json as the README gives it (no runtimeArgs);
    /// dockerd then needs [`Gpu::dockerd_env`].
    pub fn runtime_plain(&self) -> serde_json::Value {
        serde_json::json!({"path": dist("gpuwarden-runtime")})
    }

    /// What dockerd's environment tells the plain runtime: this world's config and spec folder.
    pub fn dockerd_env(&self) -> Vec<(&'static str, String)> {
        vec![("GPUWARDEN_CONFIG", self.config.clone()), ("GPUWARDEN_CDI_SPEC_DIRS", self.cdi_dir().display().to_string())]
    }

    /// The runtime entry for daemon.json with the options this world needs as runtimeArgs.
    pub fn runtime(&self) -> serde_json::Value {
        serde_json::json!({
            "path": dist("gpuwarden-runtime"),
            "runtimeArgs": ["--gpuwarden-config", self.config, "--gpuwarden-cdi-dir", self.cdi_dir(), "--gpuwarden-launcher", dist("gpuwarden-launch")]
        })
    }

    pub fn reservations(&self) -> Vec<serde_json::Value> {
        let o = gpuwarden(&["--config", &self.config, "status", "--json"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["gpus"][0]["reservations"].as_array().cloned().unwrap_or_default()
    }

    /// A folder for a stack's volumes.
    pub fn folder(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p.display().to_string()
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = gpuwarden(&["--config", &self.config, "mps", "stop"], b"");
    }
}

/// The ComfyUI stand-in: busybox with ComfyUI's layout and entrypoint,
/// serving its output folder on 8188 as ComfyUI serves its UI.
pub fn comfyui_standin(d: &Dockerd) {
    d.busybox_image(
        STANDIN,
        |root| {
            for sub in ["models", "output", "input", "user", "temp"] {
                std::fs::create_dir_all(root.join("opt/ComfyUI").join(sub)).unwrap();
            }
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
            let start = root.join("usr/local/bin/comfyui-start");
            std::fs::write(&start, "#!/bin/sh\necho \"comfyui stand-in on 8188\"\nexec httpd -f -p 8188 -h /opt/ComfyUI/output\n").unwrap();
            std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        },
        &["ENTRYPOINT [\"/usr/local/bin/comfyui-start\"]"],
    );
}

