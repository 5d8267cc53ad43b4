//! The Kubernetes manifests: valid against the Kubernetes 1.31 API schema,
//! strictly, offline (scripts/kubernetes-validate.sh), and pointing at the
//! paths gpuwarden and its device plugin use. No cluster is at hand here:
//! the schema and the plugin's own tests (against a fake kubelet) stand in.

mod common;
use common::*;

use std::process::Command;

fn validate(files: &[&std::path::Path]) -> std::process::Output {
    Command::new(repo().join("scripts/kubernetes-validate.sh")).arg("1.31.0").args(files).output().unwrap()
}

#[test]
fn the_manifests_pass_the_kubernetes_1_31_schema_strictly_and_a_broken_one_does_not() {
    let dir = repo().join("kubernetes");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    assert!(files.len() >= 2, "{files:?}");
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let o = validate(&refs);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).matches("passed for resource").count() + stderr(&o).matches("passed for resource").count(), files.len(), "{}{}", stdout(&o), stderr(&o));
    // The check can fail: a field the DaemonSet's schema lacks, and a wrong type.
    let text = std::fs::read_to_string(dir.join("gpuwarden-device-plugin.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (what, broken) in [("an unknown field", text.replace("hostPID: true", "hostPid: true")), ("a wrong type", text.replace("hostPID: true", "hostPID: [yes]"))] {
        assert_ne!(broken, text);
        let f = tmp.path().join("broken.yaml");
        std::fs::write(&f, broken).unwrap();
        let o = validate(&[&f]);
        assert!(!o.status.success(), "{what} is caught: {}{}", stdout(&o), stderr(&o));
    }
}

#[test]
fn the_daemonset_mounts_what_the_plugin_reads_where_gpuwarden_keeps_it() {
    let text = std::fs::read_to_string(repo().join("kubernetes/gpuwarden-device-plugin.yaml")).unwrap();
    let config = gpuwarden::config::Config::parse("", std::path::Path::new("default")).unwrap();
    let snapshot = std::path::Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT).parent().unwrap().display().to_string();
    for path in [gpuwarden_device_plugin::DEFAULT_DIR.to_string(), config.state_dir.display().to_string(), snapshot, "/etc/gpuwarden".to_string(), "/usr/bin/gpuwarden-device-plugin".to_string()] {
        assert!(text.contains(&format!("path: {path}\n")), "a hostPath volume for {path}");
        assert!(text.contains(&format!("mountPath: {path}\n")), "mounted at the same path, {path}");
    }
    assert!(text.contains("hostPID: true"), "the ledger's pids are the host's");
    let pod = std::fs::read_to_string(repo().join("kubernetes/comfyui-worker.yaml")).unwrap();
    assert!(pod.contains(&format!("{}: 1", gpuwarden_device_plugin::slots::resource_name("comfyui"))));
}
