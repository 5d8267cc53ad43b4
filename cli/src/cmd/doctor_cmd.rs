//! `gpuwarden doctor`: gathers what the checks look at (files under
//! `--root`, the tools' versions, NVML, the MPS daemon) and prints the report.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use super::{DoctorArgs, Result};
use gpuwarden::config::Config;
use gpuwarden::admin::doctor::{self, CdiFacts, ContainerdFacts, DockerFacts, Engine, Facts, Gpus, HookFile, MpsFacts, Node, OurSpec, UserFacts, WatchFacts};
use gpuwarden::admin::install::under;

pub fn run(args: &DoctorArgs, config: &Config) -> Result<ExitCode> {
    let findings = doctor::check(&gather(&args.root, args.inventory.as_deref(), &args.cdi_dirs, args.dev_root.as_deref(), config));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doctor::render_json(&findings))?);
    } else {
        print!("{}", doctor::render_text(&findings));
    }
    Ok(if doctor::blocks(&findings) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Everything the checks need, from this host (or the tree under `root`):
/// the GPUs from `stand_in` (else the configuration's, else NVML), the specs
/// in `cdi_dirs` (none named: the default folders under `root`), the GPU
/// nodes under `dev_root` (else the configuration's).
pub fn gather(root: &Path, stand_in: Option<&str>, cdi_dirs: &[PathBuf], dev_root: Option<&Path>, config: &Config) -> Facts {
    let here = root == Path::new("/");
    let path: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let stand_in = stand_in.map(str::to_owned).or_else(|| config.inventory.clone());
    // Loaded once: the driver's facts and the MPS defaults' devices come from the same GPUs.
    let inventory = super::inventory_cmd::for_status(stand_in.as_deref(), Some(&config.cdi.driver_root), config).map_err(|e| gpuwarden::base::text::one_line(e.as_ref()));
    let devices = inventory.as_ref().map_or(1, |inv| inv.gpus.len() as u32);
    let gpus = inventory.map(|inv| Gpus { driver_version: inv.driver_version.clone(), names: inv.gpus.iter().map(|g| g.name.clone()).collect() });
    let cdi_dirs: Vec<PathBuf> = if cdi_dirs.is_empty() { gpuwarden::cdi::DEFAULT_SPEC_DIRS.iter().map(|d| under(root, Path::new(d))).collect() } else { cdi_dirs.to_vec() };
    Facts {
        gpus: Some(gpus),
        stand_in,
        mps: mps(config, &path, devices),
        cdi: cdi(cdi_dirs, &path),
        podman: [under(root, Path::new("/usr/bin/podman"))].iter().any(|p| p.exists()).then(|| Engine {
            version: here.then(|| version("podman")).flatten(),
            hook_files: hook_files(root),
        }),
        docker: ["/usr/bin/dockerd", "/usr/sbin/dockerd"].iter().any(|p| under(root, Path::new(p)).exists()).then(|| docker(root, here)),
        containerd: ["/usr/bin/containerd", "/usr/local/bin/containerd"].iter().any(|p| under(root, Path::new(p)).exists()).then(|| containerd(root, here)),
        watch: WatchFacts {
            required: config.watch.required,
            last_look: gpuwarden::host::watched::state::WatchState::load(&config.watch.state_file).ok().filter(|s| s.written_at > 0).map(|s| {
                let now = gpuwarden::base::clock::unix_seconds();
                (now.saturating_sub(s.written_at), s.is_fresh(now))
            }),
        },
        nodes: nodes(&dev_root.unwrap_or(&config.cdi.dev_root).join("dev")),
        user: user(root),
        broker: here.then(|| {
            let socket = config.broker.socket.clone();
            let answers = std::os::unix::net::UnixStream::connect(&socket).map(drop).map_err(|e| e.to_string());
            (socket, answers)
        }),
    }
}

fn version(program: &str) -> Option<String> {
    let o = Command::new(program).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|v| !v.is_empty())
}

fn mps(config: &Config, path: &[PathBuf], devices: u32) -> MpsFacts {
    let m = &config.mps;
    let control = if m.control.is_absolute() { Some(m.control.clone()).filter(|p| p.is_file()) } else { path.iter().map(|d| d.join(&m.control)).find(|p| p.is_file()) };
    let daemon = control.as_ref().map(|_| gpuwarden::host::mps::daemon(&m.pipe_directory, Path::new("/proc")).map(|d| d.pid).map_err(|e| e.to_string()));
    let defaults = match (&daemon, gpuwarden::host::mps::Ceiling::of(config)) {
        (Some(Ok(_)), Some(ceiling)) => Some(ceiling.verify(&gpuwarden::host::mps::ControlBinary::new(m), devices).map_err(|e| e.to_string())),
        _ => None,
    };
    let pipe_open = gpuwarden::base::fsutil::acl::read(&m.pipe_directory).is_ok_and(|acl| acl.other & gpuwarden::base::fsutil::acl::SEARCH != 0);
    MpsFacts { enabled: m.enabled, control, daemon, defaults, pipe_open }
}

