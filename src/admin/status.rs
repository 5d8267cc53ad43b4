//! `gpuwarden status`: per GPU, the budget used and left, the reserves, and
//! who holds what since when. Reads the ledger, never writes it; entries whose
//! process is gone are shown as stale (the next admission reclaims them).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::admission::budget::{room, usage, GpuCapacity, Usage};
use crate::config::Config;
use crate::host::inventory::Inventory;
use crate::ledger::Ledger;
use crate::model::{Reservation, Waiting};
use crate::base::proc::Processes;

pub struct GpuStatus<'a> {
    pub capacity: GpuCapacity,
    pub usage: Usage,
    pub holders: Vec<(&'a Reservation, bool)>,
    /// The containers waiting for a share of it, in the order they will be served.
    pub queue: Vec<&'a Waiting>,
}

/// The status of each GPU of `inventory`; `bool` marks stale holders.
pub fn gather<'a>(inventory: &Inventory, config: &Config, ledger: &'a Ledger, processes: &dyn Processes) -> Vec<GpuStatus<'a>> {
    inventory
        .gpus
        .iter()
        .map(|gpu| {
            let capacity = GpuCapacity::new(gpu, &config.budget).leave_out(|pid| ledger.holds_process(processes, pid));
            let holders = ledger.on_gpu(&gpu.uuid);
            GpuStatus {
                usage: usage(&holders),
                holders: holders.into_iter().map(|r| (r, processes.start_time(r.pid) != Some(r.pid_start))).collect(),
                queue: crate::ledger::queue::ordered(&ledger.queue, &config.watch.priority).into_iter().filter(|w| w.gpus.contains(&gpu.uuid)).collect(),
                capacity,
            }
        })
        .collect()
}

const BAR: usize = 24;

fn bar(used: u128, of: u128) -> String {
    let filled = if of == 0 { BAR } else { ((used * BAR as u128).div_ceil(of) as usize).min(BAR) };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// `2d3h`, `4m10s`, `12s`.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn render_text(status: &[GpuStatus], now: u64) -> String {
    let mut out = String::new();
    for s in status {
        let (c, u) = (&s.capacity, &s.usage);
        let shareable = c.shareable_memory();
        let _ = writeln!(out, "GPU {}  {}  {}", c.index, c.name, c.uuid);
        let problem = c.reserves_problem();
        if let Some(problem) = &problem {
            let _ = writeln!(out, "  ! {problem}; nothing can be admitted on it");
        }
        let _ = writeln!(
            out,
            "  threads  {}  {:>3}% of {}%{:>14}",
            bar(u.threads.into(), c.thread_ceiling.into()),
            u.threads,
            c.thread_ceiling,
            format!("{}% left", room(c, *u).threads)
        );
        if problem.is_some() {
            let _ = writeln!(out, "  memory   nothing to share  (of {}; reserved: {})", c.total_memory, c.reserves_text());
        } else {
            let _ = writeln!(
                out,
                "  memory   {}  {} of {}  {} left  (of {}; reserved: {})",
                bar(u.pinned.as_u64().into(), shareable.as_u64().into()),
                u.pinned,
                shareable,
                room(c, *u).memory,
                c.total_memory,
                c.reserves_text()
            );
        }
        let _ = writeln!(out, "  clients  {}  {} of {}", bar(u.clients.into(), c.max_clients.into()), u.clients, c.max_clients);
        let _ = writeln!(out, "  live     {}", live_text(c));
        render_queue(&mut out, &s.queue, now);
        if s.holders.is_empty() {
            let _ = writeln!(out, "  no reservations");
            continue;
        }
        let rows: Vec<[String; 7]> = s
            .holders
            .iter()
            .map(|(r, stale)| {
                [
                    crate::oci::short_id(&r.id).to_string(),
                    r.name.clone().unwrap_or_else(|| crate::oci::short_id(&r.id).to_string()),
                    // Rootless containers come through the broker, which records who; the rest are root's.
                    user_of(r.holder.as_ref()),
                    r.profile.clone(),
                    format!("{}%", r.threads),
                    r.pinned_bytes.to_string(),
                    age(now.saturating_sub(r.admitted_at)) + if *stale { "  stale: process gone" } else { "" },
                ]
            })
            .collect();
        let header = ["CONTAINER", "NAME", "USER", "PROFILE", "THREADS", "PINNED", "AGE"];
        let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0);
        let w: Vec<usize> = (0..6).map(width).collect();
        for row in std::iter::once(header.map(String::from)).chain(rows) {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {:>w5$}  {}",
                row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5]
            );
        }
    }
    out
}

