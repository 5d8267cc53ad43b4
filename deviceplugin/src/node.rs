//! The node as the plugin reads it: gpuwarden's config, the GPUs, and the
//! ledger, looked at every `poll` for a change of the slots.

use std::collections::BTreeMap;
use std::time::Duration;

use gpuwarden::base::proc::ProcFs;
use gpuwarden::config::Config;
use gpuwarden::ledger::LedgerStore;

use crate::slots::{slots, Slot};

/// What the plugin serves: the slots of every profile.
pub type Slots = BTreeMap<String, Vec<Slot>>;

pub struct Node {
    pub config: Config,
    /// `--inventory`, else config.toml's, else the snapshot `gpuwarden cdi generate` writes.
    pub inventory: Option<String>,
    pub store: LedgerStore,
    /// How many GPUs the inventory has (the CDI device names depend on it).
    pub gpus: usize,
}

impl Node {
    pub fn new(config: Config, inventory: Option<String>) -> Result<Node, String> {
        let inv = gpuwarden::hook::load_inventory(inventory.as_deref(), &config).map_err(|e| e.to_string())?;
        if inv.gpus.is_empty() {
            return Err("the inventory has no GPU: there is nothing to offer".into());
        }
        let store = LedgerStore::new(&config.state_dir);
        Ok(Node { gpus: inv.gpus.len(), config, inventory, store })
    }

    /// The slots now. A ledger that cannot be read offers nothing: the
    /// scheduler must not place pods on counts the node cannot vouch for.
    pub fn look(&self) -> Slots {
        let inv = gpuwarden::hook::load_inventory(self.inventory.as_deref(), &self.config);
        let ledger = self.store.read();
        match (inv, ledger) {
            (Ok(mut inv), Ok(ledger)) => {
                let now = gpuwarden::base::clock::unix_seconds();
                gpuwarden::host::live::merge(&mut inv, &self.config.live.file, now, self.config.live.max_age_seconds);
                slots(&self.config, &inv, &ledger, &ProcFs)
            }
            (inv, ledger) => {
                let why = inv.err().map(|e| e.to_string()).or(ledger.err().map(|e| e.to_string())).unwrap_or_default();
                tracing::error!("every slot is Unhealthy: {why}");
                self.config.profiles.keys().map(|p| (p.as_str().to_string(), Vec::new())).collect()
            }
        }
    }

    /// Looks every `poll` and publishes the slots when they change; ends
    /// when every receiver is gone.
    pub async fn watch(self: std::sync::Arc<Self>, tx: tokio::sync::watch::Sender<Slots>, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.look();
            tx.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    tracing::info!("slots changed: {}", summary(&now));
                    *old = now;
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    }
}

/// `blender 1/2, comfyui 3/4`: healthy of all, per profile.
pub fn summary(s: &Slots) -> String {
    s.iter().map(|(p, v)| format!("{p} {}/{}", v.iter().filter(|s| s.healthy).count(), v.len())).collect::<Vec<_>>().join(", ")
}
