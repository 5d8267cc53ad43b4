//! Byte sizes as a type: parsed from what people write (`3G`, `3GiB`, `3072M`,
//! `1.5GiB`), shown the way people read them (`3.0 GiB`), and written the way the
//! MPS environment expects (`3G`, `2560MB`).
//!
//! Every unit is binary (G = GiB = 2^30 bytes), as in NVIDIA's MPS tools: decimal
//! `GB` is refused rather than guessed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// A number of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Why a size could not be parsed; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {why} (write e.g. 3G, 3GiB, 3072M or 1.5GiB; units are binary)")]
pub struct SizeError {
    input: String,
    why: &'static str,
}

impl ByteSize {
    pub const ZERO: ByteSize = ByteSize(0);

    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The sum, or the largest size where it would overflow.
    pub fn saturating_add(self, other: ByteSize) -> ByteSize {
        ByteSize(self.0.saturating_add(other.0))
    }

    pub fn checked_add(self, other: ByteSize) -> Option<ByteSize> {
        self.0.checked_add(other.0).map(ByteSize)
    }

    pub fn saturating_sub(self, other: ByteSize) -> ByteSize {
        ByteSize(self.0.saturating_sub(other.0))
    }

    /// True when the size is a whole number of MiB, the finest unit MPS accepts.
    pub fn is_whole_mib(self) -> bool {
        self.0 % MIB == 0
    }

