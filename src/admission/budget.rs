//! The budget of one GPU and the arithmetic of admission: the sum of thread
//! percentages within the ceiling, the sum of pinned memory within total
//! memory minus the named reserves, and at most so many MPS clients. Pure:
//! reservations in, a verdict out, so it is tested exhaustively without root.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::BudgetConfig;
use crate::host::inventory::{Gpu, GpuProcess};
use crate::model::Reservation;
use crate::model::Share;
use crate::base::size::ByteSize;

/// What one GPU offers to containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuCapacity {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub total_memory: ByteSize,
    pub thread_ceiling: u32,
    pub max_clients: u32,
    pub reserves: BTreeMap<String, ByteSize>,
    /// Processes using the GPU outside any reservation (a game, the desktop,
    /// anything unknown); `None` without a live view (no NVML).
    pub outside: Option<Vec<GpuProcess>>,
}

impl GpuCapacity {
    pub fn new(gpu: &Gpu, budget: &BudgetConfig) -> Self {
        let b = budget.for_gpu(gpu.index, &gpu.uuid);
        GpuCapacity {
            index: gpu.index,
            uuid: gpu.uuid.clone(),
            name: gpu.name.clone(),
            total_memory: gpu.memory_total_bytes,
            thread_ceiling: b.thread_ceiling.get(),
            max_clients: b.max_clients.get(),
            reserves: b.reserves,
            outside: gpu.processes.clone(),
        }
    }

    /// Keeps in `outside` only the processes that `held` says belong to no
    /// reservation.
    pub fn leave_out(mut self, held: impl Fn(i32) -> bool) -> Self {
        if let Some(list) = &mut self.outside {
            list.retain(|p| !held(p.pid));
        }
        self
    }

    /// Memory used outside gpuwarden beyond what the reserves set aside for
    /// it: the reserves are there for those processes, so only the rest
    /// shrinks what reservations may take.
    pub fn live_excess(&self) -> ByteSize {
        let used = self.outside.iter().flatten().fold(ByteSize::ZERO, |a, p| a.saturating_add(p.used_memory_bytes));
        used.saturating_sub(self.reserved_memory())
    }

    /// `4242 steam_game 6.0 GiB, ...`
    pub fn outside_text(&self) -> String {
        self.outside.iter().flatten().map(|p| format!("{} {} {}", p.pid, p.name, p.used_memory_bytes)).collect::<Vec<_>>().join(", ")
    }

    /// Total memory less the reserves: what reservations may pin.
    pub fn shareable_memory(&self) -> ByteSize {
        self.total_memory.saturating_sub(self.reserved_memory())
    }

    /// The reserves added up, saturating.
    pub fn reserved_memory(&self) -> ByteSize {
        self.reserves.values().fold(ByteSize::ZERO, |a, r| a.saturating_add(*r))
    }

    /// Why nothing on this GPU can ever be admitted, if the reserves leave no
    /// memory to share (a 40 GiB reserve on a 12 GiB GPU).
    pub fn reserves_problem(&self) -> Option<String> {
        let reserved = self.reserved_memory();
        (reserved >= self.total_memory).then(|| {
            format!(
                "GPU {} ({}) has {} and the reserves ({}) add up to {reserved}, which leaves nothing to share: lower [budget] reserves in config.toml",
                self.index,
                self.short_name(),
                self.total_memory,
                self.reserves_text()
            )
        })
    }

    /// `GPU 0 (RTX 4070)`.
    pub fn describe(&self) -> String {
        format!("GPU {} ({})", self.index, self.short_name())
    }

    /// `RTX 4070` for `NVIDIA GeForce RTX 4070`.
    pub fn short_name(&self) -> &str {
        let n = self.name.strip_prefix("NVIDIA ").unwrap_or(&self.name);
        n.strip_prefix("GeForce ").unwrap_or(n)
    }

    /// `steam 4.0 GiB, system 0.5 GiB`, or `none`.
    pub fn reserves_text(&self) -> String {
        if self.reserves.is_empty() {
            return "none".into();
        }
        self.reserves.iter().map(|(n, s)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    }
}

/// The reserve problem of each GPU of `inventory` under `budget` (see
/// [`GpuCapacity::reserves_problem`]).
pub fn reserve_problems(inventory: &crate::host::inventory::Inventory, budget: &BudgetConfig) -> Vec<String> {
    inventory.gpus.iter().filter_map(|g| GpuCapacity::new(g, budget).reserves_problem()).collect()
}

/// What the reservations on one GPU use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub threads: u32,
    pub pinned: ByteSize,
    pub clients: u32,
}

