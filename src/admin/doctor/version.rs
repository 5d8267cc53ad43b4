//! Version numbers in what tools print about themselves.

/// The version number in what a tool prints (`podman version 4.3.1` ->
/// `4.3.1`; containerd's `... v2.0.2 c507a02` -> `2.0.2`).
pub fn version_number(text: &str) -> Option<&str> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.strip_prefix('v').filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit())).unwrap_or(w))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether a version string (`podman version 4.3.1`, `Docker version 26.1.5+dfsg1, build ...`, `4.3.1`)
/// names at least `major.minor`; `None` when it holds no version.
pub fn version_at_least(text: &str, major: u32, minor: u32) -> Option<bool> {
    let v = version_number(text)?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next()?, parts.next().unwrap_or(0));
    Some((a, b) >= (major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_each_tool_prints() {
        assert_eq!(version_at_least("podman version 4.3.1", 4, 3), Some(true));
        assert_eq!(version_at_least("Docker version 26.1.5+dfsg1, build a72d7cd", 25, 0), Some(true));
        assert_eq!(version_at_least("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1", 1, 7), Some(false));
        assert_eq!(version_at_least("containerd containerd.io 1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182", 1, 7), Some(true));
        assert_eq!(version_at_least("containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257", 2, 0), Some(true));
        assert_eq!(version_number("containerd github.com/containerd/containerd v1.7.24 88bf19b"), Some("1.7.24"));
        assert_eq!(version_at_least("no version here", 1, 0), None);
    }
}
