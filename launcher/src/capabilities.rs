//! Capabilities: the workload keeps the profile's, and nothing else, in every
//! set. The precreate rewrite already cut them; this holds even if it did not
//! run, or can say why not.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

/// Drops every capability outside `keep` from all five sets, or says why it cannot.
pub fn keep_only(keep: &[String]) -> Result<(), String> {
    let keep: CapsHashSet = keep.iter().map(|c| Capability::from_str(c).map_err(|_| format!("unknown capability {c}"))).collect::<Result<_, _>>()?;
    let extra = |set| -> Result<HashSet<Capability>, String> {
        Ok(caps::read(None, set).map_err(|e| format!("cannot read capabilities: {e}"))?.difference(&keep).copied().collect())
    };
    // Ambient and bounding first: dropping from the bounding set needs CAP_SETPCAP in the effective set.
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear ambient capabilities: {e}"))?;
    for cap in extra(CapSet::Bounding)? {
        caps::drop(None, CapSet::Bounding, cap).map_err(|e| format!("the bounding set holds {cap}, which the profile does not allow, and cannot drop it ({e})"))?;
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let kept: CapsHashSet = caps::read(None, set).map_err(|e| e.to_string())?.intersection(&keep).copied().collect();
        caps::set(None, set, &kept).map_err(|e| format!("cannot narrow the {set:?} capabilities: {e}"))?;
    }
    for set in [CapSet::Bounding, CapSet::Effective, CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient] {
        let left = extra(set)?;
        if !left.is_empty() {
            return Err(format!("the {set:?} set still holds {left:?}"));
        }
    }
    Ok(())
}
