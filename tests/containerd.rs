//! The profiles under containerd's CRI, with a real containerd 1.7 (Debian
//! 13's, run on this Debian 12 with bookworm's runc): CDI on, the gpuwarden
//! runtime as runc's binary for the default handler, as the README sets a
//! node up. The tests make the kubelet's calls (RunPodSandbox,
//! CreateContainer with CDIDevices or the `cdi.k8s.io/` annotation,
//! StartContainer, StopContainer, RemoveContainer): the kubelet is the one
//! stand-in, since none can be installed here. The GPU is the other: the
//! driver's real userspace, fake device nodes, NVIDIA's real MPS daemon.
//!
//! Each test removes every pod and container it made, and stops containerd
//! and its shims, also when it fails (`Containerd`'s and `Gpu`'s Drop).

mod common;
#[path = "common/containerd.rs"]
mod containerd;

use common::docker::Gpu;
use common::*;
use containerd::*;

use std::time::{Duration, Instant};

fn needs_root(test: &str) -> bool {
    if !is_root() {
        skip(test, "containerd, CDI folders and device nodes need root");
        return false;
    }
    true
}

/// The container's log as the kubelet reads it (CRI format: time, stream, tag, text).
fn log_of(logs: &std::path::Path, name: &str) -> String {
    let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
    text.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

const PROFILE: &str = "nvidia.com/gpu=comfyui";

/// What the workload prints of itself, then it waits to be stopped.
const SCRIPT: &str = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; env | grep ^CUDA_MPS_ | sort; \
    md5sum /usr/lib/x86_64-linux-gnu/libcuda.so.1; if touch /probe 2>/dev/null; then echo root-writable; else echo root-readonly; fi; \
    echo workload-ran; exec sleep 600";

#[test]
fn a_pods_comfyui_container_gets_its_profile_is_named_by_its_pod_and_a_fifth_is_refused_with_the_numbers() {
    let test = "a_pods_comfyui_container_gets_its_profile_is_named_by_its_pod_and_a_fifth_is_refused_with_the_numbers";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let c = Containerd::start(&gpu, &dist("gpuwarden-runtime"));
    eprintln!("CRI: {}", c.cri.version());
    let logs = tempfile::tempdir().unwrap();

    // Four workers fill the GPU (4 x 25% of the SMs, 4 x 3 GiB); each is its own pod.
    let mut ids = Vec::new();
    for i in 0..4 {
        let pod = c.cri.run_pod("lab", &format!("comfy-{i}"), logs.path()).unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()));
        let id = c.cri.create(&pod, "worker", &["sh", "-c", SCRIPT], &[PROFILE], &[]).unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()));
        c.cri.start(&id).unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", c.log()));
        ids.push((id, logs.path().join(format!("comfy-{i}"))));
    }
    let held = gpu.reservations();
    let mut names: Vec<&str> = held.iter().map(|r| r["name"].as_str().unwrap_or_default()).collect();
    names.sort();
    assert_eq!(names, ["lab/comfy-0/worker", "lab/comfy-1/worker", "lab/comfy-2/worker", "lab/comfy-3/worker"], "{held:?}");
    assert!(held.iter().all(|r| r["profile"] == "comfyui"), "{held:?}");

    // What runc got: CDI's edits by containerd, then the profile by the runtime.
    let (id, _) = &ids[0];
    let cfg = c.bundle_config(id);
    assert_eq!(cfg["root"]["readonly"], true);
    assert_eq!(cfg["process"]["noNewPrivileges"], true);
    assert_eq!(cfg["process"]["args"][0], "/usr/libexec/gpuwarden/gpuwarden-launch", "{}", cfg["process"]["args"]);
    // What the container is, as it says itself in the log the kubelet reads.
    let host = driver_fixture().root.join(format!("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.{VERSION}"));
    let want = stdout(&std::process::Command::new("md5sum").arg(&host).output().unwrap()).split_whitespace().next().unwrap().to_string();
    let out = {
        let log = logs.path().join("comfy-0");
        wait_for("the workload's lines", Duration::from_secs(10), || log_of(&log, "worker").contains("workload-ran"));
        log_of(&log, "worker")
    };
    for want in [
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G",
        &format!("{want}  /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "root-readonly",
        "gpuwarden-launch: Landlock ABI",
    ] {
        assert!(out.contains(want), "{want:?} in the container's log:\n{out}");
    }

    // The fifth does not fit: StartContainer fails with gpuwarden's line, as the
    // kubelet's event shows it, the container is left Created, and its workload never ran.
    let pod = c.cri.run_pod("lab", "comfy-4", logs.path()).unwrap();
    let fifth = c.cri.create(&pod, "worker", &["sh", "-c", SCRIPT], &[PROFILE], &[]).unwrap();
    let e = c.cri.start(&fifth).expect_err("a fifth worker does not fit");
    eprintln!("StartContainer's error: {}", e.message());
    let line = &e.message()[e.message().find("gpuwarden: ").unwrap_or_else(|| panic!("gpuwarden's line in the CRI error: {}", e.message()))..];
    assert!(line.contains("refused") && line.contains("lab/comfy-4/worker") && line.contains("GiB"), "{line}");
    let s = c.cri.status(&fifth).unwrap();
    assert_ne!(s.state, k8s_cri::v1::ContainerState::ContainerRunning as i32, "{s:?}");
    assert!(!log_of(&logs.path().join("comfy-4"), "worker").contains("workload-ran"), "the refused workload never ran");
    assert_eq!(gpu.reservations().len(), 4, "a refusal holds nothing");
    c.remove_all();
    assert!(gpu.reservations().is_empty(), "removing the pods returned every share");
}

