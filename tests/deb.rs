//! The Debian package on this host, for real: `dpkg -i`, what it puts where,
//! the spec skipped without a driver (and written with a configured one),
//! `podman run --device nvidia.com/gpu=comfyui` with no other set-up step,
//! and `dpkg --purge` leaving the host as it was.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};

const PACKAGE: &str = "gpuwarden";
const IMAGE: &str = "localhost/gpuwarden-test-busybox:latest";

/// What the package touches on the host: path, and content (None: absent).
const WATCHED: &[&str] = &[
    "/etc/docker/daemon.json", "/etc/gpuwarden", "/etc/cdi", "/var/lib/gpuwarden", "/usr/share/containers/oci/hooks.d/gpuwarden-precreate.json",
    "/usr/bin/gpuwarden", "/usr/bin/gpuwarden-hook", "/usr/bin/gpuwarden-runtime", "/usr/bin/gpuwarden-launch", "/usr/bin/gpuwarden-device-plugin",
    "/lib/systemd/system/gpuwarden-mps.service", "/lib/systemd/system/gpuwarden-cdi-refresh.service", "/lib/systemd/system/gpuwarden-cdi-refresh.path",
    "/lib/systemd/system/gpuwarden-watch.service", "/lib/systemd/system/gpuwarden-live.service", "/lib/systemd/system/gpuwarden-broker.socket",
    "/lib/systemd/system/gpuwarden-broker.service", "/usr/share/doc/gpuwarden",
];

fn state() -> Vec<(String, Option<Vec<u8>>)> {
    WATCHED.iter().map(|p| (p.to_string(), if Path::new(p).is_dir() { Some(Vec::new()) } else { std::fs::read(p).ok() })).collect()
}

/// Purges the package on drop, whatever the test did.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    }
}

fn dpkg(args: &[&str]) -> Output {
    Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive").output().unwrap()
}

fn host_lock(test: &str) -> Option<(nix::fcntl::Flock<std::fs::File>, nix::fcntl::Flock<std::fs::File>)> {
    if !is_root() {
        skip(test, "dpkg -i needs root");
        return None;
    }
    if dpkg(&["-s", PACKAGE]).status.success() {
        skip(test, "the gpuwarden package is installed on this host already: the test would remove it");
        return None;
    }
    // The package writes /etc/cdi and the global hooks.d, which the Podman tests' specs must not meet.
    Some((process_lock("podman-cdi"), process_lock("deb")))
}

#[test]
fn the_package_installs_without_a_driver_and_purges_to_nothing() {
    let test = "the_package_installs_without_a_driver_and_purges_to_nothing";
    let Some(_locks) = host_lock(test) else { return };
    let deb = deb_package();
    let before = state();
    let _installed = Installed;
    let o = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i: {}{}", stdout(&o), stderr(&o));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("the CDI spec is not written now: ") && out.contains("gpuwarden-cdi-refresh.service writes it"), "{out}");
    for p in &WATCHED[4..] {
        assert!(Path::new(p).exists(), "{p} was not installed");
    }
    assert_eq!(std::fs::read_to_string("/etc/gpuwarden/config.toml").unwrap(), std::fs::read_to_string(repo().join("packaging/config.toml")).unwrap());
    assert!(dpkg(&["-s", PACKAGE]).status.success());
    let conffiles = stdout(&Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]).output().unwrap());
    assert!(conffiles.contains("/etc/gpuwarden/config.toml"), "the config is a conffile: {conffiles}");
    // The installed units name the installed binaries, and systemd accepts them.
    let dir = tempfile::tempdir().unwrap();
    let units = ["gpuwarden-mps.service", "gpuwarden-cdi-refresh.service", "gpuwarden-cdi-refresh.path", "gpuwarden-watch.service", "gpuwarden-live.service", "gpuwarden-broker.socket", "gpuwarden-broker.service"];
    for unit in units {
        let text = std::fs::read_to_string(Path::new("/lib/systemd/system").join(unit)).unwrap();
        let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("Exec")).collect();
        assert!(runs.iter().all(|l| l.contains("/usr/bin/gpuwarden") && !l.contains("/usr/local/bin")), "{unit} runs the installed binary: {runs:?}");
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    for unit in units {
        let o = Command::new("systemd-analyze").arg("verify").arg(dir.path().join(unit)).output().unwrap();
        assert!(o.status.success() && stderr(&o).trim().is_empty(), "{unit}: {}", stderr(&o));
    }
    // The examples the README's desktop path builds and runs from, with the scripts the Containerfiles copy executable.
    let examples = Path::new("/usr/share/doc/gpuwarden/examples");
    for f in ["podman/comfyui/Containerfile", "podman/blender/Containerfile", "podman/quadlet/comfyui@.container", "podman/systemd/comfyui@.service", "podman/systemd/blender-render.service", "docker/comfyui/compose.yaml", "docker/blender/compose.runtime.yaml", "monitoring/prometheus/gpuwarden.rules.yml", "monitoring/grafana/gpuwarden.json"] {
        assert!(examples.join(f).is_file(), "{f} is not among the examples");
    }
    for f in ["podman/comfyui/comfyui-start", "podman/blender/blender-render"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(examples.join(f)).unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "{f} is executable, as the image needs it");
    }
    if Path::new("/usr/sbin/dockerd").exists() {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read("/etc/docker/daemon.json").unwrap()).unwrap();
        assert_eq!(v["runtimes"]["gpuwarden"]["path"], "/usr/bin/gpuwarden-runtime");
    }

    let o = dpkg(&["--purge", PACKAGE]);
    assert!(o.status.success(), "dpkg --purge: {}{}", stdout(&o), stderr(&o));
    assert_eq!(state(), before, "purge leaves every path the package touched as it was");
}