pub fn usage(holders: &[&Reservation]) -> Usage {
    holders.iter().fold(Usage::default(), |u, r| Usage {
        threads: u.threads.saturating_add(r.threads),
        pinned: u.pinned.saturating_add(r.pinned_bytes),
        clients: u.clients + 1,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    PinnedMemory,
    Threads,
    Clients,
}

/// Why a share does not fit on a GPU, with the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub resource: Resource,
    /// `3.0 GiB pinned memory, 2.5 GiB left of 7.5 GiB`.
    pub text: String,
}

/// What is left of `gpu` beside `used`: pinned memory (the reserves and the
/// memory used outside gpuwarden beyond them taken off), SM percent, MPS
/// clients. The one arithmetic of [`check`] and [`how_many`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub memory: ByteSize,
    pub threads: u32,
    pub clients: u32,
}

pub fn room(gpu: &GpuCapacity, used: Usage) -> Room {
    Room {
        memory: gpu.shareable_memory().saturating_sub(used.pinned).saturating_sub(gpu.live_excess()),
        threads: gpu.thread_ceiling.saturating_sub(used.threads),
        clients: gpu.max_clients.saturating_sub(used.clients),
    }
}

/// Whether `share` fits beside `holders` on `gpu`.
pub fn check(gpu: &GpuCapacity, holders: &[&Reservation], share: &Share) -> Result<(), Shortfall> {
    let left = room(gpu, usage(holders));
    if share.pinned > left.memory {
        return Err(Shortfall {
            resource: Resource::PinnedMemory,
            text: format!("needs {} pinned memory, {} left of {}", share.pinned, left.memory, gpu.shareable_memory()),
        });
    }
    if share.threads > left.threads {
        return Err(Shortfall {
            resource: Resource::Threads,
            text: format!("needs {}% of the SMs, {}% left of {}%", share.threads, left.threads, gpu.thread_ceiling),
        });
    }
    if left.clients == 0 {
        return Err(Shortfall {
            resource: Resource::Clients,
            text: format!("needs an MPS client slot, 0 left of {}", gpu.max_clients),
        });
    }
    Ok(())
}

/// How many more containers of `share` fit beside `used` on `gpu`: the
/// count [`check`] would admit one after another (what a Kubernetes node
/// offers the scheduler of a profile).
pub fn how_many(gpu: &GpuCapacity, used: Usage, share: &Share) -> u32 {
    let left = room(gpu, used);
    let by_memory = left.memory.as_u64().checked_div(share.pinned.as_u64()).unwrap_or(u64::MAX);
    let by_threads = left.threads.checked_div(share.threads).unwrap_or(u32::MAX);
    u32::try_from(by_memory).unwrap_or(u32::MAX).min(by_threads).min(left.clients)
}

/// Most holders a refusal names before "and N more".
const HOLDERS_SHOWN: usize = 6;

/// The one line a refused user reads: who asked what, where, what is left,
/// who holds the rest and what is reserved.
pub fn refusal(container: &str, profile: &str, gpu: &GpuCapacity, shortfall: &Shortfall, holders: &[&Reservation]) -> String {
    format!("refused {container} ({profile}) on {}: {}", gpu.describe(), refusal_detail(gpu, shortfall, holders))
}

