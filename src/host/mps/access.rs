//! Who may reach the MPS daemon's pipe folder, and so its `control` socket,
//! through which any client may change the defaults that bind every client:
//! root, the users (and groups' members) the profiles' `allow` rules name,
//! and the uid each admitted container's processes run as on the host,
//! granted at its admission. Nobody else can enter the folder (mode 0750,
//! the others named in its ACL: a rootless container's processes lose their
//! user's groups, so users are named one by one).
//!
//! A container whose uid cannot reach the folder would run CUDA without MPS
//! and without limits, so admission refuses one it cannot grant.

use std::path::Path;

use crate::config::{Config, MpsConfig};
use crate::base::fsutil::acl;

/// Lets `uid` reach the pipe folder: root and a uid granted before already
/// may; else it is named in the folder's ACL. `Err` says why it cannot.
pub fn grant(mps: &MpsConfig, uid: u32) -> Result<(), String> {
    let dir = &mps.pipe_directory;
    if acl::may_search(dir, uid) {
        return Ok(());
    }
    acl::grant_search(dir, &[uid], &[]).map(drop).map_err(|e| format!("uid {uid} cannot be let into the MPS pipe folder {}: {e}", dir.display()))
}

/// Closes the pipe folder to everyone but root, keeping earlier grants, and
/// names the users and groups of the profiles' `allow` rules (as `root`'s
/// `/etc/passwd` and `/etc/group` list them). Where the folder's file
/// system keeps no ACLs it stays open to every local user (0755), and the
/// line says so.
pub fn close_pipe(config: &Config, root: &Path) -> Result<String, String> {
    let (uids, gids) = allowed(config, root);
    let dir = &config.mps.pipe_directory;
    match acl::grant_search(dir, &uids, &gids) {
        Ok(_) => Ok(format!("the pipe folder {} is closed to every local user but root, the uids admitted containers run as, and {}", dir.display(), named(&uids, &gids))),
        Err(e) => {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| format!("{}: {e}", dir.display()))?;
            Err(format!(
                "WARNING: the pipe folder {} keeps no ACLs ({e}): it stays open (0755), so every local user can change the daemon's defaults; the watchdog puts them back",
                dir.display()
            ))
        }
    }
}

fn named(uids: &[u32], gids: &[u32]) -> String {
    if uids.is_empty() && gids.is_empty() {
        return "no one else ([profiles.NAME] allow names no one)".into();
    }
    format!("the users of the profiles' allow rules (uids {:?}, groups {:?})", uids, gids)
}

/// The uids and gids the profiles' `allow` rules name.
fn allowed(config: &Config, root: &Path) -> (Vec<u32>, Vec<u32>) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let (mut uids, mut gids) = (Vec::new(), Vec::new());
    for entry in config.profiles.values().flat_map(|p| p.allow.iter()) {
        match entry.strip_prefix('@') {
            Some(g) => {
                if let Some((gid, members)) = crate::base::users::group_members(&passwd, &group, g) {
                    gids.push(gid);
                    uids.extend(members);
                }
            }
            None => uids.extend(crate::base::users::account_by_name(&passwd, entry).map(|a| a.uid)),
        }
    }
    for v in [&mut uids, &mut gids] {
        v.sort_unstable();
        v.dedup();
    }
    (uids, gids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_rules_name_users_and_groups_by_id() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nana:x:1000:1000::/home/ana:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\ncy:x:1002:1500::/home/cy:/bin/sh\n").unwrap();
        std::fs::write(root.path().join("etc/group"), "ana:x:1000:\nbob:x:1001:\ngpu:x:1500:bob\n").unwrap();
        let config = Config::parse("[profiles.comfyui]\nallow = [\"ana\", \"@gpu\"]\n", Path::new("c")).unwrap();
        assert_eq!(allowed(&config, root.path()), (vec![1000, 1001, 1002], vec![1500]), "ana by name; bob listed in gpu, cy's primary group is gpu");
        assert_eq!(allowed(&Config::default(), root.path()), (vec![], vec![]));
    }

    #[test]
    fn a_container_uid_is_let_in_and_root_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!("[mps]\npipe_directory = \"{}\"\n", dir.path().display()), Path::new("c")).unwrap();
        assert!(grant(&config.mps, 0).is_ok());
        if close_pipe(&config, Path::new("/nonexistent")).is_err() {
            return eprintln!("SKIPPED: no ACLs here");
        }
        assert!(!acl::may_search(dir.path(), 4321));
        grant(&config.mps, 4321).unwrap();
        assert!(acl::may_search(dir.path(), 4321));
        let e = grant(&MpsConfig { pipe_directory: "/nonexistent/pipe".into(), ..config.mps.clone() }, 4321).unwrap_err();
        assert!(e.starts_with("uid 4321 cannot be let into the MPS pipe folder /nonexistent/pipe: "), "{e}");
    }
}
