//! Driver libraries: every library whose file name ends in the driver's
//! version, found through the driver root's ld.so.cache and the standard
//! library folders (Debian's `nvidia/current` among them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{elf, ldcache, DiscoveryError, DriverRoot, Library};

/// Folders searched besides the ld cache, in the driver root.
pub const LIB_DIRS: &[&str] = if cfg!(target_arch = "aarch64") {
    &[
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu/nvidia/current",
        "/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
    ]
} else {
    &[
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu/nvidia/current",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
    ]
};

/// The ld cache of the driver root; empty (with a note) if absent or unreadable.
fn cache_entries(root: &DriverRoot) -> Vec<ldcache::CacheEntry> {
    let path = root.host_path(Path::new("/etc/ld.so.cache"));
    match std::fs::read(&path) {
        Ok(data) => ldcache::parse(&data).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; searching the library folders only", path.display());
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// The version of the driver installed under `root`, from the file name its
/// NVML library carries (`libnvidia-ml.so.550.163.01`): every driver ships
/// one. `None` when no driver is installed there.
pub fn installed_driver_version(root: &DriverRoot) -> Option<String> {
    const NVML: &str = "libnvidia-ml.so.";
    let from_cache = cache_entries(root).into_iter().filter_map(|e| Path::new(&e.path).file_name().and_then(|n| n.to_str()).map(str::to_owned));
    let from_dirs = LIB_DIRS.iter().flat_map(|dir| root.list(Path::new(dir)));
    let mut versions: Vec<String> = from_cache
        .chain(from_dirs)
        .filter_map(|n| n.strip_prefix(NVML).map(str::to_owned))
        .filter(|v| v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .collect();
    versions.sort();
    versions.dedup();
    versions.pop()
}

/// Every driver library of `version` under `root`, sorted by file name.
pub fn driver_libraries(root: &DriverRoot, version: &str) -> Result<Vec<Library>, DiscoveryError> {
    let suffix = format!(".so.{version}");
    let from_cache = cache_entries(root).into_iter().map(|e| PathBuf::from(e.path));
    let from_dirs = LIB_DIRS.iter().flat_map(|dir| {
        root.list(Path::new(dir)).into_iter().filter(|n| n.ends_with(&suffix)).map(move |n| Path::new(dir).join(n))
    });
    let mut seen = BTreeSet::new();
    let mut libraries = Vec::new();
    for candidate in from_cache.chain(from_dirs) {
        let Ok(real) = root.resolve(&candidate) else {
            tracing::debug!("{} does not resolve inside {}", candidate.display(), root.path().display());
            continue;
        };
        let Some(file_name) = real.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if !file_name.ends_with(&suffix) || !seen.insert(real.clone()) {
            continue;
        }
        let host_path = root.host_path(&real);
        let info = match elf::read_file(&host_path) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", host_path.display());
                continue;
            }
        };
        if !info.is_64 || info.machine != elf::host_machine() {
            tracing::debug!("skipping {}: built for another machine", host_path.display());
            continue;
        }
        libraries.push(Library { host_path, file_name, soname: info.soname });
    }
    if libraries.is_empty() {
        return Err(DiscoveryError::NoLibraries {
            root: root.path().to_path_buf(),
            version: version.to_string(),
            dirs: LIB_DIRS.join(", "),
        });
    }
    if !libraries.iter().any(|l| l.file_name.starts_with("libcuda.so.")) {
        tracing::warn!("no libcuda.so.{version} under {}: CUDA will not work in containers", root.path().display());
    }
    libraries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(libraries)
}

/// The host path of the library the linker would load as `name` (e.g.
/// `libnvidia-ml.so.1`) from `root`: its ld cache first, then the folders.
pub fn find_library(root: &DriverRoot, name: &str) -> Option<PathBuf> {
    let from_cache = cache_entries(root).into_iter().filter(|e| e.name == name).map(|e| PathBuf::from(e.path));
    let from_dirs = LIB_DIRS.iter().map(|d| Path::new(d).join(name));
    from_cache.chain(from_dirs).find_map(|p| root.resolve(&p).ok()).map(|real| root.host_path(&real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::discover::ldcache::tests::build as build_cache;
    use std::os::unix::fs::symlink;

    /// A driver root whose "libraries" are copies of the host's libc renamed,
    /// behind Debian-style absolute links. Real ELF files, so SONAMEs are real
    /// (libc's is `libc.so.6`).
    fn fake_root(version: &str) -> (tempfile::TempDir, DriverRoot) {
        let dir = tempfile::tempdir().unwrap();
        let libc = if cfg!(target_arch = "aarch64") { "/lib/aarch64-linux-gnu/libc.so.6" } else { "/lib/x86_64-linux-gnu/libc.so.6" };
        let current = dir.path().join(&LIB_DIRS[1][1..]);
        std::fs::create_dir_all(&current).unwrap();
        for lib in ["libcuda", "libnvidia-ml"] {
            std::fs::copy(libc, current.join(format!("{lib}.so.{version}"))).unwrap();
            symlink(format!("{lib}.so.{version}"), current.join(format!("{lib}.so.1"))).unwrap();
            let alt = dir.path().join(format!("etc/alternatives/{lib}.so.1"));
            std::fs::create_dir_all(alt.parent().unwrap()).unwrap();
            symlink(format!("{}/{lib}.so.1", LIB_DIRS[1]), &alt).unwrap();
            symlink(format!("/etc/alternatives/{lib}.so.1"), dir.path().join(&LIB_DIRS[0][1..]).join(format!("{lib}.so.1"))).unwrap();
        }
        // A text file with the version suffix is not a library.
        std::fs::write(current.join(format!("libnotes.so.{version}")), "not elf").unwrap();
        let root = DriverRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn the_installed_drivers_version_is_read_from_its_nvml_library() {
        let (_d, root) = fake_root("550.163.01");
        assert_eq!(installed_driver_version(&root).as_deref(), Some("550.163.01"));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(installed_driver_version(&DriverRoot::new(empty.path()).unwrap()), None, "no driver, no version (the .so.1 link is not one)");
    }

    #[test]
    fn finds_versioned_libraries_behind_absolute_links_with_their_soname() {
        let (_d, root) = fake_root("535.1.2");
        let libs = driver_libraries(&root, "535.1.2").unwrap();
        let names: Vec<_> = libs.iter().map(|l| l.file_name.as_str()).collect();
        assert_eq!(names, ["libcuda.so.535.1.2", "libnvidia-ml.so.535.1.2"]);
        assert!(libs.iter().all(|l| l.host_path.starts_with(root.path())));
        assert_eq!(libs[0].soname.as_deref(), Some("libc.so.6"));
    }

    #[test]
    fn the_ld_cache_leads_to_libraries_outside_the_standard_folders() {
        let (dir, root) = fake_root("535.1.2");
        let odd = dir.path().join("opt/nv");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::copy(root.host_path(Path::new(&format!("{}/libcuda.so.535.1.2", LIB_DIRS[1]))), odd.join("libnvoptix.so.535.1.2")).unwrap();
        std::fs::write(dir.path().join("etc/ld.so.cache"), build_cache(&[("libnvoptix.so.1", "/opt/nv/libnvoptix.so.535.1.2")])).unwrap();
        let libs = driver_libraries(&root, "535.1.2").unwrap();
        assert!(libs.iter().any(|l| l.file_name == "libnvoptix.so.535.1.2"), "{libs:?}");
    }

    #[test]
    fn another_version_finds_nothing_and_says_where_it_looked() {
        let (_d, root) = fake_root("535.1.2");
        let e = driver_libraries(&root, "550.0.0").unwrap_err().to_string();
        assert!(e.contains(".so.550.0.0") && e.contains("nvidia/current"), "{e}");
    }

    #[test]
    fn nvml_is_found_by_its_soname_inside_the_root() {
        let (_d, root) = fake_root("535.1.2");
        let p = find_library(&root, "libnvidia-ml.so.1").unwrap();
        assert!(p.starts_with(root.path()) && p.ends_with("libnvidia-ml.so.535.1.2"), "{}", p.display());
        assert_eq!(find_library(&root, "libabsent.so.1"), None);
    }
}
