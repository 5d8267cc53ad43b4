//! gpuwarden's own CDI checks (`gpuwarden::cdi::check`) against the CNCF
//! `container-device-interface` crate's (a dev-dependency, never linked into
//! a binary), on a corpus: hand-made specs, sound and broken
//! (`tests/fixtures/cdi-corpus`), and every spec `cdi generate` writes from
//! NVIDIA's real driver packages. Both must pass or refuse the same specs,
//! gpuwarden with the crate's message (to which it may add the cause the
//! crate drops), and compute the same lowest version.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use container_device_interface::specs::config::Spec as CncfSpec;

fn corpus() -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures/cdi-corpus");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= 25, "the corpus is there: {}", dir.display());
    paths
}

/// The crate's verdict: the parse error, or `new_spec`'s chain; and its lowest version.
fn cncf(path: &Path, text: &str) -> (Result<(), String>, Option<String>) {
    match serde_yaml::from_str::<CncfSpec>(text) {
        Err(e) => (Err(format!("parse: {e}")), None),
        Ok(raw) => {
            let min = container_device_interface::version::minimum_required_version(&raw).unwrap().to_string();
            let verdict = container_device_interface::spec::new_spec(&raw, &path.to_path_buf(), 0).map(drop).map_err(|e| e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": "));
            (verdict, Some(min))
        }
    }
}

fn ours(text: &str) -> (Result<(), String>, Option<String>) {
    match gpuwarden::cdi::check::parse(text) {
        Err(e) => (Err(format!("parse: {e}")), None),
        Ok(raw) => (gpuwarden::cdi::check::check(&raw), Some(gpuwarden::cdi::check::minimum_version(&raw).to_string())),
    }
}

fn agree(path: &Path, text: &str) {
    let (theirs, their_min) = cncf(path, text);
    let (mine, my_min) = ours(text);
    let name = path.display();
    match (&theirs, &mine) {
        (Ok(()), Ok(())) => {}
        (Err(t), Err(m)) if t.starts_with("parse: ") => assert!(m.starts_with("parse: "), "{name}: the crate could not read it ({t}), gpuwarden said {m}"),
        (Err(t), Err(m)) => assert!(m.starts_with(t.as_str()), "{name}: messages differ:\n  cncf:      {t}\n  gpuwarden: {m}"),
        _ => panic!("{name}: verdicts differ: cncf {theirs:?}, gpuwarden {mine:?}"),
    }
    if let (Some(t), Some(m)) = (their_min, my_min) {
        assert_eq!(t, m, "{name}: lowest versions differ");
    }
}

#[test]
fn gpuwarden_and_the_cncf_crate_agree_on_the_hand_made_corpus() {
    for path in corpus() {
        agree(&path, &std::fs::read_to_string(&path).unwrap());
    }
}

#[test]
fn the_corpus_holds_broken_specs_of_every_kind_the_checks_know() {
    let refused: Vec<String> = corpus().iter().filter(|p| ours(&std::fs::read_to_string(p).unwrap()).0.is_err()).map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    assert!(refused.len() >= 23, "{refused:?}");
    for stem in ["bad-env", "bad-hook-name", "bad-node-type", "mount-empty-host", "bad-annotation-key", "version-too-low", "unknown-field"] {
        assert!(refused.iter().any(|r| r == stem), "{stem} is refused");
    }
}

#[test]
fn gpuwarden_and_the_cncf_crate_agree_on_every_spec_cdi_generate_writes() {
    let fixture = driver_fixture();
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        "",
        "[profiles.sdxl]\nthreads = 40\npinned_memory = \"6GiB\"\n",
        "[budget.reserves]\nsteam = \"4GiB\"\n[profiles.blender]\nthreads = 30\n",
    ];
    let mut written = 0;
    for (n, extra) in configs.iter().enumerate() {
        let config = write(dir.path(), &format!("config{n}.toml"), &format!("inventory = \"builtin:rtx4070\"\n{extra}"));
        for format in ["yaml", "json"] {
            let out = dir.path().join(format!("spec{n}.{format}"));
            let o = gpuwarden(
                &["--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", out.to_str().unwrap()],
                b"",
            );
            assert!(o.status.success(), "cdi generate: {}", stderr(&o));
            agree(&out, &std::fs::read_to_string(&out).unwrap());
            written += 1;
        }
    }
    assert_eq!(written, 6);
}

#[test]
fn every_generated_spec_reads_the_same_through_the_old_and_the_new_yaml_crate() {
    let fixture = driver_fixture();
    let dir = tempfile::tempdir().unwrap();
    for (n, extra) in ["", "[profiles.sdxl]\nthreads = 40\npinned_memory = \"6GiB\"\n"].iter().enumerate() {
        let config = write(dir.path(), &format!("config{n}.toml"), &format!("inventory = \"builtin:rtx4070\"\n{extra}"));
        let out = dir.path().join(format!("spec{n}.yaml"));
        let o = gpuwarden(&["--config", &config, "cdi", "generate", "--driver-root", fixture.root.to_str().unwrap(), "--dev-root", fixture.dev.to_str().unwrap(), "--output", out.to_str().unwrap()], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(&out).unwrap();
        // Written by serde-saphyr: serde_yaml 0.9 reads the same spec.
        let new: gpuwarden::cdi::Spec = gpuwarden::cdi::yaml::from_str(&text).unwrap();
        let old: gpuwarden::cdi::Spec = serde_yaml::from_str(&text).unwrap();
        assert_eq!(new, old);
        assert!(!new.devices.is_empty() && !new.container_edits.mounts.is_empty());
        // What serde_yaml 0.9 wrote (every spec gpuwarden wrote before) reads back equal.
        let before = serde_yaml::to_string(&old).unwrap();
        assert_eq!(gpuwarden::cdi::yaml::from_str::<gpuwarden::cdi::Spec>(&before).unwrap(), old);
        // And as untyped documents, both crates see the same tree.
        let a: serde_json::Value = gpuwarden::cdi::yaml::from_str(&text).unwrap();
        let b: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(a, b);
    }
}
