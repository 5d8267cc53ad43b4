//! `gpuwarden podman install-hook`: the hooks.d file that makes Podman run
//! the precreate rewrite.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Result;
use gpuwarden::base::fsutil::write_atomic;
use gpuwarden::hookcall::{HookCall, HookOptions};

pub const HOOK_FILE: &str = "gpuwarden-precreate.json";

/// The hooks.d JSON that runs `hook` at precreate. `when.always`: the hook
/// itself passes containers without a profile through untouched, and Podman
/// cannot match on the env a CDI device sets.
pub fn precreate_hook_json(hook: &HookCall) -> String {
    let v = serde_json::json!({
        "version": "1.0.0",
        "hook": { "path": hook.path.display().to_string(), "args": hook.args("precreate") },
        "when": { "always": true },
        "stages": ["precreate"],
    });
    gpuwarden::base::json::pretty(&v)
}

pub fn install_hook(hooks_dir: &Path, hook_path: Option<PathBuf>, launcher: &Path, print: bool, config: Option<&Path>) -> Result<ExitCode> {
    let path = super::hook_binary(hook_path.as_deref())?;
    let options = HookOptions { config: config.map(Path::to_path_buf), launcher_path: Some(launcher.to_path_buf()), ..Default::default() };
    let hook = HookCall { path, options };
    let text = precreate_hook_json(&hook);
    if print {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(hooks_dir).map_err(|e| format!("cannot create {}: {e}", hooks_dir.display()))?;
    let file = hooks_dir.join(HOOK_FILE);
    write_atomic(&file, text.as_bytes(), 0o644)?;
    println!("installed {} (runs {} precreate for every Podman container)", file.display(), hook.path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_hook_file_is_what_install_writes_for_usr_local_bin() {
        let shipped = include_str!("../../../hooks/gpuwarden-precreate.json");
        let hook = HookCall { path: "/usr/local/bin/gpuwarden-hook".into(), options: HookOptions { launcher_path: Some("/usr/local/bin/gpuwarden-launch".into()), ..Default::default() } };
        assert_eq!(shipped, precreate_hook_json(&hook));
    }
}
