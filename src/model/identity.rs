//! Who asks and who holds: one identity for the broker's caller, the access
//! rules' user and the ledger's holder, as the kernel names them.

use serde::{Deserialize, Serialize};

/// A local user: their uid, their name where the password file knows it,
/// and (for the access rules, not recorded in the ledger) their groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Who {
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The groups the user is in, by name (for `[profiles.NAME] allow`).
    #[serde(skip)]
    pub groups: Vec<String>,
}

impl Who {
    /// A user known by uid and name alone (no groups).
    pub fn new(uid: u32, user: Option<String>) -> Who {
        Who { uid, user, groups: Vec::new() }
    }

    /// The user as the ledger records them: uid and name, no groups.
    pub fn as_holder(&self) -> Who {
        Who::new(self.uid, self.user.clone())
    }

    /// `ana (uid 1000)`, or `uid 1000`: how a holder is named.
    pub fn named(&self) -> String {
        match &self.user {
            Some(u) => format!("{u} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }

    /// `user ana (uid 1000)`, or `uid 1000`: how a subject is named.
    pub fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("user {u} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_named_as_holder_and_as_subject_and_recorded_without_groups() {
        let ana = Who { uid: 1000, user: Some("ana".into()), groups: vec!["gpu".into()] };
        assert_eq!((ana.named().as_str(), ana.describe().as_str()), ("ana (uid 1000)", "user ana (uid 1000)"));
        assert_eq!(Who::new(7, None).named(), "uid 7");
        assert_eq!(serde_json::to_string(&ana.as_holder()).unwrap(), r#"{"uid":1000,"user":"ana"}"#);
        assert_eq!(serde_json::to_string(&ana).unwrap(), r#"{"uid":1000,"user":"ana"}"#, "groups are never recorded");
    }
}
