//! The kit for the proof on a real GPU (issue 27), on this host, which has
//! none: `scripts/gpu-proof-bundle.sh` builds it; the CUDA probe, loading
//! NVIDIA's real `libcuda.so` from the driver fixture, reports the driver's
//! own refusal cleanly; `gpu-proof.sh` run here SKIPs every GPU step with its
//! reason and reports no PASS for anything that did not run. What it finds on
//! a GPU host can only be seen there.

mod common;
use common::*;

use std::process::Command;

#[test]
fn the_kit_builds_its_probe_fails_cleanly_without_a_gpu_and_every_gpu_step_skips() {
    if !is_root() {
        skip("the_kit_builds_its_probe_fails_cleanly_without_a_gpu_and_every_gpu_step_skips", "gpu-proof.sh runs as root");
        return;
    }
    if std::path::Path::new("/dev/nvidia0").exists() {
        skip("the_kit_builds_its_probe_fails_cleanly_without_a_gpu_and_every_gpu_step_skips", "this host has a GPU: run target/gpu-proof/gpu-proof.sh itself");
        return;
    }
    // NVIDIA's libcuda, run as root, makes /dev/nvidiactl where it is missing: what it makes
    // here is taken away again, however the test ends.
    let _nodes = NodesAsBefore::now();
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("gpu-proof");
    let o = Command::new(repo().join("scripts/gpu-proof-bundle.sh")).arg(&kit).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for b in ["gpuwarden", "gpuwarden-hook", "gpuwarden-launch", "gpuwarden-cuda-probe", "gpu-proof.sh"] {
        let m = std::fs::metadata(kit.join(b)).unwrap_or_else(|e| panic!("{b} in the kit: {e}"));
        assert!(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0, "{b} is executable");
    }
    let tarball = std::fs::metadata(dir.path().join("gpu-proof.tar.gz")).unwrap().len();
    assert!(tarball < 20 << 20, "small enough to carry: {tarball} bytes");

    // The probe against NVIDIA's real libcuda, with no GPU: the driver's own error, by name.
    let probe = kit.join("gpuwarden-cuda-probe");
    let libcuda = driver_fixture().root.join("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03");
    let o = Command::new(&probe).args(["--library", libcuda.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["call"], "cuInit", "{v}");
    let name = v["errors"][0]["name"].as_str().unwrap();
    assert!(name.starts_with("CUDA_ERROR_") && v["errors"][0]["code"].as_i64().is_some_and(|c| c > 0), "the driver's name for its error: {v}");
    assert_eq!(stderr(&o).trim(), format!("gpuwarden-cuda-probe: cuInit failed: {name}"));
    // No library: its own exit code and line; bad arguments: clap's.
    let o = Command::new(&probe).args(["--library", "/nonexistent/libcuda.so.1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).starts_with("gpuwarden-cuda-probe: dlopen failed: cannot load /nonexistent/libcuda.so.1"), "{}", stderr(&o));
    let o = Command::new(&probe).arg("--help").output().unwrap();
    assert!(o.status.success() && stdout(&o).contains("Usage: gpuwarden-cuda-probe") && stdout(&o).contains("--hold-seconds"), "{}", stdout(&o));
    let o = Command::new(&probe).args(["--step-mib", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty());

    // The script, as on a host with NVIDIA's userspace and no GPU.
    let out_dir = dir.path().join("out");
    let o = Command::new(kit.join("gpu-proof.sh"))
        .arg(&out_dir)
        .env("GPU_PROOF_DRIVER_ROOT", &driver_fixture().root)
        .env("GPU_PROOF_LIBCUDA", &libcuda)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    let steps: Vec<&str> = text.lines().filter(|l| ["PASS", "FAIL", "SKIPPED"].iter().any(|v| l.starts_with(v))).collect();
    assert_eq!(steps.len(), 8, "{text}");
    for l in &steps {
        assert!(l.starts_with("SKIPPED") && l.contains("no GPU here: no /dev/nvidia0"), "each GPU step skips with its reason: {l}");
    }
    assert!(text.lines().last().unwrap().starts_with("gpu-proof: 0 PASS, 0 FAIL, 8 SKIPPED"), "{text}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("figures.json")).unwrap()).unwrap();
    assert_eq!((figures["pass"].as_u64(), figures["fail"].as_u64(), figures["skipped"].as_u64()), (Some(0), Some(0), Some(8)), "{figures}");
    let listed = figures["steps"].as_array().unwrap();
    assert_eq!(listed.len(), 8);
    assert!(listed.iter().all(|s| s["verdict"] == "SKIPPED" && s["figures"].is_null()), "{figures}");
    // It cleaned up after itself.
    assert!(!std::path::Path::new("/etc/cdi/gpuwarden-proof.yaml").exists());

    // Device nodes with no GPU behind them (the fixture's): the GPU steps run and fail, each
    // with the tool's own line, and none passes.
    let o = Command::new(kit.join("gpu-proof.sh"))
        .arg(dir.path().join("out2"))
        .env("GPU_PROOF_DEV", driver_fixture().dev.join("dev"))
        .env("GPU_PROOF_DRIVER_ROOT", &driver_fixture().root)
        .env("GPU_PROOF_LIBCUDA", &libcuda)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert!(!text.lines().any(|l| l.starts_with("PASS")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("FAIL    inventory") && l.contains("NVML")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("FAIL    nvml-per-process") && l.contains("CUDA_ERROR_")), "{text}");
    assert!(text.lines().last().unwrap().starts_with("gpu-proof: 0 PASS, "), "{text}");
    let left = Command::new("podman").args(["ps", "-a", "--format", "{{.Names}}"]).output().unwrap();
    assert!(!stdout(&left).contains("gpuproof-"), "no container left: {}", stdout(&left));
}
