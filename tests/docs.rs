//! The docs as a new user follows them: every link and anchor in the READMEs
//! resolves, every file a shell example names exists (in this tree, or among
//! the examples the package ships from it), every `gpuwarden` command in them
//! is a real subcommand taking the flags shown, every unit a `systemctl` line
//! names is shipped, and every binary's `--help` answers with its usage.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::PathBuf;

const READMES: &[&str] = &["README.md", "podman/README.md", "docker/README.md", "hooks/README.md", "cdi/README.md"];

/// Where the package puts the examples; they come from the tree's `docker/` and `podman/`.
const EXAMPLES: &str = "/usr/share/doc/gpuwarden/examples/";

fn read(readme: &str) -> String {
    std::fs::read_to_string(repo().join(readme)).unwrap()
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped.
fn slug(heading: &str) -> String {
    heading.trim().to_lowercase().chars().filter_map(|c| if c == ' ' { Some('-') } else if c.is_alphanumeric() || c == '-' || c == '_' { Some(c) } else { None }).collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect()
}

/// The commands of the ```sh blocks: continuations joined, comments dropped.
fn shell_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim_end();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let continued = code.ends_with('\\');
        current.push_str(code.trim_end_matches('\\'));
        current.push(' ');
        if !continued {
            let c = current.split_whitespace().collect::<Vec<_>>().join(" ");
            if !c.is_empty() {
                out.push(c);
            }
            current.clear();
        }
    }
    out
}

/// The tree's path for a path the docs name: repo-relative, or among the packaged examples.
fn in_tree(word: &str) -> Option<PathBuf> {
    let word = word.trim_matches(|c| c == '`' || c == '(' || c == ')' || c == ',' || c == '.' || c == ';');
    if let Some(rest) = word.strip_prefix(EXAMPLES) {
        return Some(repo().join(rest));
    }
    ["scripts/", "podman/", "docker/", "systemd/", "packaging/", "hooks/", "cdi/", "tests/", "kubernetes/"].iter().any(|p| word.starts_with(p)).then(|| repo().join(word))
}

#[test]
fn every_link_and_anchor_in_the_readmes_resolves() {
    for readme in READMES {
        let text = read(readme);
        let dir = repo().join(readme).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..text[i..].find(')').map_or(text.len(), |j| i + j)];
            if target.starts_with("http") || target.is_empty() {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() { repo().join(readme) } else { dir.join(file) };
            assert!(path.exists(), "{readme}: the link {target} names {}, which does not exist", path.display());
            if !anchor.is_empty() {
                let there = std::fs::read_to_string(&path).unwrap();
                assert!(anchors(&there).contains(anchor), "{readme}: #{anchor} is no heading of {}", path.display());
            }
        }
    }
}

#[test]
fn every_file_a_shell_example_names_exists() {
    let mut checked = 0;
    for readme in READMES {
        for cmd in shell_commands(&read(readme)) {
            for word in cmd.split_whitespace() {
                if let Some(path) = in_tree(word) {
                    let path = PathBuf::from(path.display().to_string().split(':').next().unwrap());
                    assert!(path.exists(), "{readme}: `{cmd}` names {word}, which is not in the tree ({})", path.display());
                    checked += 1;
                }
            }
        }
        // Example paths in prose too.
        for word in read(readme).split_whitespace().filter(|w| w.contains(EXAMPLES)) {
            let word = &word[word.find(EXAMPLES).unwrap()..];
            let path = in_tree(word).unwrap();
            assert!(path.exists(), "{readme}: {word} is not among the examples the package ships ({})", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 10, "the examples name files: {checked}");
}

#[test]
fn every_gpuwarden_command_in_the_docs_is_real_with_its_flags() {
    let mut checked = 0;
    for readme in READMES {
        for cmd in shell_commands(&read(readme)) {
            // `gpuwarden ...` and `target/dist/gpuwarden ...`, after `&&` too.
            for part in cmd.split("&&") {
                let words: Vec<&str> = part.split_whitespace().collect();
                let Some(at) = words.iter().position(|w| *w == "gpuwarden" || w.ends_with("/gpuwarden")) else { continue };
                let args = &words[at + 1..];
                let sub: Vec<&str> = args.iter().take_while(|w| !w.starts_with('-') && !w.contains('/') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')).copied().collect();
                let mut help_args = sub.clone();
                help_args.push("--help");
                let o = gpuwarden(&help_args, b"");
                assert!(o.status.success(), "{readme}: `{part}`: gpuwarden {} is no command: {}", sub.join(" "), stderr(&o));
                let help = stdout(&o);
                for flag in args.iter().filter(|w| w.starts_with("--")) {
                    let name = flag.split('=').next().unwrap();
                    assert!(help.contains(name), "{readme}: `{part}`: gpuwarden {} takes no {name}", sub.join(" "));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "the docs show gpuwarden commands: {checked}");
}

#[test]
fn every_unit_the_docs_enable_is_shipped() {
    let shipped: BTreeSet<String> = ["systemd", "podman/systemd"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()))
        .collect();
    let mut checked = 0;
    for readme in READMES {
        for cmd in shell_commands(&read(readme)).iter().chain(std::iter::once(&read(readme))) {
            for part in cmd.split("systemctl enable --now ").skip(1) {
                for unit in part.split_whitespace().take_while(|w| w.starts_with("gpuwarden-") || w.starts_with("comfyui@") || w.starts_with("blender")) {
                    let unit = unit.trim_matches(|c| c == '`' || c == ')' || c == ',');
                    let file = match unit.split_once('@') {
                        Some((name, _)) => format!("{name}@.service"),
                        None if unit.contains('.') => unit.to_string(),
                        None => format!("{unit}.service"),
                    };
                    assert!(shipped.contains(&file), "{readme}: systemctl enable {unit}, but {file} is not shipped");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 5, "{checked}");
}

#[test]
fn every_binary_answers_help_with_its_usage() {
    for (bin, args) in [
        (PathBuf::from(bin()), vec!["--help"]),
        (PathBuf::from(hook_bin()), vec!["--help"]),
        (dist("gpuwarden-launch"), vec!["--help"]),
        (dist("gpuwarden-launch"), vec!["-h"]),
        (dist("gpuwarden-runtime"), vec!["--help"]),
        (dist("gpuwarden-runtime"), vec!["--gpuwarden-help"]),
    ] {
        let o = std::process::Command::new(&bin).args(&args).output().unwrap();
        assert!(o.status.success(), "{} {args:?}: {}", bin.display(), stderr(&o));
        assert!(stdout(&o).contains("Usage: "), "{} {args:?} gives no usage: {}", bin.display(), stdout(&o));
    }
    let o = std::process::Command::new(dist("gpuwarden-launch")).arg("--version").output().unwrap();
    assert!(o.status.success() && stdout(&o).starts_with("gpuwarden-launch "), "{}", stderr(&o));
}
