//! glibc's and musl's loaders, and the folders glibc's `ld.so` searches
//! besides its cache, read from its bytes.

/// glibc's loader, at the path every x86_64 (or aarch64) glibc program names
/// as its interpreter, whatever the distribution.
pub const GLIBC_LOADER: &str = if cfg!(target_arch = "aarch64") { "/lib/ld-linux-aarch64.so.1" } else { "/lib64/ld-linux-x86-64.so.2" };

/// musl's loader (Alpine).
pub const MUSL_LOADER: &str = if cfg!(target_arch = "aarch64") { "/lib/ld-musl-aarch64.so.1" } else { "/lib/ld-musl-x86_64.so.1" };

/// What an image's root holds as its dynamic loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    /// glibc's, with the folders it searches for a library its cache lacks, in order.
    Glibc { system_dirs: Vec<String> },
    /// musl's: NVIDIA's libraries are built against glibc and cannot load under it.
    Musl,
    /// No dynamic loader: only static programs run (a busybox image).
    Absent,
    /// Something that could not be read as glibc's loader; the libraries stay where the spec put them.
    Unknown { why: String },
}

impl Loader {
    /// The folder to mount the libraries in instead of `spec_dir`, or `None`
    /// to leave them there: the loader searches it, or it cannot be told.
    /// Of the loader's own folders, the first under `/usr` is chosen: with a
    /// merged `/usr` the others are links to it.
    pub fn library_dir(&self, spec_dir: &str) -> Option<String> {
        let Loader::Glibc { system_dirs } = self else { return None };
        let trimmed = |d: &String| d.trim_end_matches('/').to_string();
        if system_dirs.iter().any(|d| trimmed(d) == spec_dir) {
            return None;
        }
        system_dirs.iter().find(|d| d.starts_with("/usr/")).or(system_dirs.first()).map(trimmed)
    }

    /// One line for a profile container that cannot use the driver in this image.
    pub fn refusal(&self) -> Option<String> {
        matches!(self, Loader::Musl).then(|| {
            format!(
                "the image's dynamic loader is musl's ({MUSL_LOADER}, as in Alpine): NVIDIA's driver libraries are built for glibc and cannot load in it; \
                 build the image on a glibc distribution (Debian, Ubuntu, Fedora, Rocky, openSUSE, Arch)"
            )
        })
    }
}

/// The folders glibc's `ld.so` searches besides its cache, read from the
/// loader's bytes: the first run of two or more NUL-terminated absolute
/// folder names (`/lib64/\0/usr/lib64/\0`). `None` when there is none.
pub fn system_dirs(ld_so: &[u8]) -> Option<Vec<String>> {
    complete_block(ld_so, true)
}

/// The first block in `bytes`. Unless `whole` (the bytes end the file), a
/// block must be followed by at least one more byte, so that a block cut at
/// the end of a chunk is never taken for a shorter one.
fn complete_block(bytes: &[u8], whole: bool) -> Option<Vec<String>> {
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&bytes[from..], b"/\0/").map(|i| from + i) {
        // The run starts after the NUL before it (or at the start of the bytes).
        let start = bytes[..=at].iter().rposition(|b| *b == 0).map_or(0, |nul| nul + 1);
        let (dirs, ended) = entries(&bytes[start..]);
        if dirs.len() >= 2 && (whole || ended) {
            return Some(dirs);
        }
        from = at + 2;
    }
    None
}

/// Reads the loader's folders from `reader` in fixed chunks, stopping at the
/// first block: a fresh process then touches 64 KiB of buffer, not the whole
/// file (215 KB for glibc 2.36).
pub fn system_dirs_in(reader: &mut impl std::io::Read, limit: u64) -> std::io::Result<Option<Vec<String>>> {
    const CHUNK: usize = 64 * 1024;
    // A block is short (Debian's is 70 bytes); what a chunk's end cut is searched again with the next.
    const KEEP: usize = 4096;
    let mut buf = vec![0u8; KEEP + CHUNK];
    let (mut kept, mut read) = (0usize, 0u64);
    loop {
        let n = reader.read(&mut buf[kept..])?;
        read += n as u64;
        let filled = kept + n;
        if let Some(dirs) = complete_block(&buf[..filled], n == 0) {
            return Ok(Some(dirs));
        }
        if n == 0 || read >= limit {
            return Ok(None);
        }
        let keep = filled.min(KEEP);
        buf.copy_within(filled - keep..filled, 0);
        kept = keep;
    }
}

