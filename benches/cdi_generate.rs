//! The install-time commands, each against `/bin/true` in the same run:
//! `gpuwarden cdi generate` on NVIDIA's real 535.261.03 packages with an
//! 8-GPU inventory, and `gpuwarden doctor` on a ready host (a scratch root
//! with gpuwarden's spec and hooks.d file, and NVIDIA's real MPS daemon
//! answering).  `cargo bench --bench cdi_generate`

#[path = "support/mod.rs"]
mod support;
use support::*;

fn main() {
    if !is_root() {
        println!("SKIPPED cdi_generate: the driver root's device nodes need mknod, which needs root");
        return;
    }
    let (root, _) = driver_fixture();
    let dir = tempfile::tempdir().unwrap();
    // Eight GPUs: inventory and device nodes.
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    let node = |name: &str, major: u64, minor: u64| {
        nix::sys::stat::mknod(&dev.join(name), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(major, minor)).unwrap();
    };
    node("nvidiactl", 195, 255);
    node("nvidia-uvm", 511, 0);
    node("nvidia-uvm-tools", 511, 1);
    let mut gpus = Vec::new();
    for i in 0..8u32 {
        node(&format!("nvidia{i}"), 195, i.into());
        gpus.push(serde_json::json!({
            "index": i, "uuid": format!("GPU-b1d7e4a0-4070-4c00-9e12-00000000000{i}"), "name": "NVIDIA GeForce RTX 4070",
            "memory_total_bytes": 12884901888u64, "minor": i, "pci_bus_id": format!("00000000:0{}:00.0", i + 1), "compute_capability": "8.9"
        }));
    }
    let inv = dir.path().join("eight.json");
    std::fs::write(&inv, serde_json::json!({"driver_version": "535.261.03", "gpus": gpus}).to_string()).unwrap();
    let args = ["cdi", "generate", "--inventory", inv.to_str().unwrap(), "--driver-root", root.to_str().unwrap(), "--dev-root", dir.path().to_str().unwrap(), "--output", "-"];
    compare("gpuwarden cdi generate (8 GPUs, real 535 packages)", 300, 20, || run(bin(), &args, b""), || run("/bin/true", &[], b""), "/bin/true");
    doctor(&root, dir.path());
}

/// `gpuwarden doctor` on a ready host: every check runs, the daemon is asked
/// for its defaults. It exits 0 there (warnings only: a stand-in inventory, no watchdog).
fn doctor(driver: &std::path::Path, dev_root: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mps");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[mps]\npipe_directory = \"{m}/pipe\"\nlog_directory = \"{m}/log\"\nshm_directory = \"{m}/shm\"\n", dir.path().join("state").display(), m = m.display())).unwrap();
    let c = config.to_str().unwrap();
    let root = dir.path().join("root");
    let spec = root.join("etc/cdi/gpuwarden.yaml");
    run(bin(), &["--config", c, "cdi", "generate", "--driver-root", driver.to_str().unwrap(), "--dev-root", dev_root.to_str().unwrap(), "--output", spec.to_str().unwrap(), "--cdi-dir", root.join("etc/cdi").to_str().unwrap()], b"");
    run(bin(), &["--config", c, "podman", "install-hook", "--hooks-dir", root.join("usr/share/containers/oci/hooks.d").to_str().unwrap(), "--hook-path", "/usr/bin/gpuwarden-hook", "--launcher-path", "/usr/bin/gpuwarden-launch"], b"");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/gpuwarden-hook"), "").unwrap();
    run(bin(), &["--config", c, "mps", "start"], b"");
    let args = ["--config", c, "doctor", "--root", root.to_str().unwrap(), "--dev-root", dev_root.to_str().unwrap()];
    compare("gpuwarden doctor (a ready host, the real MPS daemon asked)", 100, 5, || run(bin(), &args, b""), || run("/bin/true", &[], b""), "/bin/true");
    run(bin(), &["--config", c, "mps", "stop"], b"");
}
