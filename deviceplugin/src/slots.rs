//! What the node offers the scheduler, per profile: slots, as many per GPU
//! as that profile's share fits on the GPU's budget when it is empty. A slot
//! is Healthy while the budget has room for it now, counted as admission
//! counts (the ledger, the reserves, what runs outside gpuwarden), so that
//! containers started by Podman or Docker on the node take slots away too.
//! Pure: the config, the inventory and the ledger in, the slots out.

use std::collections::BTreeMap;

use gpuwarden::admission::budget::{how_many, usage, GpuCapacity, Usage};
use gpuwarden::base::proc::Processes;
use gpuwarden::config::Config;
use gpuwarden::host::inventory::Inventory;
use gpuwarden::ledger::Ledger;
use gpuwarden::model::Reservation;

/// The resources' domain: `gpuwarden.io/comfyui`.
pub const DOMAIN: &str = "gpuwarden.io";

pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// One slot of a profile on one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// `gpu0-comfyui-3`: the GPU's index, the profile, the slot's number.
    pub id: String,
    pub gpu: u32,
    pub healthy: bool,
}

/// The Kubernetes resource of profile `profile`.
pub fn resource_name(profile: &str) -> String {
    format!("{DOMAIN}/{profile}")
}

pub fn slot_id(gpu: u32, profile: &str, n: u32) -> String {
    format!("gpu{gpu}-{profile}-{n}")
}

/// The GPU index and profile a slot id names, if it is one of ours.
pub fn parse_slot(id: &str) -> Option<(u32, &str)> {
    let rest = id.strip_prefix("gpu")?;
    let (gpu, rest) = rest.split_once('-')?;
    let (profile, n) = rest.rsplit_once('-')?;
    n.parse::<u32>().ok()?;
    (!profile.is_empty()).then_some(())?;
    Some((gpu.parse().ok()?, profile))
}

/// Whether a reservation is a Kubernetes pod's container: containerd's CRI
/// names it `namespace/pod/container` (see the admission request). A pod's
/// reservation stands for a slot the kubelet has allocated, so its slot
/// stays Healthy: the scheduler subtracts it through the pod's request.
pub fn is_pods(r: &Reservation) -> bool {
    r.name.as_deref().is_some_and(|n| n.split('/').count() == 3 && n.split('/').all(|p| !p.is_empty()))
}

/// Every profile's slots on every GPU, in the order of the GPUs.
pub fn slots(config: &Config, inventory: &Inventory, ledger: &Ledger, processes: &dyn Processes) -> BTreeMap<String, Vec<Slot>> {
    let mut out: BTreeMap<String, Vec<Slot>> = BTreeMap::new();
    for gpu in &inventory.gpus {
        let empty = GpuCapacity { outside: None, ..GpuCapacity::new(gpu, &config.budget) };
        let now = GpuCapacity::new(gpu, &config.budget).leave_out(|pid| ledger.holds_process(processes, pid));
        // Entries whose process is gone hold nothing: the next admission reclaims them.
        let alive: Vec<&Reservation> = ledger.on_gpu(&gpu.uuid).into_iter().filter(|r| processes.start_time(r.pid) == Some(r.pid_start)).collect();
        let used = usage(&alive);
        for (name, p) in &config.profiles {
            let profile = name.as_str();
            let share = gpuwarden::profile::rewrite::profile_share(p);
            let total = how_many(&empty, Usage::default(), &share);
            let pods = alive.iter().filter(|r| r.profile == profile && is_pods(r)).count();
            let healthy = how_many(&now, used, &share).saturating_add(u32::try_from(pods).unwrap_or(u32::MAX)).min(total);
            out.entry(profile.to_string())
                .or_default()
                .extend((0..total).map(|n| Slot { id: slot_id(gpu.index, profile, n), gpu: gpu.index, healthy: n < healthy }));
        }
    }
    out
}

