//! YAML, the one way gpuwarden reads and writes it: specs, and what the CDI
//! folders hold. `serde-saphyr` (maintained, no unsafe, built to be
//! panic-free on malformed input, with budgets against hostile documents)
//! replaced `serde_yaml` 0.9, which its author archived; `cdi/README.md`
//! weighs the candidates. Anyone who can write `/etc/cdi` can hand gpuwarden
//! a spec, so input is bounded in size before it is parsed, and the parser's
//! budget (events, aliases, depth) bounds the rest.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest spec file read. NVIDIA's own spec for eight GPUs is under
/// 100 KiB; a file larger than this is refused before it is parsed.
pub const MAX_SPEC_BYTES: u64 = 8 << 20;

/// Why a file of `size` bytes is not read.
pub fn too_large(size: u64) -> String {
    format!("{:.1} MiB, more than the {} MiB a CDI spec may be here: not read", size as f64 / f64::from(1u32 << 20), MAX_SPEC_BYTES >> 20)
}

/// `value` as YAML.
pub fn to_string<T: Serialize>(value: &T) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    // One path per line, as people grep specs: no folded `>-` blocks for long paths.
    options.prefer_block_scalars = false;
    #[allow(clippy::expect_used, reason = "called with gpuwarden's own spec types only (string keys, derived Serialize): they always serialize")]
    serde_saphyr::to_string_with_options(value, options).expect("gpuwarden's specs serialize")
}

/// Parses `text` into `T`; the error is one line, with the line and column
/// where the parser stopped.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut options = serde_saphyr::Options::default();
    // One line, not a rendered snippet of the input.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| crate::base::text::one_line(&e))
}

/// Reads and parses the spec file at `path`, refusing one larger than
/// [`MAX_SPEC_BYTES`] before reading it.
pub fn read_file<T: DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_SPEC_BYTES {
        return Err(too_large(size));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    from_str(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    struct Doc {
        a: Vec<String>,
    }

    #[test]
    fn hostile_documents_are_one_line_errors_not_panics_or_blow_ups() {
        let e = from_str::<Doc>("a: [1, 2\nb: }").unwrap_err();
        assert!(!e.contains('\n') && e.contains("line"), "{e}");
        let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(from_str::<serde_json::Value>(&deep).is_err(), "nesting beyond the budget is refused");
        // A billion laughs: each level nine aliases of the one before.
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..12 {
            laughs.push_str(&format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); 9].join(", ")));
        }
        let start = std::time::Instant::now();
        assert!(from_str::<serde_json::Value>(&laughs).is_err(), "expanding aliases beyond the budget is refused");
        // A guard against expansion (nine-fold over twelve levels would run for hours), not a
        // speed figure: 60 s as tests/hostile_yaml.rs's guard, so a busy machine does not fail it.
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn round_trips_with_long_paths_on_one_line() {
        let long = format!("/var/lib/{}/libcuda.so.535.261.03", "x".repeat(120));
        let d = Doc { a: vec!["x: y".into(), "0".into(), "".into(), long.clone()] };
        let text = to_string(&d);
        assert_eq!(from_str::<Doc>(&text).unwrap(), d);
        assert!(text.lines().any(|l| l == format!("- {long}")), "{text}");
    }
}