/// The folder names at the start of `bytes`, each `/.../` and NUL-terminated,
/// and whether what follows them is seen whole (a NUL-terminated piece that
/// is no folder): only then is the run known to end there.
fn entries(bytes: &[u8]) -> (Vec<String>, bool) {
    let mut dirs = Vec::new();
    let mut rest = bytes;
    while let Some(nul) = memchr::memchr(0, rest) {
        let chunk = &rest[..nul];
        let folder = chunk.len() <= 256
            && chunk.starts_with(b"/")
            && chunk.ends_with(b"/")
            && chunk.iter().all(|b| b.is_ascii_graphic())
            && memchr::memmem::find(chunk, b"lib").is_some();
        if !folder {
            return (dirs, true);
        }
        dirs.push(String::from_utf8_lossy(chunk).into_owned());
        rest = &rest[nul + 1..];
    }
    (dirs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &[u8] = b"\x7fELF junk\0/etc/ld.so.cache\0/lib/x86_64-linux-gnu/\0/usr/lib/x86_64-linux-gnu/\0/lib/\0/usr/lib/\0\0more";
    const FEDORA: &[u8] = b"\0glibc-hwcaps/\0x/\0/lib64/\0/usr/lib64/\0\0/lib64/ld-linux-x86-64.so.2\0";
    const ARCH: &[u8] = b"\0/usr/lib/\0/usr/lib/\0";

    #[test]
    fn the_search_folders_are_read_from_the_loader() {
        assert_eq!(system_dirs(DEBIAN).unwrap(), ["/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/", "/lib/", "/usr/lib/"]);
        assert_eq!(system_dirs(FEDORA).unwrap(), ["/lib64/", "/usr/lib64/"]);
        assert_eq!(system_dirs(ARCH).unwrap(), ["/usr/lib/", "/usr/lib/"]);
        assert_eq!(system_dirs(b"/usr/lib64/\0/lib64/\0").unwrap(), ["/usr/lib64/", "/lib64/"], "at the very start");
        for none in [&b""[..], b"/lib64/\0", b"/etc/\0/var/\0", b"\0/lib64\0/usr/lib64\0", b"/a b/lib/\0/lib/\0"] {
            assert_eq!(system_dirs(none), None, "{:?}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn a_block_across_chunks_is_read_whole_and_never_cut_short() {
        // The block at every offset around the first two reads' ends (4 KiB kept + 64 KiB
        // each), in a loader of 200 KB: however a read cuts it, all four folders are found.
        let ends = [68 * 1024, 132 * 1024];
        for at in ends.iter().flat_map(|e| e - 90..e + 8).chain([1, 130 * 1024, 200 * 1024 - 100]) {
            let mut file = vec![b'x'; 200 * 1024];
            file[at..at + DEBIAN.len() - 4].copy_from_slice(&DEBIAN[4..]);
            file[at - usize::from(at > 0)..][..usize::from(at > 0)].fill(0);
            let found = system_dirs_in(&mut std::io::Cursor::new(&file), 8 << 20).unwrap();
            assert_eq!(found.as_deref().map(<[String]>::len), Some(4), "block at {at}");
        }
        let mut ends = b"\x7fELF\0".to_vec();
        ends.extend_from_slice(b"/lib64/\0/usr/lib64/\0");
        assert_eq!(system_dirs_in(&mut std::io::Cursor::new(&ends), 8 << 20).unwrap().unwrap(), ["/lib64/", "/usr/lib64/"], "a block that ends the file");
        assert_eq!(system_dirs_in(&mut std::io::Cursor::new(vec![b'x'; 300 * 1024]), 8 << 20).unwrap(), None);
    }

    #[test]
    fn the_libraries_move_only_where_the_loader_does_not_search_the_spec_folder() {
        let spec = "/usr/lib/x86_64-linux-gnu";
        let glibc = |d: &[u8]| Loader::Glibc { system_dirs: system_dirs(d).unwrap() };
        assert_eq!(glibc(DEBIAN).library_dir(spec), None);
        assert_eq!(glibc(FEDORA).library_dir(spec).as_deref(), Some("/usr/lib64"));
        assert_eq!(glibc(ARCH).library_dir(spec).as_deref(), Some("/usr/lib"));
        assert_eq!(glibc(b"\0/lib64/\0/lib/\0").library_dir(spec).as_deref(), Some("/lib64"), "no folder under /usr: the first");
        for other in [Loader::Musl, Loader::Absent, Loader::Unknown { why: "x".into() }] {
            assert_eq!(other.library_dir(spec), None);
        }
    }

    #[test]
    fn only_musl_is_refused() {
        assert!(Loader::Musl.refusal().unwrap().contains("musl"));
        assert_eq!(Loader::Absent.refusal(), None, "a static image still starts");
        assert_eq!(Loader::Glibc { system_dirs: vec![] }.refusal(), None);
    }
}
