//! Kubernetes nodes, in one run (needs root):
//! - a container start through containerd 1.7's CRI (CreateContainer then
//!   StartContainer, as the kubelet calls them) with the ComfyUI profile
//!   (`nvidia.com/gpu=comfyui`: the gpuwarden runtime's rewrite, admission,
//!   the launcher) against the same start with the spec's plain
//!   `nvidia.com/gpu=all`, alternating, paired;
//! - the device plugin: how soon ListAndWatch sends a ledger change, and its
//!   CPU and memory while idle.
//!
//! The kubelet is the stand-in (none can be installed here): the bench makes
//! its calls. `cargo bench --bench cri [-- PAIRS]` (default 40).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/containerd.rs"]
mod containerd;
#[path = "../deviceplugin/tests/support/kubelet.rs"]
mod kubelet;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::docker::Gpu;
use gpuwarden_device_plugin::api::device_plugin_client::DevicePluginClient;
use gpuwarden_device_plugin::api::Empty;

fn main() {
    if !support::is_root() {
        eprintln!("=== SKIPPED cri bench: containerd needs root ===");
        return;
    }
    let pairs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(40);
    let gpu = Gpu::new();
    let c = containerd::Containerd::start(&gpu, &common::dist("gpuwarden-runtime"));
    println!("{}", c.cri.version());
    let logs = tempfile::tempdir().unwrap();
    let pod = c.cri.run_pod("bench", "starts", logs.path()).unwrap();
    let mut n = 0;
    let mut start = |device: &str| {
        n += 1;
        let t = Instant::now();
        let id = c.cri.create(&pod, &format!("c{n}"), &["sh", "-c", "exec sleep 600"], &[device], &[]).unwrap();
        c.cri.start(&id).unwrap_or_else(|e| panic!("{device}: {}", e.message()));
        let took = t.elapsed();
        c.cri.stop(&id, 0).unwrap();
        c.cri.remove(&id).unwrap();
        took
    };
    for _ in 0..3 {
        start("nvidia.com/gpu=comfyui");
        start("nvidia.com/gpu=all");
    }
    let (mut profile, mut all) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        profile.push(start("nvidia.com/gpu=comfyui"));
        all.push(start("nvidia.com/gpu=all"));
    }
    let (p, a) = (support::stats(profile.clone()), support::stats(all.clone()));
    let (d, lo, hi) = support::paired_difference(&profile, &all);
    println!("CRI CreateContainer+StartContainer, {pairs} pairs, alternating");
    println!("  {:<36} median {:>10}  p10 {:>10}  p90 {:>10}", "nvidia.com/gpu=comfyui (profile)", support::ms(p.median), support::ms(p.p10), support::ms(p.p90));
    println!("  {:<36} median {:>10}  p10 {:>10}  p90 {:>10}", "nvidia.com/gpu=all (plain)", support::ms(a.median), support::ms(a.p10), support::ms(a.p90));
    println!("  ratio of medians: {:.2}x; paired difference {d:.2} ms (95% interval {lo:.2} to {hi:.2} ms)", p.median.as_secs_f64() / a.median.as_secs_f64());
    drop(c);

    // The device plugin against the fake kubelet, on the same gpuwarden config.
    let plugins = gpu.dir.path().join("device-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut kubelet = rt.block_on(async { kubelet::FakeKubelet::start(&plugins) });
    let plugin = common::KillOnDrop(
        std::process::Command::new(common::workspace_bin("gpuwarden-device-plugin"))
            .args(["--config", &gpu.config, "--kubelet-dir", plugins.to_str().unwrap()])
            .env_remove("GPUWARDEN_CONFIG")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let regs = rt.block_on(kubelet.registrations(2, Duration::from_secs(20)));
    let path = plugins.join(&regs[1].endpoint);
    let mut comfy = rt.block_on(async move { DevicePluginClient::new(gpuwarden_device_plugin::unix_channel(path).await.unwrap()) });
    let mut watch = rt.block_on(comfy.list_and_watch(Empty {})).unwrap().into_inner();
    rt.block_on(watch.message()).unwrap().unwrap();
    let store = gpuwarden::ledger::LedgerStore::new(&gpu.dir.path().join("state"));
    let inv = gpuwarden::host::inventory::builtin("rtx4070").unwrap();
    let mut latencies = Vec::new();
    for i in 0..30 {
        let mut holder = std::process::Command::new("sleep").arg("600").spawn().unwrap();
        let pid = holder.id() as i32;
        let pid_start = gpuwarden::base::proc::Processes::start_time(&gpuwarden::base::proc::ProcFs, pid).unwrap();
        let t = Instant::now();
        {
            let mut l = store.lock().unwrap();
            l.ledger.insert(gpuwarden::model::Reservation {
                id: format!("bench{i:04}"),
                name: None,
                profile: "comfyui".into(),
                gpus: vec![inv.gpus[0].uuid.clone()],
                threads: 25,
                pinned_bytes: gpuwarden::base::size::ByteSize::gib(3),
                pid,
                pid_start,
                admitted_at: 0,
                holder: None,
            });
            l.save().unwrap();
        }
        rt.block_on(watch.message()).unwrap().unwrap();
        latencies.push(t.elapsed());
        let _ = holder.kill();
        let _ = holder.wait();
        {
            let mut l = store.lock().unwrap();
            l.ledger.reservations.clear();
            l.save().unwrap();
        }
        rt.block_on(watch.message()).unwrap().unwrap();
    }
    let s = support::stats(latencies);
    println!("device plugin: ListAndWatch after a ledger change (polling every 200 ms), 30 changes");
    println!("  median {}  p10 {}  p90 {}", support::ms(s.median), support::ms(s.p10), support::ms(s.p90));
    let pid = plugin.0.id();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
        f[11] + f[12]
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let (t0, w0) = (ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let cpu = (ticks() - t0) as f64 / hz / w0.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").split_whitespace().nth(1).unwrap_or("?").to_string();
    println!("device plugin idle (2 profiles served, 1 ListAndWatch open, ledger polled every 200 ms), 30 s: CPU {cpu:.2}% of one core, RSS {rss} KiB");
    drop(kubelet);
}
