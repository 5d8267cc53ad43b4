//! `gpuwarden install` and `uninstall` on scratch roots, with the real binary:
//! the root is left byte for byte as it was, a second install changes
//! nothing, refusals change nothing, and with a driver the spec is written.

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

use gpuwarden::admin::install::snapshot;

/// A host with Podman, Docker, and a daemon.json of the user's.
fn host() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in ["etc/docker", "usr/bin", "usr/sbin", "usr/local/bin"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("usr/bin/podman"), "").unwrap();
    std::fs::write(root.path().join("usr/sbin/dockerd"), "").unwrap();
    std::fs::write(root.path().join("usr/local/bin/someone-elses-tool"), "#!/bin/sh\n").unwrap();
    std::fs::write(root.path().join("etc/docker/daemon.json"), "{\"log-driver\": \"journald\",\n \"registry-mirrors\": [\"https://mirror.example\"],   \"data-root\": \"/srv/docker\"}\n").unwrap();
    root
}

fn run(args: &[&str]) -> Output {
    gpuwarden(args, b"")
}

#[test]
fn install_twice_then_uninstall_leaves_the_root_as_it_was() {
    let root = host();
    let r = root.path().to_str().unwrap();
    let before = snapshot(root.path());

    let o = run(&["install", "--root", r, "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("would create  ") && stdout(&o).contains("would merge   "), "{}", stdout(&o));
    assert_eq!(snapshot(root.path()), before, "a dry run changes nothing");

    let o = run(&["install", "--root", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("for Podman and Docker"), "{out}");
    for piece in [
        "usr/local/bin/gpuwarden", "usr/local/bin/gpuwarden-hook", "usr/local/bin/gpuwarden-runtime", "usr/local/bin/gpuwarden-launch",
        "etc/gpuwarden/config.toml", "etc/systemd/system/gpuwarden-mps.service", "etc/systemd/system/gpuwarden-cdi-refresh.service",
        "etc/systemd/system/gpuwarden-cdi-refresh.path", "etc/systemd/system/gpuwarden-watch.service", "usr/share/containers/oci/hooks.d/gpuwarden-precreate.json",
    ] {
        assert!(root.path().join(piece).is_file(), "{piece} is missing:\n{out}");
    }
    // No driver here: the spec is skipped, saying so and what writes it later.
    assert!(out.contains("the CDI spec is not written now: ") && out.contains("gpuwarden-cdi-refresh.service writes it"), "{out}");
    let daemon: serde_json::Value = serde_json::from_slice(&std::fs::read(root.path().join("etc/docker/daemon.json")).unwrap()).unwrap();
    let keys: Vec<&String> = daemon.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["log-driver", "registry-mirrors", "data-root", "runtimes"], "every key kept, in its place");
    assert_eq!(daemon["runtimes"]["gpuwarden"]["path"], "/usr/local/bin/gpuwarden-runtime");
    assert!(out.contains("restart Docker"), "{out}");
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/gpuwarden-cdi-refresh.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/gpuwarden cdi generate"), "{unit}");

    let installed = snapshot(root.path());
    let o = run(&["install", "--root", r]);
    assert!(o.status.success() && stdout(&o).contains("nothing to change"), "{}", stdout(&o));
    assert_eq!(snapshot(root.path()), installed, "a second install changes nothing");

    let o = run(&["uninstall", "--root", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(snapshot(root.path()), before, "uninstall leaves the root byte for byte as it was");
    let o = run(&["uninstall", "--root", r]);
    assert!(o.status.success() && stdout(&o).contains("nothing to take away"), "{}", stdout(&o));
}

#[test]
fn a_malformed_daemon_json_and_a_read_only_target_are_refused_and_nothing_changes() {
    let root = host();
    let r = root.path().to_str().unwrap();
    std::fs::write(root.path().join("etc/docker/daemon.json"), "{\"log-driver\": \"journald\",}\n").unwrap();
    let before = snapshot(root.path());
    let o = run(&["install", "--root", r, "--docker"]);
    assert_one_line_error(&o, "daemon.json is not valid JSON (trailing comma at line 1 column 27): fix it, then run this again; it was not changed");
    assert_eq!(snapshot(root.path()), before);

    if !is_root() {
        skip("read-only target", "mounting a read-only tmpfs needs root");
        return;
    }
    let ro = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ro.path().join("etc")).unwrap();
    let st = std::process::Command::new("mount").args(["-o", "bind,ro"]).arg(ro.path()).arg(ro.path()).status().unwrap();
    assert!(st.success(), "mount -o bind,ro");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(ro.path());
    let before = snapshot(ro.path());
    let o = run(&["install", "--root", ro.path().to_str().unwrap(), "--podman"]);
    assert_one_line_error(&o, "read-only file system; nothing was changed");
    assert_eq!(snapshot(ro.path()), before);
}

#[test]
fn with_a_driver_named_in_the_config_the_spec_is_written_and_taken_away() {
    if !is_root() {
        skip("with_a_driver_named_in_the_config_the_spec_is_written_and_taken_away", "the driver fixture's device nodes need mknod (root)");
        return;
    }
    let fixture = driver_fixture();
    let root = host();
    let r = root.path().to_str().unwrap();
    // The user's own config, naming an inventory file and the driver: install keeps it.
    let inventory = root.path().join("etc/gpuwarden/rtx4070.json");
    std::fs::create_dir_all(inventory.parent().unwrap()).unwrap();
    let o = run(&["inventory", "--inventory", "builtin:rtx4070", "--json"]);
    std::fs::write(&inventory, &o.stdout).unwrap();
    let config = format!("inventory = \"{}\"\n[cdi]\ndriver_root = \"{}\"\ndev_root = \"{}\"\n", inventory.display(), fixture.root.display(), fixture.dev.display());
    std::fs::write(root.path().join("etc/gpuwarden/config.toml"), &config).unwrap();
    let before = snapshot(root.path());

    let o = run(&["install", "--root", r, "--podman"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("keep    ") && stdout(&o).contains("config.toml (yours: never overwritten)"), "{}", stdout(&o));
    let spec = std::fs::read_to_string(root.path().join("etc/cdi/gpuwarden.yaml")).unwrap_or_else(|_| panic!("no spec: {}", stdout(&o)));
    assert!(spec.contains("name: comfyui") && spec.contains("/usr/local/bin/gpuwarden-hook"), "the spec's hooks name the installed binary");
    assert!(spec.contains("libcuda.so.535.261.03"), "the driver's libraries from the configured driver root");
    assert_eq!(std::fs::read_to_string(root.path().join("etc/gpuwarden/config.toml")).unwrap(), config);

    let o = run(&["uninstall", "--root", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(snapshot(root.path()), before, "the spec went with the rest; the user's config stayed");
}