#[test]
fn the_share_returns_when_the_container_exits_before_removal_and_the_annotation_form_is_admitted_too() {
    let test = "the_share_returns_when_the_container_exits_before_removal_and_the_annotation_form_is_admitted_too";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let c = Containerd::start(&gpu, &dist("gpuwarden-runtime"));
    let logs = tempfile::tempdir().unwrap();
    let pod = c.cri.run_pod("lab", "render", logs.path()).unwrap();
    // The annotation form (what a device plugin before KEP-4009 sets), no CDIDevices.
    let id = c.cri.create(&pod, "once", &["sh", "-c", "echo workload-ran; sleep 1"], &[], &[("cdi.k8s.io/gpuwarden", PROFILE)]).unwrap();
    c.cri.start(&id).unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", c.log()));
    let held = gpu.reservations();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["name"], "lab/render/once");
    // It exits by itself: the share returns without RemoveContainer (poststop at the task's deletion on exit).
    let s = c.cri.wait_exit(&id, Duration::from_secs(20));
    assert_eq!(s.exit_code, 0, "{s:?}");
    let after = wait_for("the share's return after the exit", Duration::from_secs(10), || gpu.reservations().is_empty());
    eprintln!("the share returned {after:?} after ContainerStatus first said Exited, before RemoveContainer");

    // StopContainer: the same, and nothing is left after the removal.
    let id = c.cri.create(&pod, "stopped", &["sh", "-c", "exec sleep 600"], &[PROFILE], &[]).unwrap();
    c.cri.start(&id).unwrap();
    assert_eq!(gpu.reservations().len(), 1);
    let stop = Instant::now();
    c.cri.stop(&id, 2).unwrap();
    let stopped = stop.elapsed();
    let after = wait_for("the share's return after StopContainer", Duration::from_secs(10), || gpu.reservations().is_empty());
    eprintln!("StopContainer took {stopped:?}; the share returned {after:?} after it, before RemoveContainer");
    c.cri.remove(&id).unwrap();
}

#[test]
fn a_sigkilled_shim_leaves_nothing_held_after_the_next_admission() {
    let test = "a_sigkilled_shim_leaves_nothing_held_after_the_next_admission";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let c = Containerd::start(&gpu, &dist("gpuwarden-runtime"));
    let logs = tempfile::tempdir().unwrap();
    let pod = c.cri.run_pod("lab", "victim", logs.path()).unwrap();
    let id = c.cri.create(&pod, "worker", &["sh", "-c", "exec sleep 600"], &[PROFILE], &[]).unwrap();
    c.cri.start(&id).unwrap();
    assert_eq!(gpu.reservations().len(), 1);
    let init = c.pid(&id);
    let shim = c.shim_pid(&id).expect("the container's shim");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert!(comm.starts_with("containerd-shim"), "the parent of the container's first process is its shim: {comm}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();
    // containerd sees its shim gone and cleans up after it; the container's processes go with it.
    let gone = wait_for("the container's first process ends after its shim", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{init}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
    });
    eprintln!("the container's first process was gone {gone:?} after its shim's SIGKILL; held then: {}", gpu.reservations().len());
    // The next admission finds the holder gone and frees its share.
    let pod = c.cri.run_pod("lab", "next", logs.path()).unwrap();
    let next = c.cri.create(&pod, "worker", &["sh", "-c", "exec sleep 600"], &[PROFILE], &[]).unwrap();
    c.cri.start(&next).unwrap_or_else(|e| panic!("StartContainer after the shim's death: {e}\n{}", c.log()));
    let held = gpu.reservations();
    assert_eq!(held.len(), 1, "only the new container holds a share: {held:?}");
    assert_eq!(held[0]["name"], "lab/next/worker");
    drop(c);
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains("/run/gwtest-containerd")).map(str::to_owned).collect();
    assert!(left.is_empty(), "the killed shim's pod left no mount behind: {left:?}");
}

