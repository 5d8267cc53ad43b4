//! Each check turns facts into findings, with what to run for each problem.

use std::collections::BTreeMap;

use super::version::{version_at_least, version_number};
use super::{Facts, Finding, Level};

/// Every finding for `facts`, in the order a user fixes them.
pub fn check(facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    driver(facts, &mut out);
    mps(facts, &mut out);
    specs(facts, &mut out);
    podman(facts, &mut out);
    docker(facts, &mut out);
    if let Some(c) = &facts.containerd {
        super::containerd::check(c, &mut out);
    }
    watchdog(facts, &mut out);
    nodes(facts, &mut out);
    broker(facts, &mut out);
    rootless(facts, &mut out);
    out
}

fn broker(f: &Facts, out: &mut Vec<Finding>) {
    match &f.broker {
        Some((socket, Ok(()))) => out.push(Finding::new("rootless", Level::Ok, format!("the admission broker answers at {}: rootless profile containers are admitted", socket.display()))),
        Some((socket, Err(why))) => out.push(
            Finding::new("rootless", Level::Warn, format!("the admission broker does not answer at {} ({why}): rootless profile containers are refused", socket.display()))
                .fix("systemctl enable --now gpuwarden-broker.socket"),
        ),
        None => {}
    }
}

fn driver(f: &Facts, out: &mut Vec<Finding>) {
    if let Some(name) = &f.stand_in {
        out.push(
            Finding::new("driver", Level::Warn, format!("the GPUs come from {name}, a stand-in for NVML: the hooks see it, not this host's GPUs"))
                .fix("remove `inventory = ...` from config.toml on a host with a GPU (`gpuwarden inventory` then asks NVML)"),
        );
    }
    match &f.gpus {
        Some(Ok(g)) => out.push(Finding::new("driver", Level::Ok, format!("driver {}, {} GPU(s): {}", g.driver_version, g.names.len(), g.names.join(", ")))),
        Some(Err(why)) if f.stand_in.is_none() => out.push(
            Finding::new("driver", Level::Fail, format!("NVML: {why}"))
                .fix("load the driver (modprobe nvidia), or install it: apt install nvidia-driver (Debian's non-free)"),
        ),
        _ => {}
    }
}

fn mps(f: &Facts, out: &mut Vec<Finding>) {
    let m = &f.mps;
    if !m.enabled {
        out.push(Finding::new("mps", Level::Warn, "MPS is off ([mps] enabled = false): profile containers are not limited on the GPU").fix("set [mps] enabled = true in config.toml"));
        return;
    }
    match &m.control {
        None => {
            out.push(Finding::new("mps", Level::Fail, "nvidia-cuda-mps-control is not installed: profile containers are refused").fix("apt install nvidia-cuda-mps"));
            return;
        }
        Some(p) => out.push(Finding::new("mps", Level::Ok, format!("{} is installed", p.display()))),
    }
    match &m.daemon {
        Some(Ok(pid)) => out.push(Finding::new("mps", Level::Ok, format!("the control daemon runs (pid {pid})"))),
        Some(Err(why)) => out.push(
            Finding::new("mps", Level::Fail, format!("the control daemon does not answer ({why}): profile containers are refused"))
                .fix("systemctl start gpuwarden-mps (or gpuwarden mps start)"),
        ),
        None => {}
    }
    if m.pipe_open && matches!(m.daemon, Some(Ok(_))) {
        out.push(
            Finding::new("mps", Level::Warn, "every local user can reach the MPS daemon's control socket, and through it change the defaults that bind every container")
                .fix("gpuwarden mps start (closes the pipe folder to all but GPU users; its file system must keep ACLs)"),
        );
    }
    if let Some(Err(why)) = &m.defaults {
        out.push(Finding::new("mps", Level::Warn, format!("the daemon's defaults are not the ceiling: {why}")).fix("gpuwarden mps start (sets them again and reads them back); gpuwarden watch restores them by itself"));
    }
}

