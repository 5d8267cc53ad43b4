//! One look at an image's root filesystem for its loader. The root belongs
//! to the image, so every path is resolved inside it (`openat2` with
//! `RESOLVE_IN_ROOT`: an absolute link such as Debian's
//! `/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...` stays in the
//! image), and only a regular file is read: the loader is opened as a path
//! first, so a FIFO or a device node put there is never opened for reading.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};

use super::{system_dirs_in, Loader, GLIBC_LOADER, MUSL_LOADER};

/// glibc 2.36's ld.so is 215 KB; a larger file is not read.
const MAX_LOADER_BYTES: u64 = 8 << 20;

/// The loader of the image whose root filesystem is `root`.
pub fn look(root: &Path) -> Loader {
    let root = match nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return Loader::Unknown { why: format!("cannot open the image's root {}: {e}", root.display()) },
    };
    match open_path(&root, GLIBC_LOADER) {
        Ok(fd) => read_glibc(&fd),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => match open_path(&root, MUSL_LOADER) {
            Ok(_) => Loader::Musl,
            Err(_) => Loader::Absent,
        },
        Err(e) => Loader::Unknown { why: format!("cannot open {GLIBC_LOADER} in the image: {e}") },
    }
}

fn open_path(root: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root.as_fd(), path.trim_start_matches('/'), how)
}

fn read_glibc(fd: &OwnedFd) -> Loader {
    let unknown = |why: String| Loader::Unknown { why: format!("{GLIBC_LOADER} in the image: {why}") };
    let st = match fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return unknown(e.to_string()),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return unknown("not a regular file".into());
    }
    if st.st_size as u64 > MAX_LOADER_BYTES {
        return unknown(format!("{} bytes, more than a loader", st.st_size));
    }
    // An O_PATH descriptor cannot be read: open the file it names, by descriptor.
    use std::os::fd::AsRawFd;
    let mut file = match std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(f) => f,
        Err(e) => return unknown(e.to_string()),
    };
    match system_dirs_in(&mut file, MAX_LOADER_BYTES) {
        Ok(Some(system_dirs)) => Loader::Glibc { system_dirs },
        Ok(None) => unknown("no search folders found in it".into()),
        Err(e) => unknown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with(loader: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib64")).unwrap();
        std::fs::write(dir.path().join("usr/lib64/ld.so"), loader).unwrap();
        symlink("usr/lib64", dir.path().join("lib64")).unwrap();
        // An absolute link, as Debian's: resolved inside the image, never on the host.
        symlink("/usr/lib64/ld.so", dir.path().join("usr/lib64/ld-linux-x86-64.so.2")).unwrap();
        dir
    }

    #[test]
    fn links_are_followed_inside_the_image() {
        let root = root_with(b"\0/lib64/\0/usr/lib64/\0\0");
        assert_eq!(look(root.path()), Loader::Glibc { system_dirs: vec!["/lib64/".into(), "/usr/lib64/".into()] });
    }

    #[test]
    fn a_link_out_of_the_image_stays_in_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib64")).unwrap();
        // On the host this is Debian's loader; inside the image it does not exist.
        symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", dir.path().join("lib64/ld-linux-x86-64.so.2")).unwrap();
        assert_eq!(look(dir.path()), Loader::Absent);
        symlink("../../../../../../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", dir.path().join("lib64/up")).unwrap();
        std::fs::remove_file(dir.path().join("lib64/ld-linux-x86-64.so.2")).unwrap();
        std::fs::rename(dir.path().join("lib64/up"), dir.path().join("lib64/ld-linux-x86-64.so.2")).unwrap();
        assert_eq!(look(dir.path()), Loader::Absent, ".. stops at the image's root");
    }

    #[test]
    fn musl_static_and_odd_loaders() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(look(dir.path()), Loader::Absent);
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join(&MUSL_LOADER[1..]), b"musl").unwrap();
        assert_eq!(look(dir.path()), Loader::Musl);
        // A FIFO where the loader should be is not opened (that would block).
        std::fs::create_dir_all(dir.path().join("lib64")).unwrap();
        nix::unistd::mkfifo(&dir.path().join(&GLIBC_LOADER[1..]), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(matches!(look(dir.path()), Loader::Unknown { why } if why.contains("not a regular file")));
        let root = root_with(b"no folders here");
        assert!(matches!(look(root.path()), Loader::Unknown { why } if why.contains("no search folders")));
        assert!(matches!(look(Path::new("/nonexistent/rootfs")), Loader::Unknown { why } if why.contains("cannot open the image's root")));
    }

    #[test]
    fn this_hosts_own_loader_is_debians() {
        // The machine the tests run on is Debian 12: its loader searches the multiarch folders.
        let Loader::Glibc { system_dirs } = look(Path::new("/")) else { panic!("{:?}", look(Path::new("/"))) };
        assert!(system_dirs.contains(&"/usr/lib/x86_64-linux-gnu/".to_string()) || cfg!(target_arch = "aarch64"), "{system_dirs:?}");
    }
}