/// A node whose containerd runs runc itself (no gpuwarden runtime in front:
/// the `plain` handler) gets no profile rewrite; admission, which CDI's hooks
/// still run, refuses the pod for it, saying what is missing. Fail-closed.
#[test]
fn without_gpuwarden_runtime_in_front_of_runc_a_profile_pod_is_refused_not_run_unconfined() {
    let test = "without_gpuwarden_runtime_in_front_of_runc_a_profile_pod_is_refused_not_run_unconfined";
    if !needs_root(test) {
        return;
    }
    let gpu = Gpu::new();
    let c = Containerd::start(&gpu, &dist("gpuwarden-runtime"));
    let logs = tempfile::tempdir().unwrap();
    let pod = c.cri.run_pod_on("plain", "lab", "bare", logs.path()).unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
    let id = c.cri.create(&pod, "worker", &["sh", "-c", "echo workload-ran"], &[PROFILE], &[]).unwrap();
    let e = c.cri.start(&id).expect_err("no profile rewrite, no admission");
    eprintln!("StartContainer's error: {}", e.message());
    assert!(e.message().contains("gpuwarden: refused") && e.message().contains("lab/bare/worker"), "{}", e.message());
    assert!(e.message().contains("breaks rule"), "it says which rule: {}", e.message());
    assert!(!log_of(&logs.path().join("bare"), "worker").contains("workload-ran"));
    assert!(gpu.reservations().is_empty());
}

#[path = "../deviceplugin/tests/support/kubelet.rs"]
mod kubelet;

/// The device plugin's answer, fed to containerd as the kubelet feeds it:
/// four ComfyUI pods allocated and admitted; then the plugin shows no room
/// for a render, and a render forced past it (its CDI device named by hand,
/// as on counts gone stale) is refused by the node with the numbers.
#[test]
fn the_device_plugins_allocation_runs_the_profile_and_a_render_forced_past_a_full_budget_is_refused() {
    let test = "the_device_plugins_allocation_runs_the_profile_and_a_render_forced_past_a_full_budget_is_refused";
    if !needs_root(test) {
        return;
    }
    use gpuwarden_device_plugin::api::device_plugin_client::DevicePluginClient;
    use gpuwarden_device_plugin::api::*;
    let gpu = Gpu::new();
    let c = Containerd::start(&gpu, &dist("gpuwarden-runtime"));
    let logs = tempfile::tempdir().unwrap();
    let plugins = gpu.dir.path().join("device-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut kubelet = rt.block_on(async { kubelet::FakeKubelet::start(&plugins) });
    let _plugin = KillOnDrop(
        std::process::Command::new(workspace_bin("gpuwarden-device-plugin"))
            .args(["--config", &gpu.config, "--kubelet-dir", plugins.to_str().unwrap()])
            .env_remove("GPUWARDEN_CONFIG")
            .spawn()
            .unwrap(),
    );
    let regs = rt.block_on(kubelet.registrations(2, Duration::from_secs(20)));
    let connect = |endpoint: &str| {
        let path = plugins.join(endpoint);
        rt.block_on(async move { DevicePluginClient::new(gpuwarden_device_plugin::unix_channel(path).await.unwrap()) })
    };
    let (mut blender, mut comfy) = (connect(&regs[0].endpoint), connect(&regs[1].endpoint));
    let mut comfy_watch = rt.block_on(comfy.list_and_watch(Empty {})).unwrap().into_inner();
    let first = rt.block_on(comfy_watch.message()).unwrap().unwrap();
    let healthy = |r: &ListAndWatchResponse| r.devices.iter().filter(|d| d.health == "Healthy").map(|d| d.id.clone()).collect::<Vec<_>>();
    let slots = healthy(&first);
    assert_eq!(slots.len(), 4, "{first:?}");

    for (i, slot) in slots.iter().enumerate() {
        let r = rt.block_on(comfy.allocate(AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_i_ds: vec![slot.clone()] }] })).unwrap().into_inner();
        let cdi: Vec<&str> = r.container_responses[0].cdi_devices.iter().map(|d| d.name.as_str()).collect();
        let pod = c.cri.run_pod("lab", &format!("comfy-{i}"), logs.path()).unwrap();
        let id = c.cri.create(&pod, "worker", &["sh", "-c", "exec sleep 600"], &cdi, &[]).unwrap();
        c.cri.start(&id).unwrap_or_else(|e| panic!("the allocated worker {slot} starts: {}", e.message()));
    }
    assert_eq!(gpu.reservations().len(), 4);
    // The render's resource has no healthy slot left (within a second of the last admission).
    let mut blender_watch = rt.block_on(blender.list_and_watch(Empty {})).unwrap().into_inner();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = rt.block_on(blender_watch.message()).unwrap().unwrap();
        if healthy(&now).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "blender still shows room: {now:?}");
    }
    // Forced past it: the node refuses, and the kubelet's event would carry the line.
    let pod = c.cri.run_pod("lab", "render", logs.path()).unwrap();
    let id = c.cri.create(&pod, "blender", &["sh", "-c", "echo workload-ran"], &["nvidia.com/gpu=blender"], &[]).unwrap();
    let e = c.cri.start(&id).expect_err("no room for a render");
    assert!(e.message().contains("gpuwarden: refused") && e.message().contains("lab/render/blender (blender)") && e.message().contains("needs 5.0 GiB pinned memory"), "{}", e.message());
    assert_eq!(gpu.reservations().len(), 4);
    drop(kubelet);
}
