//! Every compose file, Containerfile and quadlet the project ships, checked
//! by the real tools so none can rot: docker-compose 1.29 (Debian 12) and
//! Compose v2 (Debian 13's 2.26.1) read the stacks; Podman 5.4's quadlet
//! generator (Debian 13) reads the units; Podman builds the Blender image
//! from its Containerfile. The ComfyUI Containerfile's base (PyTorch with
//! CUDA) cannot be fetched here: a parser checks it, and `sh -n` its script.

mod common;
use common::docker::trixie;
use common::*;

use std::path::Path;
use std::process::Command;

const RUNTIME_FORMS: &[&str] = &["docker/comfyui/compose.runtime.yaml", "docker/blender/compose.runtime.yaml"];
const CDI_FORMS: &[&str] = &["docker/comfyui/compose.yaml", "docker/blender/compose.yaml"];

/// What `config` printed, as YAML.
fn config_of(o: std::process::Output, file: &str) -> serde_yaml::Value {
    assert!(o.status.success(), "{file}: {}", stderr(&o));
    assert!(!stderr(&o).to_lowercase().contains("warn"), "{file}: {}", stderr(&o));
    serde_yaml::from_slice(&o.stdout).unwrap()
}

/// The hardening every service of every stack has, and its GPU request.
fn assert_service_is_governed(file: &str, name: &str, s: &serde_yaml::Value, cdi: bool) {
    let at = |k: &str| &s[k];
    assert_eq!(at("read_only"), &serde_yaml::Value::Bool(true), "{file} {name}: read_only");
    assert_eq!(at("cap_drop")[0].as_str(), Some("ALL"), "{file} {name}: cap_drop");
    assert_eq!(at("security_opt")[0].as_str(), Some("no-new-privileges:true"), "{file} {name}: security_opt");
    assert!(at("tmpfs").as_sequence().is_some_and(|t| t.iter().any(|p| p.as_str() == Some("/tmp"))), "{file} {name}: /tmp is a tmpfs");
    let profile = if file.contains("comfyui") { "comfyui" } else { "blender" };
    let device = format!("nvidia.com/gpu={profile}");
    if cdi {
        let d = &at("deploy")["resources"]["reservations"]["devices"][0];
        assert_eq!(d["driver"].as_str(), Some("cdi"), "{file} {name}");
        assert_eq!(d["capabilities"][0].as_str(), Some("gpu"), "{file} {name}");
        assert_eq!(d["device_ids"][0].as_str(), Some(device.as_str()), "{file} {name}");
    } else {
        assert_eq!(at("runtime").as_str(), Some("gpuwarden"), "{file} {name}");
        assert_eq!(at("environment")["NVIDIA_VISIBLE_DEVICES"].as_str(), Some(device.as_str()), "{file} {name}");
    }
}

fn services(config: &serde_yaml::Value) -> Vec<(String, serde_yaml::Value)> {
    config["services"].as_mapping().unwrap().iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone())).collect()
}

#[test]
fn docker_compose_1_29_reads_the_runtime_form_stacks() {
    assert!(Path::new("/usr/bin/docker-compose").exists(), "scripts/setup.sh installs docker-compose");
    for file in RUNTIME_FORMS {
        let o = Command::new("docker-compose").args(["-f", repo().join(file).to_str().unwrap(), "config"]).output().unwrap();
        let config = config_of(o, file);
        let services = services(&config);
        assert_eq!(services.len(), if file.contains("comfyui") { 4 } else { 1 }, "{file}");
        for (name, s) in &services {
            assert_service_is_governed(file, name, s, false);
        }
    }
}

#[test]
fn compose_v2_reads_every_stack() {
    let root = trixie();
    let config_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config_dir.path().join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(root.join("usr/libexec/docker/cli-plugins/docker-compose"), config_dir.path().join("cli-plugins/docker-compose")).unwrap();
    for file in RUNTIME_FORMS.iter().chain(CDI_FORMS) {
        let o = Command::new(root.join("usr/bin/docker")).env("DOCKER_CONFIG", config_dir.path()).args(["compose", "-f", repo().join(file).to_str().unwrap(), "config"]).output().unwrap();
        let config = config_of(o, file);
        for (name, s) in services(&config) {
            assert_service_is_governed(file, &name, &s, CDI_FORMS.contains(file));
        }
        // ComfyUI's workers each publish their own loopback port, are named for it as the
        // quadlet and the Podman 4.3 units name them, and keep ComfyUI's settings.
        if file.contains("comfyui") {
            let ports: Vec<u64> = services(&config).iter().map(|(_, s)| s["ports"][0]["published"].as_str().and_then(|p| p.parse().ok()).or(s["ports"][0]["published"].as_u64()).unwrap()).collect();
            assert_eq!(ports, [8188, 8189, 8190, 8191], "{file}");
            let names: Vec<String> = services(&config).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["comfyui-8188", "comfyui-8189", "comfyui-8190", "comfyui-8191"], "{file}");
            for (name, s) in services(&config) {
                let targets: Vec<&str> = s["volumes"].as_sequence().unwrap().iter().filter_map(|v| v["target"].as_str()).collect();
                assert!(targets.contains(&"/opt/ComfyUI/user"), "{file} {name}: ComfyUI's settings are kept: {targets:?}");
            }
        }
    }
}

