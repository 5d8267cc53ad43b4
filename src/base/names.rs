//! CDI names: device names and `vendor/class` kinds, checked as the CDI spec
//! defines them.

use std::fmt;
use std::str::FromStr;

/// `^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$`
pub fn is_device_name(name: &str) -> bool {
    device_name(name).is_ok()
}

/// A device name: a letter or digit first and last, and letters, digits,
/// `-`, `_`, `.` and `:` between; the error is the CNCF crate's wording.
pub fn device_name(name: &str) -> Result<(), String> {
    name_rule(name, |c| c.is_ascii_alphanumeric(), "name should start with a letter or digit", &['-', '_', '.', ':'], "device name")
}

/// A vendor or class: a letter first, a letter or digit last, and letters,
/// digits, `-`, `_` and `.` between; the error is the CNCF crate's wording.
pub fn kind_part(name: &str) -> Result<(), String> {
    name_rule(name, |c| c.is_ascii_alphabetic(), "name should start with a letter", &['-', '_', '.'], "name")
}

fn is_kind_part(s: &str) -> bool {
    kind_part(s).is_ok()
}

fn name_rule(name: &str, first: fn(char) -> bool, first_rule: &str, between: &[char], what: &str) -> Result<(), String> {
    let chars: Vec<char> = name.chars().collect();
    match (chars.first(), chars.last()) {
        (None, _) => Err("empty name".into()),
        (Some(c), _) if !first(*c) => Err(first_rule.into()),
        (_, Some(c)) if !c.is_ascii_alphanumeric() => Err("name should end with a letter or digit".into()),
        _ => match chars.iter().skip(1).take(chars.len().saturating_sub(2)).find(|c| !c.is_ascii_alphanumeric() && !between.contains(c)) {
            Some(c) => Err(format!("invalid character '{c}' in {what} {name}")),
            None => Ok(()),
        },
    }
}

/// A CDI kind, `vendor/class`, as in `nvidia.com/gpu`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    pub vendor: String,
    pub class: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("invalid CDI {what} {value:?}: it must start with a letter, end with a letter or digit, and hold only letters, digits, '_', '-' and '.'")]
    Malformed { what: &'static str, value: String },
    #[error("CDI class {value:?} has a '.', which needs cdiVersion 0.6.0, and Podman 4.3 ignores such specs: use letters, digits, '_' and '-' (e.g. --class {suggestion})")]
    DotInClass { value: String, suggestion: String },
}

impl Kind {
    pub fn new(vendor: &str, class: &str) -> Result<Self, KindError> {
        if !is_kind_part(vendor) {
            return Err(KindError::Malformed { what: "vendor", value: vendor.into() });
        }
        if !is_kind_part(class) {
            return Err(KindError::Malformed { what: "class", value: class.into() });
        }
        if class.contains('.') {
            // Accepted by CDI 0.6.0 and later only, which Podman 4.3 does not read.
            return Err(KindError::DotInClass { value: class.into(), suggestion: class.replace('.', "-") });
        }
        Ok(Kind { vendor: vendor.into(), class: class.into() })
    }

    /// `vendor/class=name`, what users pass to `--device`.
    pub fn qualify(&self, device: &str) -> String {
        format!("{self}={device}")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.class)
    }
}

impl FromStr for Kind {
    type Err = KindError;
    fn from_str(s: &str) -> Result<Self, KindError> {
        let (vendor, class) = s.split_once('/').unwrap_or((s, ""));
        Kind::new(vendor, class)
    }
}

/// A container's id as `podman ps` and `docker ps` show it: its first 12
/// characters.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_the_cdi_pattern() {
        for ok in ["0", "all", "comfyui", "gpu1-comfyui", "GPU-b1d7e4a0-4070", "a.b:c_d"] {
            assert!(is_device_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "a=b", "ü"] {
            assert!(!is_device_name(bad), "{bad}");
        }
    }

    #[test]
    fn kinds_are_vendor_slash_class() {
        let k: Kind = "nvidia.com/gpu".parse().unwrap();
        assert_eq!(k.qualify("comfyui"), "nvidia.com/gpu=comfyui");
        for bad in ["nvidia.com", "1nvidia.com/gpu", "nvidia.com/gpu-", "nvidia.com/gpu.x", "/gpu"] {
            assert!(bad.parse::<Kind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dot_in_the_class_is_named_as_the_one_problem() {
        let e = Kind::new("nvidia.com", "gpu.x").unwrap_err().to_string();
        assert_eq!(e, "CDI class \"gpu.x\" has a '.', which needs cdiVersion 0.6.0, and Podman 4.3 ignores such specs: use letters, digits, '_' and '-' (e.g. --class gpu-x)");
        assert!(Kind::new("nvidia.com", "-x").unwrap_err().to_string().contains("must start with a letter"));
    }
}
