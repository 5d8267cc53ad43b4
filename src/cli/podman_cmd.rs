//! `gpuwarden podman install-hook`: the hooks.d file that makes Podman run
//! the precreate rewrite.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{absolute, Result};
use crate::fsutil::write_atomic;

pub const HOOK_FILE: &str = "gpuwarden-precreate.json";

/// The hooks.d JSON for `binary`. `when.always`: the hook itself passes
/// containers without a profile through untouched, and Podman cannot match
/// on the env a CDI device sets.
pub fn precreate_hook_json(binary: &Path, config: Option<&Path>) -> String {
    let mut args = vec!["gpuwarden".to_string(), "hook".into(), "precreate".into()];
    if let Some(c) = config {
        args.extend(["--config".to_string(), c.display().to_string()]);
    }
    let v = serde_json::json!({
        "version": "1.0.0",
        "hook": { "path": binary.display().to_string(), "args": args },
        "when": { "always": true },
        "stages": ["precreate"],
    });
    format!("{}\n", serde_json::to_string_pretty(&v).expect("JSON always serializes"))
}

pub fn install_hook(hooks_dir: &Path, binary: Option<PathBuf>, print: bool, config: Option<&Path>) -> Result<ExitCode> {
    let binary = match binary {
        Some(b) => absolute(&b),
        None => super::this_binary()?,
    };
    let text = precreate_hook_json(&binary, config.map(absolute).as_deref());
    if print {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(hooks_dir).map_err(|e| format!("cannot create {}: {e}", hooks_dir.display()))?;
    let path = hooks_dir.join(HOOK_FILE);
    write_atomic(&path, text.as_bytes(), 0o644)?;
    println!("installed {} (runs {} hook precreate for every Podman container)", path.display(), binary.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_hook_file_is_what_install_writes_for_usr_local_bin() {
        let shipped = include_str!("../../hooks/gpuwarden-precreate.json");
        assert_eq!(shipped, precreate_hook_json(Path::new("/usr/local/bin/gpuwarden"), None));
    }
}