fn specs(f: &Facts, out: &mut Vec<Finding>) {
    let c = &f.cdi;
    let dirs = c.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    for (path, why) in &c.broken {
        out.push(Finding::new("cdi", Level::Warn, format!("{} cannot be read: {why}", path.display())).fix("gpuwarden cdi validate, then fix or remove the file"));
    }
    let mut defined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &c.specs {
        for d in &s.devices {
            defined.entry(format!("{}={d}", s.kind)).or_default().push(s.path.display().to_string());
        }
    }
    for (device, files) in defined.iter().filter(|(_, f)| f.len() > 1) {
        out.push(
            Finding::new("cdi", Level::Fail, format!("{device} is defined by {}: Podman and Docker refuse it", files.join(" and ")))
                .fix("gpuwarden cdi generate (it leaves NVIDIA's names to NVIDIA's spec), or remove the stale spec"),
        );
    }
    if c.ours.is_empty() {
        out.push(Finding::new("cdi", Level::Fail, format!("no spec of gpuwarden's in {dirs}: `--device nvidia.com/gpu=comfyui` fails")).fix("gpuwarden cdi generate (gpuwarden-cdi-refresh.service does it at boot)"));
    }
    let loaded = f.gpus.as_ref().and_then(|g| g.as_ref().ok()).map(|g| g.driver_version.as_str());
    for s in &c.ours {
        let mut fine = true;
        if let (Some(made), Some(loaded)) = (s.driver_version.as_deref(), loaded) {
            if made != loaded {
                fine = false;
                out.push(
                    Finding::new("cdi", Level::Fail, format!("{} was made for driver {made}, but {loaded} is loaded: containers get the wrong libraries", s.path.display()))
                        .fix("gpuwarden cdi generate (systemctl start gpuwarden-cdi-refresh)"),
                );
            }
        }
        if let Some(first) = s.missing.first() {
            fine = false;
            out.push(
                Finding::new("cdi", Level::Fail, format!("{} names {} host path(s) that are gone, such as {}: it is stale", s.path.display(), s.missing.len(), first.display()))
                    .fix("gpuwarden cdi generate"),
            );
        }
        if fine {
            out.push(Finding::new("cdi", Level::Ok, format!("{} is gpuwarden's spec{}", s.path.display(), s.driver_version.as_deref().map(|v| format!(", for driver {v}")).unwrap_or_default())));
        }
    }
    if let Some(t) = &c.toolkit {
        let nvidia = c.specs.iter().find(|s| s.writer == "nvidia-ctk");
        match nvidia {
            Some(s) => out.push(Finding::new("cdi", Level::Ok, format!("NVIDIA's toolkit ({}) and its spec {} stand beside gpuwarden's, with no name defined twice", t.display(), s.path.display()))),
            None => out.push(
                Finding::new("cdi", Level::Note, format!("NVIDIA's toolkit ({}) is installed, so gpuwarden leaves nvidia.com/gpu=all, =0 and the UUIDs to it, but its spec is missing", t.display()))
                    .fix("nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml"),
            ),
        }
    }
}

fn podman(f: &Facts, out: &mut Vec<Finding>) {
    let Some(p) = &f.podman else { return };
    let Some(version) = p.version.as_deref().and_then(version_number) else {
        out.push(Finding::new("podman", Level::Ok, "Podman is installed"));
        return hook_files(p, out);
    };
    match version_at_least(version, 4, 4) {
        Some(false) => out.push(
            Finding::new("podman", Level::Note, format!("Podman {version}: quadlets need 4.4"))
                .fix("run the workers as services with the units in /usr/share/doc/gpuwarden/examples/podman/systemd (see README: as services)"),
        ),
        _ => out.push(Finding::new("podman", Level::Ok, format!("Podman {version}"))),
    }
    hook_files(p, out);
}

fn hook_files(p: &super::Engine, out: &mut Vec<Finding>) {
    if p.hook_files.is_empty() {
        out.push(
            Finding::new("podman", Level::Fail, "no hooks.d file runs gpuwarden-hook precreate: profile containers get no MPS limits or hardening, and images outside Debian's layout no driver")
                .fix("gpuwarden podman install-hook (or gpuwarden install --podman)"),
        );
    }
    for h in &p.hook_files {
        if h.mode & 0o004 == 0 {
            out.push(
                Finding::new("podman", Level::Fail, format!("{} is not readable by every user (mode {:o}): rootless Podman fails every container", h.path.display(), h.mode & 0o777))
                    .fix(format!("chmod 644 {}", h.path.display())),
            );
        } else if !h.hook_exists {
            out.push(Finding::new("podman", Level::Fail, format!("{} runs {}, which does not exist: every container fails", h.path.display(), h.hook.display())).fix("gpuwarden podman install-hook"));
        } else {
            out.push(Finding::new("podman", Level::Ok, format!("{} runs {}", h.path.display(), h.hook.display())));
        }
    }
}