#[test]
fn with_a_configured_driver_the_package_alone_makes_podman_run_work() {
    let test = "with_a_configured_driver_the_package_alone_makes_podman_run_work";
    let Some(_locks) = host_lock(test) else { return };
    let deb = deb_package();
    let fixture = driver_fixture();
    busybox_image(IMAGE, |_| {});
    let before = state();
    let _installed = Installed;
    // A config.toml naming an inventory file and the driver, there before the package.
    let inventory = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(inventory.path(), &gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"").stdout).unwrap();
    std::fs::create_dir_all("/etc/gpuwarden").unwrap();
    let config = format!("inventory = \"{}\"\n[cdi]\ndriver_root = \"{}\"\ndev_root = \"{}\"\n", inventory.path().display(), fixture.root.display(), fixture.dev.display());
    std::fs::write("/etc/gpuwarden/config.toml", &config).unwrap();

    let o = dpkg(&["-i", "--force-confold", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i: {}{}", stdout(&o), stderr(&o));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(Path::new("/etc/cdi/gpuwarden.yaml").is_file(), "postinst wrote the spec: {out}");
    assert!(out.contains("started the MPS control daemon"), "postinst started MPS (no systemd here): {out}");
    assert_eq!(std::fs::read_to_string("/etc/gpuwarden/config.toml").unwrap(), config, "the user's config is kept");

    // No other set-up step: Podman finds the spec in /etc/cdi and the hook in its hooks.d.
    let o = Command::new("podman")
        .args(["--runtime", "runc", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--device", "nvidia.com/gpu=comfyui", IMAGE, "sh", "-c", "echo admitted; env"])
        .output()
        .unwrap();
    assert!(o.status.success(), "podman run: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("admitted") && out.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25") && out.contains("CUDA_MPS_PIPE_DIRECTORY=/run/gpuwarden/mps/pipe"), "{out}");

    let status = stdout(&Command::new("/usr/bin/gpuwarden").args(["mps", "status"]).output().unwrap());
    let pid: u32 = status.split("pid ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no daemon pid in: {status}"));
    let o = dpkg(&["--purge", PACKAGE]);
    assert!(o.status.success(), "dpkg --purge: {}{}", stdout(&o), stderr(&o));
    assert!(!Path::new("/etc/cdi/gpuwarden.yaml").exists() && !Path::new("/run/gpuwarden").exists());
    // The daemon answers `quit`, then exits: give it a moment (a zombie counts as gone).
    let gone = || std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone(), "prerm stopped the MPS daemon (pid {pid})");
    assert_eq!(state(), before, "purge leaves every path the package touched as it was");
}

#[test]
fn lintian_finds_no_error_or_warning_and_every_override_says_why() {
    let deb = deb_package();
    // Lintian leaves a database file (mldbm-elf-*) in its temporary folder: a folder of the test's own.
    let scratch = tempfile::tempdir().unwrap();
    let o = Command::new("lintian").args(["--tag-display-limit", "0"]).arg(&deb).env("TMPDIR", scratch.path()).output().expect("lintian is installed (scripts/setup.sh)");
    let out = stdout(&o);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
    assert!(problems.is_empty(), "lintian on {}:\n{}", deb.display(), problems.join("\n"));
    assert!(o.status.success(), "lintian exits 0: {out}{}", stderr(&o));
    // Each override is preceded by a comment that says why.
    let overrides = std::fs::read_to_string(repo().join("packaging/debian/lintian-overrides")).unwrap();
    let mut reason = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            reason = true;
        } else if line.starts_with("gpuwarden: ") {
            assert!(reason, "no reason above {line}");
        } else if line.trim().is_empty() {
            reason = false;
        }
    }
    // What the package carries besides the binaries: man pages, completions, changelog, copyright.
    let listing = stdout(&Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap());
    for f in [
        "./usr/share/man/man1/gpuwarden.1.gz", "./usr/share/man/man1/gpuwarden-hook.1.gz", "./usr/share/man/man1/gpuwarden-runtime.1.gz",
        "./usr/share/man/man1/gpuwarden-launch.1.gz", "./usr/share/man/man1/gpuwarden-status.1.gz",
        "./usr/bin/gpuwarden-device-plugin", "./usr/share/man/man1/gpuwarden-device-plugin.1.gz",
        "./usr/share/doc/gpuwarden/examples/kubernetes/gpuwarden-device-plugin.yaml",
        "./usr/share/bash-completion/completions/gpuwarden", "./usr/share/zsh/vendor-completions/_gpuwarden", "./usr/share/fish/vendor_completions.d/gpuwarden.fish",
        "./usr/share/doc/gpuwarden/changelog.Debian.gz", "./usr/share/doc/gpuwarden/copyright",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(f)), "the package ships {f}");
    }
}