/// What a refusal says after naming the GPU: the shortfall, who holds it,
/// what runs outside gpuwarden, the reserves.
pub fn refusal_detail(gpu: &GpuCapacity, shortfall: &Shortfall, holders: &[&Reservation]) -> String {
    let mut s = shortfall.text.clone();
    let share = |r: &Reservation| match shortfall.resource {
        Resource::PinnedMemory => r.pinned_bytes.to_string(),
        Resource::Threads => format!("{}%", r.threads),
        Resource::Clients => format!("{}%, {}", r.threads, r.pinned_bytes),
    };
    let named: Vec<String> = holders.iter().take(HOLDERS_SHOWN).map(|r| format!("{} ({}) {}", r.label(), r.profile, share(r))).collect();
    let named = if named.is_empty() { "nobody".to_string() } else { named.join(", ") };
    let _ = write!(s, " (held by {named}");
    if holders.len() > HOLDERS_SHOWN {
        let _ = write!(s, " and {} more", holders.len() - HOLDERS_SHOWN);
    }
    let excess = gpu.live_excess();
    if shortfall.resource == Resource::PinnedMemory && excess > ByteSize::ZERO {
        let _ = write!(s, "; in use outside gpuwarden: {}, {excess} beyond the reserves", gpu.outside_text());
    }
    let _ = write!(s, "; reserved: {})", gpu.reserves_text());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::host::inventory::builtin;

    fn seeds_gpu() -> GpuCapacity {
        let c = Config::parse("[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n", std::path::Path::new("c")).unwrap();
        GpuCapacity::new(&builtin("rtx4070").unwrap().gpus[0], &c.budget)
    }

    fn held(id: &str, name: Option<&str>, profile: &str, threads: u32, gib_tenths: u64) -> Reservation {
        Reservation {
            id: id.into(),
            name: name.map(Into::into),
            profile: profile.into(),
            gpus: vec![seeds_gpu().uuid],
            threads,
            pinned_bytes: ByteSize::mib(gib_tenths * 1024 / 10),
            pid: 1,
            pid_start: 1,
            admitted_at: 0,
            holder: None,
        }
    }

    fn comfy() -> Share {
        Share { threads: 25, pinned: ByteSize::gib(3) }
    }

    #[test]
    fn reserves_that_leave_nothing_to_share_are_named_with_the_numbers() {
        assert_eq!(seeds_gpu().reserves_problem(), None);
        let c = Config::parse("[budget.reserves]\nsteam = \"40GiB\"\nsystem = \"512MiB\"\n", std::path::Path::new("c")).unwrap();
        let inv = builtin("rtx4070").unwrap();
        let problems = reserve_problems(&inv, &c.budget);
        assert_eq!(
            problems,
            ["GPU 0 (RTX 4070) has 12.0 GiB and the reserves (steam 40.0 GiB, system 0.5 GiB) add up to 40.5 GiB, which leaves nothing to share: lower [budget] reserves in config.toml"]
        );
        let exact = Config::parse("[budget.reserves]\nall = \"12GiB\"\n", std::path::Path::new("c")).unwrap();
        assert_eq!(reserve_problems(&inv, &exact.budget).len(), 1, "exactly the GPU's memory leaves nothing either");
        let almost = Config::parse("[budget.reserves]\nall = \"11GiB\"\n", std::path::Path::new("c")).unwrap();
        assert!(reserve_problems(&inv, &almost.budget).is_empty());
    }

    #[test]
    fn how_many_counts_what_check_would_admit_one_after_another() {
        let gpu = seeds_gpu();
        // 7.5 GiB shareable: two 3 GiB workers by memory, four by threads.
        assert_eq!(how_many(&gpu, Usage::default(), &comfy()), 2);
        let blender = Share { threads: 50, pinned: ByteSize::gib(5) };
        assert_eq!(how_many(&gpu, Usage::default(), &blender), 1);
        for profile in [comfy(), blender, Share { threads: 10, pinned: ByteSize::mib(512) }] {
            let mut holders: Vec<Reservation> = Vec::new();
            let n = how_many(&gpu, Usage::default(), &profile);
            for i in 0..n {
                let refs: Vec<&Reservation> = holders.iter().collect();
                assert_eq!(how_many(&gpu, usage(&refs), &profile), n - i);
                assert!(check(&gpu, &refs, &profile).is_ok());
                holders.push(Reservation { threads: profile.threads, pinned_bytes: profile.pinned, ..held(&format!("c{i}"), None, "p", 0, 0) });
            }
            let refs: Vec<&Reservation> = holders.iter().collect();
            assert_eq!(how_many(&gpu, usage(&refs), &profile), 0);
            assert!(check(&gpu, &refs, &profile).is_err(), "none more fits: {profile:?}");
        }
        let clients = GpuCapacity { max_clients: 1, ..seeds_gpu() };
        assert_eq!(how_many(&clients, Usage::default(), &comfy()), 1, "MPS clients bound it too");
    }

    #[test]
    fn the_workstation_shares_seven_and_a_half_gib() {
        assert_eq!(seeds_gpu().shareable_memory(), ByteSize::mib(7680));
        assert_eq!(seeds_gpu().short_name(), "RTX 4070");
    }

    #[test]
    fn a_render_leaves_no_room_for_a_comfyui_worker_and_the_refusal_says_why() {
        let gpu = seeds_gpu();
        let render = held("77aa00112233445566", Some("render"), "blender", 50, 50);
        let e = check(&gpu, &[&render], &comfy()).unwrap_err();
        assert_eq!(e.resource, Resource::PinnedMemory);
        let line = refusal("3f2a1c4d5e6f", "comfyui", &gpu, &e, &[&render]);
        assert_eq!(
            line,
            "refused 3f2a1c4d5e6f (comfyui) on GPU 0 (RTX 4070): needs 3.0 GiB pinned memory, 2.5 GiB left of 7.5 GiB \
             (held by 77aa00112233 render (blender) 5.0 GiB; reserved: steam 4.0 GiB, system 0.5 GiB)"
        );
    }

    #[test]
    fn two_workers_fit_and_a_third_does_not() {
        let gpu = seeds_gpu();
        let a = held("a", None, "comfyui", 25, 30);
        assert!(check(&gpu, &[&a], &comfy()).is_ok());
        let b = held("b", None, "comfyui", 25, 30);
        assert!(check(&gpu, &[&a, &b], &comfy()).unwrap_err().text.contains("1.5 GiB left of 7.5 GiB"));
    }

    #[test]
    fn threads_and_clients_are_budgets_too() {
        let mut gpu = seeds_gpu();
        let big = held("a", None, "x", 90, 1);
        let e = check(&gpu, &[&big], &Share { threads: 25, pinned: ByteSize::mib(100) }).unwrap_err();
        assert_eq!(e.text, "needs 25% of the SMs, 10% left of 100%");
        gpu.max_clients = 1;
        let small = held("b", None, "x", 1, 1);
        let e = check(&gpu, &[&small], &Share { threads: 1, pinned: ByteSize::mib(1) }).unwrap_err();
        assert_eq!(e.resource, Resource::Clients);
    }

    #[test]
    fn long_holder_lists_are_cut() {
        let gpu = seeds_gpu();
        let many: Vec<Reservation> = (0..9).map(|i| held(&format!("c{i}"), None, "tiny", 1, 1)).collect();
        let refs: Vec<&Reservation> = many.iter().collect();
        let e = Shortfall { resource: Resource::Threads, text: "x".into() };
        assert!(refusal("id", "p", &gpu, &e, &refs).contains("and 3 more"));
    }

    proptest::proptest! {
        /// No sequence of admissions and releases over-commits a GPU, and a
        /// share is refused only when it truly does not fit.
        #[test]
        fn no_sequence_over_commits(ops in proptest::collection::vec((0u8..3, 1u32..60, 1u64..6000, 0usize..8), 1..200)) {
            let mut gpu = seeds_gpu();
            gpu.max_clients = 5;
            let mut held_now: Vec<Reservation> = Vec::new();
            for (i, (op, threads, mib, victim)) in ops.into_iter().enumerate() {
                if op == 0 && !held_now.is_empty() {
                    held_now.remove(victim % held_now.len());
                    continue;
                }
                let share = Share { threads, pinned: ByteSize::mib(mib) };
                let refs: Vec<&Reservation> = held_now.iter().collect();
                let used = usage(&refs);
                let fits = used.threads + threads <= gpu.thread_ceiling
                    && used.pinned.as_u64() + share.pinned.as_u64() <= gpu.shareable_memory().as_u64()
                    && used.clients < gpu.max_clients;
                proptest::prop_assert_eq!(check(&gpu, &refs, &share).is_ok(), fits);
                if fits {
                    let mut r = held(&format!("c{i}"), None, "p", threads, 1);
                    r.pinned_bytes = share.pinned;
                    held_now.push(r);
                }
                let refs: Vec<&Reservation> = held_now.iter().collect();
                let u = usage(&refs);
                proptest::prop_assert!(u.threads <= gpu.thread_ceiling);
                proptest::prop_assert!(u.pinned <= gpu.shareable_memory());
                proptest::prop_assert!(u.clients <= gpu.max_clients);
            }
        }
    }
}
