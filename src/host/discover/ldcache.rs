//! Reads glibc's `ld.so.cache` (the "glibc-ld.so.cache1.1" format, alone or
//! after the old "ld.so-1.7.0" table) into (library name, path) pairs: the
//! dynamic linker's own map of where libraries are.

use std::io;

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_ENTRY: usize = 12;

/// One entry: the name the linker looks up and the path it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub name: String,
    pub path: String,
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed ld.so.cache: {why}"))
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| bad("truncated"))
}

/// Parses a whole cache file.
pub fn parse(data: &[u8]) -> io::Result<Vec<CacheEntry>> {
    let start = if data.starts_with(NEW_MAGIC) {
        0
    } else if data.starts_with(OLD_MAGIC) {
        let old_count = u32_at(data, 12)? as usize;
        let end = old_count.checked_mul(OLD_ENTRY).and_then(|n| n.checked_add(16)).ok_or_else(|| bad("count"))?;
        let aligned = end.div_ceil(8) * 8;
        if !data.get(aligned..).is_some_and(|rest| rest.starts_with(NEW_MAGIC)) {
            return Err(bad("old format without the new table"));
        }
        aligned
    } else {
        return Err(bad("unknown magic"));
    };
    let table = &data[start..];
    let count = u32_at(table, 20)? as usize;
    let entries_end = count.checked_mul(NEW_ENTRY).and_then(|n| n.checked_add(NEW_HEADER)).ok_or_else(|| bad("count"))?;
    if entries_end > table.len() {
        return Err(bad("more entries than bytes"));
    }
    (0..count)
        .map(|i| {
            let at = NEW_HEADER + i * NEW_ENTRY;
            Ok(CacheEntry {
                name: string_at(table, u32_at(table, at + 4)? as usize)?,
                path: string_at(table, u32_at(table, at + 8)? as usize)?,
            })
        })
        .collect()
}

/// The NUL-terminated string at `offset` (offsets count from the new header).
fn string_at(table: &[u8], offset: usize) -> io::Result<String> {
    let rest = table.get(offset..).ok_or_else(|| bad("string offset past the end"))?;
    let end = rest.iter().position(|&b| b == 0).ok_or_else(|| bad("unterminated string"))?;
    String::from_utf8(rest[..end].to_vec()).map_err(|_| bad("string is not UTF-8"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a new-format cache holding `entries`, as ldconfig lays it out.
    pub(crate) fn build(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let base = NEW_HEADER + entries.len() * NEW_ENTRY;
        let mut table = Vec::new();
        for (name, path) in entries {
            let key = base + strings.len();
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            let value = base + strings.len();
            strings.extend_from_slice(path.as_bytes());
            strings.push(0);
            table.extend_from_slice(&0x0303i32.to_le_bytes());
            table.extend_from_slice(&(key as u32).to_le_bytes());
            table.extend_from_slice(&(value as u32).to_le_bytes());
            table.extend_from_slice(&[0u8; 12]);
        }
        let mut out = NEW_MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend(table);
        out.extend(strings);
        out
    }

    #[test]
    fn reads_what_ldconfig_writes() {
        let data = build(&[("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"), ("libc.so.6", "/lib/libc.so.6")]);
        let entries = parse(&data).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], CacheEntry { name: "libcuda.so.1".into(), path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into() });
    }

    #[test]
    fn reads_the_real_host_cache() {
        let data = std::fs::read("/etc/ld.so.cache").unwrap();
        let entries = parse(&data).unwrap();
        assert!(entries.iter().any(|e| e.name == "libc.so.6" && e.path.ends_with("/libc.so.6")), "{entries:?}");
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let data = build(&[("liba.so.1", "/a"), ("libb.so.1", "/b")]);
        for cut in 0..data.len() - 1 {
            assert!(parse(&data[..cut]).is_err(), "cut at {cut} parsed");
        }
        assert!(parse(b"garbage").unwrap_err().to_string().contains("unknown magic"));
    }

    #[test]
    fn the_combined_old_and_new_format_is_read_from_the_new_table() {
        let new = build(&[("liba.so.1", "/a")]);
        let mut data = OLD_MAGIC.to_vec();
        data.push(0);
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&[0u8; OLD_ENTRY]);
        data.extend_from_slice(&[0u8; 4]); // 28 bytes so far: the new table starts 8-aligned
        data.extend(new);
        assert_eq!(parse(&data).unwrap()[0].name, "liba.so.1");
    }
}