    /// The form `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT` takes: `3G` for whole GiB,
    /// else `2560MB`, rounded down to whole MiB (a limit never grows by rounding).
    pub fn mps_limit(self) -> String {
        if self.0 >= GIB && self.0 % GIB == 0 {
            format!("{}G", self.0 / GIB)
        } else {
            format!("{}MB", self.0 / MIB)
        }
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, SizeError> {
        let fail = |why| SizeError { input: input.to_string(), why };
        let s = input.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        let unit_bytes = match unit {
            "" | "B" => 1,
            "K" | "Ki" | "KiB" => KIB,
            "M" | "Mi" | "MiB" => MIB,
            "G" | "Gi" | "GiB" => GIB,
            "T" | "Ti" | "TiB" => TIB,
            "KB" | "MB" | "GB" | "TB" => return Err(fail("decimal units are ambiguous")),
            _ => return Err(fail("unknown unit")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(fail("no number"));
        }
        if frac.contains('.') || frac.len() > 9 {
            return Err(fail("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| fail("malformed number"))?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| fail("malformed number"))? };
        let total = (whole * scale + frac) * u128::from(unit_bytes);
        if total % scale != 0 {
            return Err(fail("not a whole number of bytes"));
        }
        u64::try_from(total / scale).map(ByteSize).map_err(|_| fail("too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit in which the value reads exactly with at most two
    /// decimals: `3.0 GiB`, `0.5 GiB`, `12282.0 MiB`, `100 B`. Exact, because a
    /// refusal that says "3.0 GiB left" must never hide 2.96 GiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            let v = u128::from(self.0);
            let unit = u128::from(unit);
            if v * 2 >= unit && (v * 100) % unit == 0 {
                let hundredths = v * 100 / unit;
                let (int, rest) = (hundredths / 100, hundredths % 100);
                return if rest % 10 == 0 {
                    write!(f, "{int}.{} {name}", rest / 10)
                } else {
                    write!(f, "{int}.{rest:02} {name}")
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// A measured size as people read it: [`ByteSize`]'s exact display where that
/// reads short (`800.0 MiB`, `0.5 GiB`, `3.75 GiB`), else one decimal in the
/// largest unit of which it is at least half (`3.7 GiB` for 4000000000 bytes,
/// which reads exactly only as `3906250.0 KiB`). For what was seen (a
/// process's memory on the GPU), never for a budget, whose figures
/// [`ByteSize`]'s own display keeps exact.
pub struct Approx(pub ByteSize);

impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = self.0.to_string();
        if exact.split(' ').next().is_some_and(|number| number.len() <= 7) {
            return f.write_str(&exact);
        }
        let v = self.0 .0;
        for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if v.saturating_mul(2) >= unit {
                return write!(f, "{:.1} {name}", v as f64 / unit as f64);
            }
        }
        write!(f, "{v} B")
    }
}

impl ByteSize {
    /// This size as measured, rounded for reading (see [`Approx`]).
    pub fn approx(self) -> Approx {
        Approx(self)
    }
}

impl Serialize for ByteSize {
    /// Serialized as a string that parses back to the same value (`"3GiB"`),
    /// so `config show` prints a file that can be read again.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_config_string())
    }
}

impl ByteSize {
    /// The shortest exact form in config syntax: `3GiB`, `512MiB`, `1000B`.
    pub fn to_config_string(self) -> String {
        for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if self.0 >= unit && self.0 % unit == 0 {
                return format!("{}{name}", self.0 / unit);
            }
        }
        format!("{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    /// Accepts a string (`"3GiB"`) or a plain number of bytes.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bytes(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Bytes(n) => Ok(ByteSize(n)),
        }
    }
}

/// Serde helper for fields that are a plain number of bytes in JSON
/// (`"memory_total_bytes": 12884901888`).
pub mod as_bytes {
    use super::ByteSize;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.as_u64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        u64::deserialize(d).map(ByteSize::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_size_reads_rounded_in_its_largest_unit() {
        assert_eq!(ByteSize::bytes(4_000_000_000).approx().to_string(), "3.7 GiB");
        assert_eq!(ByteSize::bytes(4_000_000_000).to_string(), "3906250.0 KiB", "a budget's figure stays exact");
        assert_eq!(ByteSize::mib(512).approx().to_string(), "0.5 GiB");
        assert_eq!(ByteSize::mib(300).approx().to_string(), "300.0 MiB");
        assert_eq!(ByteSize::mib(800).approx().to_string(), "800.0 MiB", "exact where that reads short");
        assert_eq!(ByteSize::bytes(823_132_160).approx().to_string(), "785.0 MiB");
        assert_eq!(ByteSize::bytes(823_132_161).approx().to_string(), "0.8 GiB");
        assert_eq!(ByteSize::bytes(100).approx().to_string(), "100 B");
    }

    fn parse(s: &str) -> ByteSize {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_three_spellings_of_three_gibibytes_agree() {
        assert_eq!(parse("3G"), ByteSize::gib(3));
        assert_eq!(parse("3GiB"), ByteSize::gib(3));
        assert_eq!(parse("3072M"), ByteSize::gib(3));
        assert_eq!(parse("3 GiB"), ByteSize::gib(3));
    }

    #[test]
    fn fractions_and_bare_bytes_parse_exactly() {
        assert_eq!(parse("1.5GiB"), ByteSize::mib(1536));
        assert_eq!(parse(".5G"), ByteSize::mib(512));
        assert_eq!(parse("4096"), ByteSize::bytes(4096));
        assert_eq!(parse("512MiB"), ByteSize::mib(512));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_reason() {
        for (input, why) in [
            ("3GB", "decimal"),
            ("3XB", "unknown unit"),
            ("", "no number"),
            ("G", "no number"),
            ("1.2.3G", "malformed"),
            ("0.3B", "whole number of bytes"),
            ("99999999999T", "too large"),
            ("-1G", "unknown unit"),
        ] {
            let err = input.parse::<ByteSize>().unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn display_is_exact_and_readable() {
        assert_eq!(ByteSize::gib(3).to_string(), "3.0 GiB");
        assert_eq!(ByteSize::mib(512).to_string(), "0.5 GiB");
        assert_eq!(ByteSize::mib(2560).to_string(), "2.5 GiB");
        assert_eq!(ByteSize::mib(7680).to_string(), "7.5 GiB");
        assert_eq!(ByteSize::mib(256).to_string(), "256.0 MiB");
        assert_eq!(ByteSize::mib(768).to_string(), "0.75 GiB");
        assert_eq!(ByteSize::mib(12282).to_string(), "12282.0 MiB");
        assert_eq!(ByteSize::mib(100).to_string(), "100.0 MiB");
        assert_eq!(ByteSize::bytes(100).to_string(), "100 B");
        assert_eq!(ByteSize::ZERO.to_string(), "0 B");
    }

    #[test]
    fn mps_limit_uses_g_or_mb_and_never_rounds_up() {
        assert_eq!(ByteSize::gib(3).mps_limit(), "3G");
        assert_eq!(ByteSize::mib(2560).mps_limit(), "2560MB");
        assert_eq!(ByteSize::bytes(MIB + 1).mps_limit(), "1MB");
    }

    #[test]
    fn config_string_round_trips() {
        for s in ["3GiB", "512MiB", "1000B", "1536MiB", "2TiB"] {
            assert_eq!(parse(s).to_config_string(), s);
        }
    }

    proptest::proptest! {
        #[test]
        fn display_never_misstates_the_value(n in 0u64..(1u64 << 44)) {
            // Whatever Display prints must parse back to exactly n.
            let shown = ByteSize(n).to_string().replace(' ', "");
            let back: ByteSize = shown.parse().unwrap();
            proptest::prop_assert_eq!(back, ByteSize(n));
        }

        #[test]
        fn config_string_round_trips_any_value(n in proptest::num::u64::ANY) {
            let back: ByteSize = ByteSize(n).to_config_string().parse().unwrap();
            proptest::prop_assert_eq!(back, ByteSize(n));
        }
    }
}