/// What a container given `ids` gets: the CDI device of the profile on the
/// slots' GPU (`nvidia.com/gpu=comfyui` where the node has one GPU,
/// `nvidia.com/gpu=gpu1-comfyui` where it has several, as `gpuwarden cdi
/// generate` names them). One slot per container: a container holds one share.
pub fn cdi_device(kind: &str, profile: &str, gpus: usize, ids: &[String]) -> Result<String, String> {
    let [id] = ids else {
        return Err(format!(
            "a container takes one slot of {} (it holds one share of one GPU), and was given {}: ask for {}: 1",
            resource_name(profile),
            ids.len(),
            resource_name(profile)
        ));
    };
    match parse_slot(id) {
        Some((gpu, p)) if p == profile => Ok(if gpus > 1 { format!("{kind}=gpu{gpu}-{profile}") } else { format!("{kind}={profile}") }),
        _ => Err(format!("{id:?} is not a slot of {}", resource_name(profile))),
    }
}

/// The slots to prefer for a container that needs `size` of `available`:
/// all on one GPU (the one of `must`, if given), packed: the GPU with the
/// fewest free slots that still has `size` (the lowest index on a tie), so
/// the kubelet's successive calls for one pod's containers land on the same
/// GPU while it has room, and whole GPUs stay free for larger shares. With
/// no GPU holding `size`, the one with the most.
pub fn preferred(available: &[String], must: &[String], size: usize) -> Vec<String> {
    let gpu_of = |id: &String| parse_slot(id).map(|(g, _)| g);
    let mut by_gpu: BTreeMap<Option<u32>, Vec<&String>> = BTreeMap::new();
    for id in available {
        by_gpu.entry(gpu_of(id)).or_default().push(id);
    }
    let wanted = must.first().map(gpu_of);
    let best = match wanted {
        Some(g) => by_gpu.get(&g),
        None => by_gpu.values().filter(|ids| ids.len() >= size).min_by_key(|ids| ids.len()).or_else(|| by_gpu.values().max_by_key(|ids| ids.len())),
    };
    let mut out: Vec<String> = must.to_vec();
    for id in best.into_iter().flatten() {
        if out.len() >= size {
            break;
        }
        if !out.contains(id) {
            out.push((*id).clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden::base::size::ByteSize;
    use gpuwarden::host::inventory::builtin;

    /// Every pid is alive with start time 1.
    struct Alive;
    impl Processes for Alive {
        fn start_time(&self, _: i32) -> Option<u64> {
            Some(1)
        }
        fn cgroup(&self, _: i32) -> Option<String> {
            None
        }
    }

    fn config(reserves: &str) -> Config {
        Config::parse(&format!("[budget.reserves]\n{reserves}"), std::path::Path::new("c")).unwrap()
    }

    fn held(id: &str, name: Option<&str>, profile: &str, threads: u32, gib: u64, pid_start: u64, inv: &Inventory) -> Reservation {
        Reservation {
            id: id.into(),
            name: name.map(Into::into),
            profile: profile.into(),
            gpus: vec![inv.gpus[0].uuid.clone()],
            threads,
            pinned_bytes: ByteSize::gib(gib),
            pid: 7,
            pid_start,
            admitted_at: 0,
            holder: None,
        }
    }

    fn healthy(s: &BTreeMap<String, Vec<Slot>>, profile: &str) -> (usize, usize) {
        let v = &s[profile];
        (v.iter().filter(|s| s.healthy).count(), v.len())
    }

    #[test]
    fn an_empty_rtx4070_offers_four_comfyui_and_two_blender_slots() {
        let inv = builtin("rtx4070").unwrap();
        let s = slots(&config(""), &inv, &Ledger::default(), &Alive);
        assert_eq!(healthy(&s, "comfyui"), (4, 4));
        assert_eq!(healthy(&s, "blender"), (2, 2));
        assert_eq!(s["comfyui"][3].id, "gpu0-comfyui-3");
        // The workstation's 4 GiB for games leaves 8 GiB: two workers, one render.
        let s = slots(&config("steam = \"4GiB\""), &inv, &Ledger::default(), &Alive);
        assert_eq!((healthy(&s, "comfyui"), healthy(&s, "blender")), ((2, 2), (1, 1)));
    }

    #[test]
    fn what_podman_holds_takes_slots_away_and_a_pods_own_share_keeps_its_slot() {
        let inv = builtin("rtx4070").unwrap();
        let mut ledger = Ledger::default();
        ledger.reservations.push(held("p1", Some("comfy-1"), "comfyui", 25, 3, 1, &inv));
        let s = slots(&config(""), &inv, &ledger, &Alive);
        assert_eq!(healthy(&s, "comfyui"), (3, 4), "a Podman worker takes one");
        assert_eq!(healthy(&s, "blender"), (1, 2), "9 GiB and 75% left: one render");
        ledger.reservations.push(held("k1", Some("lab/comfy-0/worker"), "comfyui", 25, 3, 1, &inv));
        let s = slots(&config(""), &inv, &ledger, &Alive);
        assert_eq!(healthy(&s, "comfyui"), (3, 4), "a pod's worker keeps its own slot: the scheduler counts its request");
        assert_eq!(healthy(&s, "blender"), (1, 2));
        ledger.reservations.push(held("gone", None, "blender", 50, 5, 99, &inv));
        assert_eq!(slots(&config(""), &inv, &ledger, &Alive)["blender"].iter().filter(|s| s.healthy).count(), 1, "a stale entry holds nothing");
    }

    #[test]
    fn each_gpu_has_its_own_slots_and_its_own_room() {
        let mut inv = builtin("rtx4070").unwrap();
        let mut second = inv.gpus[0].clone();
        second.index = 1;
        second.uuid = "GPU-second".into();
        inv.gpus.push(second);
        let mut ledger = Ledger::default();
        ledger.reservations.push(held("b1", None, "blender", 50, 5, 1, &inv));
        let s = slots(&config(""), &inv, &ledger, &Alive);
        let on = |gpu: u32| s["comfyui"].iter().filter(|x| x.gpu == gpu && x.healthy).count();
        assert_eq!((on(0), on(1)), (2, 4), "a render on GPU 0 leaves it two workers; GPU 1 is empty");
        assert_eq!(s["comfyui"].iter().filter(|x| x.gpu == 1).map(|x| x.id.as_str()).next(), Some("gpu1-comfyui-0"));
    }

    #[test]
    fn allocate_names_the_profile_device_of_the_slots_gpu() {
        assert_eq!(cdi_device("nvidia.com/gpu", "comfyui", 1, &["gpu0-comfyui-2".into()]).unwrap(), "nvidia.com/gpu=comfyui");
        assert_eq!(cdi_device("nvidia.com/gpu", "comfyui", 2, &["gpu1-comfyui-0".into()]).unwrap(), "nvidia.com/gpu=gpu1-comfyui");
        let e = cdi_device("nvidia.com/gpu", "comfyui", 1, &["gpu0-comfyui-0".into(), "gpu0-comfyui-1".into()]).unwrap_err();
        assert!(e.contains("takes one slot") && e.contains("gpuwarden.io/comfyui: 1"), "{e}");
        assert!(cdi_device("nvidia.com/gpu", "comfyui", 1, &["gpu0-blender-0".into()]).is_err());
        assert!(cdi_device("nvidia.com/gpu", "comfyui", 1, &["nvidia0".into()]).is_err());
        assert_eq!(parse_slot("gpu12-my-profile-3"), Some((12, "my-profile")));
    }

    #[test]
    fn preferred_slots_stay_on_one_gpu() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let available = ids(&["gpu0-comfyui-0", "gpu1-comfyui-0", "gpu1-comfyui-1", "gpu0-comfyui-1", "gpu1-comfyui-2"]);
        assert_eq!(preferred(&available, &[], 2), ids(&["gpu0-comfyui-0", "gpu0-comfyui-1"]), "packed: the fuller GPU that holds two");
        assert_eq!(preferred(&available, &[], 3), ids(&["gpu1-comfyui-0", "gpu1-comfyui-1", "gpu1-comfyui-2"]));
        assert_eq!(preferred(&available, &[], 4), ids(&["gpu1-comfyui-0", "gpu1-comfyui-1", "gpu1-comfyui-2"]), "none holds four: the most on one GPU");
        assert_eq!(preferred(&available, &ids(&["gpu0-comfyui-1"]), 2), ids(&["gpu0-comfyui-1", "gpu0-comfyui-0"]));
        // One pod's containers, one call each: the second lands beside the first.
        let first = preferred(&available, &[], 1);
        let rest: Vec<String> = available.iter().filter(|a| !first.contains(a)).cloned().collect();
        assert_eq!(parse_slot(&preferred(&rest, &[], 1)[0]).unwrap().0, parse_slot(&first[0]).unwrap().0);
    }
}
