//! What the watchdog shows: in `status` (text and JSON) and as Prometheus
//! metrics. Both are made from the same ledger, state and events, so they
//! carry the same numbers.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::events::Event;
use super::state::WatchState;
use crate::ledger::Ledger;
use crate::model::label;
use crate::base::size::ByteSize;

/// Whether the watchdog holds containers to their share now, in one line.
pub use crate::host::watched::enforcement;

pub fn render_text(ledger: &Ledger, state: &WatchState, events: &[Event], now: u64) -> String {
    let mut out = format!("WATCH {}\n", enforcement(state, now));
    for r in &ledger.reservations {
        if let Some(used) = state.used.get(&r.id) {
            let _ = writeln!(out, "  {:<24} uses {} of its {} on the GPU", r.label(), ByteSize::bytes(*used), r.pinned_bytes);
        }
    }
    for (id, p) in &state.paused {
        let name = ledger.reservations.iter().find(|r| &r.id == id).map_or_else(|| label(id, None), |r| r.label());
        let why = match &p.reason {
            super::PauseReason::OverShare { used_bytes, reserved_bytes } => format!("over its share ({} of {})", ByteSize::bytes(*used_bytes), ByteSize::bytes(*reserved_bytes)),
            super::PauseReason::Game { name, pid } => format!("yields to {}", super::game_label(name, *pid)),
        };
        let _ = writeln!(out, "  paused   {name}: {why}, {} ago", crate::admin::status::age(now.saturating_sub(p.since)));
    }
    // Games and the desktop first, then what gpuwarden did not admit, apart.
    for u in state.unknown.iter().filter(|u| !u.unauthorized()) {
        let what = if u.game { "a game" } else { "the desktop" };
        let _ = writeln!(out, "  unknown  pid {} {} uses {} on {} ({what})", u.pid, u.name, ByteSize::bytes(u.used_bytes).approx(), u.gpu);
    }
    for u in state.unknown.iter().filter(|u| u.unauthorized()) {
        let _ = writeln!(out, "  UNAUTHORIZED  pid {} {} uses {} on {}: not admitted by gpuwarden", u.pid, u.name, ByteSize::bytes(u.used_bytes).approx(), u.gpu);
    }
    for e in events.iter().rev().take(5) {
        let _ = writeln!(out, "  event    {} ago  {}: {}", crate::admin::status::age(now.saturating_sub(e.time)), e.kind, e.detail);
    }
    out
}

pub fn render_json(state: &WatchState, events: &[Event], now: u64) -> Value {
    json!({
        "running": state.is_fresh(now),
        "sees_gpu_processes": state.is_fresh(now) && state.live,
        "enforcement": enforcement(state, now),
        "used_bytes": state.used,
        "paused": state.paused,
        "unknown_processes": state.unknown,
        "events_total": state.counts,
        "recent_events": events.iter().rev().take(20).collect::<Vec<_>>(),
    })
}

