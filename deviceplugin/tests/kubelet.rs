//! The plugin against a fake kubelet: a Registration server on a unix socket
//! in the test's folder, and the kubelet's calls on the plugin's sockets, as
//! the kubelet makes them (device plugin API v1beta1). The kubelet is the
//! stand-in: none can be installed here. The ledger is gpuwarden's real one,
//! written as admission writes it, held by a real process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpuwarden_device_plugin::api::device_plugin_client::DevicePluginClient;
use gpuwarden_device_plugin::api::*;

#[path = "support/kubelet.rs"]
mod kubelet;
use kubelet::FakeKubelet;

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::write(
            &config,
            format!("inventory = \"builtin:rtx4070\"\nstate_dir = \"{}\"\n[budget.reserves]\n", dir.path().join("state").display()),
        )
        .unwrap();
        World { dir, config }
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn plugin(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gpuwarden-device-plugin"));
        c.arg("--config").arg(&self.config).arg("--kubelet-dir").arg(self.plugins()).args(extra).env_remove("GPUWARDEN_CONFIG");
        c
    }

    fn start(&self) -> Plugin {
        Plugin(self.plugin(&[]).stderr(Stdio::inherit()).spawn().unwrap())
    }

    /// Admits a worker of `profile` as admission records it, held by a live
    /// process (returned: the share goes with it).
    fn hold(&self, id: &str, name: Option<&str>, profile: &str, threads: u32, gib: u64) -> Child {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id() as i32;
        let start = gpuwarden::base::proc::Processes::start_time(&gpuwarden::base::proc::ProcFs, pid).unwrap();
        let inv = gpuwarden::host::inventory::builtin("rtx4070").unwrap();
        let store = gpuwarden::ledger::LedgerStore::new(&self.dir.path().join("state"));
        let mut l = store.lock().unwrap();
        l.ledger.insert(gpuwarden::model::Reservation {
            id: id.into(),
            name: name.map(Into::into),
            profile: profile.into(),
            gpus: vec![inv.gpus[0].uuid.clone()],
            threads,
            pinned_bytes: gpuwarden::base::size::ByteSize::gib(gib),
            pid,
            pid_start: start,
            admitted_at: gpuwarden::base::clock::unix_seconds(),
            holder: None,
        });
        l.save().unwrap();
        child
    }
}

async fn client(dir: &Path, endpoint: &str) -> DevicePluginClient<tonic::transport::Channel> {
    DevicePluginClient::new(gpuwarden_device_plugin::unix_channel(dir.join(endpoint)).await.unwrap())
}

fn healthy(r: &ListAndWatchResponse) -> (usize, usize) {
    (r.devices.iter().filter(|d| d.health == "Healthy").count(), r.devices.len())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn registers_each_profile_lists_slots_from_the_budget_and_follows_the_ledger_within_a_second() {
    rt().block_on(async {
        let w = World::new();
        let mut kubelet = FakeKubelet::start(&w.plugins());
        let _plugin = w.start();
        let regs = kubelet.registrations(2, Duration::from_secs(20)).await;
        assert_eq!(regs.iter().map(|r| r.resource_name.as_str()).collect::<Vec<_>>(), ["gpuwarden.io/blender", "gpuwarden.io/comfyui"]);
        assert_eq!(regs[1].endpoint, "gpuwarden-comfyui.sock");
        assert_eq!(regs[1].version, "v1beta1");
        assert!(regs[1].options.as_ref().unwrap().get_preferred_allocation_available);

        let mut comfy = client(&w.plugins(), &regs[1].endpoint).await;
        let mut blender = client(&w.plugins(), &regs[0].endpoint).await;
        assert!(comfy.get_device_plugin_options(Empty {}).await.unwrap().into_inner().get_preferred_allocation_available);
        let mut comfy_watch = comfy.list_and_watch(Empty {}).await.unwrap().into_inner();
        let mut blender_watch = blender.list_and_watch(Empty {}).await.unwrap().into_inner();
        let first = comfy_watch.message().await.unwrap().unwrap();
        assert_eq!(healthy(&first), (4, 4), "an empty RTX 4070: four 25% / 3 GiB workers: {first:?}");
        assert_eq!(first.devices[0].id, "gpu0-comfyui-0");
        assert_eq!(healthy(&blender_watch.message().await.unwrap().unwrap()), (2, 2));

        // A Podman worker takes a comfyui slot and the second render's room.
        let changed = Instant::now();
        let mut worker = w.hold("c0ffee01", Some("comfy-1"), "comfyui", 25, 3);
        let next = comfy_watch.message().await.unwrap().unwrap();
        let latency = changed.elapsed();
        assert_eq!(healthy(&next), (3, 4), "{next:?}");
        assert_eq!(healthy(&blender_watch.message().await.unwrap().unwrap()), (1, 2));
        eprintln!("ListAndWatch sent the change {latency:?} after the ledger's");
        assert!(latency < Duration::from_secs(1), "within a second of the ledger's change: {latency:?}");

        // The worker ends: its entry is stale, and the slot is back.
        let _ = worker.kill();
        let _ = worker.wait();
        assert_eq!(healthy(&comfy_watch.message().await.unwrap().unwrap()), (4, 4));

        // The budget full (four workers): no healthy slot; a blender render neither.
        let mut held: Vec<Child> = (0..4).map(|i| w.hold(&format!("c0ffee1{i}"), Some(&format!("lab/comfy-{i}/worker")), "comfyui", 25, 3)).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let blender_now = blender_watch.message().await.unwrap().unwrap();
            if healthy(&blender_now).0 == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "blender has no room beside four workers");
        }
        for c in &mut held {
            let _ = c.kill();
            let _ = c.wait();
        }
    });
}

