//! The library's layers, enforced: every module imports only the layers
//! below its own ([`LAYERS`]), and no file or folder imports one that imports
//! it back. The runtime side (the hook binary) links nothing of the
//! administrator's side.
//!
//! The imports are read from the sources (comments, strings and `cfg(test)`
//! items left out): every `use` tree and every `crate::`, `super::` and
//! `self::` path, followed through `pub use` re-exports to the file that
//! defines what they name.

mod common;
use common::*;

#[path = "support/imports.rs"]
mod imports;

use imports::{Graph, Import};

/// The layers, bottom first, and what each may import: only layers listed
/// before it, so the table itself cannot go in a circle.
const LAYERS: &[(&str, &[&str])] = &[
    // Time, text, sizes, names, files and locks, users, processes.
    ("base", &[]),
    // The shared vocabulary: a share, who asks and holds, a reservation.
    ("model", &["base"]),
    // config.toml: profiles, budget, every default path.
    ("config", &["base"]),
    // OCI types: the container's config, the hook state, the profile's env.
    ("oci", &["base", "config"]),
    // How a hook is called: stages, the binary, its options, the launcher.
    ("hookcall", &["base", "config", "oci"]),
    // What the machine has: GPUs, driver files, MPS, the watchdog's view.
    ("host", &["base", "model", "config", "oci", "hookcall"]),
    // A profile applied: rewrite, launcher argv, conformance.
    ("profile", &["base", "model", "config", "oci", "hookcall", "host"]),
    // Who holds what, and who waits.
    ("ledger", &["base", "model", "config", "oci"]),
    // Whether a share fits: the request, the gates, the wait in the ledger.
    ("admission", &["base", "model", "config", "oci", "hookcall", "host", "profile", "ledger"]),
    // The OCI hook stages.
    ("hook", &["base", "model", "config", "oci", "hookcall", "host", "profile", "ledger", "admission"]),
    // Admission for rootless callers.
    ("broker", &["base", "model", "config", "oci", "hookcall", "host", "profile", "ledger", "admission", "hook"]),
    // Install time, beside the hot path: the CDI spec.
    ("cdi", &["base", "model", "config", "oci", "hookcall", "host"]),
    // Docker's runtime shim: CDI devices and the same stages.
    ("shim", &["base", "model", "config", "oci", "hookcall", "host", "profile", "ledger", "admission", "hook", "cdi"]),
    // The administrator's side: install, doctor, watchdog, status.
    ("admin", &["base", "model", "config", "oci", "hookcall", "host", "profile", "ledger", "admission", "hook", "broker", "cdi", "shim"]),
];

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|(l, _)| *l == name)
}

fn library() -> Graph {
    Graph::read(&repo().join("src"))
}

/// The imports that break the layer order, one line each.
fn layer_breaks(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for Import { from, to, path } in graph.imports() {
        let (Some(a), Some(b)) = (from.module.first(), to.module.first()) else { continue };
        if a == b {
            continue;
        }
        let (Some(la), Some(lb)) = (layer(a), layer(b)) else { continue };
        if !LAYERS[la].1.contains(&b.as_str()) {
            let why = if lb > la { "a higher layer" } else { "a layer it does not list" };
            out.push(format!("{} imports {path} from {}: layer {a} may not use {b} ({why})", from.file, to.file));
        }
    }
    out
}

#[test]
fn the_layer_table_goes_one_way() {
    for (i, (name, below)) in LAYERS.iter().enumerate() {
        for b in *below {
            let at = layer(b).unwrap_or_else(|| panic!("{name} lists {b}, which is no layer"));
            assert!(at < i, "{name} lists {b}, which is not below it");
        }
    }
}

#[test]
fn every_module_is_in_a_layer() {
    let graph = library();
    let tops = graph.top_modules();
    let missing: Vec<&String> = tops.iter().filter(|m| layer(m).is_none()).collect();
    assert!(missing.is_empty(), "modules in no layer of tests/layering.rs: {missing:?}");
    assert!(tops.len() >= LAYERS.len(), "every layer is a module: {tops:?}");
}

#[test]
fn every_module_imports_only_layers_below_its_own() {
    let graph = library();
    assert!(graph.imports().len() > 200, "the imports are read ({} found)", graph.imports().len());
    let breaks = layer_breaks(&graph);
    assert!(breaks.is_empty(), "{} imports break the layers:\n{}", breaks.len(), breaks.join("\n"));
}

#[test]
fn no_file_or_folder_imports_one_that_imports_it_back() {
    let graph = library();
    let cycles = graph.cycles();
    assert!(cycles.is_empty(), "import cycles (file or folder):\n{}", cycles.join("\n"));
}

/// The checks can tell: a base module that reaches into admission, and two
/// files that import each other, are caught.
#[test]
fn a_bad_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    for (file, text) in [
        ("lib.rs", "pub mod base;\npub mod admission;\n"),
        ("base/mod.rs", "pub mod size;\npub mod text;\n"),
        ("base/size.rs", "use crate::base::text::Width;\npub struct Size;\n"),
        ("base/text.rs", "use super::size::Size;\npub struct Width;\nfn f() -> crate::admission::Verdict { todo!() }\n"),
        ("admission/mod.rs", "mod judge;\npub use judge::Verdict;\n"),
        ("admission/judge.rs", "/// crate::nothing::here\npub struct Verdict(&'static str);\nconst V: Verdict = Verdict(\"crate::base::text\");\n"),
    ] {
        std::fs::create_dir_all(src.join(file).parent().unwrap()).unwrap();
        std::fs::write(src.join(file), text).unwrap();
    }
    let graph = Graph::read(src);
    let breaks = layer_breaks(&graph);
    assert_eq!(breaks, ["base/text.rs imports crate::admission::Verdict from admission/judge.rs: layer base may not use admission (a higher layer)"]);
    let cycles = graph.cycles();
    assert_eq!(cycles, ["files: base/size.rs <-> base/text.rs (base/size.rs -> base/text.rs by crate::base::text::Width; base/text.rs -> base/size.rs by super::size::Size)"], "{cycles:?}");
}

#[test]
fn the_hook_binary_links_nothing_of_the_admin_side() {
    for (file, imports) in imports::external_uses(&repo().join("hooks/src"), "gpuwarden") {
        for path in imports {
            assert!(!path.starts_with("gpuwarden::admin"), "hooks/src/{file} uses {path}: the hook binary runs at every container start");
        }
    }
    // The check can tell: the admin CLI does use it.
    let cli = imports::external_uses(&repo().join("cli/src"), "gpuwarden");
    assert!(cli.iter().any(|(_, paths)| paths.iter().any(|p| p.starts_with("gpuwarden::admin::watch"))));
}
