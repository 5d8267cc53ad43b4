//! Small text helpers for messages shown to users: one line, said once.

use std::error::Error;

/// The error and its causes joined with ": " on one line, skipping a cause
/// whose text the outer message already contains.
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes serde_json's " at line L column C" suffix, for messages that give
/// the position themselves.
pub fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a", "é is two bytes: it does not fit");
        assert_eq!(truncate("", 0), "");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_once_on_one_line() {
        let e = Outer(std::io::Error::other("denied\nreally"));
        assert_eq!(one_line(&e), "cannot read /x: denied really");
    }

    #[test]
    fn positions_are_counted_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
        assert_eq!(strip_position("expected value at line 3 column 9"), "expected value");
    }
}
