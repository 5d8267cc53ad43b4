//! Reads a crate's imports from its sources, for the layering tests: every
//! `use` tree and every `crate::`, `super::` and `self::` path, with
//! comments, string and character literals and `#[cfg(test)]` items left
//! out, each followed through `pub use` re-exports to the file that defines
//! what it names. A reader of Rust's surface, not a compiler: enough for
//! this tree, whose tests show it can tell.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One source file: its path under the crate's `src` and its module path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct File {
    pub file: String,
    pub module: Vec<String>,
}

/// One import: `from` names `path`, defined in `to`.
pub struct Import {
    pub from: File,
    pub to: File,
    pub path: String,
}

struct Source {
    file: File,
    children: BTreeSet<String>,
    /// Paths it names, absolute or relative, as written.
    uses: Vec<Vec<String>>,
    /// `pub use`: the name it gives (`*` for a glob) and the path it names.
    reexports: Vec<(String, Vec<String>)>,
}

pub struct Graph {
    sources: Vec<Source>,
    modules: BTreeMap<Vec<String>, usize>,
    imports: Vec<Import>,
}

impl Graph {
    /// The crate whose `lib.rs` is in `src`.
    pub fn read(src: &Path) -> Graph {
        let mut sources = Vec::new();
        for rel in rust_files(src) {
            let text = std::fs::read_to_string(src.join(&rel)).unwrap();
            let code = strip_tests(&clean(&text));
            let module = module_of(&rel);
            let mut s = Source { file: File { file: rel, module }, children: children(&code), uses: Vec::new(), reexports: Vec::new() };
            for (public, trees) in use_statements(&code) {
                for (path, alias) in trees {
                    if public {
                        let name = alias.clone().or_else(|| path.last().cloned()).unwrap_or_default();
                        s.reexports.push((name, path.clone()));
                    }
                    s.uses.push(path);
                }
            }
            s.uses.extend(inline_paths(&code));
            sources.push(s);
        }
        let modules = sources.iter().enumerate().map(|(i, s)| (s.file.module.clone(), i)).collect();
        let mut graph = Graph { sources, modules, imports: Vec::new() };
        let mut imports = Vec::new();
        for (i, s) in graph.sources.iter().enumerate() {
            for path in &s.uses {
                let Some(abs) = graph.absolute(i, path) else { continue };
                let Some(to) = graph.resolve(&abs, 0) else { continue };
                if to != i && !graph.sources[to].file.module.is_empty() {
                    imports.push(Import { from: s.file.clone(), to: graph.sources[to].file.clone(), path: written(path) });
                }
            }
        }
        graph.imports = imports;
        graph
    }

    pub fn imports(&self) -> &[Import] {
        &self.imports
    }

    /// The crate's top modules, by name.
    pub fn top_modules(&self) -> Vec<String> {
        self.modules.keys().filter(|m| m.len() == 1).map(|m| m[0].clone()).collect()
    }

