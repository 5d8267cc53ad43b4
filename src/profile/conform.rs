//! Conformance: does a container keep to its profile? Checked at admission,
//! so a container that skipped the precreate rewrite (or undid it) is caught
//! before it runs. Pure: the config in, a claim or the broken rule out.

use std::fmt;

use crate::config::Profile;
use crate::host::mps;
use crate::oci::ContainerConfig;
use crate::model::Share;

/// The rules a profile container must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    NotPrivileged,
    ReadOnlyRoot,
    NoNewPrivileges,
    Capabilities,
    HasGpu,
    MpsLimits,
    Launcher,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NotPrivileged => "not-privileged",
            Rule::ReadOnlyRoot => "read-only-root",
            Rule::NoNewPrivileges => "no-new-privileges",
            Rule::Capabilities => "capabilities",
            Rule::HasGpu => "gpu-device",
            Rule::MpsLimits => "mps-limits",
            Rule::Launcher => "launcher",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "breaks rule {}: {}", self.rule, self.detail)
    }
}

const PRECREATE_HINT: &str = "is the precreate hook installed? (gpuwarden podman install-hook)";

/// Checks `cfg` against `profile`; the share it may claim, or the first rule it breaks.
pub fn conform(cfg: &ContainerConfig, profile_name: &str, profile: &Profile) -> Result<Share, Violation> {
    let broke = |rule, detail: String| Err(Violation { rule, detail });
    if cfg.is_privileged() {
        return broke(Rule::NotPrivileged, "privileged containers may open every device; run without --privileged".into());
    }
    if !cfg.root_readonly() {
        return broke(Rule::ReadOnlyRoot, format!("the root filesystem is writable; run with --read-only, or {PRECREATE_HINT}"));
    }
    if !cfg.no_new_privileges() {
        return broke(Rule::NoNewPrivileges, format!("run with --security-opt no-new-privileges, or {PRECREATE_HINT}"));
    }
    let allowed: Vec<String> = profile.capabilities.iter().map(|c| c.to_string()).collect();
    let mut extra: Vec<String> = cfg.capability_sets().into_iter().flat_map(|(_, caps)| caps).filter(|c| !allowed.contains(c)).collect();
    extra.sort();
    extra.dedup();
    if !extra.is_empty() {
        let allowed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        return broke(
            Rule::Capabilities,
            format!("keeps {}, which profile {profile_name} does not allow (allowed: {allowed}); drop them, e.g. --cap-drop ALL", extra.join(", ")),
        );
    }
    let gpus = cfg.gpu_minors();
    if gpus.is_empty() {
        return broke(Rule::HasGpu, format!("no /dev/nvidiaN device; start it with --device nvidia.com/gpu={profile_name}"));
    }
    let share = mps_share(cfg, profile_name, profile, gpus.len()).map_err(|detail| Violation { rule: Rule::MpsLimits, detail })?;
    if crate::profile::launch::workload(&cfg.args()).is_none() {
        return broke(
            Rule::Launcher,
            format!("its first argument is not gpuwarden's launcher ({}), so profile {profile_name}'s Landlock rules would be skipped; {PRECREATE_HINT}", crate::hookcall::LAUNCHER_PATH),
        );
    }
    Ok(share)
}

