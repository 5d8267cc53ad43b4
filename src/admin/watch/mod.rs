//! The watchdog's judgement: given what runs on the GPUs now (NVML, or a file
//! standing in for it), which container each process belongs to, the ledger
//! and the containers it has paused, what to do. Pure: the loop that looks
//! and acts is `gpuwarden watch`; pausing and killing go through [`engine`],
//! what it did is kept in [`state`] and told in [`events`].

pub mod engine;
pub mod games;
pub mod metrics;
pub mod report;
pub mod run;

// What the watchdog publishes and admission reads sits below both (`crate::host::watched`).
pub use crate::host::watched::{events, game_label, state, PauseReason, Unknown};

use std::collections::BTreeMap;


use crate::config::{ShareAction, WatchConfig};
use crate::host::inventory::GpuProcess;
use crate::ledger::Ledger;
use crate::model::Reservation;
use crate::base::size::ByteSize;

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Over its share: the profile's action, with the numbers.
    OverShare { id: String, action: ShareAction, used: ByteSize, reserved: ByteSize },
    /// A game runs on its GPU: pause it.
    YieldToGame { id: String, game: String, pid: i32 },
    /// Paused by the watchdog, and the reason is gone.
    Resume { id: String },
    /// Paused by the watchdog, and the container is gone: forget it.
    Forget { id: String },
}

/// What the GPUs show, summed by container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Container id -> memory its processes use on the GPUs.
    pub used: BTreeMap<String, ByteSize>,
    pub unknown: Vec<Unknown>,
}

/// Sums each GPU's processes by container; `owner` names the container id
/// of a pid (from its cgroup) among the ledger's, and `classify` says what
/// any other process is (see [`games::classify`]).
pub fn usage(gpus: &[(String, Vec<GpuProcess>)], ledger: &Ledger, owner: &dyn Fn(i32) -> Option<String>, classify: &dyn Fn(&GpuProcess) -> games::Class) -> Usage {
    let mut u = Usage::default();
    for (gpu, processes) in gpus {
        for p in processes {
            match owner(p.pid).filter(|id| ledger.reservations.iter().any(|r| &r.id == id)) {
                Some(id) => {
                    let total = u.used.entry(id).or_insert(ByteSize::ZERO);
                    *total = ByteSize::bytes(total.as_u64().saturating_add(p.used_memory_bytes.as_u64()));
                }
                None => {
                    let class = classify(p);
                    let name = match &class {
                        games::Class::Game(label) => label.clone(),
                        _ => p.name.clone(),
                    };
                    u.unknown.push(Unknown {
                        gpu: gpu.clone(),
                        pid: p.pid,
                        name,
                        used_bytes: p.used_memory_bytes.as_u64(),
                        game: matches!(class, games::Class::Game(_)),
                        desktop: class == games::Class::Desktop,
                    });
                }
            }
        }
    }
    u
}

