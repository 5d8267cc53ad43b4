//! Discovery + inventory + profiles -> a CDI spec. Pure: no file is touched.
//!
//! Devices: each GPU by index and by UUID, `all`, and one per profile (on
//! hosts with several GPUs also `gpuN-PROFILE` per GPU). What every device
//! needs (control nodes, libraries, data files, binaries, the MPS pipe
//! directory) goes in the spec-level edits, applied once per container.

use std::collections::BTreeSet;
use std::path::Path;

use super::{owner_marker, ContainerEdits, Device, DeviceNode, Hook, Kind, Mount, Spec, PROFILE_ENV};
use crate::host::discover::{self, Discovery, FileMount};
use crate::hookcall::{HookCall, ADMIT_STAGE, RELEASE_STAGE};
use crate::host::inventory::{Gpu, Inventory};

/// Everything a spec is made from.
pub struct SpecInput<'a> {
    pub kind: &'a Kind,
    pub inventory: &'a Inventory,
    pub discovery: &'a Discovery,
    pub profiles: &'a [String],
    /// `None` leaves admission out (a spec for devices only).
    pub hooks: Option<&'a HookCall>,
    /// The MPS folders every profile device mounts; `None` when MPS is off.
    pub mps: Option<&'a MpsMounts>,
    /// The launcher on the host, mounted read-only into profile containers.
    pub launcher: Option<&'a Path>,
}

/// What an MPS client needs of the host, whether or not it exists yet: the
/// daemon's pipe directory (at the same path, read-only: clients connect to
/// its sockets, and a CUDA client given it read-write was seen removing the
/// daemon's socket files, cutting every container off) and its shared memory
/// (at `/dev/shm`, read-write). Containers under one MPS server share that folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpsMounts {
    pub pipe: std::path::PathBuf,
    pub shm: std::path::PathBuf,
}

impl MpsMounts {
    fn mounts(&self) -> Vec<Mount> {
        [(&self.pipe, self.pipe.as_path(), false), (&self.shm, Path::new("/dev/shm"), true)]
            .into_iter()
            .map(|(host, container, writable)| mount(&FileMount { host_path: host.clone(), container_path: container.to_path_buf(), writable }))
            .collect()
    }
}

fn nodes(found: &[discover::DeviceNode]) -> Vec<DeviceNode> {
    found
        .iter()
        .map(|n| DeviceNode {
            path: n.path.display().to_string(),
            host_path: (n.host_path != n.path).then(|| n.host_path.display().to_string()),
            ..Default::default()
        })
        .collect()
}

fn mount(m: &FileMount) -> Mount {
    let access = if m.writable { "rw" } else { "ro" };
    Mount {
        host_path: m.host_path.display().to_string(),
        container_path: m.container_path.display().to_string(),
        options: [access, "nosuid", "nodev", "bind"].map(String::from).to_vec(),
        kind: None,
    }
}

fn hooks(call: &HookCall) -> Vec<Hook> {
    let hook = |stage: &str, verb: &str| Hook { hook_name: stage.into(), path: call.path.display().to_string(), args: call.args(verb), ..Default::default() };
    vec![hook(ADMIT_STAGE, "admit"), hook(RELEASE_STAGE, "release")]
}

