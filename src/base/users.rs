//! Local users and groups, read from `/etc/passwd` and `/etc/group` directly.
//! The runtime side is linked statically, and glibc's name service (NSS)
//! cannot be used from a static binary (`getgrouplist` crashed the broker),
//! so the files are parsed here; users only a network directory knows are
//! known by uid alone.

use std::path::Path;

/// A user from `passwd`: name and primary gid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account of `uid` in `passwd` text.
pub fn account_by_uid(passwd: &str, uid: u32) -> Option<Account> {
    accounts(passwd).find(|a| a.uid == uid)
}

/// The account named `name` in `passwd` text.
pub fn account_by_name(passwd: &str, name: &str) -> Option<Account> {
    accounts(passwd).find(|a| a.name == name)
}

fn accounts(passwd: &str) -> impl Iterator<Item = Account> + '_ {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && !f[0].is_empty()).then(|| Some(Account { name: f[0].to_string(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })).flatten()
    })
}

/// The names of the groups `account` is in, by `group` text: its primary
/// group and every group that lists it as a member.
pub fn groups_of(group: &str, account: &Account) -> Vec<String> {
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (name, gid, members) = (*f.first()?, f.get(2)?.parse::<u32>().ok()?, f.get(3).copied().unwrap_or(""));
            (gid == account.gid || members.split(',').any(|m| m == account.name)).then(|| name.to_string())
        })
        .collect()
}

/// The gid of group `name` and the uids of its members (listed in it, or
/// with it as their primary group), by `passwd` and `group` text.
pub fn group_members(passwd: &str, group: &str, name: &str) -> Option<(u32, Vec<u32>)> {
    let line = group.lines().find(|l| l.split(':').next() == Some(name))?;
    let f: Vec<&str> = line.split(':').collect();
    let gid: u32 = f.get(2)?.parse().ok()?;
    let listed: Vec<&str> = f.get(3).copied().unwrap_or("").split(',').filter(|m| !m.is_empty()).collect();
    let uids = accounts(passwd).filter(|a| a.gid == gid || listed.contains(&a.name.as_str())).map(|a| a.uid).collect();
    Some((gid, uids))
}

/// The account of `uid` and its groups, from `root`'s `/etc/passwd` and `/etc/group`.
pub fn lookup(root: &Path, uid: u32) -> Option<(Account, Vec<String>)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).ok()?;
    let account = account_by_uid(&passwd, uid)?;
    let groups = groups_of(&std::fs::read_to_string(root.join("etc/group")).unwrap_or_default(), &account);
    Some((account, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nana:x:1000:1000:Ana,,,:/home/ana:/bin/bash\nbroken line\nbob:x:notanumber:1:::\n";
    const GROUP: &str = "root:x:0:\nana:x:1000:\ngpu-users:x:990:bob,ana\nvideo:x:44:bob\n";

    #[test]
    fn users_and_their_groups_come_from_the_files() {
        let ana = account_by_uid(PASSWD, 1000).unwrap();
        assert_eq!(ana, Account { name: "ana".into(), uid: 1000, gid: 1000 });
        assert_eq!(account_by_name(PASSWD, "root").unwrap().uid, 0);
        assert_eq!(account_by_uid(PASSWD, 4242), None);
        assert_eq!(account_by_name(PASSWD, "bob"), None, "a malformed line is skipped");
        assert_eq!(groups_of(GROUP, &ana), ["ana", "gpu-users"]);
    }

    #[test]
    fn this_hosts_root_is_found() {
        let (root, groups) = lookup(Path::new("/"), 0).unwrap();
        assert_eq!(root.name, "root");
        assert!(groups.contains(&"root".to_string()), "{groups:?}");
    }
}
