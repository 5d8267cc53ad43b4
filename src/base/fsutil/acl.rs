//! A folder's POSIX access ACL, as the kernel keeps it in the
//! `system.posix_acl_access` attribute: enough to let named users and
//! groups search a root-owned folder that others cannot enter (the MPS
//! pipe folder). Groups do not reach a rootless container's processes
//! (their runtime sets the container's own), so users are named one by one.

use std::collections::BTreeMap;
use std::path::Path;

const XATTR: &str = "system.posix_acl_access";
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;
/// Search (`x`) on a folder: enough to reach a socket whose name one knows.
pub const SEARCH: u16 = 1;

/// The entries that matter here: the mode's three classes, and named users and groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub owner: u16,
    pub users: BTreeMap<u32, u16>,
    pub group: u16,
    pub groups: BTreeMap<u32, u16>,
    pub other: u16,
}

impl Acl {
    /// The ACL a plain mode amounts to.
    pub fn from_mode(mode: u32) -> Acl {
        Acl { owner: ((mode >> 6) & 7) as u16, group: ((mode >> 3) & 7) as u16, other: (mode & 7) as u16, ..Acl::default() }
    }

    /// The kernel's encoding: a version, then entries sorted by tag and id,
    /// with a mask when any user or group is named.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        let mut push = |tag: u16, perm: u16, id: u32| {
            out.extend(tag.to_le_bytes());
            out.extend(perm.to_le_bytes());
            out.extend(id.to_le_bytes());
        };
        push(USER_OBJ, self.owner, UNDEFINED_ID);
        for (uid, perm) in &self.users {
            push(USER, *perm, *uid);
        }
        push(GROUP_OBJ, self.group, UNDEFINED_ID);
        for (gid, perm) in &self.groups {
            push(GROUP, *perm, *gid);
        }
        if !self.users.is_empty() || !self.groups.is_empty() {
            let mask = self.users.values().chain(self.groups.values()).fold(self.group, |m, p| m | p);
            push(MASK, mask, UNDEFINED_ID);
        }
        push(OTHER, self.other, UNDEFINED_ID);
        out
    }

    /// Reads the kernel's encoding; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Acl> {
        let (version, entries) = bytes.split_at_checked(4)?;
        if u32::from_le_bytes(version.try_into().ok()?) != VERSION || entries.len() % 8 != 0 {
            return None;
        }
        let mut acl = Acl::default();
        for e in entries.chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            match tag {
                USER_OBJ => acl.owner = perm,
                USER => {
                    acl.users.insert(id, perm);
                }
                GROUP_OBJ => acl.group = perm,
                GROUP => {
                    acl.groups.insert(id, perm);
                }
                MASK => {}
                OTHER => acl.other = perm,
                _ => return None,
            }
        }
        Some(acl)
    }
}

/// The ACL of `dir` now: its attribute, else what its mode amounts to.
pub fn read(dir: &Path) -> std::io::Result<Acl> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::getxattr(dir, XATTR, &mut buf) {
        Ok(n) => Acl::decode(&buf[..n]).ok_or_else(|| std::io::Error::other(format!("{}: an ACL this program does not read", dir.display()))),
        Err(rustix::io::Errno::NODATA) => {
            use std::os::unix::fs::MetadataExt;
            Ok(Acl::from_mode(std::fs::metadata(dir)?.mode()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Lets `uids` and `gids` search `dir` besides its owner and group, and
/// nobody else: the mode becomes `0750` and each is named in its ACL. Says
/// whether anything changed. Fails where the file system keeps no ACLs.
pub fn grant_search(dir: &Path, uids: &[u32], gids: &[u32]) -> std::io::Result<bool> {
    let before = read(dir)?;
    let mut acl = Acl { owner: 7, group: 5, other: 0, ..before.clone() };
    for uid in uids {
        *acl.users.entry(*uid).or_insert(0) |= SEARCH;
    }
    for gid in gids {
        *acl.groups.entry(*gid).or_insert(0) |= SEARCH;
    }
    if acl == before {
        return Ok(false);
    }
    rustix::fs::setxattr(dir, XATTR, &acl.encode(), rustix::fs::XattrFlags::empty())?;
    Ok(true)
}

/// Whether `uid` may search `dir` by its owner, its ACL's named users or its
/// mode's other class (groups aside: a rootless container's processes lose
/// their user's groups).
pub fn may_search(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return false };
    if uid == 0 || meta.uid() == uid {
        return true;
    }
    read(dir).is_ok_and(|acl| acl.other & SEARCH != 0 || acl.users.get(&uid).is_some_and(|p| p & SEARCH != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_encoding_round_trips_with_a_mask_for_named_entries() {
        let acl = Acl { owner: 7, users: BTreeMap::from([(1000, 1), (1001, 1)]), group: 5, groups: BTreeMap::from([(27, 1)]), other: 0 };
        let bytes = acl.encode();
        assert_eq!(bytes.len(), 4 + 7 * 8, "owner, two users, group, one group, mask, other");
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(Acl::decode(&bytes), Some(acl));
        assert_eq!(Acl::decode(&Acl::from_mode(0o750).encode()), Some(Acl::from_mode(0o750)));
        assert_eq!(Acl::decode(b"xx"), None);
        assert_eq!(Acl::decode(&[1, 0, 0, 0]), None, "another version");
    }

    #[test]
    fn named_users_search_a_folder_others_cannot_enter() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        match grant_search(d, &[4242], &[]) {
            Ok(changed) => assert!(changed),
            Err(e) => return eprintln!("SKIPPED: {} keeps no ACLs here ({e})", d.display()),
        }
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o7777, 0o750, "others are out");
        assert!(may_search(d, 4242) && !may_search(d, 4243));
        assert!(!grant_search(d, &[4242], &[]).unwrap(), "granted once");
        assert!(grant_search(d, &[4243], &[]).unwrap());
        assert_eq!(read(d).unwrap().users.keys().copied().collect::<Vec<_>>(), [4242, 4243], "earlier grants stay");
    }
}
