//! A driver root: a folder that holds a driver's files as a system would
//! (`/` on a normal host, `/run/nvidia/driver` under a driver container, or a
//! test folder). Links inside it are followed inside it: an absolute target
//! such as Debian's `/etc/alternatives/...` means `ROOT/etc/alternatives/...`,
//! never the host's file of that name.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Most links followed while resolving one path, as the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverRoot {
    root: PathBuf,
}

impl DriverRoot {
    /// The root at `path`; it must be a folder.
    pub fn new(path: &Path) -> io::Result<Self> {
        let root = path.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"));
        }
        Ok(DriverRoot { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn is_host_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where the root-relative absolute path `inner` lies on the host.
    pub fn host_path(&self, inner: &Path) -> PathBuf {
        self.root.join(inner.strip_prefix("/").unwrap_or(inner))
    }

    /// Follows every link in `inner` inside the root and returns the
    /// root-relative path of what it names. Fails if a component is missing,
    /// or after `MAX_LINKS` links (a loop).
    pub fn resolve(&self, inner: &Path) -> io::Result<PathBuf> {
        let mut pending: Vec<PathBuf> = components_reversed(inner);
        let mut current = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == Path::new("..") {
                current.pop();
                continue;
            }
            let candidate = current.join(&part);
            let meta = std::fs::symlink_metadata(self.host_path(&candidate))?;
            if !meta.file_type().is_symlink() {
                current = candidate;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!("too many links resolving {}", inner.display())));
            }
            let target = std::fs::read_link(self.host_path(&candidate))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            pending.extend(components_reversed(&target));
        }
        Ok(current)
    }

    /// Names in the root-relative folder `inner`, sorted; empty if it is absent.
    pub fn list(&self, inner: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.host_path(inner)) else { return Vec::new() };
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        names
    }
}

/// The normal and `..` components of `p`, last first (a stack to pop).
fn components_reversed(p: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with(files: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, DriverRoot) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        for (link, target) in links {
            let p = dir.path().join(link.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        }
        let root = DriverRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn absolute_links_are_followed_inside_the_root() {
        // Debian's layout: lib link -> /etc/alternatives -> nvidia/current -> versioned file.
        let (_d, root) = root_with(
            &["/usr/lib/nv/current/libcuda.so.535.1"],
            &[
                ("/usr/lib/libcuda.so.1", "/etc/alternatives/libcuda"),
                ("/etc/alternatives/libcuda", "/usr/lib/nv/current/libcuda.so.1"),
                ("/usr/lib/nv/current/libcuda.so.1", "libcuda.so.535.1"),
            ],
        );
        assert_eq!(root.resolve(Path::new("/usr/lib/libcuda.so.1")).unwrap(), Path::new("/usr/lib/nv/current/libcuda.so.535.1"));
    }

    #[test]
    fn dot_dot_never_climbs_out_of_the_root() {
        let (_d, root) = root_with(&["/etc/passwd"], &[("/usr/lib/escape", "../../../../../etc/passwd")]);
        let inner = root.resolve(Path::new("/usr/lib/escape")).unwrap();
        assert_eq!(inner, Path::new("/etc/passwd"));
        assert!(root.host_path(&inner).starts_with(root.path()));
    }

    #[test]
    fn a_link_to_a_host_file_absent_from_the_root_does_not_resolve() {
        // /bin/sh exists on the host but not in the root.
        let (_d, root) = root_with(&[], &[("/usr/bin/tool", "/bin/sh")]);
        assert!(root.resolve(Path::new("/usr/bin/tool")).is_err());
    }

    #[test]
    fn link_loops_fail_instead_of_spinning() {
        let (_d, root) = root_with(&[], &[("/a", "/b"), ("/b", "/a")]);
        let e = root.resolve(Path::new("/a")).unwrap_err();
        assert!(e.to_string().contains("too many links"), "{e}");
    }

    #[test]
    fn folders_behind_links_are_listed() {
        let (_d, root) = root_with(&["/real/b", "/real/a"], &[]);
        assert_eq!(root.list(Path::new("/real")), vec!["a", "b"]);
        assert!(root.list(Path::new("/absent")).is_empty());
    }
}