#[test]
fn podman_s_quadlet_generator_reads_the_units() {
    let root = trixie();
    let units = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("podman/quadlet")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, units.path().join(p.file_name().unwrap())).unwrap();
    }
    // A template makes a service only for an instance.
    std::os::unix::fs::symlink("comfyui@.container", units.path().join("comfyui@8188.container")).unwrap();
    let o = Command::new(root.join("usr/libexec/podman/quadlet")).arg("-dryrun").env("QUADLET_UNIT_DIRS", units.path()).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o).to_lowercase();
    assert!(!err.contains("unsupported") && !err.contains("error"), "{err}");
    let out = stdout(&o);
    let exec_start = |unit: &str| -> String {
        let section = out.split(&format!("---{unit}---")).nth(1).unwrap_or_else(|| panic!("no {unit} in {out}"));
        section.lines().find(|l| l.starts_with("ExecStart=")).unwrap().to_string()
    };
    for (unit, device) in [("comfyui@8188.service", "nvidia.com/gpu=comfyui"), ("blender-render.service", "nvidia.com/gpu=blender")] {
        let line = exec_start(unit);
        for want in [&format!("--device {device}")[..], "--read-only", "--cap-drop all", "--security-opt=no-new-privileges", "--tmpfs /tmp"] {
            assert!(line.contains(want), "{unit}: {want} missing in {line}");
        }
    }
    // systemd puts the instance (the port) in at start.
    assert!(exec_start("comfyui@8188.service").contains("--publish 127.0.0.1:%i:8188"), "{}", exec_start("comfyui@8188.service"));
    assert!(exec_start("blender-render.service").contains("--network none"));
}

/// The values of `key=` lines in a quadlet file.
fn quadlet_values(text: &str, key: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned).collect()
}

#[test]
fn the_podman_4_3_units_pass_systemd_and_say_what_the_quadlets_say() {
    let units = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("podman/systemd")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, units.path().join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink("comfyui@.service", units.path().join("comfyui@8188.service")).unwrap();
    let o = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(units.path().join("comfyui@8188.service")).arg(units.path().join("blender-render.service")).output().expect("systemd-analyze (scripts/setup.sh installs systemd)");
    assert!(o.status.success() && stderr(&o).is_empty() && stdout(&o).is_empty(), "systemd-analyze verify: {}{}", stdout(&o), stderr(&o));
    // The same files as a user's units (rootless Podman), checked by the user's own systemd-analyze.
    if is_root() && nix::unistd::User::from_name("gwrootless").ok().flatten().is_some() {
        let runtime = tempfile::tempdir().unwrap();
        nix::unistd::chown(runtime.path(), nix::unistd::User::from_name("gwrootless").unwrap().map(|u| u.uid), None).unwrap();
        let o = Command::new("chmod").args(["-R", "a+rX"]).arg(units.path()).output().unwrap();
        assert!(o.status.success());
        let check = format!("XDG_RUNTIME_DIR={} systemd-analyze --user verify --man=no {}/comfyui@8188.service {}/blender-render.service", runtime.path().display(), units.path().display(), units.path().display());
        let o = Command::new("runuser").args(["-l", "gwrootless", "-c", &check]).output().unwrap();
        assert!(o.status.success() && stderr(&o).is_empty(), "as user units: {}{}", stdout(&o), stderr(&o));
    }
    assert!(std::fs::read_to_string(repo().join("podman/systemd/comfyui@.service")).unwrap().contains("WantedBy=default.target"), "enabled by the system's and a user's manager alike");
    for (quadlet, unit) in [("comfyui@.container", "comfyui@.service"), ("blender-render.container", "blender-render.service")] {
        let q = std::fs::read_to_string(repo().join("podman/quadlet").join(quadlet)).unwrap();
        let u = std::fs::read_to_string(repo().join("podman/systemd").join(unit)).unwrap();
        let exec = u.split("ExecStart=").nth(1).unwrap().split("\nExec").next().unwrap().replace("\\\n", " ");
        let exec: Vec<&str> = exec.split_whitespace().collect();
        let has = |flag: &str, value: &str| exec.windows(2).any(|w| w[0] == flag && w[1] == value);
        for (key, flag) in [("AddDevice", "--device"), ("Volume", "-v"), ("PublishPort", "-p"), ("Tmpfs", "--tmpfs"), ("Annotation", "--annotation"), ("ContainerName", "--name")] {
            for v in quadlet_values(&q, key) {
                assert!(has(flag, &v), "{unit} lacks {flag} {v} of {quadlet}: {exec:?}");
            }
        }
        for env in quadlet_values(&q, "Environment").iter().flat_map(|e| e.split_whitespace().map(str::to_owned).collect::<Vec<_>>()) {
            assert!(has("-e", &env), "{unit} lacks -e {env}");
        }
        for image in quadlet_values(&q, "Image") {
            assert!(exec.contains(&image.as_str()), "{unit} runs {image}");
        }
        for flag in ["--read-only", "--rm", "--replace"] {
            assert!(exec.contains(&flag), "{unit}: {flag}");
        }
        assert!(has("--cap-drop", "all") && has("--security-opt", "no-new-privileges"), "{unit}");
    }
}