/// What to do now. `paused` holds the containers the watchdog paused, with why.
pub fn decide(ledger: &Ledger, usage: &Usage, paused: &BTreeMap<String, PauseReason>, config: &WatchConfig) -> Vec<Decision> {
    let mut out = Vec::new();
    let game_on = |r: &Reservation| usage.unknown.iter().find(|u| u.game && r.gpus.contains(&u.gpu));
    for r in &ledger.reservations {
        let used = usage.used.get(&r.id).copied().unwrap_or(ByteSize::ZERO);
        let pinned = r.pinned_bytes.as_u64();
        let over = used.as_u64() > pinned.saturating_add(pinned / 100 * u64::from(config.tolerance_percent));
        let action = config.over_share.get(&r.profile).copied().unwrap_or(ShareAction::Warn);
        let yields = config.yield_to_games.contains(&r.profile);
        match paused.get(&r.id) {
            None if over => out.push(Decision::OverShare { id: r.id.clone(), action, used, reserved: r.pinned_bytes }),
            None => {
                if let Some(g) = game_on(r).filter(|_| yields) {
                    out.push(Decision::YieldToGame { id: r.id.clone(), game: g.name.clone(), pid: g.pid });
                }
            }
            // Paused for being over: it stays paused until someone resumes it
            // (its memory is still taken); a pause for a game ends with the game.
            Some(PauseReason::OverShare { .. }) => {}
            Some(PauseReason::Game { .. }) => {
                if game_on(r).is_none() || !yields {
                    out.push(Decision::Resume { id: r.id.clone() });
                }
            }
        }
    }
    for id in paused.keys() {
        if !ledger.reservations.iter().any(|r| &r.id == id) {
            out.push(Decision::Forget { id: id.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn reservation(id: &str, profile: &str, gib: u64) -> Reservation {
        Reservation { id: id.into(), name: None, profile: profile.into(), gpus: vec!["GPU-a".into()], threads: 25, pinned_bytes: ByteSize::gib(gib), pid: 1, pid_start: 1, admitted_at: 0, holder: None }
    }

    fn ledger() -> Ledger {
        Ledger { reservations: vec![reservation("c1", "comfyui", 3), reservation("b1", "blender", 5)], ..Ledger::default() }
    }

    fn process(pid: i32, name: &str, mib: u64) -> GpuProcess {
        GpuProcess { pid, name: name.into(), used_memory_bytes: ByteSize::mib(mib) }
    }

    fn owner(pid: i32) -> Option<String> {
        match pid {
            10 | 11 => Some("c1".into()),
            20 => Some("b1".into()),
            30 => Some("some-other-container".into()),
            _ => None,
        }
    }

    /// The defaults' classification, with nothing known of a process but its NVML name.
    fn by_name(games: &[String]) -> impl Fn(&GpuProcess) -> games::Class + '_ {
        let desktop = Config::default().watch.desktop;
        move |p: &GpuProcess| games::classify(p.pid, &p.name, &crate::ledger::tests::FakeProcesses(Default::default()), games, &desktop)
    }

    fn look(processes: Vec<GpuProcess>) -> Usage {
        let games = vec!["dota2".to_string()];
        usage(&[("GPU-a".into(), processes)], &ledger(), &owner, &by_name(&games))
    }

    #[test]
    fn memory_is_summed_by_container_and_strangers_are_named() {
        let u = look(vec![process(10, "python3", 2048), process(11, "python3", 1024), process(20, "blender", 512), process(30, "x", 1), process(40, "dota2", 100), process(41, "steamwebhelper", 300)]);
        assert_eq!(u.used["c1"], ByteSize::mib(3072));
        assert_eq!(u.used["b1"], ByteSize::mib(512));
        let names: Vec<(&str, bool, bool)> = u.unknown.iter().map(|x| (x.name.as_str(), x.game, x.desktop)).collect();
        assert_eq!(names, [("x", false, false), ("dota2 (pid 40)", true, false), ("steamwebhelper", false, true)], "a container with no reservation is unknown too");
    }

    #[test]
    fn a_process_named_like_a_reserve_is_a_game() {
        let games = vec!["hl2_linux".to_string()];
        let u = usage(&[("GPU-a".into(), vec![process(50, "hl2_linux", 900)])], &ledger(), &owner, &by_name(&games));
        assert!(u.unknown[0].game);
        let steam = vec!["steam".to_string()];
        let u = usage(&[("GPU-a".into(), vec![process(51, "steam", 900)])], &ledger(), &owner, &by_name(&steam));
        assert!(!u.unknown[0].game && u.unknown[0].desktop, "a reserve named steam keeps room for it; the client is still no game");
    }

    #[test]
    fn over_the_share_with_tolerance_runs_the_profile_s_action() {
        let config = Config::default().watch;
        // 3 GiB + 10% = 3.3 GiB allowed.
        let at_limit = decide(&ledger(), &look(vec![process(10, "python3", 3379)]), &BTreeMap::new(), &config);
        assert!(at_limit.is_empty(), "{at_limit:?}");
        let over = decide(&ledger(), &look(vec![process(10, "python3", 3400), process(20, "blender", 6000)]), &BTreeMap::new(), &config);
        assert_eq!(
            over,
            [
                Decision::OverShare { id: "c1".into(), action: ShareAction::Pause, used: ByteSize::mib(3400), reserved: ByteSize::gib(3) },
                Decision::OverShare { id: "b1".into(), action: ShareAction::Warn, used: ByteSize::mib(6000), reserved: ByteSize::gib(5) },
            ]
        );
    }

    #[test]
    fn a_game_pauses_the_yielding_containers_and_its_end_resumes_them() {
        let config = Config::default().watch;
        let game = look(vec![process(40, "dota2", 100)]);
        let d = decide(&ledger(), &game, &BTreeMap::new(), &config);
        assert_eq!(d, [Decision::YieldToGame { id: "c1".into(), game: "dota2 (pid 40)".into(), pid: 40 }, Decision::YieldToGame { id: "b1".into(), game: "dota2 (pid 40)".into(), pid: 40 }]);
        assert!(decide(&ledger(), &look(vec![process(41, "steamwebhelper", 300)]), &BTreeMap::new(), &config).is_empty(), "Steam open: nothing yields");
        let paused: BTreeMap<String, PauseReason> = [("c1", "dota2"), ("b1", "dota2")].map(|(id, g)| (id.to_string(), PauseReason::Game { name: g.into(), pid: 40 })).into();
        assert!(decide(&ledger(), &game, &paused, &config).is_empty(), "still paused while it runs");
        let gone = decide(&ledger(), &look(Vec::new()), &paused, &config);
        assert_eq!(gone, [Decision::Resume { id: "c1".into() }, Decision::Resume { id: "b1".into() }]);
    }

    #[test]
    fn a_pause_for_memory_holds_and_a_gone_container_is_forgotten() {
        let config = Config::default().watch;
        let paused: BTreeMap<String, PauseReason> =
            [("c1".to_string(), PauseReason::OverShare { used_bytes: 1, reserved_bytes: 0 }), ("gone".to_string(), PauseReason::Game { name: "steam".into(), pid: 1 })].into();
        assert_eq!(decide(&ledger(), &look(Vec::new()), &paused, &config), [Decision::Forget { id: "gone".into() }]);
    }
}
