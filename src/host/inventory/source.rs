//! Where an inventory comes from, as the user names it: `builtin:NAME`, a
//! JSON file (or `-` for stdin), or NVML when nothing is named.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{builtin, GpuProbe, Inventory, NvmlError, BUILTIN_NAMES};

/// An `--inventory` argument, or NVML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventorySource {
    /// Ask NVML, loading the library from this path if given.
    Nvml { library: Option<PathBuf> },
    File(PathBuf),
    Builtin(String),
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {}: {source}{}", path.display(), read_hint(source))]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inventory {}: line {line}, column {column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("inventory {origin}: {why}")]
    Invalid { origin: String, why: String },
    #[error("unknown built-in inventory {name:?}: known are {}", known())]
    UnknownBuiltin { name: String },
    #[error(transparent)]
    Nvml(#[from] NvmlError),
}

/// What to do about an inventory file that is not there.
fn read_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (on a host with a GPU, leave --inventory and `inventory =` out to ask NVML; without one, builtin:rtx4070 stands in, or write a file with `gpuwarden inventory --json`)"
    } else {
        ""
    }
}

fn known() -> String {
    BUILTIN_NAMES.iter().map(|n| format!("builtin:{n}")).collect::<Vec<_>>().join(", ")
}

impl FromStr for InventorySource {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.strip_prefix("builtin:") {
            Some(name) => InventorySource::Builtin(name.to_string()),
            None if s == "nvml" => InventorySource::Nvml { library: None },
            None => InventorySource::File(PathBuf::from(s)),
        })
    }
}

impl std::fmt::Display for InventorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InventorySource::Nvml { .. } => write!(f, "nvml"),
            InventorySource::File(p) => write!(f, "{}", p.display()),
            InventorySource::Builtin(n) => write!(f, "builtin:{n}"),
        }
    }
}

impl InventorySource {
    /// Loads and validates the inventory. NVML goes through `probe`, so that
    /// callers (and tests) choose how the library is reached.
    pub fn load(&self, probe: &dyn GpuProbe) -> Result<Inventory, InventoryError> {
        let (inventory, origin) = match self {
            InventorySource::Nvml { library } => (probe.probe(library.as_deref())?, "from NVML".to_string()),
            InventorySource::Builtin(name) => {
                let inv = builtin(name).ok_or_else(|| InventoryError::UnknownBuiltin { name: name.clone() })?;
                (inv, format!("builtin:{name}"))
            }
            InventorySource::File(path) => (read_file(path)?, path.display().to_string()),
        };
        inventory.validate().map_err(|why| InventoryError::Invalid { origin, why })?;
        Ok(inventory)
    }
}

fn read_file(path: &Path) -> Result<Inventory, InventoryError> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| InventoryError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parses inventory JSON; errors carry the line and column.
pub(super) fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
    serde_json::from_str(text).map_err(|e| InventoryError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: crate::base::text::strip_position(&e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoGpu;
    impl GpuProbe for NoGpu {
        fn probe(&self, _: Option<&Path>) -> Result<Inventory, NvmlError> {
            Err(NvmlError::DriverNotLoaded)
        }
    }

    #[test]
    fn sources_parse_from_what_users_type() {
        assert_eq!("builtin:rtx4070".parse::<InventorySource>().unwrap(), InventorySource::Builtin("rtx4070".into()));
        assert_eq!("nvml".parse::<InventorySource>().unwrap(), InventorySource::Nvml { library: None });
        assert_eq!("inv.json".parse::<InventorySource>().unwrap(), InventorySource::File("inv.json".into()));
    }

    #[test]
    fn what_inventory_json_prints_reads_back() {
        let inv = builtin("rtx4070").unwrap();
        let text = serde_json::to_string_pretty(&inv).unwrap();
        assert!(text.contains("\"memory_total_bytes\": 12884901888"), "{text}");
        assert_eq!(parse(&text, Path::new("x")).unwrap(), inv);
    }

    #[test]
    fn malformed_json_names_file_line_and_column() {
        let e = parse("{\n  \"driver_version\": \"535\",\n  \"gpus\": [ }", Path::new("inv.json")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("inventory inv.json: line 3, column"), "{msg}");
        assert!(!msg.contains("at line 3"), "position is said once: {msg}");
    }

    #[test]
    fn unknown_fields_and_missing_files_are_refused() {
        let e = parse(r#"{"driver_version":"1","gpus":[],"extra":1}"#, Path::new("i")).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let e = InventorySource::File("/nonexistent/inv.json".into()).load(&NoGpu).unwrap_err();
        assert!(e.to_string().contains("cannot read inventory /nonexistent/inv.json"), "{e}");
    }

    #[test]
    fn a_valid_json_with_bad_content_is_refused_with_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.json");
        let mut inv = builtin("rtx4070").unwrap();
        inv.gpus[0].pci_bus_id = "nope".into();
        std::fs::write(&path, serde_json::to_string(&inv).unwrap()).unwrap();
        let e = InventorySource::File(path).load(&NoGpu).unwrap_err().to_string();
        assert!(e.contains("gpus[0].pci_bus_id"), "{e}");
    }

    #[test]
    fn unknown_builtins_list_the_known_ones_and_nvml_errors_pass_through() {
        let e = InventorySource::Builtin("h100".into()).load(&NoGpu).unwrap_err().to_string();
        assert!(e.contains("builtin:rtx4070"), "{e}");
        let e = InventorySource::Nvml { library: None }.load(&NoGpu).unwrap_err();
        assert!(matches!(e, InventoryError::Nvml(NvmlError::DriverNotLoaded)));
    }
}