/// Who a reservation or a place in the queue belongs to: the user the broker
/// recorded, else root.
fn user_of(holder: Option<&crate::model::Who>) -> String {
    holder.map_or_else(|| "root".to_string(), |h| h.user.clone().unwrap_or_else(|| h.uid.to_string()))
}

/// The queue of one GPU: position, container, profile, how long it waited
/// and may still wait, and what it waits for.
fn render_queue(out: &mut String, queue: &[&Waiting], now: u64) {
    if queue.is_empty() {
        return;
    }
    let _ = writeln!(out, "  queue    {} waiting", queue.len());
    for (i, w) in queue.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {}. {}  {}  {}  waited {}, {} left: {}{}",
            i + 1,
            w.label(),
            user_of(w.holder.as_ref()),
            w.profile,
            age(now.saturating_sub(w.queued_at)),
            age(w.until.saturating_sub(now)),
            w.waits_for,
            if w.cancelled { " (cancelled)" } else { "" }
        );
    }
}

/// What runs on the GPU outside the reservations, or that nobody can tell.
fn live_text(c: &GpuCapacity) -> String {
    match &c.outside {
        None => "unknown (no NVML): the check is ledger-only".into(),
        Some(list) if list.is_empty() => "nothing outside gpuwarden's reservations".into(),
        Some(_) => format!("outside gpuwarden: {} ({} beyond the reserves)", c.outside_text(), c.live_excess()),
    }
}

