//! JSON text of gpuwarden's own values: the ledger, the watchdog's state,
//! specs, manifests, broker messages. serde_json fails only on a map whose
//! keys are not strings or on a `Serialize` that errors itself; gpuwarden's
//! types have neither, so these return text, not a `Result`, and this file
//! holds the one place that says so. Input never comes here: what is read is
//! parsed, with errors, where it is read.

use serde::Serialize;

/// `value` as compact JSON.
pub fn compact<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    #[allow(clippy::expect_used, reason = "gpuwarden's types have string keys and derived Serialize impls: serializing them cannot fail")]
    serde_json::to_vec(value).expect("gpuwarden's values serialize")
}

/// `value` as indented JSON with a final newline, as files are written.
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> String {
    #[allow(clippy::expect_used, reason = "gpuwarden's types have string keys and derived Serialize impls: serializing them cannot fail")]
    let mut text = serde_json::to_string_pretty(value).expect("gpuwarden's values serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn pretty_text_ends_in_one_newline_and_compact_has_none() {
        let v = serde_json::json!({"a": [1, 2]});
        assert_eq!(super::pretty(&v), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
        assert_eq!(super::compact(&v), br#"{"a":[1,2]}"#);
    }
}
