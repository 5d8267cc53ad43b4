//! The checks before the ledger, in the order a user would fix them: the
//! reason precreate left, the profile, gpuwarden's configuration, the
//! container against its profile, who may use it, its process, its GPUs,
//! MPS, the watchdog, and how long it may wait. None of them writes state.

use super::budget::GpuCapacity;
use super::host::Host;
use super::error::{Kind, Refusal};
use super::request::Request;
use super::waiter;
use crate::base::size::ByteSize;
use crate::config::{Config, WaitTime};
use crate::hookcall::REFUSAL_ANNOTATION;
use crate::model::Share;
use crate::profile::conform::conform;
use crate::profile::rewrite::{governing_profile, RewriteError};

/// A container that passed every gate: what the ledger judges it by.
pub struct Gated {
    pub config: Config,
    pub profile: String,
    pub share: Share,
    /// The GPUs it got, as the budget sees them.
    pub gpus: Vec<GpuCapacity>,
    /// The memory all GPUs have to share: what a per-user cap's share is of.
    pub shareable: ByteSize,
    pub pid: i32,
    pub pid_start: u64,
    /// How long it may wait for its share, within the engine's limit.
    pub wait: WaitTime,
}

/// Passes `request` through the gates: `None` for a container without a
/// profile (not gpuwarden's to judge).
pub fn pass(request: &Request, host: &dyn Host) -> Result<Option<Gated>, Refusal> {
    let cfg = &request.config;
    let label = request.label.as_str();
    if let Some(reason) = cfg.annotation(REFUSAL_ANNOTATION) {
        let profile = cfg.profile_name().ok().flatten();
        return Err(Refusal::new(label, profile, Kind::Precreate(reason.to_string())));
    }
    let Some(named) = cfg.profile_name().map_err(|e| Refusal::new(label, None, Kind::Profile(RewriteError::TwoProfiles(e))))? else {
        tracing::debug!("{label} has no gpuwarden profile: nothing to admit");
        return Ok(None);
    };
    let config = host.settings().map_err(|e| Refusal::new(label, Some(named), Kind::Settings(e)))?;
    let Some((profile, def)) = governing_profile(cfg, &config).map_err(|e| Refusal::new(label, None, Kind::Profile(e)))? else {
        return Ok(None);
    };
    let refuse = |kind| Refusal::new(label, Some(&profile), kind);
    let share = conform(cfg, &profile, def).map_err(|v| refuse(Kind::Violation(v)))?;
    if let Some(who) = &request.who {
        super::access::may_use(who, &profile, def).map_err(|e| refuse(Kind::Access(e)))?;
    }
    let pid = request.state.pid.ok_or_else(|| refuse(Kind::NoPid))?;
    let pid_start = host.processes().start_time(pid).ok_or_else(|| refuse(Kind::Unfit(format!("the container's process {pid} is gone"))))?;

    let inventory = host.inventory(&config).map_err(|e| refuse(Kind::Inventory(e)))?;
    let gpus = cfg
        .gpu_minors()
        .into_iter()
        .map(|minor| {
            let gpu = inventory.gpu_by_minor(minor).ok_or_else(|| refuse(Kind::Unfit(format!("/dev/nvidia{minor} is not a GPU of the inventory"))))?;
            let capacity = GpuCapacity::new(gpu, &config.budget);
            match capacity.reserves_problem() {
                Some(problem) => Err(refuse(Kind::Unfit(problem))),
                None => Ok(capacity),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shareable = inventory.gpus.iter().fold(ByteSize::ZERO, |a, g| a.saturating_add(GpuCapacity::new(g, &config.budget).shareable_memory()));

    if config.mps.enabled {
        // The uid its process runs as on the host: under rootless Podman, mapped by its user namespace.
        let host_uid = crate::base::proc::host_uid(host.processes().uid_map(pid).as_deref(), cfg.uid());
        crate::host::mps::admission::check(cfg, &config.mps, host.daemon(&config.mps), host_uid).map_err(|e| refuse(Kind::Mps(e)))?;
        // Its processes reach the daemon only through the pipe folder, which others cannot enter.
        host.grant(&config.mps, host_uid).map_err(|why| refuse(Kind::Mps(crate::host::mps::admission::MpsRefusal::Grant(why))))?;
    }
    if config.watch.required {
        let now = host.now();
        let watch = host.watch(&config);
        if !(watch.is_fresh(now) && watch.live) {
            let how = crate::host::watched::enforcement(&watch, now).replace("enforcement is at start only (admission); ", "");
            return Err(refuse(Kind::Watchdog(format!("the watchdog is required ([watch] required = true) and {how}"))));
        }
    }

    let asked = waiter::requested(cfg, def.wait).map_err(|e| refuse(Kind::Wait(e)))?;
    // Only a container that asks to wait costs a look at the processes above the hook.
    let (wait, cut) = if asked == WaitTime::NONE { (asked, None) } else { waiter::effective(asked, host.waiter().limit(host.processes())) };
    if let Some(warning) = cut {
        tracing::warn!("{label} ({profile}): {warning}");
    }
    Ok(Some(Gated { share, gpus, shareable, pid, pid_start, wait, profile, config }))
}
