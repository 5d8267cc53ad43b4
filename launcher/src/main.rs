//! `gpuwarden-launch`: the first process of a profile container. It sets
//! no-new-privileges, keeps only the profile's capabilities, restricts itself
//! with the profile's Landlock rules, then execs the workload, which keeps its
//! pid, exit status, signals and stdio. A hook cannot do this: Landlock binds
//! only the process that applies it and its children.
//!
//! Exit status 126 when the rules cannot hold (said in one line), 127 when the
//! program cannot be run, 77 when gpuwarden's admission refused the container
//! and left its reason in the container's `/dev` (under a runtime that drops
//! a hook's stderr, such as crun: see the library's `hook::deliver`).

mod capabilities;
mod rules;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use landlock::RulesetStatus;

/// Where admission leaves its refusal: the container's own /dev, a tmpfs the
/// runtime made for it. The library's `hook::deliver::REFUSAL_FILE`, held equal by a test.
const REFUSAL_FILE: &str = "/dev/gpuwarden-refusal";

/// The exit status of a refused container (EX_NOPERM): the library's `REFUSED_STATUS`.
const REFUSED_STATUS: u8 = 77;

/// Kubernetes shows what a container wrote here as its termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The refusal admission left for this container, if any: one line, at most 4 KiB.
fn admission_refusal() -> Option<String> {
    use std::io::Read;
    let mut line = Vec::new();
    std::fs::File::open(REFUSAL_FILE).ok()?.take(4096).read_to_end(&mut line).ok()?;
    let line = String::from_utf8_lossy(&line);
    Some(line.lines().next().unwrap_or("refused by gpuwarden's admission").to_string())
}

fn refuse(why: &str) -> ExitCode {
    eprintln!("gpuwarden-launch: refused: {why}");
    ExitCode::from(126)
}

/// Whether the workload may run with the rules as enforced: never without
/// Landlock, and only fully enforced when the profile requires it.
fn verdict(status: &RulesetStatus, require_full: bool, abi: &str) -> Result<(), String> {
    match (status, require_full) {
        (RulesetStatus::NotEnforced, _) => Err(format!("Landlock is not enforced on this kernel ({abi}): the profile's file rules would not hold")),
        (RulesetStatus::PartiallyEnforced, true) => Err(format!("Landlock is only partly enforced on this kernel ({abi}), and the profile requires full enforcement")),
        _ => Ok(()),
    }
}

/// Its help, also the man page's text (tools/docgen).
const USAGE: &str = include_str!("usage.txt");
fn main() -> ExitCode {
    // Only as the first argument: a workload's own --help comes after `--`.
    match std::env::args_os().nth(1).as_deref().and_then(|a| a.to_str()) {
        Some("--help" | "-h") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!("gpuwarden-launch {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // Refused by admission: say why where the user looks, and run nothing.
    if let Some(line) = admission_refusal() {
        eprintln!("gpuwarden: {line}");
        let _ = std::fs::OpenOptions::new().write(true).open(TERMINATION_LOG).and_then(|mut f| std::io::Write::write_all(&mut f, format!("gpuwarden: {line}\n").as_bytes()));
        return ExitCode::from(REFUSED_STATUS);
    }
    let rules = match rules::parse(std::env::args_os().skip(1)) {
        Ok(r) => r,
        Err(e) => return refuse(&format!("{e} (the precreate rewrite writes this command line)")),
    };
    // SAFETY: prctl with integer arguments only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return refuse(&format!("cannot set no-new-privileges: {}", std::io::Error::last_os_error()));
    }
    if let Err(e) = capabilities::keep_only(&rules.caps) {
        return refuse(&e);
    }
    let applied = match rules::apply(&rules) {
        Ok(a) => a,
        Err(e) => return refuse(&format!("Landlock: {e}")),
    };
    let missing: Vec<String> = applied.missing.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Err(why) = verdict(&applied.status, rules.require_full, &applied.abi) {
        return refuse(&why);
    }
    if std::env::var_os("GPUWARDEN_LAUNCH_QUIET").is_none() {
        let skipped = if missing.is_empty() { String::new() } else { format!("; not in the image, skipped: {}", missing.join(", ")) };
        let how = match applied.status {
            RulesetStatus::FullyEnforced => "fully enforced",
            RulesetStatus::PartiallyEnforced => "partly enforced",
            RulesetStatus::NotEnforced => "not enforced",
        };
        eprintln!("gpuwarden-launch: Landlock {}: rules {how}{skipped}", applied.abi);
    }
    for line in &rules.warn {
        eprintln!("gpuwarden-launch: WARNING: {line}");
    }
    let err = std::process::Command::new(&rules.program).args(&rules.args).exec();
    eprintln!("gpuwarden-launch: cannot run {}: {err}", String::from_utf8_lossy(rules.program.as_bytes()));
    ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weaker_kernel_is_a_refusal_never_a_silent_downgrade() {
        assert!(verdict(&RulesetStatus::FullyEnforced, true, "ABI 7").is_ok());
        assert!(verdict(&RulesetStatus::PartiallyEnforced, false, "ABI 3").is_ok(), "by default, what this kernel has");
        let e = verdict(&RulesetStatus::PartiallyEnforced, true, "ABI 3").unwrap_err();
        assert!(e.contains("only partly enforced on this kernel (ABI 3), and the profile requires full enforcement"), "{e}");
        assert!(verdict(&RulesetStatus::NotEnforced, false, "no Landlock").unwrap_err().contains("not enforced"));
    }
}
