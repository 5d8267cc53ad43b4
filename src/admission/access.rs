//! Who may use what: which local users and groups may use a profile
//! (`[profiles.NAME] allow`), and how much of the GPUs one user may hold in
//! all (`[budget] per_user`: by default 90% of the SMs and of the memory to
//! share, and 4 places in the queue, so that no one user holds the whole
//! GPU). Checked for the containers the admission broker admits for a user;
//! root's (rootful) containers are the administrator's. With no `allow`,
//! everyone may use every profile: a one-person desktop needs no extra step.

use crate::config::{Profile, UserCap};
use crate::model::{Reservation, Share, Who};
use crate::base::size::ByteSize;

/// Why a user may not have a share.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("{who} may not use profile {profile}: [profiles.{profile}] allow = [{rule}] in gpuwarden's config.toml")]
    NotAllowed { who: String, profile: String, rule: String },
    #[error("{who} would hold {threads}% and {pinned} in {containers} containers, more than [budget] per_user allows ({limit})")]
    OverCap { who: String, threads: u32, pinned: ByteSize, containers: usize, limit: String },
    #[error("{who} has {waiting} containers waiting in the queue, the most [budget] per_user allows (queued = {most}): one of them must start or be cancelled first")]
    QueueFull { who: String, waiting: usize, most: u32 },
}

/// Whether `who` may use `profile` (named `name`): its `allow` list is empty
/// (everyone), or names the user or one of their groups (`@group`).
pub fn may_use(who: &Who, name: &str, profile: &Profile) -> Result<(), AccessError> {
    if profile.allow.is_empty() {
        return Ok(());
    }
    let listed = profile.allow.iter().any(|a| match a.strip_prefix('@') {
        Some(group) => who.groups.iter().any(|g| g == group),
        None => who.user.as_deref() == Some(a.as_str()),
    });
    if listed {
        return Ok(());
    }
    let rule = profile.allow.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    Err(AccessError::NotAllowed { who: who.describe(), profile: name.to_string(), rule })
}

/// Whether `who`, holding `held`, may hold `share` more under `cap`, when
/// the GPUs have `shareable` memory to share in all.
pub fn within_cap(who: &Who, cap: &UserCap, held: &[&Reservation], share: &Share, shareable: ByteSize) -> Result<(), AccessError> {
    let threads: u32 = held.iter().map(|r| r.threads).sum::<u32>() + share.threads;
    let pinned = ByteSize::bytes(held.iter().map(|r| r.pinned_bytes.as_u64()).sum::<u64>() + share.pinned.as_u64());
    let over_threads = cap.threads.is_some_and(|c| threads > c.get());
    let over_pinned = cap.pinned_memory.is_some_and(|c| pinned > c.of(shareable));
    if !(over_threads || over_pinned) {
        return Ok(());
    }
    let limit = [cap.threads.map(|t| format!("threads = {}", t.get())), cap.pinned_memory.map(|p| format!("pinned_memory = \"{p}\""))].into_iter().flatten().collect::<Vec<_>>().join(", ");
    Err(AccessError::OverCap { who: who.describe(), threads, pinned, containers: held.len() + 1, limit })
}

/// Whether `who`, with `waiting` places in the queue, may take one more under `cap`.
pub fn may_queue(who: &Who, cap: &UserCap, waiting: usize) -> Result<(), AccessError> {
    match cap.queued {
        Some(most) if waiting >= most as usize => Err(AccessError::QueueFull { who: who.describe(), waiting, most }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CapMemory, Percent};
    use crate::config::Config;

    fn ana(groups: &[&str]) -> Who {
        Who { uid: 1000, user: Some("ana".into()), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn an_allow_list_admits_its_users_and_groups_and_names_itself_to_others() {
        let mut p = Config::default().profile("comfyui").unwrap().clone();
        assert!(may_use(&ana(&[]), "comfyui", &p).is_ok(), "no list: everyone");
        p.allow = vec!["@gpu-users".into(), "bob".into()];
        assert!(may_use(&ana(&["gpu-users"]), "comfyui", &p).is_ok());
        assert!(may_use(&Who { user: Some("bob".into()), ..ana(&[]) }, "comfyui", &p).is_ok());
        let e = may_use(&ana(&["users"]), "comfyui", &p).unwrap_err().to_string();
        assert_eq!(e, "user ana (uid 1000) may not use profile comfyui: [profiles.comfyui] allow = [\"@gpu-users\", \"bob\"] in gpuwarden's config.toml");
    }

    #[test]
    fn a_users_total_is_capped() {
        let held = Reservation { id: "a".into(), name: None, profile: "comfyui".into(), gpus: vec![], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 1, admitted_at: 0, holder: None };
        let share = Share { threads: 25, pinned: ByteSize::gib(3) };
        let cap = UserCap { threads: Some(Percent::new(50).unwrap()), pinned_memory: Some(CapMemory::Size(ByteSize::gib(5))), queued: None };
        let e = within_cap(&ana(&[]), &cap, &[&held], &share, ByteSize::gib(12)).unwrap_err().to_string();
        assert_eq!(e, "user ana (uid 1000) would hold 50% and 6.0 GiB in 2 containers, more than [budget] per_user allows (threads = 50, pinned_memory = \"5.0 GiB\")");
        assert!(within_cap(&ana(&[]), &cap, &[], &share, ByteSize::gib(12)).is_ok());
        assert!(within_cap(&ana(&[]), &UserCap::default(), &[&held, &held, &held], &share, ByteSize::gib(12)).is_ok(), "no cap: no limit");
        // The default: 90% of what the GPUs share. Three workers of 3 GiB fit in 11.5 GiB; on 7.5 GiB two do.
        let d = UserCap::default_cap();
        assert!(within_cap(&ana(&[]), &d, &[&held, &held], &share, ByteSize::mib(11 * 1024 + 512)).is_ok());
        let e = within_cap(&ana(&[]), &d, &[&held, &held], &share, ByteSize::mib(7 * 1024 + 512)).unwrap_err().to_string();
        assert!(e.ends_with("more than [budget] per_user allows (threads = 90, pinned_memory = \"90%\")"), "{e}");
        let e = within_cap(&ana(&[]), &d, &[&held, &held, &held], &share, ByteSize::gib(24)).unwrap_err().to_string();
        assert!(e.contains("would hold 100% and 12.0 GiB in 4 containers"), "the SMs too: {e}");
    }

    #[test]
    fn a_user_waits_in_a_few_places_at_most() {
        let d = UserCap::default_cap();
        assert!(may_queue(&ana(&[]), &d, 3).is_ok());
        let e = may_queue(&ana(&[]), &d, 4).unwrap_err().to_string();
        assert_eq!(e, "user ana (uid 1000) has 4 containers waiting in the queue, the most [budget] per_user allows (queued = 4): one of them must start or be cancelled first");
        assert!(may_queue(&ana(&[]), &UserCap::default(), 1000).is_ok());
    }

}