    /// `path`, written in source `i`, as a path from the crate root; `None`
    /// for another crate's.
    fn absolute(&self, i: usize, path: &[String]) -> Option<Vec<String>> {
        let s = &self.sources[i];
        let mut at = s.file.module.clone();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &path[1..];
            }
            Some("self") => rest = &path[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) if s.children.contains(first) => {}
            _ => return None,
        }
        at.extend(rest.iter().filter(|seg| *seg != "self").cloned());
        Some(at)
    }

    /// The source that defines what the absolute `path` names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        let mut at: Vec<String> = Vec::new();
        let mut i = 0;
        while i < path.len() && self.modules.contains_key(&[&at[..], &path[i..=i]].concat()) {
            at.push(path[i].clone());
            i += 1;
        }
        let here = *self.modules.get(&at)?;
        if i == path.len() || depth > 8 {
            return Some(here);
        }
        let name = &path[i];
        for (given, target) in &self.sources[here].reexports {
            if given == name {
                let abs = self.absolute(here, target)?;
                return self.resolve(&[&abs[..], &path[i + 1..]].concat(), depth + 1).or(Some(here));
            }
        }
        for (given, target) in &self.sources[here].reexports {
            if given == "*" {
                let abs = self.absolute(here, &target[..target.len() - 1])?;
                if let Some(found) = self.resolve(&[&abs[..], &path[i..]].concat(), depth + 1) {
                    if self.sources[found].file.module.starts_with(&abs) {
                        return Some(found);
                    }
                }
            }
        }
        Some(here)
    }

    /// Every import cycle: between files (`files: a <-> b`), and between
    /// the entries of one folder, where one of them is a folder
    /// (`folders in admin: status <-> watch`).
    pub fn cycles(&self) -> Vec<String> {
        let mut out = Vec::new();
        let files: BTreeSet<(String, String)> = self.imports.iter().map(|i| (i.from.file.clone(), i.to.file.clone())).collect();
        for scc in components(&files) {
            let mut how: BTreeMap<(&str, &str), &str> = BTreeMap::new();
            for i in self.imports.iter().filter(|i| scc.contains(&i.from.file) && scc.contains(&i.to.file)) {
                how.entry((&i.from.file, &i.to.file)).or_insert(&i.path);
            }
            let how: Vec<String> = how.iter().map(|((a, b), p)| format!("{a} -> {b} by {p}")).collect();
            out.push(format!("files: {} ({})", scc.join(" <-> "), how.join("; ")));
        }
        let folders: BTreeSet<&[String]> = self.modules.keys().filter(|m| self.sources[self.modules[*m]].file.file.ends_with("mod.rs") || m.is_empty()).map(|m| &m[..]).collect();
        for folder in folders {
            let entry = |f: &File| -> Option<(String, bool)> {
                let inside = f.module.len() > folder.len() && f.module.starts_with(folder);
                inside.then(|| (f.module[folder.len()].clone(), f.module.len() > folder.len() + 1 || f.file.ends_with("mod.rs")))
            };
            let mut edges = BTreeSet::new();
            let mut is_folder = BTreeSet::new();
            for i in &self.imports {
                if let (Some((a, fa)), Some((b, fb))) = (entry(&i.from), entry(&i.to)) {
                    if a != b {
                        edges.insert((a.clone(), b.clone()));
                    }
                    for (name, folder) in [(a, fa), (b, fb)] {
                        if folder {
                            is_folder.insert(name);
                        }
                    }
                }
            }
            for scc in components(&edges) {
                if scc.iter().any(|n| is_folder.contains(n)) {
                    let name = if folder.is_empty() { "the crate".to_string() } else { folder.join("/") };
                    out.push(format!("folders in {name}: {}", scc.join(" <-> ")));
                }
            }
        }
        out
    }
}

/// The paths another crate's sources under `dir` name from `krate`, by file.
pub fn external_uses(dir: &Path, krate: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for rel in rust_files(dir) {
        let code = strip_tests(&clean(&std::fs::read_to_string(dir.join(&rel)).unwrap()));
        let mut paths: Vec<String> = use_statements(&code).into_iter().flat_map(|(_, t)| t).map(|(p, _)| p).filter(|p| p.first().map(String::as_str) == Some(krate)).map(|p| written(&p)).collect();
        paths.extend(chains(&code, &[krate]).into_iter().map(|p| written(&p)));
        out.push((rel, paths));
    }
    out
}

fn written(path: &[String]) -> String {
    path.join("::")
}

