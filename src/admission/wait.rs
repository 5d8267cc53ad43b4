//! The ledger's part: under its lock, stale holders and places reclaimed,
//! the container judged against the holders and the queue; it is admitted,
//! refused, or (when it asked to wait) takes a place in the queue and looks
//! again after each pause, until its share frees, its wait runs out, it is
//! cancelled, or whoever asked is gone.

use super::judge::{judge, Blocked};
use super::host::Host;
use super::error::{Kind, Refusal};
use super::gates::Gated;
use super::request::Request;
use crate::config::WaitTime;
use crate::ledger::LockedLedger;
use crate::model::{Reservation, Waiting};

/// Takes the share `gated` asks for in the ledger, waiting for it if it may.
pub fn take(request: &Request, gated: &Gated, host: &dyn Host) -> Result<Reservation, Refusal> {
    let id = &request.state.id;
    let refuse = |kind| Refusal::new(request.label.as_str(), Some(&gated.profile), kind);
    let store = host.store(&gated.config);
    let ledger_err = |e| refuse(Kind::Ledger(e));
    let who = request.who.as_ref();
    // What it holds once admitted, and asks for while it waits.
    let asks = Reservation {
        id: id.clone(),
        name: request.name.clone(),
        profile: gated.profile.clone(),
        gpus: gated.gpus.iter().map(|g| g.uuid.clone()).collect(),
        threads: gated.share.threads,
        pinned_bytes: gated.share.pinned,
        pid: gated.pid,
        pid_start: gated.pid_start,
        admitted_at: 0,
        holder: who.map(crate::model::Who::as_holder),
    };
    let wait = gated.wait;
    let started = host.now();
    let mut locked = loop {
        let mut locked = store.lock().map_err(ledger_err)?;
        let stale = locked.ledger.reclaim(host.processes());
        for r in &stale {
            tracing::warn!("reclaimed stale reservation {} ({}): process {} is gone", r.label(), r.profile, r.pid);
        }
        let left = locked.ledger.reclaim_queue(host.processes());
        for w in &left {
            tracing::warn!("{} ({}) left the queue: its container or its hook is gone", w.label(), w.profile);
        }
        // An id, and a container's first process, are one holder's: never replaced for another.
        if let Some(why) = locked.ledger.conflict(id, gated.pid, gated.pid_start, who.map(|w| w.uid)) {
            return Err(refuse(Kind::Taken(why)));
        }
        let replaced = locked.ledger.remove(id).is_some();
        let now = host.now();
        let (on, detail) = match judge(&locked.ledger, request, gated, now, host) {
            Ok(()) => break locked,
            Err(Blocked::Refuse(kind)) => return Err(leave(&mut locked, id, refuse(kind), ledger_err)),
            Err(Blocked::Wait { on, detail }) => (on, detail),
        };
        let waited = now.saturating_sub(started);
        if wait == WaitTime::NONE {
            if !stale.is_empty() {
                locked.save().map_err(ledger_err)?;
            }
            return Err(refuse(Kind::Budget { on, detail, waited: None }));
        }
        let mine = locked.ledger.place(id).map(|w| w.cancelled);
        if mine == Some(true) {
            return Err(leave(&mut locked, id, refuse(Kind::Cancelled { waited }), ledger_err));
        }
        if now >= started + wait.as_seconds() {
            return Err(leave(&mut locked, id, refuse(Kind::Budget { on, detail, waited: Some((waited, wait)) }), ledger_err));
        }
        let waits_for = format!("{on}: {detail}");
        // A waiter writes the ledger only when something changed: a look every 0.2 s is not a write every 0.2 s.
        let mut changed = replaced || !stale.is_empty() || !left.is_empty();
        if mine.is_some() {
            changed |= locked.ledger.update(id, &waits_for);
        } else {
            changed = true;
            if let (Some(who), Some(cap)) = (who, &gated.config.budget.per_user) {
                super::access::may_queue(who, cap, locked.ledger.waiting_for(who.uid)).map_err(|e| refuse(Kind::Access(e)))?;
            }
            tracing::info!("{} ({}) waits up to {wait} for its share: {waits_for}", request.label, gated.profile);
            locked.ledger.join(Waiting {
                asks: Reservation { admitted_at: started, ..asks.clone() },
                waiter: host.waiter().pid(),
                waiter_start: host.processes().start_time(host.waiter().pid()).unwrap_or(0),
                queued_at: started,
                until: started + wait.as_seconds(),
                waits_for,
                cancelled: false,
            });
        }
        if changed {
            locked.save().map_err(ledger_err)?;
        }
        drop(locked);
        let gone = if !host.waiter().pause() {
            Some("its runtime is gone")
        } else if host.processes().start_time(gated.pid) != Some(gated.pid_start) {
            Some("its process is gone")
        } else {
            None
        };
        if let Some(gone) = gone {
            let mut locked = store.lock().map_err(ledger_err)?;
            let why = format!("{gone}: it left the queue after waiting {} s", host.now().saturating_sub(started));
            return Err(leave(&mut locked, id, refuse(Kind::Left(why)), ledger_err));
        }
    };
    locked.ledger.leave(id);
    // Admitted now, which for a container that waited is later than the hook's start.
    let reservation = Reservation { admitted_at: host.now(), ..asks };
    locked.ledger.insert(reservation.clone());
    locked.save().map_err(ledger_err)?;
    Ok(reservation)
}

/// Takes container `id` off the queue and saves, then answers `e` (or why
/// the ledger could not be saved).
fn leave(locked: &mut LockedLedger, id: &str, e: Refusal, ledger_err: impl Fn(crate::ledger::LedgerError) -> Refusal) -> Refusal {
    locked.ledger.leave(id);
    match locked.save() {
        Ok(()) => e,
        Err(source) => ledger_err(source),
    }
}
