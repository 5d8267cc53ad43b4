//! Who may use what: which local users and groups may use a profile
//! (`[profiles.NAME] allow`), and how much of the GPUs one user may hold in
//! all (`[budget] per_user`). Checked for the containers the admission broker
//! admits for a user; root's (rootful) containers are the administrator's.
//! With neither set, everyone may use every profile: a one-person desktop
//! needs no extra step.

use serde::{Deserialize, Serialize};

use crate::config::{Percent, Profile};
use crate::ledger::Reservation;
use crate::rewrite::Share;
use crate::size::ByteSize;

/// A user, as the kernel named the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub user: Option<String>,
    /// The groups the user is in, by name.
    pub groups: Vec<String>,
}

impl Who {
    /// `user ana (uid 1000)`, or `uid 1000`.
    pub fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("user {u} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// The most one user may hold across the GPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_memory: Option<ByteSize>,
}

/// Whether `who` may use `profile` (named `name`): its `allow` list is empty
/// (everyone), or names the user or one of their groups (`@group`).
pub fn may_use(who: &Who, name: &str, profile: &Profile) -> Result<(), String> {
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
    Err(format!("{} may not use profile {name}: [profiles.{name}] allow = [{rule}] in gpuwarden's config.toml", who.describe()))
}

/// Whether `who`, holding `held`, may hold `share` more under `cap`.
pub fn within_cap(who: &Who, cap: &UserCap, held: &[&Reservation], share: &Share) -> Result<(), String> {
    let threads: u32 = held.iter().map(|r| r.threads).sum::<u32>() + share.threads;
    let pinned = ByteSize::bytes(held.iter().map(|r| r.pinned_bytes.as_u64()).sum::<u64>() + share.pinned.as_u64());
    let over_threads = cap.threads.is_some_and(|c| threads > c.get());
    let over_pinned = cap.pinned_memory.is_some_and(|c| pinned > c);
    if !(over_threads || over_pinned) {
        return Ok(());
    }
    let limit = [cap.threads.map(|t| format!("threads = {}", t.get())), cap.pinned_memory.map(|p| format!("pinned_memory = \"{p}\""))].into_iter().flatten().collect::<Vec<_>>().join(", ");
    Err(format!(
        "{} would hold {threads}% and {pinned} in {} containers, more than [budget] per_user allows ({limit})",
        who.describe(),
        held.len() + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let e = may_use(&ana(&["users"]), "comfyui", &p).unwrap_err();
        assert_eq!(e, "user ana (uid 1000) may not use profile comfyui: [profiles.comfyui] allow = [\"@gpu-users\", \"bob\"] in gpuwarden's config.toml");
    }

    #[test]
    fn a_users_total_is_capped() {
        let held = Reservation { id: "a".into(), name: None, profile: "comfyui".into(), gpus: vec![], threads: 25, pinned_bytes: ByteSize::gib(3), pid: 1, pid_start: 1, admitted_at: 0, holder: None };
        let share = Share { threads: 25, pinned: ByteSize::gib(3) };
        let cap = UserCap { threads: Some(Percent::new(50).unwrap()), pinned_memory: Some(ByteSize::gib(5)) };
        let e = within_cap(&ana(&[]), &cap, &[&held], &share).unwrap_err();
        assert_eq!(e, "user ana (uid 1000) would hold 50% and 6.0 GiB in 2 containers, more than [budget] per_user allows (threads = 50, pinned_memory = \"5.0 GiB\")");
        assert!(within_cap(&ana(&[]), &cap, &[], &share).is_ok());
        assert!(within_cap(&ana(&[]), &UserCap::default(), &[&held, &held, &held], &share).is_ok(), "no cap: no limit");
    }
}