fn rust_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The code of `text` without comments, and with every string and character
/// literal emptied (`""`, `' '`); lifetimes stay.
pub fn clean(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && !ident_char(b.get(i.wrapping_sub(1)).copied()) && raw_start(&b, i + if c == 'b' { 2 } else { 1 }).is_some() {
            let start = i + if c == 'b' { 2 } else { 1 };
            let hashes = raw_start(&b, start).unwrap_or(0);
            i = start + hashes + 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (next == Some('\\') || b.get(i + 2) == Some(&'\'')) {
            i += 1;
            while i < b.len() && b[i] != '\'' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i`, the `#`s of a raw string's opening (`r#"`: 1), if one opens there.
fn raw_start(b: &[char], i: usize) -> Option<usize> {
    let mut n = 0;
    while b.get(i + n) == Some(&'#') {
        n += 1;
    }
    (b.get(i + n) == Some(&'"')).then_some(n)
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `code` without its `#[cfg(test)]` items (test modules, fakes).
pub fn strip_tests(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let b: Vec<char> = out.chars().collect();
        let start = out[..at].chars().count();
        let mut i = start + "#[cfg(test)]".len();
        let mut depth = 0i32;
        let mut end = b.len();
        while i < b.len() {
            match b[i] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        out = b[..start].iter().chain(&b[end.min(b.len())..]).collect();
    }
    out
}

/// The modules `code` declares (`mod name;`).
fn children(code: &str) -> BTreeSet<String> {
    let words = tokens(code);
    let mut out = BTreeSet::new();
    for w in words.windows(3) {
        if w[0] == "mod" && w[2] == ";" {
            out.insert(w[1].clone());
        }
    }
    out
}

/// Identifiers and punctuation, with `::` as one token.
fn tokens(code: &str) -> Vec<String> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if ident_char(Some(c)) {
            let s = i;
            while ident_char(b.get(i).copied()) {
                i += 1;
            }
            out.push(b[s..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

type Tree = Vec<(Vec<String>, Option<String>)>;

/// Every `use` statement: whether it is public, and its paths with their aliases.
fn use_statements(code: &str) -> Vec<(bool, Tree)> {
    let t = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let starts = t[i] == "use" && (i == 0 || matches!(t[i - 1].as_str(), ";" | "{" | "}" | "]" | "pub" | ")"));
        if !starts {
            i += 1;
            continue;
        }
        let public = i > 0 && (t[i - 1] == "pub" || (t[i - 1] == ")" && t[..i].iter().rev().nth(3).is_some_and(|w| w == "pub")));
        let end = t[i..].iter().position(|w| w == ";").map_or(t.len(), |p| i + p);
        let mut at = i + 1;
        let mut tree = Vec::new();
        parse_tree(&t[..end], &mut at, &[], &mut tree);
        out.push((public, tree));
        i = end + 1;
    }
    out
}

fn parse_tree(t: &[String], at: &mut usize, prefix: &[String], out: &mut Tree) {
    let mut path = prefix.to_vec();
    while *at < t.len() {
        let w = t[*at].as_str();
        match w {
            "::" => *at += 1,
            "{" => {
                *at += 1;
                while *at < t.len() && t[*at] != "}" {
                    parse_tree(t, at, &path, out);
                    if *at < t.len() && t[*at] == "," {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "," | "}" => break,
            "*" => {
                path.push("*".into());
                *at += 1;
            }
            "as" => {
                let alias = t.get(*at + 1).cloned();
                *at += 2;
                out.push((path, alias));
                return;
            }
            _ => {
                path.push(w.to_string());
                *at += 1;
            }
        }
    }
    if path.len() > prefix.len() {
        out.push((path, None));
    }
}

/// Paths outside `use` that start at `crate`, `super` or `self`.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    chains(code, &["crate", "super", "self"])
}

/// Chains `first::a::b` in `code` whose first segment is one of `firsts`.
fn chains(code: &str, firsts: &[&str]) -> Vec<Vec<String>> {
    let t = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let leads = firsts.contains(&t[i].as_str()) && t.get(i + 1).is_some_and(|w| w == "::") && (i == 0 || t[i - 1] != "::");
        if !leads {
            i += 1;
            continue;
        }
        let mut path = vec![t[i].clone()];
        i += 1;
        while i + 1 < t.len() && t[i] == "::" && ident_char(t[i + 1].chars().next()) {
            path.push(t[i + 1].clone());
            i += 2;
        }
        // `super::{a, b}` is a use tree, read as one.
        if path.len() > 1 {
            out.push(path);
        }
    }
    out
}

/// The strongly connected parts of more than one node of the graph `edges`,
/// each sorted, in order.
fn components(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let scc: Vec<String> = nodes.iter().filter(|m| reached[*n].contains(**m) && reached[*m].contains(*n)).map(|m| (*m).clone()).collect();
        if scc.len() > 1 && !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_comments_are_not_code() {
        let code = clean("let a = \"crate::x\"; // crate::y\nlet b = r#\"crate::z\"#; let c = '{'; fn f<'a>(x: &'a str) {}\n/* crate::w */");
        assert!(!code.contains("crate::"), "{code}");
        assert!(code.contains("<'a>") && code.contains("' '"), "{code}");
    }
}
