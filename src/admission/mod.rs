//! Admission: whether a container's share fits, for the hook (rootful) and
//! the broker (rootless users) alike. A [`Request`] (the OCI state, the
//! bundle's config, who asks) goes through the [`gates`] (profile,
//! conformance, access, GPUs, MPS, the watchdog), then `wait` takes its
//! share in the ledger (`judge`: one look), waiting for it in the queue when it may. The rules:
//! who may use a profile and how much one user may hold ([`access`]), and
//! the budget of one GPU ([`budget`]). A [`Refusal`] is the line the user
//! reads. Release (poststop) is `hook/release.rs`, for the hook and the broker.

// A refusal carries the container's id, its profile and the numbers the user
// reads; it is built at most once per container start, off the admitted path.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod budget;
mod host;
pub mod error;
pub mod gates;
mod judge;
pub mod request;
mod wait;
pub mod waiter;

#[cfg(test)]
mod tests;

pub use host::Host;
#[cfg(test)]
pub use host::fake::FakeHost;
pub use error::{Kind, Refusal};
pub use request::{Request, MAX_NAME};

use crate::model::Reservation;

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The container has no profile: not gpuwarden's to judge.
    NotGoverned,
    Admitted(Reservation),
}

/// Admits the container of `request`, or says why not.
pub fn admit(request: &Request, host: &dyn Host) -> Result<Admission, Refusal> {
    let Some(gated) = gates::pass(request, host)? else { return Ok(Admission::NotGoverned) };
    let reservation = wait::take(request, &gated, host)?;
    let store = host.store(&gated.config);
    tracing::info!("admitted {} ({}): {}%, {} in {}", reservation.label(), reservation.profile, reservation.threads, reservation.pinned_bytes, store.path().display());
    if !gated.config.mps.enabled {
        tracing::warn!("admitted {} ({}), but MPS is off ([mps] enabled = false): nothing limits it on the GPU, its share is bookkeeping only", reservation.label(), reservation.profile);
    }
    Ok(Admission::Admitted(reservation))
}

/// Counts a refusal for the watchdog's metrics: a verdict on a container is
/// appended to the events file; unreadable input is not.
pub fn record_refusal(e: &Refusal, host: &dyn Host) {
    if e.is_verdict() {
        record_event(host, "refused", crate::base::text::one_line(e));
    }
}

/// Appends an event of `kind` to the events file.
pub fn record_event(host: &dyn Host, kind: &str, detail: String) {
    let Ok(config) = host.settings() else { return };
    let event = crate::host::watched::events::Event { time: host.now(), kind: kind.into(), container: None, detail };
    let _ = crate::host::watched::events::append(&host.events_file(&config), &event);
}