fn docker(f: &Facts, out: &mut Vec<Finding>) {
    let Some(d) = &f.docker else { return };
    let version = d.version.as_deref().and_then(version_number).unwrap_or("?");
    let cdi = version_at_least(version, 25, 0) == Some(true);
    let json = match &d.daemon_json {
        None => {
            out.push(Finding::new("docker", Level::Fail, format!("Docker {version}: /etc/docker/daemon.json does not register gpuwarden-runtime")).fix("gpuwarden install --docker, then systemctl restart docker"));
            return;
        }
        Some(Err(why)) => {
            out.push(Finding::new("docker", Level::Fail, format!("/etc/docker/daemon.json: {why}")).fix("fix the file: dockerd does not start with it"));
            return;
        }
        Some(Ok(v)) => v,
    };
    let runtime = json.pointer("/runtimes/gpuwarden/path").and_then(|p| p.as_str());
    match runtime {
        None => out.push(Finding::new("docker", Level::Fail, format!("Docker {version}: no runtime \"gpuwarden\" in /etc/docker/daemon.json")).fix("gpuwarden install --docker, then systemctl restart docker")),
        Some(p) if !d.runtime_exists => {
            out.push(Finding::new("docker", Level::Fail, format!("the runtime \"gpuwarden\" names {p}, which does not exist")).fix("gpuwarden install --docker"))
        }
        Some(p) => out.push(Finding::new("docker", Level::Ok, format!("Docker {version} has the runtime \"gpuwarden\" ({p})"))),
    }
    if cdi {
        if json.pointer("/features/cdi").and_then(|v| v.as_bool()) != Some(true) && version_at_least(version, 28, 2) != Some(true) {
            out.push(Finding::new("docker", Level::Warn, "features.cdi is not on: `docker run --device nvidia.com/gpu=comfyui` fails (the runtime's NVIDIA_VISIBLE_DEVICES still works)").fix("gpuwarden install --docker"));
        }
        if json.get("default-runtime").and_then(|v| v.as_str()) != Some("gpuwarden") {
            out.push(Finding::new("docker", Level::Warn, "default-runtime is not gpuwarden: containers given --device by CDI get no profile unless run with --runtime gpuwarden").fix("set \"default-runtime\": \"gpuwarden\" in /etc/docker/daemon.json"));
        }
    }
}

fn watchdog(f: &Facts, out: &mut Vec<Finding>) {
    let w = &f.watch;
    let level = if w.required { Level::Fail } else { Level::Warn };
    let consequence = if w.required { "admission refuses profile containers ([watch] required = true)" } else { "limits hold at start only: a client can raise the MPS defaults unseen" };
    match w.last_look {
        Some((age, true)) => out.push(Finding::new("watch", Level::Ok, format!("the watchdog looked {age} s ago"))),
        Some((age, false)) => out.push(Finding::new("watch", level, format!("the watchdog last looked {age} s ago: {consequence}")).fix("systemctl restart gpuwarden-watch")),
        None => out.push(Finding::new("watch", level, format!("the watchdog is not running: {consequence}")).fix("systemctl enable --now gpuwarden-watch")),
    }
}

fn nodes(f: &Facts, out: &mut Vec<Finding>) {
    let open: Vec<&super::Node> = f.nodes.iter().filter(|n| n.mode & 0o006 != 0).collect();
    if let Some(n) = open.first() {
        out.push(
            Finding::new("devices", Level::Warn, format!("{} is mode {:o}: every local user can open the GPU around gpuwarden's budget", n.path.display(), n.mode & 0o777))
                .fix("set NVreg_DeviceFileMode=0660 and NVreg_DeviceFileGID (a gpu-users group) in /etc/modprobe.d/nvidia.conf; rootless users join that group"),
        );
    } else if let Some(n) = f.nodes.first() {
        out.push(Finding::new("devices", Level::Ok, format!("{} is mode {:o}, group {}: only that group opens the GPU directly", n.path.display(), n.mode & 0o777, n.group)));
    }
}