fn cdi(dirs: Vec<PathBuf>, path: &[PathBuf]) -> CdiFacts {
    let (specs, broken) = gpuwarden::cdi::scan(&dirs);
    let ours = specs.iter().filter(|s| s.ours).map(|s| our_spec(&s.path)).collect();
    CdiFacts { dirs, specs, broken, ours, toolkit: gpuwarden::cdi::find_toolkit(path) }
}

/// The driver version gpuwarden's spec was made for (its libraries' names
/// end in it) and the host paths it names that are gone.
fn our_spec(path: &Path) -> OurSpec {
    let spec: Option<gpuwarden::cdi::Spec> = gpuwarden::cdi::yaml::read_file(path).ok();
    let Some(spec) = spec else { return OurSpec { path: path.to_path_buf(), driver_version: None, missing: Vec::new() } };
    let edits = std::iter::once(&spec.container_edits).chain(spec.devices.iter().map(|d| &d.container_edits));
    let mut hosts: Vec<PathBuf> = Vec::new();
    for e in edits {
        hosts.extend(e.mounts.iter().map(|m| PathBuf::from(&m.host_path)));
        hosts.extend(e.device_nodes.iter().map(|n| PathBuf::from(n.host_path.as_deref().unwrap_or(&n.path))));
    }
    let driver_version = spec
        .container_edits
        .mounts
        .iter()
        .find_map(|m| m.host_path.rsplit('/').next()?.strip_prefix("libcuda.so.").filter(|v| v.contains('.')).map(str::to_owned));
    let mut missing: Vec<PathBuf> = hosts.into_iter().filter(|p| std::fs::symlink_metadata(p).is_err()).collect();
    missing.sort();
    missing.dedup();
    OurSpec { path: path.to_path_buf(), driver_version, missing }
}

/// hooks.d files that run gpuwarden's hook: rootless Podman reads only the first folder.
fn hook_files(root: &Path) -> Vec<HookFile> {
    let mut found = Vec::new();
    for dir in ["/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"] {
        let Ok(entries) = std::fs::read_dir(under(root, Path::new(dir))) else { continue };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let Some(hook) = v.pointer("/hook/path").and_then(|p| p.as_str()).filter(|p| p.contains("gpuwarden")) else { continue };
            let mode = e.metadata().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap_or(0);
            found.push(HookFile { path: e.path(), mode, hook: hook.into(), hook_exists: under(root, Path::new(hook)).is_file() });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

fn docker(root: &Path, here: bool) -> DockerFacts {
    let file = under(root, Path::new("/etc/docker/daemon.json"));
    let daemon_json = std::fs::read_to_string(&file).ok().map(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| format!("not valid JSON: {e}")));
    let runtime_exists = daemon_json
        .as_ref()
        .and_then(|j| j.as_ref().ok())
        .and_then(|j| j.pointer("/runtimes/gpuwarden/path")?.as_str().map(|p| under(root, Path::new(p)).is_file()))
        .unwrap_or(false);
    DockerFacts { version: here.then(|| version("dockerd")).flatten(), daemon_json, runtime_exists }
}

/// containerd's version, its config file and whether a kubelet is there to use its CRI.
fn containerd(root: &Path, here: bool) -> ContainerdFacts {
    let file = under(root, Path::new("/etc/containerd/config.toml"));
    let config = std::fs::read_to_string(&file).ok().map(|t| ContainerdFacts::parse_config(&t));
    let kubelet = ["/usr/bin/kubelet", "/usr/local/bin/kubelet", "/var/lib/kubelet"].iter().any(|p| under(root, Path::new(p)).exists());
    ContainerdFacts { version: here.then(|| version("containerd")).flatten(), config, kubelet }
}

fn nodes(dev: &Path) -> Vec<Node> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dev) else { return Vec::new() };
    let mut nodes: Vec<Node> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.strip_prefix("nvidia").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let group = nix::unistd::Group::from_gid(m.gid().into()).ok().flatten().map_or_else(|| m.gid().to_string(), |g| g.name);
            Some(Node { path: e.path(), mode: m.mode() & 0o7777, group })
        })
        .collect();
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    nodes
}

/// The user doctor speaks for: the one behind sudo, else the caller.
fn user(root: &Path) -> Option<UserFacts> {
    let passwd = std::fs::read_to_string(under(root, Path::new("/etc/passwd"))).ok()?;
    let by_name = std::env::var("SUDO_USER").ok().and_then(|n| gpuwarden::base::users::account_by_name(&passwd, &n));
    let u = by_name.or_else(|| gpuwarden::base::users::account_by_uid(&passwd, nix::unistd::getuid().as_raw()))?;
    let listed = |file: &str| {
        std::fs::read_to_string(under(root, Path::new(file)))
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next().is_some_and(|who| who == u.name || who == u.uid.to_string()))
    };
    let groups = gpuwarden::base::users::groups_of(&std::fs::read_to_string(under(root, Path::new("/etc/group"))).unwrap_or_default(), &u);
    let lingers = under(root, Path::new("/run/systemd/system")).is_dir().then(|| under(root, Path::new("/var/lib/systemd/linger")).join(&u.name).exists());
    Some(UserFacts { name: u.name.clone(), uid: u.uid, subuids: listed("/etc/subuid"), subgids: listed("/etc/subgid"), groups, lingers })
}