pub fn render_json(status: &[GpuStatus], now: u64) -> Value {
    let gpus: Vec<Value> = status
        .iter()
        .map(|s| {
            let (c, u) = (&s.capacity, &s.usage);
            let shareable = c.shareable_memory();
            json!({
                "index": c.index,
                "uuid": c.uuid,
                "name": c.name,
                "threads": {"used": u.threads, "ceiling": c.thread_ceiling, "left": room(c, *u).threads},
                "pinned_memory": {
                    "used_bytes": u.pinned.as_u64(),
                    "shareable_bytes": shareable.as_u64(),
                    "left_bytes": room(c, *u).memory.as_u64(),
                    "total_bytes": c.total_memory.as_u64(),
                },
                "clients": {"used": u.clients, "max": c.max_clients},
                "problem": c.reserves_problem(),
                "live": match &c.outside {
                    None => json!({"known": false}),
                    Some(list) => json!({"known": true, "outside": list, "beyond_reserves_bytes": c.live_excess().as_u64()}),
                },
                "reserves": c.reserves.iter().map(|(k, v)| (k.clone(), json!(v.as_u64()))).collect::<serde_json::Map<_, _>>(),
                "reservations": s.holders.iter().map(|(r, stale)| {
                    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                    v["age_seconds"] = json!(now.saturating_sub(r.admitted_at));
                    v["stale"] = json!(stale);
                    v
                }).collect::<Vec<_>>(),
                "queue": s.queue.iter().enumerate().map(|(i, w)| {
                    // The reservation it asks for, with its place in the queue beside.
                    let mut v = serde_json::to_value(&w.asks).unwrap_or(Value::Null);
                    if let Value::Object(place) = serde_json::to_value(w).unwrap_or(Value::Null) {
                        place.into_iter().filter(|(k, _)| k != "asks").for_each(|(k, x)| v[k] = x);
                    }
                    v["position"] = json!(i + 1);
                    v["waited_seconds"] = json!(now.saturating_sub(w.queued_at));
                    v["left_seconds"] = json!(w.until.saturating_sub(now));
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "gpus": gpus })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_queue_is_listed_in_the_order_it_is_served() {
        let inv = builtin("rtx4070").unwrap();
        let config = Config::default();
        let mut ledger = Ledger::default();
        let uuid = inv.gpus[0].uuid.clone();
        for (id, profile, at) in [("c0ffee00112233", "comfyui", 100), ("b1e0de00112233", "blender", 150)] {
            let holder = Some(crate::model::Who::new(1000, Some("ana".into())));
            let asks = Reservation { id: id.into(), name: None, profile: profile.into(), gpus: vec![uuid.clone()], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 5, admitted_at: at, holder };
            ledger.queue.push(Waiting { asks, waiter: 2, waiter_start: 5, queued_at: at, until: at + 200, waits_for: "GPU 0 (RTX 4070): needs 3.0 GiB pinned memory".into(), cancelled: false });
        }
        let status = gather(&inv, &config, &ledger, &FakeProcesses(HashMap::new()));
        let text = render_text(&status, 200);
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.contains("queue")).take(3).collect();
        assert_eq!(lines, [
            "  queue    2 waiting",
            "    1. b1e0de001122  ana  blender  waited 50s, 2m30s left: GPU 0 (RTX 4070): needs 3.0 GiB pinned memory",
            "    2. c0ffee001122  ana  comfyui  waited 1m40s, 1m40s left: GPU 0 (RTX 4070): needs 3.0 GiB pinned memory",
        ], "{text}");
        let v = render_json(&status, 200);
        let q = &v["gpus"][0]["queue"];
        assert_eq!((q[0]["position"].clone(), q[0]["profile"].clone(), q[0]["waited_seconds"].clone(), q[1]["left_seconds"].clone()), (json!(1), json!("blender"), json!(50), json!(100)));
    }

    use super::*;
    use crate::host::inventory::builtin;
    use crate::ledger::tests::FakeProcesses;
    use crate::base::size::ByteSize;
    use std::collections::HashMap;

    #[test]
    fn shows_use_left_reserves_holders_and_staleness() {
        let inv = builtin("rtx4070").unwrap();
        let config = Config::parse("[budget.reserves]\nsteam = \"4GiB\"\nsystem = \"512MiB\"\n", std::path::Path::new("c")).unwrap();
        let mut ledger = Ledger::default();
        for (id, pid) in [("77aa00112233aa", 1), ("9b1e00112233bb", 2)] {
            ledger.insert(Reservation { id: id.into(), name: None, profile: "comfyui".into(), gpus: vec![inv.gpus[0].uuid.clone()], threads: 25, pinned_bytes: ByteSize::gib(3), pid, pid_start: 5, admitted_at: 100, holder: None });
        }
        let procs = FakeProcesses(HashMap::from([(1, 5)]));
        let status = gather(&inv, &config, &ledger, &procs);
        let text = render_text(&status, 233);
        assert!(text.contains("50% of 100%"), "{text}");
        assert!(text.contains("6.0 GiB of 7.5 GiB  1.5 GiB left  (of 12.0 GiB; reserved: steam 4.0 GiB, system 0.5 GiB)"), "{text}");
        assert!(text.contains("2 of 48"), "{text}");
        assert!(text.contains("live     unknown (no NVML): the check is ledger-only"), "{text}");
        assert!(text.contains("77aa00112233") && text.contains("2m13s"), "{text}");
        let header = text.lines().find(|l| l.contains("CONTAINER")).unwrap_or_else(|| panic!("no column headers: {text}"));
        assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["CONTAINER", "NAME", "USER", "PROFILE", "THREADS", "PINNED", "AGE"]);
        let row = text.lines().find(|l| l.contains("77aa00112233")).unwrap();
        assert_eq!(row.split_whitespace().take(3).collect::<Vec<_>>(), ["77aa00112233", "77aa00112233", "root"], "no name: the id stands in; no holder: root's");
        assert_eq!(text.matches("stale: process gone").count(), 1, "{text}");
        assert!(!text.contains("queue"), "no queue, no line: {text}");
        let v = render_json(&status, 233);
        assert_eq!(v["gpus"][0]["pinned_memory"]["left_bytes"], ByteSize::mib(1536).as_u64());
        assert_eq!(v["gpus"][0]["queue"], json!([]));
        assert_eq!(v["gpus"][0]["reservations"][1]["stale"], true);
    }

    #[test]
    fn reserves_larger_than_the_gpu_are_said_not_shown_as_zero() {
        let inv = builtin("rtx4070").unwrap();
        let config = Config::parse("[budget.reserves]\nsteam = \"40GiB\"\n", std::path::Path::new("c")).unwrap();
        let ledger = Ledger::default();
        let status = gather(&inv, &config, &ledger, &FakeProcesses(HashMap::new()));
        let text = render_text(&status, 0);
        assert!(text.contains("! GPU 0 (RTX 4070) has 12.0 GiB and the reserves (steam 40.0 GiB) add up to 40.0 GiB"), "{text}");
        let v = render_json(&status, 0);
        assert!(v["gpus"][0]["problem"].as_str().unwrap().contains("leaves nothing to share"));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(133), "2m13s");
        assert_eq!(age(7260), "2h01m");
        assert_eq!(age(90000), "1d01h");
        assert_eq!(bar(0, 10), format!("[{}]", ".".repeat(BAR)));
    }
}
