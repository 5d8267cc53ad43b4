//! The README's main job, `scripts/demo.sh`, runs its whole story on this
//! host and leaves it as it found it: no container, demo user, spec, device
//! node, staging folder or daemon of its own is left.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let names = stdout(&Command::new("podman").args(["ps", "-a", "--format", "{{.Names}}"]).output().unwrap());
    left.extend(names.lines().filter(|n| n.starts_with("gw-demo-")).map(|n| format!("container {n}")));
    if Command::new("id").arg("gwdemo").output().unwrap().status.success() {
        left.push("user gwdemo".into());
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        if std::fs::read_to_string(file).unwrap_or_default().lines().any(|l| l.starts_with("gwdemo:")) {
            left.push(format!("gwdemo in {file}"));
        }
    }
    if Path::new("/var/run/cdi/gpuwarden-demo.yaml").exists() {
        left.push("the demo's spec".into());
    }
    let staged = std::fs::read_dir("/var/tmp").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("gpuwarden-demo.")).count();
    if staged > 0 {
        left.push(format!("{staged} staging folder(s) in /var/tmp"));
    }
    // Rootless Podman's runtime folders of a user that no longer exists (the demo user's).
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let uid = name.strip_prefix("containers-user-").or_else(|| name.strip_prefix("podman-run-")).and_then(|u| u.parse::<u32>().ok());
        if uid.is_some_and(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)).ok().flatten().is_none()) {
            left.push(format!("/tmp/{name}"));
        }
    }
    let procs = stdout(&Command::new("pgrep").args(["-fa", "[g]puwarden-demo|[d]ota2 600|[c]uda-job 600"]).output().unwrap());
    left.extend(procs.lines().map(|p| format!("process {p}")));
    left
}

#[test]
fn the_demo_tells_the_whole_story_and_leaves_the_host_clean() {
    if !is_root() {
        return skip("the_demo_tells_the_whole_story_and_leaves_the_host_clean", "the demo runs as root");
    }
    // It makes the GPU's /dev nodes and a spec in /var/run/cdi, as the rootless tests do.
    let _lock = process_lock("podman-cdi");
    let nodes_before: Vec<bool> = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/dri"].iter().map(|p| Path::new(p).exists()).collect();
    let o = Command::new(repo().join("scripts/demo.sh")).output().unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "scripts/demo.sh:\n{out}");
    for told in [
        "gw-demo-comfy1 (comfyui): gpuwarden: refused",
        "gw-demo-render2 (blender): admitted from the queue",
        "gw-demo-worker (comfyui): admitted from the queue",
        "yields to dota2 (Steam app 570, pid",
        "render: the game is gone: podman resumed it",
        "runs `",
        "outside gpuwarden's admission",
        "gwdemo's worker (comfyui): admitted through the broker",
    ] {
        assert!(out.contains(told), "the demo says {told:?}:\n{out}");
    }
    assert!(out.lines().any(|l| l.contains(" gwdemo ") && l.contains("comfyui")), "status shows the user's worker:\n{out}");
    assert_eq!(leftovers(), Vec::<String>::new());
    let nodes_after: Vec<bool> = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/dri"].iter().map(|p| Path::new(p).exists()).collect();
    assert_eq!(nodes_after, nodes_before, "the device nodes it made are gone");
}
