//! The hot path's layering: what runs at every container start (the hooks,
//! admission, the broker, the queue) does not reach into the watchdog's code,
//! and the inventory does not reach into CDI. What they share sits below:
//! `watched` (the watchdog's published state and the events log) and `names`.

mod common;
use common::*;

fn sources(dir: &str) -> Vec<(String, String)> {
    let root = repo().join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    // A single file is its own list.
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    assert!(!out.is_empty(), "{dir} has sources");
    out
}

#[test]
fn admission_and_the_hooks_do_not_use_the_watchdogs_modules() {
    let hot = ["src/hook", "src/broker", "src/queue.rs", "src/ledger", "src/budget.rs", "hooks/src"];
    for dir in hot {
        for (path, text) in sources(dir) {
            for needle in ["crate::watch::", "gpuwarden::watch::", "use crate::watch;", "super::watch"] {
                assert!(!text.contains(needle), "{path} uses the watchdog's code ({needle}): what it shares belongs in `watched`");
            }
        }
    }
    // The check can tell: the watchdog's command does use it.
    assert!(sources("cli/src/cmd").iter().any(|(_, t)| t.contains("gpuwarden::watch::")));
}

#[test]
fn the_inventory_does_not_reach_into_cdi() {
    for (path, text) in sources("src/inventory").into_iter().chain(sources("src/config")) {
        assert!(!text.contains("crate::cdi::"), "{path} uses crate::cdi: the device-name rule is in crate::names");
    }
}