#[test]
fn podman_builds_the_blender_image_from_its_containerfile() {
    if !is_root() {
        skip("podman_builds_the_blender_image_from_its_containerfile", "rootful Podman and debootstrap need root");
        return;
    }
    let _lock = process_lock("blender-image");
    let st = Command::new(repo().join("scripts/blender-image.sh")).status().unwrap();
    assert!(st.success(), "scripts/blender-image.sh failed");
    let recipe = Command::new("sh").arg("-c").arg("cat podman/blender/Containerfile podman/blender/blender-render | sha256sum | cut -c1-16").current_dir(repo()).output().unwrap();
    let o = Command::new("podman").args(["image", "inspect", "--format", "{{index .Labels \"io.gpuwarden.recipe\"}} {{index .Config.Cmd 0}}", "localhost/gpuwarden-blender:bookworm"]).output().unwrap();
    assert_eq!(stdout(&o).trim(), format!("{} /usr/local/bin/blender-render", stdout(&recipe).trim()), "the image is built from the Containerfile as it is now");
}

/// The Containerfile instructions Podman and Docker know.
const INSTRUCTIONS: &[&str] = &["FROM", "ARG", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "USER", "VOLUME"];

/// Instructions with their arguments, comments dropped, continuations joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        pending.push_str(t.trim_end_matches('\\'));
        pending.push(' ');
        if !t.ends_with('\\') {
            let (word, rest) = pending.trim().split_once(' ').unwrap_or((pending.trim(), ""));
            out.push((word.to_string(), rest.trim().to_string()));
            pending.clear();
        }
    }
    out
}

#[test]
fn the_containerfiles_and_their_scripts_hold_together() {
    for (dir, port, start) in [("podman/comfyui", Some("8188"), "/usr/local/bin/comfyui-start"), ("podman/blender", None, "/usr/local/bin/blender-render")] {
        let text = std::fs::read_to_string(repo().join(dir).join("Containerfile")).unwrap();
        let list = instructions(&text);
        for (word, _) in &list {
            assert!(INSTRUCTIONS.contains(&word.as_str()), "{dir}: unknown instruction {word}");
        }
        // The base is the user's to name: an ARG with a default, used by FROM.
        let from = list.iter().position(|(w, _)| w == "FROM").expect("a FROM");
        assert!(list[..from].iter().any(|(w, a)| w == "ARG" && a.starts_with("BASE=")), "{dir}: ARG BASE=... before FROM");
        assert_eq!(list[from].1, "${BASE}", "{dir}");
        assert!(text.contains("--build-arg BASE="), "{dir}: the header shows how to name the base");
        // What is copied exists and is executable; the start command is it.
        for (_, args) in list.iter().filter(|(w, _)| w == "COPY") {
            let (src, dest) = args.split_once(' ').unwrap();
            let path = repo().join(dir).join(src);
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap_or_else(|_| panic!("{dir}: COPY {src} is missing")).permissions());
            assert!(mode & 0o111 != 0, "{dir}: {src} is not executable");
            assert_eq!(dest, start, "{dir}");
            let o = Command::new("sh").arg("-n").arg(&path).output().unwrap();
            assert!(o.status.success(), "{dir}/{src}: {}", stderr(&o));
        }
        let launch = list.iter().find(|(w, _)| w == "ENTRYPOINT" || w == "CMD").expect("a start command");
        assert_eq!(launch.1, format!("[\"{start}\"]"), "{dir}");
        if let Some(port) = port {
            assert!(list.iter().any(|(w, a)| w == "EXPOSE" && a == port), "{dir}: EXPOSE {port}");
        }
    }
}