#[test]
fn allocate_hands_over_the_profiles_cdi_device_and_preferred_slots_stay_on_one_gpu() {
    rt().block_on(async {
        let w = World::new();
        let mut kubelet = FakeKubelet::start(&w.plugins());
        let _plugin = w.start();
        let regs = kubelet.registrations(2, Duration::from_secs(20)).await;
        let mut comfy = client(&w.plugins(), &regs[1].endpoint).await;
        let r = comfy.allocate(AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_i_ds: vec!["gpu0-comfyui-2".into()] }] }).await.unwrap().into_inner();
        assert_eq!(r.container_responses.len(), 1);
        let c = &r.container_responses[0];
        assert_eq!(c.cdi_devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["nvidia.com/gpu=comfyui"]);
        assert!(c.envs.is_empty() && c.mounts.is_empty() && c.devices.is_empty(), "the CDI spec carries everything: {c:?}");
        let e = comfy
            .allocate(AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_i_ds: vec!["gpu0-comfyui-0".into(), "gpu0-comfyui-1".into()] }] })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("gpuwarden.io/comfyui: 1"), "{}", e.message());
        let e = comfy.allocate(AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_i_ds: vec!["gpu0-blender-0".into()] }] }).await.unwrap_err();
        assert!(e.message().contains("not a slot of gpuwarden.io/comfyui"), "{}", e.message());
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = comfy
            .get_preferred_allocation(PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids(&["gpu0-comfyui-0", "gpu1-comfyui-0", "gpu1-comfyui-1", "gpu0-comfyui-3"]),
                    must_include_device_i_ds: vec![],
                    allocation_size: 2,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.container_responses[0].device_i_ds, ids(&["gpu0-comfyui-0", "gpu0-comfyui-3"]), "two on one GPU");
    });
}

#[test]
fn a_restarted_kubelet_gets_every_profile_registered_again_and_sigterm_leaves_no_socket() {
    rt().block_on(async {
        let w = World::new();
        let kubelet = FakeKubelet::start(&w.plugins());
        let mut plugin = w.start();
        let mut kubelet = kubelet;
        kubelet.registrations(2, Duration::from_secs(20)).await;
        // A kubelet restart: every socket in the folder removed, kubelet.sock anew.
        drop(kubelet);
        for e in std::fs::read_dir(w.plugins()).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let restarted = Instant::now();
        let mut kubelet = FakeKubelet::start(&w.plugins());
        let regs = kubelet.registrations(2, Duration::from_secs(10)).await;
        eprintln!("registered again {:?} after the kubelet's restart", restarted.elapsed());
        assert!(w.plugins().join(&regs[1].endpoint).exists());
        let mut comfy = client(&w.plugins(), &regs[1].endpoint).await;
        assert_eq!(healthy(&comfy.list_and_watch(Empty {}).await.unwrap().into_inner().message().await.unwrap().unwrap()), (4, 4));
        nix_term(plugin.0.id());
        let st = plugin.0.wait().unwrap();
        assert!(st.success(), "{st:?}");
        let left: Vec<_> = std::fs::read_dir(w.plugins()).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "kubelet.sock").collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

fn nix_term(pid: u32) {
    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(st.success());
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let w = World::new();
    let o = w.plugin(&["--profile", "nosuch"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gpuwarden-device-plugin:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("profile \"nosuch\" is not in config.toml: known are blender, comfyui"), "{err}");
    let o = w.plugin(&["--inventory", "/nonexistent/inventory.json"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read inventory /nonexistent/inventory.json"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = w.plugin(&["--help"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("gpuwarden.io/comfyui"));
}