/// The share the MPS env enforces, if it is present, complete and within the profile.
fn mps_share(cfg: &ContainerConfig, profile_name: &str, profile: &Profile, gpus: usize) -> Result<Share, String> {
    let threads = cfg.env(mps::THREADS_ENV).ok_or_else(|| format!("{} is not set; {PRECREATE_HINT}", mps::THREADS_ENV))?;
    let threads: u32 = threads
        .parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0 && *t <= 100.0)
        .map(|t| t.ceil() as u32)
        .ok_or_else(|| format!("{}={threads} is not a percentage", mps::THREADS_ENV))?;
    if threads > profile.threads.get() {
        return Err(format!("{}={threads} exceeds profile {profile_name}'s {}", mps::THREADS_ENV, profile.threads));
    }
    let raw = cfg.env(mps::PINNED_ENV).ok_or_else(|| format!("{} is not set; {PRECREATE_HINT}", mps::PINNED_ENV))?;
    let limits = mps::parse_pinned_limits(raw).map_err(|e| format!("{}={raw}: {e}", mps::PINNED_ENV))?;
    let mut pinned = None;
    for ordinal in 0..gpus as u32 {
        let limit = limits.iter().find(|(o, _)| *o == ordinal).map(|(_, l)| *l).ok_or_else(|| {
            format!("{}={raw} sets no limit for device {ordinal} of the container's {gpus}", mps::PINNED_ENV)
        })?;
        if limit > profile.pinned_memory.size() {
            return Err(format!("{}={raw} exceeds profile {profile_name}'s {}", mps::PINNED_ENV, profile.pinned_memory.size()));
        }
        pinned = pinned.max(Some(limit));
    }
    Ok(Share { threads, pinned: pinned.unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::oci::tests_support::podman_like;
    use crate::profile::rewrite::apply_profile;
    use crate::base::size::ByteSize;

    fn rewritten() -> ContainerConfig {
        let mut cfg = podman_like();
        apply_profile(&mut cfg, &Config::default()).unwrap();
        cfg
    }

    fn edit(cfg: &ContainerConfig, f: impl FnOnce(&mut serde_json::Value)) -> ContainerConfig {
        let mut v: serde_json::Value = serde_json::from_slice(&cfg.to_json()).unwrap();
        f(&mut v);
        ContainerConfig::parse(&serde_json::to_vec(&v).unwrap(), "t").unwrap()
    }

    fn rule_of(cfg: &ContainerConfig) -> Rule {
        let c = Config::default();
        conform(cfg, "comfyui", c.profile("comfyui").unwrap()).unwrap_err().rule
    }

    #[test]
    fn a_rewritten_container_conforms_and_claims_its_share() {
        let c = Config::default();
        let share = conform(&rewritten(), "comfyui", c.profile("comfyui").unwrap()).unwrap();
        assert_eq!(share, Share { threads: 25, pinned: ByteSize::gib(3) });
    }

    #[test]
    fn each_rule_is_enforced() {
        let ok = rewritten();
        assert_eq!(rule_of(&podman_like()), Rule::ReadOnlyRoot, "precreate skipped");
        assert_eq!(rule_of(&edit(&ok, |v| v["process"]["noNewPrivileges"] = false.into())), Rule::NoNewPrivileges);
        assert_eq!(rule_of(&edit(&ok, |v| v["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_SYS_ADMIN"]))), Rule::Capabilities);
        assert_eq!(rule_of(&edit(&ok, |v| v["linux"]["resources"]["devices"] = serde_json::json!([{"allow": true, "access": "rwm"}]))), Rule::NotPrivileged);
        assert_eq!(rule_of(&edit(&ok, |v| v["linux"]["devices"] = serde_json::json!([]))), Rule::HasGpu);
        assert_eq!(rule_of(&edit(&ok, |v| v["process"]["env"] = serde_json::json!(["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G"]))), Rule::MpsLimits);
        assert_eq!(rule_of(&edit(&ok, |v| v["process"]["env"] = serde_json::json!(["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25"]))), Rule::MpsLimits);
        assert_eq!(rule_of(&edit(&ok, |v| v["process"]["args"] = serde_json::json!(["/bin/sh"]))), Rule::Launcher, "the launcher skipped");
    }

    #[test]
    fn limits_above_the_profile_are_refused_with_the_numbers() {
        let c = Config::default();
        let bigger = edit(&rewritten(), |v| v["process"]["env"] = serde_json::json!(["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G"]));
        let e = conform(&bigger, "comfyui", c.profile("comfyui").unwrap()).unwrap_err().to_string();
        assert_eq!(e, "breaks rule mps-limits: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50 exceeds profile comfyui's 25%");
        let bigger = edit(&rewritten(), |v| v["process"]["env"] = serde_json::json!(["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8G"]));
        let e = conform(&bigger, "comfyui", c.profile("comfyui").unwrap()).unwrap_err().to_string();
        assert!(e.contains("exceeds profile comfyui's 3.0 GiB"), "{e}");
    }

    #[test]
    fn every_extra_capability_is_named() {
        let c = Config::default();
        let cfg = edit(&rewritten(), |v| {
            v["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_ADMIN", "CAP_CHOWN"]);
            v["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_SYS_ADMIN"]);
        });
        let e = conform(&cfg, "comfyui", c.profile("comfyui").unwrap()).unwrap_err().to_string();
        assert!(e.starts_with("breaks rule capabilities: keeps CAP_CHOWN, CAP_SYS_ADMIN, which profile comfyui does not allow (allowed: none)"), "{e}");
    }

    #[test]
    fn a_capability_the_profile_allows_may_stay() {
        let c = Config::parse("[profiles.comfyui]\ncapabilities = [\"CAP_SYS_NICE\"]\n", std::path::Path::new("c")).unwrap();
        let cfg = edit(&rewritten(), |v| v["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_NICE"]));
        assert!(conform(&cfg, "comfyui", c.profile("comfyui").unwrap()).is_ok());
    }
}