fn rootless(f: &Facts, out: &mut Vec<Finding>) {
    let Some(u) = &f.user else { return };
    if u.uid == 0 {
        return;
    }
    if !(u.subuids && u.subgids) {
        out.push(
            Finding::new("rootless", Level::Warn, format!("{} has no subordinate uids or gids: rootless Podman cannot run containers", u.name))
                .fix(format!("usermod --add-subuids 200000-265535 --add-subgids 200000-265535 {}", u.name)),
        );
    }
    if u.lingers == Some(false) {
        out.push(
            Finding::new("rootless", Level::Note, format!("{}'s rootless containers and user units stop when their last login session ends", u.name))
                .fix(format!("loginctl enable-linger {}", u.name)),
        );
    }
    let group_only = f.nodes.iter().find(|n| n.mode & 0o006 == 0);
    if let Some(n) = group_only.filter(|n| !u.groups.contains(&n.group)) {
        out.push(Finding::new("rootless", Level::Warn, format!("{} is not in group {}, which {} requires", u.name, n.group, n.path.display())).fix(format!("usermod -aG {} {}", n.group, u.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::cdi::SpecFile;

    fn healthy() -> Facts {
        Facts {
            gpus: Some(Ok(Gpus { driver_version: "535.261.03".into(), names: vec!["NVIDIA GeForce RTX 4070".into()] })),
            stand_in: None,
            mps: MpsFacts { enabled: true, control: Some("/usr/bin/nvidia-cuda-mps-control".into()), daemon: Some(Ok(42)), defaults: Some(Ok(())), pipe_open: false },
            cdi: CdiFacts {
                dirs: vec!["/etc/cdi".into()],
                specs: vec![SpecFile { path: "/etc/cdi/gpuwarden.yaml".into(), cdi_version: "0.5.0".into(), kind: "nvidia.com/gpu".into(), devices: vec!["0".into(), "comfyui".into()], ours: true, writer: "gpuwarden" }],
                broken: vec![],
                ours: vec![OurSpec { path: "/etc/cdi/gpuwarden.yaml".into(), driver_version: Some("535.261.03".into()), missing: vec![] }],
                toolkit: None,
            },
            podman: Some(Engine {
                version: Some("podman version 4.9.3".into()),
                hook_files: vec![HookFile { path: "/usr/share/containers/oci/hooks.d/gpuwarden-precreate.json".into(), mode: 0o644, hook: "/usr/bin/gpuwarden-hook".into(), hook_exists: true }],
            }),
            docker: None,
            containerd: None,
            watch: WatchFacts { required: false, last_look: Some((1, true)) },
            nodes: vec![Node { path: "/dev/nvidia0".into(), mode: 0o660, group: "gpu-users".into() }],
            user: None,
            broker: None,
        }
    }

    fn levels(f: &Facts) -> Vec<(&'static str, Level)> {
        check(f).into_iter().map(|f| (f.check, f.level)).collect()
    }

    #[test]
    fn a_healthy_host_has_nothing_to_fix() {
        let findings = check(&healthy());
        assert!(findings.iter().all(|f| f.level == Level::Ok && f.fix.is_none()), "{findings:#?}");
        assert!(!blocks(&findings));
    }

    #[test]
    fn each_broken_piece_is_one_line_with_its_fix() {
        let mut f = healthy();
        f.mps.daemon = Some(Err("Cannot find MPS control daemon process".into()));
        f.cdi.ours[0].driver_version = Some("535.183.01".into());
        f.cdi.specs.push(SpecFile { path: "/var/run/cdi/nvidia.yaml".into(), cdi_version: "0.5.0".into(), kind: "nvidia.com/gpu".into(), devices: vec!["0".into(), "all".into()], ours: false, writer: "nvidia-ctk" });
        f.podman.as_mut().unwrap().hook_files.clear();
        let findings = check(&f);
        let fails: Vec<(&str, &str)> = findings.iter().filter(|x| x.level == Level::Fail).map(|x| (x.check, x.fix.as_deref().unwrap())).collect();
        assert_eq!(
            fails,
            [
                ("mps", "systemctl start gpuwarden-mps (or gpuwarden mps start)"),
                ("cdi", "gpuwarden cdi generate (it leaves NVIDIA's names to NVIDIA's spec), or remove the stale spec"),
                ("cdi", "gpuwarden cdi generate (systemctl start gpuwarden-cdi-refresh)"),
                ("podman", "gpuwarden podman install-hook (or gpuwarden install --podman)"),
            ]
        );
        let text = render_text(&findings);
        assert!(text.contains("nvidia.com/gpu=0 is defined by /etc/cdi/gpuwarden.yaml and /var/run/cdi/nvidia.yaml"), "{text}");
        assert!(text.contains("was made for driver 535.183.01, but 535.261.03 is loaded"), "{text}");
        assert!(text.lines().all(|l| l.len() < 240), "fits a terminal line by line: {text}");
    }

    #[test]
    fn no_spec_a_stale_spec_and_a_stand_in() {
        let mut f = healthy();
        f.cdi.ours[0].missing = vec!["/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03".into()];
        assert!(check(&f).iter().any(|x| x.level == Level::Fail && x.text.contains("names 1 host path(s) that are gone")));
        f.cdi.ours.clear();
        assert!(check(&f).iter().any(|x| x.level == Level::Fail && x.text.starts_with("no spec of gpuwarden's in /etc/cdi")));
        let mut f = healthy();
        f.gpus = Some(Err("the NVIDIA driver is not loaded".into()));
        assert!(levels(&f).contains(&("driver", Level::Fail)));
        f.stand_in = Some("builtin:rtx4070".into());
        assert_eq!(levels(&f)[0], ("driver", Level::Warn), "a stand-in is said, not failed");
        assert!(!levels(&f).contains(&("driver", Level::Fail)));
    }

    #[test]
    fn the_watchdog_blocks_only_when_required() {
        let mut f = healthy();
        f.watch.last_look = None;
        assert!(levels(&f).contains(&("watch", Level::Warn)));
        f.watch.required = true;
        assert!(levels(&f).contains(&("watch", Level::Fail)));
        f.watch.last_look = Some((60, false));
        assert!(check(&f).iter().any(|x| x.level == Level::Fail && x.text.contains("last looked 60 s ago")));
    }

    #[test]
    fn an_mps_pipe_folder_open_to_all_is_said() {
        let mut f = healthy();
        assert!(!render_text(&check(&f)).contains("control socket"));
        f.mps.pipe_open = true;
        let text = render_text(&check(&f));
        assert!(text.contains("WARN  mps        every local user can reach the MPS daemon's control socket") && text.contains("-> gpuwarden mps start"), "{text}");
    }

    #[test]
    fn old_podman_open_nodes_docker_and_rootless() {
        let mut f = healthy();
        f.podman.as_mut().unwrap().version = Some("podman version 4.3.1".into());
        f.nodes[0].mode = 0o666;
        f.docker = Some(DockerFacts { version: Some("Docker version 26.1.5+dfsg1, build a72d7cd".into()), daemon_json: Some(Ok(serde_json::json!({"runtimes": {"gpuwarden": {"path": "/nonexistent/gpuwarden-runtime"}}}))), runtime_exists: false });
        f.user = Some(UserFacts { name: "ana".into(), uid: 1000, subuids: false, subgids: true, groups: vec![], lingers: None });
        let findings = check(&f);
        let text = render_text(&findings);
        assert!(text.contains("Podman 4.3.1: quadlets need 4.4"), "{text}");
        assert!(text.contains("/dev/nvidia0 is mode 666: every local user can open the GPU"), "{text}");
        assert!(text.contains("NVreg_DeviceFileMode=0660") && text.lines().all(|l| l.len() <= 200), "{text}");
        assert!(text.contains("names /nonexistent/gpuwarden-runtime, which does not exist"), "{text}");
        assert!(text.contains("features.cdi is not on") && text.contains("default-runtime is not gpuwarden"), "{text}");
        assert!(text.contains("ana has no subordinate uids"), "{text}");
        assert!(text.contains("/usr/share/doc/gpuwarden/examples/podman/systemd"), "the units are where the package puts them: {text}");
        assert!(!text.contains("enable-linger"), "no systemd, nothing said of lingering: {text}");
        f.user.as_mut().unwrap().lingers = Some(false);
        let text = render_text(&check(&f));
        assert!(text.contains("ana's rootless containers and user units stop when their last login session ends") && text.contains("-> loginctl enable-linger ana"), "{text}");
        f.user.as_mut().unwrap().lingers = Some(true);
        assert!(!render_text(&check(&f)).contains("enable-linger"));
        let mut f = healthy();
        f.user = Some(UserFacts { name: "ana".into(), uid: 1000, subuids: true, subgids: true, groups: vec!["users".into()], lingers: None });
        assert!(render_text(&check(&f)).contains("ana is not in group gpu-users, which /dev/nvidia0 requires"));
        f.broker = Some(("/run/gpuwarden/broker.sock".into(), Err("No such file or directory (os error 2)".into())));
        let text = render_text(&check(&f));
        assert!(text.contains("WARN  rootless   the admission broker does not answer at /run/gpuwarden/broker.sock") && text.contains("-> systemctl enable --now gpuwarden-broker.socket"), "{text}");
    }

    #[test]
    fn versions_are_read_from_what_the_tools_print() {
        assert_eq!(version_at_least("podman version 4.3.1", 4, 4), Some(false));
        assert_eq!(version_at_least("podman version 4.4.0", 4, 4), Some(true));
        assert_eq!(version_at_least("Docker version 26.1.5+dfsg1, build a72d7cd", 25, 0), Some(true));
        assert_eq!(version_at_least("Docker version 20.10.24+dfsg1, build 297e128", 25, 0), Some(false));
        assert_eq!(version_at_least("no version here", 1, 0), None);
    }
}
