//! A refusal: which container (as refusals name it), under which profile,
//! and a typed kind. The kind says whether it is a verdict on the container
//! or input that could not be read, and words the line the user reads.

use std::fmt;

use super::access::AccessError;
use super::waiter::WaitError;
use crate::config::{ConfigError, WaitTime};
use crate::host::inventory::InventoryError;
use crate::host::mps::admission::MpsRefusal;
use crate::ledger::LedgerError;
use crate::oci::StateError;
use crate::profile::conform::Violation;
use crate::profile::rewrite::RewriteError;

/// Why a container was not admitted.
#[derive(Debug)]
pub struct Refusal {
    /// The container as refusals name it (`3f2a1c4d5e6f comfy-1`); empty
    /// when the input could not be read far enough to tell.
    pub id: String,
    /// Its profile, once known.
    pub profile: Option<String>,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    /// The OCI state could not be read.
    State(StateError),
    /// The bundle's config could not be read.
    Config(crate::oci::ConfigError),
    /// The OCI state has no pid: the hook runs at the wrong stage.
    NoPid,
    /// The reason precreate left in the config.
    Precreate(String),
    /// The profile it names is unknown, or it names two.
    Profile(RewriteError),
    /// gpuwarden's configuration could not be read.
    Settings(ConfigError),
    /// It does not keep to its profile.
    Violation(Violation),
    /// Its process, or its GPUs, do not allow a share (a dead process, an
    /// unknown GPU, reserves larger than the GPU).
    Unfit(String),
    /// The watchdog is required and does not look.
    Watchdog(String),
    /// It left the queue: its runtime or its process is gone.
    Left(String),
    /// Its user may not use the profile, or hold more.
    Access(AccessError),
    /// Its wait cannot be read.
    Wait(WaitError),
    /// `gpuwarden queue cancel` took it out of the queue after `waited` seconds.
    Cancelled { waited: u64 },
    /// Its id or its first process is another holder's.
    Taken(String),
    /// The broker does not act for this caller on this container.
    Caller(String),
    /// MPS would not hold.
    Mps(MpsRefusal),
    Inventory(InventoryError),
    Ledger(LedgerError),
    /// Its share is not free on GPU `on`; `waited`: it waited that many
    /// seconds of the wait it asked for.
    Budget { on: String, detail: String, waited: Option<(u64, WaitTime)> },
}

impl Refusal {
    pub fn new(id: impl Into<String>, profile: Option<&str>, kind: Kind) -> Refusal {
        Refusal { id: id.into(), profile: profile.map(str::to_owned), kind }
    }

    /// A verdict on the container (its profile, its conformance, the GPU,
    /// MPS, the budget), as opposed to input or state that could not be read.
    pub fn is_verdict(&self) -> bool {
        !matches!(self.kind, Kind::State(_) | Kind::Config(_) | Kind::Settings(_) | Kind::Inventory(_) | Kind::Ledger(_))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.id;
        let profile = self.profile.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
        match &self.kind {
            Kind::State(e) => write!(f, "{e}"),
            Kind::Config(e) if id.is_empty() => write!(f, "{e}"),
            Kind::Budget { on, detail, waited: None } => write!(f, "refused {id}{profile} on {on}: {detail}"),
            Kind::Budget { on, detail, waited: Some((seconds, wait)) } => {
                write!(f, "refused {id}{profile} after waiting {seconds} s ({}={wait}) on {on}: {detail}", super::waiter::WAIT_ANNOTATION)
            }
            kind => {
                write!(f, "refused {id}{profile}: ")?;
                match kind {
                    Kind::Config(e) => write!(f, "{e}"),
                    Kind::NoPid => write!(f, "the OCI state has no pid; run this hook at createRuntime or prestart"),
                    Kind::Precreate(why) | Kind::Unfit(why) | Kind::Watchdog(why) | Kind::Left(why) | Kind::Taken(why) | Kind::Caller(why) => write!(f, "{why}"),
                    Kind::Profile(e) => write!(f, "{e}"),
                    Kind::Settings(e) => write!(f, "{e}"),
                    Kind::Violation(v) => write!(f, "{v}"),
                    Kind::Access(e) => write!(f, "{e}"),
                    Kind::Wait(e) => write!(f, "{e}"),
                    Kind::Cancelled { waited } => write!(f, "taken out of the queue with `gpuwarden queue cancel` after waiting {waited} s"),
                    Kind::Mps(e) => write!(f, "MPS would not hold: {e}"),
                    Kind::Inventory(e) => write!(f, "the GPUs are unknown: {e}"),
                    Kind::Ledger(e) => write!(f, "{e}"),
                    Kind::State(_) | Kind::Budget { .. } => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_container_and_its_profile_and_its_kind_tells_a_verdict() {
        let r = Refusal::new("3f2a1c4d5e6f comfy-1", Some("comfyui"), Kind::Unfit("the container's process 7 is gone".into()));
        assert_eq!(r.to_string(), "refused 3f2a1c4d5e6f comfy-1 (comfyui): the container's process 7 is gone");
        assert!(r.is_verdict());
        let r = Refusal::new("3f2a1c4d5e6f", None, Kind::NoPid);
        assert_eq!(r.to_string(), "refused 3f2a1c4d5e6f: the OCI state has no pid; run this hook at createRuntime or prestart");
        let waited = Refusal::new("c1", Some("comfyui"), Kind::Budget { on: "GPU 0".into(), detail: "needs 3.0 GiB".into(), waited: Some((5, WaitTime::seconds(5))) });
        assert_eq!(waited.to_string(), "refused c1 (comfyui) after waiting 5 s (gpuwarden.io/wait=5s) on GPU 0: needs 3.0 GiB");
        let unread = Refusal::new("", None, Kind::State(StateError::Empty));
        assert!(!unread.is_verdict() && unread.to_string().starts_with("no OCI state on stdin"));
    }
}
