//! `gpuwarden-docgen OUT`: writes the package's man pages (`OUT/man/*.1`) and
//! shell completions (`OUT/completions/`): `gpuwarden` and `gpuwarden-hook`
//! and `gpuwarden-device-plugin` from their clap definitions (one page per
//! `gpuwarden` command too), and
//! `gpuwarden-runtime` and `gpuwarden-launch`, which parse their own
//! arguments, from the help text each binary prints.

use std::path::Path;
use std::process::ExitCode;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const RUNTIME_HELP: &str = include_str!("../../../hooks/src/runtime-help.txt");
const LAUNCH_USAGE: &str = include_str!("../../../launcher/src/usage.txt");

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: gpuwarden-docgen OUT (writes OUT/man and OUT/completions)");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuwarden-docgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cli = gpuwarden_cli::command().version(VERSION);
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names commands with static strings; this tool runs once and exits.
        let name: &'static str = Box::leak(format!("gpuwarden-{}", sub.get_name()).into_boxed_str());
        clap_page(&man, sub.clone().name(name).version(VERSION))?;
    }
    clap_page(&man, cli)?;
    clap_page(&man, gpuwarden_hook::cli::command().version(VERSION))?;
    clap_page(&man, gpuwarden_device_plugin::args::command().version(VERSION))?;
    std::fs::write(man.join("gpuwarden-runtime.1"), text_page("gpuwarden-runtime", RUNTIME_HELP))?;
    std::fs::write(man.join("gpuwarden-launch.1"), text_page("gpuwarden-launch", LAUNCH_USAGE))?;
    use gpuwarden_cli::cmd::{completions as complete, Shell};
    for (shell, file) in [(Shell::Bash, "gpuwarden"), (Shell::Zsh, "_gpuwarden"), (Shell::Fish, "gpuwarden.fish")] {
        let mut script = Vec::new();
        complete(shell, &mut script);
        std::fs::write(completions.join(file), script)?;
    }
    Ok(())
}

/// The page of `cmd`, named after it, with the other binaries in SEE ALSO.
fn clap_page(dir: &Path, cmd: clap::Command) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd).source(format!("gpuwarden {VERSION}")).manual("gpuwarden");
    man.render(&mut page)?;
    page.extend_from_slice(see_also(&name).as_bytes());
    std::fs::write(dir.join(format!("{name}.1")), page)
}

fn see_also(name: &str) -> String {
    let others: Vec<String> = ["gpuwarden", "gpuwarden-hook", "gpuwarden-runtime", "gpuwarden-launch", "gpuwarden-device-plugin"].iter().filter(|o| **o != name).map(|o| format!("\\fB{o}\\fR(1)")).collect();
    format!(".SH \"SEE ALSO\"\n{}, /usr/share/doc/gpuwarden/README.md\n", others.join(", "))
}

/// A page for a binary that parses its own arguments: its first line is the
/// NAME line, and the whole help text is the DESCRIPTION, as printed.
fn text_page(name: &str, help: &str) -> String {
    let summary = help.lines().next().unwrap_or_default();
    let summary = summary.strip_prefix(&format!("{name}: ")).unwrap_or(summary).trim_end_matches(['.', ',']);
    let mut page = format!(".TH {} 1 \"\" \"gpuwarden {VERSION}\" \"gpuwarden\"\n.SH NAME\n{} \\- {}\n.SH DESCRIPTION\n.nf\n", name.to_uppercase(), roff(name), roff(summary));
    for line in help.lines() {
        page.push_str(&roff(line));
        page.push('\n');
    }
    page.push_str(".fi\n");
    page.push_str(&see_also(name));
    page
}

/// `text` safe in roff: backslashes and minus signs escaped, no line read as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_page_keeps_the_help_as_printed_and_escapes_roff() {
        let page = text_page("gpuwarden-launch", "gpuwarden-launch: the first process.\n.not a request\n  --read PATH\\x\n");
        assert!(page.starts_with(".TH GPUWARDEN-LAUNCH 1 "), "{page}");
        assert!(page.contains(".SH NAME\ngpuwarden\\-launch \\- the first process\n"), "{page}");
        assert!(page.contains("\n\\&.not a request\n") && page.contains("  \\-\\-read PATH\\ex\n"), "{page}");
    }

    #[test]
    fn every_binary_gets_a_page_and_every_shell_a_script() {
        let dir = std::env::temp_dir().join(format!("gpuwarden-docgen-{}", std::process::id()));
        write_all(&dir).unwrap();
        for page in ["gpuwarden", "gpuwarden-hook", "gpuwarden-runtime", "gpuwarden-launch", "gpuwarden-device-plugin", "gpuwarden-cdi", "gpuwarden-status"] {
            let text = std::fs::read_to_string(dir.join("man").join(format!("{page}.1"))).unwrap();
            assert!(text.starts_with(".ie") || text.starts_with(".TH"), "{page}: {}", &text[..80.min(text.len())]);
            assert!(text.contains("SEE ALSO"), "{page}");
        }
        let runtime = std::fs::read_to_string(dir.join("man/gpuwarden-runtime.1")).unwrap();
        assert!(runtime.contains("\\-\\-gpuwarden\\-config FILE"), "the runtime's options are in its page");
        let bash = std::fs::read_to_string(dir.join("completions/gpuwarden")).unwrap();
        assert!(bash.contains("complete") && bash.contains("doctor"), "bash completes the commands");
        assert!(std::fs::read_to_string(dir.join("completions/_gpuwarden")).unwrap().starts_with("#compdef gpuwarden"));
        assert!(std::fs::read_to_string(dir.join("completions/gpuwarden.fish")).unwrap().contains("complete -c gpuwarden"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