/// Builds the spec. Its `cdiVersion` is left empty: `generate` sets the lowest
/// its content needs.
pub fn build_spec(input: &SpecInput) -> Spec {
    let d = input.discovery;
    let gpu_nodes = |g: &Gpu| nodes(d.gpu_nodes.get(&g.index).map_or(&[][..], Vec::as_slice));
    let plain = |name: String, device_nodes: Vec<DeviceNode>| Device {
        name,
        container_edits: ContainerEdits { device_nodes, ..Default::default() },
    };
    let profile_device = |name: String, profile: &str, gpu: &Gpu| Device {
        name,
        container_edits: ContainerEdits {
            env: vec![format!("{PROFILE_ENV}={profile}")],
            device_nodes: gpu_nodes(gpu),
            hooks: input.hooks.map(hooks).unwrap_or_default(),
            mounts: input
                .mps
                .map(MpsMounts::mounts)
                .unwrap_or_default()
                .into_iter()
                .chain(input.launcher.map(|l| {
                    mount(&FileMount { host_path: l.to_path_buf(), container_path: crate::hookcall::LAUNCHER_PATH.into(), writable: false })
                }))
                .collect(),
        },
    };

    let gpus = &input.inventory.gpus;
    let mut devices = Vec::new();
    for g in gpus {
        devices.push(plain(g.index.to_string(), gpu_nodes(g)));
        devices.push(plain(g.uuid.clone(), gpu_nodes(g)));
    }
    devices.push(plain("all".into(), gpus.iter().flat_map(gpu_nodes).collect()));
    let first = gpus.iter().min_by_key(|g| g.index);
    for profile in input.profiles {
        if let Some(first) = first {
            devices.push(profile_device(profile.clone(), profile, first));
        }
        if gpus.len() > 1 {
            for g in gpus {
                devices.push(profile_device(format!("gpu{}-{profile}", g.index), profile, g));
            }
        }
    }

    let mut files: Vec<FileMount> = d.library_mounts();
    files.extend(d.files.iter().cloned());
    files.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    let mut taken: BTreeSet<&Path> = BTreeSet::new();
    let mounts = files.iter().filter(|f| taken.insert(&f.container_path)).map(mount).collect();

    Spec {
        cdi_version: String::new(),
        kind: input.kind.to_string(),
        devices,
        container_edits: ContainerEdits {
            env: std::iter::once(owner_marker()).chain(discover::triton_env(&d.libraries)).collect(),
            device_nodes: nodes(&d.control_nodes),
            hooks: Vec::new(),
            mounts,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::discover::Library;
    use crate::host::inventory::builtin;
    use std::collections::BTreeMap;

    pub(crate) fn discovery(inv: &Inventory, dev: &str) -> Discovery {
        let node = |name: &str| discover::DeviceNode { path: format!("/dev/{name}").into(), host_path: format!("{dev}/{name}").into() };
        Discovery {
            control_nodes: vec![node("nvidiactl"), node("nvidia-uvm")],
            gpu_nodes: inv.gpus.iter().map(|g| (g.index, vec![node(&format!("nvidia{}", g.minor))])).collect::<BTreeMap<_, _>>(),
            libraries: vec![Library {
                host_path: "/drv/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03".into(),
                file_name: "libcuda.so.535.261.03".into(),
                soname: Some("libcuda.so.1".into()),
            }],
            files: vec![FileMount { host_path: "/drv/usr/lib/nvidia/current/nvidia-smi".into(), container_path: "/usr/bin/nvidia-smi".into(), writable: false }],
        }
    }

    fn mps_mounts() -> MpsMounts {
        MpsMounts { pipe: "/run/gpuwarden/mps/pipe".into(), shm: "/run/gpuwarden/mps/shm".into() }
    }

    fn build(inv: &Inventory, dev: &str, hooks: Option<&HookCall>) -> Spec {
        let kind = Kind::new("nvidia.com", "gpu").unwrap();
        let profiles = vec!["comfyui".to_string(), "blender".to_string()];
        build_spec(&SpecInput { kind: &kind, inventory: inv, discovery: &discovery(inv, dev), profiles: &profiles, hooks, mps: Some(&mps_mounts()), launcher: Some(Path::new("/usr/local/bin/gpuwarden-launch")) })
    }

    fn names(spec: &Spec) -> Vec<&str> {
        spec.devices.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn one_gpu_gets_index_uuid_all_and_one_device_per_profile() {
        let inv = builtin("rtx4070").unwrap();
        let spec = build(&inv, "/dev", None);
        assert_eq!(names(&spec), ["0", inv.gpus[0].uuid.as_str(), "all", "comfyui", "blender"]);
        let comfy = &spec.devices[3].container_edits;
        assert_eq!(comfy.env, ["GPUWARDEN_PROFILE=comfyui"]);
        assert_eq!(comfy.device_nodes, [DeviceNode { path: "/dev/nvidia0".into(), ..Default::default() }]);
    }

    #[test]
    fn several_gpus_add_per_gpu_profile_devices() {
        let spec = build(&crate::host::inventory::test_support::two_gpus(), "/dev", None);
        let n = names(&spec);
        for want in ["0", "1", "all", "comfyui", "gpu0-comfyui", "gpu1-comfyui", "gpu1-blender"] {
            assert!(n.contains(&want), "{want} missing from {n:?}");
        }
        let gpu1 = spec.devices.iter().find(|d| d.name == "gpu1-comfyui").unwrap();
        assert_eq!(gpu1.container_edits.device_nodes[0].path, "/dev/nvidia1");
        assert_eq!(gpu1.container_edits.env, ["GPUWARDEN_PROFILE=comfyui"]);
        let all = spec.devices.iter().find(|d| d.name == "all").unwrap();
        assert_eq!(all.container_edits.device_nodes.len(), 2);
    }

    #[test]
    fn libraries_are_mounted_read_only_under_file_name_and_soname() {
        let spec = build(&builtin("rtx4070").unwrap(), "/dev", None);
        let targets: Vec<(&str, &str)> =
            spec.container_edits.mounts.iter().map(|m| (m.container_path.as_str(), m.host_path.as_str())).collect();
        let cuda = "/drv/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03";
        assert!(targets.contains(&("/usr/lib/x86_64-linux-gnu/libcuda.so.1", cuda)), "{targets:?}");
        assert!(targets.contains(&("/usr/lib/x86_64-linux-gnu/libcuda.so.535.261.03", cuda)), "{targets:?}");
        assert!(targets.contains(&("/usr/lib/x86_64-linux-gnu/libcuda.so", cuda)), "the linker name, for cc -lcuda: {targets:?}");
        assert!(spec.container_edits.env.contains(&"TRITON_LIBCUDA_PATH=/usr/lib/x86_64-linux-gnu".to_string()), "{:?}", spec.container_edits.env);
        let lib = spec.container_edits.mounts.iter().find(|m| m.container_path.ends_with("libcuda.so.1")).unwrap();
        assert_eq!(lib.options, ["ro", "nosuid", "nodev", "bind"]);
        assert!(!spec.container_edits.mounts.iter().any(|m| m.container_path.contains("mps")), "MPS is for profile devices only");
        let comfy = spec.devices.iter().find(|d| d.name == "comfyui").unwrap();
        let at: Vec<(&str, &str, &str)> = comfy.container_edits.mounts.iter().map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.options[0].as_str())).collect();
        assert_eq!(
            at,
            [
                ("/run/gpuwarden/mps/pipe", "/run/gpuwarden/mps/pipe", "ro"),
                ("/dev/shm", "/run/gpuwarden/mps/shm", "rw"),
                ("/usr/libexec/gpuwarden/gpuwarden-launch", "/usr/local/bin/gpuwarden-launch", "ro")
            ]
        );
        let plain = spec.devices.iter().find(|d| d.name == "0").unwrap();
        assert!(plain.container_edits.mounts.is_empty(), "plain devices run without MPS and its budget");
    }

    #[test]
    fn nodes_outside_dev_carry_their_host_path() {
        let moved = build(&builtin("rtx4070").unwrap(), "/tmp/fake-dev", None);
        assert_eq!(moved.container_edits.device_nodes[0].host_path.as_deref(), Some("/tmp/fake-dev/nvidiactl"));
        let plain = build(&builtin("rtx4070").unwrap(), "/dev", None);
        assert_eq!(plain.container_edits.device_nodes[0].host_path, None);
    }

    #[test]
    fn profile_devices_carry_the_admission_hooks_and_others_do_not() {
        let settings = HookCall { path: "/usr/local/bin/gpuwarden-hook".into(), options: crate::hookcall::HookOptions { inventory: Some("builtin:rtx4070".into()), ..Default::default() } };
        let spec = build(&builtin("rtx4070").unwrap(), "/dev", Some(&settings));
        let comfy = spec.devices.iter().find(|d| d.name == "comfyui").unwrap();
        let stages: Vec<(&str, Vec<&str>)> =
            comfy.container_edits.hooks.iter().map(|h| (h.hook_name.as_str(), h.args.iter().map(String::as_str).collect())).collect();
        assert_eq!(stages[0], ("createRuntime", vec!["gpuwarden-hook", "admit", "--inventory", "builtin:rtx4070"]));
        assert_eq!(stages[1], ("poststop", vec!["gpuwarden-hook", "release", "--inventory", "builtin:rtx4070"]));
        assert!(spec.devices.iter().find(|d| d.name == "0").unwrap().container_edits.hooks.is_empty());
        assert!(spec.container_edits.hooks.is_empty());
    }

    #[test]
    fn the_spec_is_marked_as_ours() {
        let spec = build(&builtin("rtx4070").unwrap(), "/dev", None);
        assert!(spec.container_edits.env[0].starts_with("GPUWARDEN_CDI=gpuwarden/"));
    }
}