/// Prometheus' text format for one label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics, in Prometheus' text exposition format; `refusals` is how many
/// admissions the events file records as refused.
pub fn metrics(ledger: &Ledger, state: &WatchState, refusals: u64, now: u64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per = |f: &dyn Fn(&crate::model::Reservation) -> f64| -> Vec<(String, f64)> {
        ledger
            .reservations
            .iter()
            .flat_map(|r| r.gpus.iter().map(move |g| (format!("{{container=\"{}\",profile=\"{}\",gpu=\"{}\"}}", esc(&r.id), esc(&r.profile), esc(g)), f(r))))
            .collect()
    };
    family("gpuwarden_reservation_threads_percent", "gauge", "MPS active-thread percentage held by an admitted container.", per(&|r| f64::from(r.threads)));
    family("gpuwarden_reservation_pinned_bytes", "gauge", "Pinned GPU memory held by an admitted container.", per(&|r| r.pinned_bytes.as_u64() as f64));
    let used = ledger.reservations.iter().filter_map(|r| Some((format!("{{container=\"{}\",profile=\"{}\"}}", esc(&r.id), esc(&r.profile)), *state.used.get(&r.id)? as f64))).collect();
    family("gpuwarden_used_bytes", "gauge", "GPU memory in use by a container's processes at the watchdog's last look.", used);
    let paused = state.paused.iter().map(|(id, p)| {
        let reason = match p.reason { super::PauseReason::OverShare { .. } => "over_share", super::PauseReason::Game { .. } => "game" };
        (format!("{{container=\"{}\",reason=\"{reason}\"}}", esc(id)), 1.0)
    });
    family("gpuwarden_paused", "gauge", "1 for each container the watchdog holds paused.", paused.collect());
    let mut unknown: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for u in &state.unknown {
        *unknown.entry(u.gpu.as_str()).or_insert(0.0) += 1.0;
    }
    family("gpuwarden_unknown_gpu_processes", "gauge", "GPU processes that belong to no admitted container.", unknown.into_iter().map(|(g, n)| (format!("{{gpu=\"{}\"}}", esc(g)), n)).collect());
    // Every GPU the watchdog knows of, 0 included, so an alert sees the series.
    let mut unauthorized: std::collections::BTreeMap<&str, f64> = ledger.reservations.iter().flat_map(|r| r.gpus.iter()).chain(state.unknown.iter().map(|u| &u.gpu)).map(|g| (g.as_str(), 0.0)).collect();
    for u in state.unknown.iter().filter(|u| u.unauthorized()) {
        *unauthorized.entry(u.gpu.as_str()).or_insert(0.0) += 1.0;
    }
    family("gpuwarden_unauthorized_processes", "gauge", "GPU processes gpuwarden did not admit: no admitted container, no game, not the desktop's.", unauthorized.into_iter().map(|(g, n)| (format!("{{gpu=\"{}\"}}", esc(g)), n)).collect());
    // The render queue: each waiting container's wait, and the longest per GPU (0 when none waits on a GPU in use).
    let waiting = ledger.queue.iter().flat_map(|w| w.gpus.iter().map(move |g| (format!("{{container=\"{}\",profile=\"{}\",gpu=\"{}\"}}", esc(&w.id), esc(&w.profile), esc(g)), now.saturating_sub(w.queued_at) as f64)));
    family("gpuwarden_queue_wait_seconds", "gauge", "How long a container has waited in the render queue for its share.", waiting.collect());
    let mut longest: std::collections::BTreeMap<&str, f64> = ledger.reservations.iter().flat_map(|r| r.gpus.iter()).map(|g| (g.as_str(), 0.0)).collect();
    let mut count: std::collections::BTreeMap<&str, f64> = longest.clone();
    for w in &ledger.queue {
        for g in &w.gpus {
            let l = longest.entry(g.as_str()).or_insert(0.0);
            *l = l.max(now.saturating_sub(w.queued_at) as f64);
            *count.entry(g.as_str()).or_insert(0.0) += 1.0;
        }
    }
    family("gpuwarden_queue_length", "gauge", "Containers waiting in the render queue for a share of the GPU.", count.into_iter().map(|(g, n)| (format!("{{gpu=\"{}\"}}", esc(g)), n)).collect());
    family("gpuwarden_queue_longest_wait_seconds", "gauge", "The longest wait in the GPU's render queue.", longest.into_iter().map(|(g, n)| (format!("{{gpu=\"{}\"}}", esc(g)), n)).collect());
    family("gpuwarden_events_total", "counter", "The watchdog's events by kind.", state.counts.iter().map(|(k, n)| (format!("{{kind=\"{}\"}}", esc(k)), *n as f64)).collect());
    family("gpuwarden_refusals_total", "counter", "Containers refused at admission (as the events file records them).", vec![(String::new(), refusals as f64)]);
    family("gpuwarden_watch_up", "gauge", "1 while the watchdog looks at the GPUs' processes.", vec![(String::new(), if state.is_fresh(now) && state.live { 1.0 } else { 0.0 })]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::watch::state::Paused;
    use crate::admin::watch::{engine::Engine, PauseReason, Unknown};

    fn world() -> (Ledger, WatchState) {
        let r = crate::model::Reservation { id: "c1".into(), name: Some("comfy-1".into()), profile: "comfyui".into(), gpus: vec!["GPU-a".into()], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 1, admitted_at: 0, holder: None };
        let mut s = WatchState { written_at: 100, interval_seconds: 2, pid: 42, live: true, ..Default::default() };
        s.used.insert("c1".into(), 1 << 30);
        s.paused.insert("c1".into(), Paused { reason: PauseReason::Game { name: "steam".into(), pid: 9 }, engine: Engine::Podman, since: 90 });
        s.unknown.push(Unknown { gpu: "GPU-a".into(), pid: 9, name: "steam".into(), used_bytes: 1 << 29, game: true, desktop: false });
        s.unknown.push(Unknown { gpu: "GPU-a".into(), pid: 77, name: "python3".into(), used_bytes: 1 << 30, game: false, desktop: false });
        s.counts.insert("paused".into(), 3);
        (Ledger { reservations: vec![r], ..Ledger::default() }, s)
    }

    #[test]
    fn status_and_metrics_say_the_same() {
        let (ledger, state) = world();
        let text = render_text(&ledger, &state, &[], 101);
        assert!(text.starts_with("WATCH running (pid 42), looked 1s ago, every 2s\n"), "{text}");
        assert!(text.contains("c1 comfy-1") && text.contains("uses 1.0 GiB of its 3.0 GiB") && text.contains("yields to steam (pid 9)") && text.contains("pid 9 steam uses 0.5 GiB on GPU-a (a game)"), "{text}");
        let m = metrics(&ledger, &state, 2, 101);
        assert!(m.contains("gpuwarden_reservation_threads_percent{container=\"c1\",profile=\"comfyui\",gpu=\"GPU-a\"} 25\n"), "{m}");
        assert!(m.contains("gpuwarden_used_bytes{container=\"c1\",profile=\"comfyui\"} 1073741824\n"));
        assert!(m.contains("gpuwarden_paused{container=\"c1\",reason=\"game\"} 1\n") && m.contains("gpuwarden_events_total{kind=\"paused\"} 3\n"));
        assert!(m.contains("gpuwarden_watch_up 1\n") && m.contains("gpuwarden_refusals_total 2\n"));
        assert!(m.contains("gpuwarden_unauthorized_processes{gpu=\"GPU-a\"} 1\n"), "{m}");
        assert!(m.contains("gpuwarden_queue_length{gpu=\"GPU-a\"} 0\n") && m.contains("gpuwarden_queue_longest_wait_seconds{gpu=\"GPU-a\"} 0\n"), "{m}");
        assert!(text.contains("  UNAUTHORIZED  pid 77 python3 uses 1.0 GiB on GPU-a: not admitted by gpuwarden"), "{text}");
        let j = render_json(&state, &[], 101);
        assert_eq!(j["used_bytes"]["c1"], 1u64 << 30);
        assert_eq!(j["events_total"]["paused"], 3);
    }

    #[test]
    fn the_queue_is_measured_per_container_and_per_gpu() {
        let (mut ledger, state) = world();
        for (id, at) in [("b2", 40), ("c3", 90)] {
            let asks = crate::model::Reservation { id: id.into(), name: None, profile: "blender".into(), gpus: vec!["GPU-a".into()], threads: 50, pinned_bytes: ByteSize::gib(5), pid: 3, pid_start: 1, admitted_at: at, holder: None };
            ledger.queue.push(crate::model::Waiting { asks, waiter: 4, waiter_start: 1, queued_at: at, until: 400, waits_for: String::new(), cancelled: false });
        }
        let m = metrics(&ledger, &state, 0, 100);
        assert!(m.contains("gpuwarden_queue_wait_seconds{container=\"b2\",profile=\"blender\",gpu=\"GPU-a\"} 60\n"), "{m}");
        assert!(m.contains("gpuwarden_queue_length{gpu=\"GPU-a\"} 2\n") && m.contains("gpuwarden_queue_longest_wait_seconds{gpu=\"GPU-a\"} 60\n"), "{m}");
    }

    #[test]
    fn without_a_watchdog_or_nvml_enforcement_is_at_start_only() {
        let (ledger, mut state) = world();
        assert!(render_text(&ledger, &state, &[], 200).starts_with("WATCH not running (no recent look): enforcement is at start only"));
        state.live = false;
        assert!(enforcement(&state, 101).contains("cannot see the GPUs' processes (no NVML): enforcement is at start only"));
        assert!(metrics(&ledger, &state, 0, 101).contains("gpuwarden_watch_up 0\n"));
    }
}
