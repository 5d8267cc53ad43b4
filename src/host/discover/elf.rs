//! Just enough ELF to name a shared library: its class, machine and SONAME.
//! Reads a few hundred bytes at known offsets, never the whole file (libnvoptix
//! is 100 MB), and treats every offset in the file as untrusted.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
/// Bounds on what a sane library declares, so a hostile file costs little.
const MAX_PHNUM: u64 = 512;
const MAX_DYNAMIC: u64 = 4096;
const MAX_NAME: usize = 4096;

/// What gpuwarden needs to know of a shared object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub is_64: bool,
    /// `e_machine` (62 = x86-64, 183 = AArch64).
    pub machine: u16,
    pub soname: Option<String>,
}

/// Positional reads from a file or a byte slice.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| short())?;
        let end = start.checked_add(buf.len()).ok_or_else(short)?;
        buf.copy_from_slice(self.get(start..end).ok_or_else(short)?);
        Ok(())
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "truncated ELF file")
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a usable ELF file: {why}"))
}

/// The machine this binary was built for, to skip libraries of another one.
pub fn host_machine() -> u16 {
    if cfg!(target_arch = "aarch64") { 183 } else { 62 }
}

pub fn read_file(path: &Path) -> io::Result<ElfInfo> {
    read(&File::open(path)?)
}

/// Reads class, machine and SONAME from little-endian ELF.
pub fn read<R: ReadAt + ?Sized>(r: &R) -> io::Result<ElfInfo> {
    let mut ident = [0u8; 64];
    r.read_exact_at(&mut ident[..52], 0)?;
    if &ident[..4] != b"\x7fELF" {
        return Err(bad("no ELF magic"));
    }
    if ident[5] != 1 {
        return Err(bad("big-endian"));
    }
    let is_64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown class")),
    };
    if is_64 {
        r.read_exact_at(&mut ident, 0)?;
    }
    let w = Words { is_64 };
    let machine = u16::from_le_bytes([ident[18], ident[19]]);
    let (phoff, phentsize, phnum) = if is_64 {
        (w.u64_at(&ident, 32), u64::from(w.u16_at(&ident, 54)), u64::from(w.u16_at(&ident, 56)))
    } else {
        (w.u32_at(&ident, 28), u64::from(w.u16_at(&ident, 42)), u64::from(w.u16_at(&ident, 44)))
    };
    let soname = soname(r, w, phoff, phentsize, phnum)?;
    Ok(ElfInfo { is_64, machine, soname })
}

#[derive(Clone, Copy)]
struct Words {
    is_64: bool,
}

impl Words {
    fn u16_at(self, b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(self, b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default()))
    }
    fn u64_at(self, b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
    }
    /// A word of the file's class (4 or 8 bytes) at `at`.
    fn word(self, b: &[u8], at: usize) -> u64 {
        if self.is_64 { self.u64_at(b, at) } else { self.u32_at(b, at) }
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn soname<R: ReadAt + ?Sized>(r: &R, w: Words, phoff: u64, phentsize: u64, phnum: u64) -> io::Result<Option<String>> {
    let min_entsize = if w.is_64 { 56 } else { 32 };
    if phnum > MAX_PHNUM || (phnum > 0 && phentsize < min_entsize) {
        return Err(bad("implausible program headers"));
    }
    let mut segments = Vec::with_capacity(phnum as usize);
    let mut ph = [0u8; 56];
    for i in 0..phnum {
        let at = phoff.checked_add(i * phentsize).ok_or_else(short)?;
        r.read_exact_at(&mut ph[..min_entsize as usize], at)?;
        let kind = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let (offset, vaddr, filesz) = if w.is_64 {
            (w.u64_at(&ph, 8), w.u64_at(&ph, 16), w.u64_at(&ph, 32))
        } else {
            (w.u32_at(&ph, 4), w.u32_at(&ph, 8), w.u32_at(&ph, 16))
        };
        segments.push(Segment { kind, offset, vaddr, filesz });
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else { return Ok(None) };
    let entsize = if w.is_64 { 16 } else { 8 };
    let (mut strtab, mut name_at) = (None, None);
    let mut entry = [0u8; 16];
    for i in 0..(dynamic.filesz / entsize).min(MAX_DYNAMIC) {
        r.read_exact_at(&mut entry[..entsize as usize], dynamic.offset.checked_add(i * entsize).ok_or_else(short)?)?;
        let (tag, val) = (w.word(&entry, 0), w.word(&entry, entsize as usize / 2));
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_SONAME => name_at = Some(val),
            _ => {}
        }
    }
    let (Some(strtab), Some(name_at)) = (strtab, name_at) else { return Ok(None) };
    // DT_STRTAB is an address; the loadable segment that holds it gives its place in the file.
    let load = segments
        .iter()
        .find(|s| s.kind == PT_LOAD && s.vaddr <= strtab && strtab - s.vaddr < s.filesz)
        .ok_or_else(|| bad("string table outside every segment"))?;
    let at = (strtab - load.vaddr).checked_add(load.offset).and_then(|o| o.checked_add(name_at)).ok_or_else(short)?;
    read_c_string(r, at).map(Some)
}

fn read_c_string<R: ReadAt + ?Sized>(r: &R, at: u64) -> io::Result<String> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    while out.len() < MAX_NAME {
        let got = (0..=chunk.len()).rev().find(|&n| n == 0 || r.read_exact_at(&mut chunk[..n], at + out.len() as u64).is_ok());
        let n = got.filter(|&n| n > 0).ok_or_else(short)?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return String::from_utf8(out).map_err(|_| bad("SONAME is not UTF-8"));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Err(bad("SONAME too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_libc() -> &'static str {
        if cfg!(target_arch = "aarch64") { "/lib/aarch64-linux-gnu/libc.so.6" } else { "/lib/x86_64-linux-gnu/libc.so.6" }
    }

    #[test]
    fn reads_the_soname_of_the_real_libc() {
        let info = read_file(Path::new(host_libc())).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(info.is_64);
        assert_eq!(info.machine, host_machine());
    }

    #[test]
    fn an_executable_without_soname_has_none() {
        let info = read_file(Path::new("/bin/true")).unwrap();
        assert_eq!(info.soname, None);
    }

    #[test]
    fn every_truncation_of_a_real_library_fails_cleanly() {
        let bytes = std::fs::read(host_libc()).unwrap();
        let full = read(bytes.as_slice()).unwrap();
        for cut in (0..4096).chain([bytes.len() / 2, bytes.len() - 1]) {
            // Never a panic; either an error or (when the cut spares what is read) the same answer.
            if let Ok(info) = read(&bytes[..cut]) {
                assert_eq!(info, full, "cut at {cut}");
            }
        }
    }

    #[test]
    fn text_files_are_not_elf() {
        let e = read(b"#!/bin/sh\necho hi\n................................................................".as_slice()).unwrap_err();
        assert!(e.to_string().contains("no ELF magic"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut bytes = std::fs::read(host_libc()).unwrap()[..64].to_vec();
            bytes.extend(tail);
            let _ = read(bytes.as_slice());
        }
    }
}
