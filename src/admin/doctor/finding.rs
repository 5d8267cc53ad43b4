//! A finding of `gpuwarden doctor` and the report, as text or JSON.

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
