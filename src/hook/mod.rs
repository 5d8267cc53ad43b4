//! The OCI hooks: `precreate` (Podman's extension stage: rewrite the config),
//! `admit` (createRuntime or prestart: conform, then budget) and `release`
//! (poststop). Each takes its stdin as bytes and returns what to print, so
//! everything here is tested without a runtime.

mod admit;
mod precreate;
mod release;

pub use admit::{admit, AdmitError, Admission, HookEnv};
pub use precreate::{precreate, PrecreateError};
pub use release::{release, ReleaseError};

/// Annotations that may name a container (Podman 4.3 passes none; users may
/// set `gpuwarden.io/name`, Kubernetes sets its own).
const NAME_ANNOTATIONS: &[&str] = &["gpuwarden.io/name", "io.kubernetes.container.name", "io.kubernetes.cri-o.ContainerName"];

fn container_name(state: &crate::oci::HookState, cfg: &crate::oci::ContainerConfig) -> Option<String> {
    NAME_ANNOTATIONS
        .iter()
        .find_map(|k| state.annotations.get(*k).map(String::as_str).or_else(|| cfg.annotation(k)))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}
