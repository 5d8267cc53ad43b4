//! `gpuwarden doctor`: what stands between this host and a working GPU
//! container, each problem with what to run. The checks are pure functions
//! of [`Facts`], which the admin CLI gathers (files, commands, NVML), so
//! every verdict is tested without a GPU or root.

mod checks;

pub use checks::{check, version_at_least};

use std::path::PathBuf;

use serde::Serialize;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Worth knowing; nothing is wrong.
    Note,
    /// Works, but weaker than it should be.
    Warn,
    /// GPU containers fail, or run unguarded, until it is fixed.
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub text: String,
    /// What to run or change, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(check: &'static str, level: Level, text: impl Into<String>) -> Finding {
        Finding { check, level, text: text.into(), fix: None }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// True when some finding blocks GPU containers.
pub fn blocks(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Fail)
}

/// The report for a terminal: one line a finding, the fix indented below it.
pub fn render_text(findings: &[Finding]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(out, "{:<4}  {:<9}  {}", f.level.label(), f.check, f.text);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "{:<4}  {:<9}  -> {fix}", "", "");
        }
    }
    let (fails, warns) = (findings.iter().filter(|f| f.level == Level::Fail).count(), findings.iter().filter(|f| f.level == Level::Warn).count());
    let _ = match (fails, warns) {
        (0, 0) => writeln!(out, "ready: nothing blocks GPU containers on this host"),
        (0, w) => writeln!(out, "ready, with {w} warning(s)"),
        (f, _) => writeln!(out, "NOT ready: {f} problem(s) block GPU containers"),
    };
    out
}

/// The report for scripts.
pub fn render_json(findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({"ready": !blocks(findings), "findings": findings})
}

/// Everything the checks look at, gathered by the caller.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The GPUs and driver: from NVML, or why not.
    pub gpus: Option<Result<Gpus, String>>,
    /// `inventory = ...` (or `--inventory`) naming a stand-in for NVML.
    pub stand_in: Option<String>,
    pub mps: MpsFacts,
    pub cdi: CdiFacts,
    pub podman: Option<Engine>,
    pub docker: Option<DockerFacts>,
    pub watch: WatchFacts,
    pub nodes: Vec<Node>,
    pub user: Option<UserFacts>,
    /// The admission broker's socket, and whether it answers (or why not).
    pub broker: Option<(PathBuf, Result<(), String>)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gpus {
    pub driver_version: String,
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct MpsFacts {
    pub enabled: bool,
    /// `nvidia-cuda-mps-control`, where found.
    pub control: Option<PathBuf>,
    /// The daemon's pid, or why none answers.
    pub daemon: Option<Result<i32, String>>,
    /// Whether its defaults hold the ceiling, with what was read.
    pub defaults: Option<Result<(), String>>,
}

#[derive(Clone, Debug, Default)]
pub struct CdiFacts {
    pub dirs: Vec<PathBuf>,
    pub specs: Vec<crate::cdi::SpecFile>,
    pub broken: Vec<(PathBuf, String)>,
    /// Of gpuwarden's spec: the driver version its libraries carry, and host paths that are gone.
    pub ours: Vec<OurSpec>,
    /// NVIDIA's toolkit, where installed.
    pub toolkit: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OurSpec {
    pub path: PathBuf,
    pub driver_version: Option<String>,
    pub missing: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Engine {
    pub version: Option<String>,
    /// Podman: the hooks.d files naming gpuwarden's hook, with their mode and whether the hook binary exists.
    pub hook_files: Vec<HookFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFile {
    pub path: PathBuf,
    pub mode: u32,
    pub hook: PathBuf,
    pub hook_exists: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerFacts {
    pub version: Option<String>,
    /// /etc/docker/daemon.json, parsed, or why not (`None`: there is none).
    pub daemon_json: Option<Result<serde_json::Value, String>>,
    /// Whether the runtime it registers exists on the host.
    pub runtime_exists: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFacts {
    pub required: bool,
    /// Seconds since the watchdog's last look, and whether that is within three of its
    /// intervals (`WatchState::is_fresh`); `None`: it never ran.
    pub last_look: Option<(u64, bool)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub mode: u32,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserFacts {
    pub name: String,
    pub uid: u32,
    pub subuids: bool,
    pub subgids: bool,
    /// The groups the user is in, by name.
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_one_line_a_finding_and_a_verdict() {
        let findings = vec![
            Finding::new("driver", Level::Ok, "driver 535.261.03, 1 GPU"),
            Finding::new("mps", Level::Fail, "the MPS control daemon is not running").fix("systemctl start gpuwarden-mps"),
        ];
        let text = render_text(&findings);
        assert_eq!(
            text,
            "ok    driver     driver 535.261.03, 1 GPU\nFAIL  mps        the MPS control daemon is not running\n                 -> systemctl start gpuwarden-mps\nNOT ready: 1 problem(s) block GPU containers\n"
        );
        assert!(blocks(&findings));
        let json = render_json(&findings);
        assert_eq!(json["ready"], false);
        assert_eq!(json["findings"][1]["level"], "fail");
        assert_eq!(json["findings"][1]["fix"], "systemctl start gpuwarden-mps");
        assert!(json["findings"][0].get("fix").is_none());
        assert!(render_text(&findings[..1]).ends_with("ready: nothing blocks GPU containers on this host\n"));
    }
}
