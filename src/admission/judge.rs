//! One look at the ledger: whether a container fits now, beside the
//! holders and the queue. The rules that waiting does not change (a user's
//! cap) refuse; a game on its GPU (when its profile yields to games), a
//! place ahead of it in the queue, or the budget of a GPU hold it back. It
//! reads the watchdog's state once per look, and the clock not at all: the
//! caller's look has its one `now`.

use super::budget;
use super::gates::Gated;
use super::host::Host;
use super::request::Request;
use super::error::Kind;
use crate::config::WaitTime;
use crate::ledger::Ledger;

/// Why a container is not admitted at this look.
pub enum Blocked {
    /// A rule that waiting does not change (a user's cap).
    Refuse(Kind),
    /// Its share is not free on a GPU (`on`: `GPU 0 (RTX 4070)`), for `detail`.
    Wait { on: String, detail: String },
}

/// Whether the container fits now, beside the ledger's holders: its user's
/// cap, the budget of each GPU; and, when it may wait, no game on its GPUs
/// (if its profile yields to games) and nobody ahead of it in the queue.
pub fn judge(ledger: &Ledger, request: &Request, g: &Gated, now: u64, host: &dyn Host) -> Result<(), Blocked> {
    let waits = g.wait > WaitTime::NONE;
    if let (Some(who), Some(cap)) = (&request.who, &g.config.budget.per_user) {
        super::access::within_cap(who, cap, &ledger.held_by(who.uid), &g.share, g.shareable).map_err(|e| Blocked::Refuse(Kind::Access(e)))?;
    }
    let game = if waits && g.config.watch.yield_to_games.contains(&g.profile) {
        let watch = host.watch(&g.config);
        if watch.is_fresh(now) { watch.unknown.into_iter().filter(|u| u.game).collect() } else { Vec::new() }
    } else {
        Vec::new()
    };
    for gpu in &g.gpus {
        if let Some(game) = game.iter().find(|u| u.gpu == gpu.uuid) {
            let detail = format!("a game runs: {} (profile {} yields to games)", crate::host::watched::game_label(&game.name, game.pid), g.profile);
            return Err(Blocked::Wait { on: gpu.describe(), detail });
        }
        let ahead = crate::ledger::queue::ahead(&ledger.queue, &request.state.id, &g.profile, std::slice::from_ref(&gpu.uuid), &g.config.watch.priority);
        if let Some(first) = ahead.first() {
            let more = if ahead.len() > 1 { format!(" and {} more", ahead.len() - 1) } else { String::new() };
            let hint = if waits { "" } else { "; to wait for the share, set gpuwarden.io/wait or GPUWARDEN_WAIT" };
            return Err(Blocked::Wait { on: gpu.describe(), detail: format!("{} ({}) waits ahead of it in the queue{more}{hint}", first.label(), first.profile) });
        }
        // What runs on the GPU outside the reservations counts beyond the reserves.
        let gpu = gpu.clone().leave_out(|pid| ledger.holds_process(host.processes(), pid));
        let holders = ledger.on_gpu(&gpu.uuid);
        if let Err(shortfall) = budget::check(&gpu, &holders, &g.share) {
            return Err(Blocked::Wait { on: gpu.describe(), detail: budget::refusal_detail(&gpu, &shortfall, &holders) });
        }
    }
    Ok(())
}
