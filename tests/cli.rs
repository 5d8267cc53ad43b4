//! The binary as users meet it: help that teaches, output formats, and bad
//! input that gets one line on stderr, a non-zero exit and no change.

mod common;
use common::*;

#[test]
fn help_names_every_command_and_the_builtin_inventory() {
    let o = gpuwarden(&["--help"], b"");
    let out = stdout(&o);
    for cmd in ["inventory", "cdi", "config", "status", "ledger", "podman"] {
        assert!(out.contains(cmd), "{cmd} missing from help:\n{out}");
    }
    let o = hook(&["--help"], b"");
    let out = stdout(&o);
    for stage in ["precreate", "admit", "release"] {
        assert!(out.contains(stage), "{stage} missing from the hook's help:\n{out}");
    }
    let o = gpuwarden(&["cdi", "generate", "--help"], b"");
    let out = stdout(&o);
    assert!(out.contains("builtin:rtx4070") && out.contains("--driver-root") && out.contains("0.5.0"), "{out}");
}

#[test]
fn the_builtin_inventory_prints_as_table_and_as_json_that_reads_back() {
    let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("driver 535.261.03") && out.contains("NVIDIA GeForce RTX 4070") && out.contains("12.0 GiB") && out.contains("8.9"), "{out}");
    let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"");
    let json = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["gpus"][0]["memory_total_bytes"], 12884901888u64);
    assert_eq!(v["gpus"][0]["minor"], 0);
    // The JSON is the inventory file format.
    let o = gpuwarden(&["inventory", "--inventory", "-", "--json"], json.as_bytes());
    assert_eq!(stdout(&o), json);
}

#[test]
fn malformed_inventories_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "inv.json", "{\"driver_version\": \"535\", \"gpus\": [");
    assert_one_line_error(&gpuwarden(&["inventory", "--inventory", &bad], b""), "line 1, column");
    assert_one_line_error(&gpuwarden(&["inventory", "--inventory", "builtin:h100"], b""), "known are builtin:rtx4070");
    assert_one_line_error(&gpuwarden(&["inventory", "--inventory", "/nonexistent.json"], b""), "cannot read inventory /nonexistent.json");
}

#[test]
fn nvml_missing_from_a_driver_root_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = gpuwarden(&["inventory", "--driver-root", dir.path().to_str().unwrap()], b"");
    assert_one_line_error(&o, "NVML library not found");
    assert!(stderr(&o).contains("install the NVIDIA driver") && stderr(&o).contains("--inventory"), "{}", stderr(&o));
}

#[test]
fn config_show_prints_the_defaults_and_refuses_a_bad_file_with_position() {
    let o = gpuwarden(&["config", "show", "--config", "/nonexistent/config.toml"], b"");
    assert_one_line_error(&o, "cannot read config /nonexistent/config.toml");
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[profiles.comfyui]\npinned_memory = \"3072M\"\n");
    let o = gpuwarden(&["config", "show", "--config", &good], b"");
    let out = stdout(&o);
    assert!(out.contains("[profiles.comfyui]") && out.contains("pinned_memory = \"3GiB\"") && out.contains("threads = 25"), "{out}");
    assert!(out.contains("[profiles.blender]") && out.contains("threads = 50"), "{out}");
    let bad = write(dir.path(), "bad.toml", "[budget]\nthread_ceiling = 101\n");
    assert_one_line_error(&gpuwarden(&["config", "show", "--config", &bad], b""), "bad.toml:2:18: 101 is not a percentage");
}

#[test]
fn hooks_refuse_bad_stdin_with_one_line_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    for (input, want) in [
        (&b""[..], "no OCI state on stdin"),
        (b"not json", "OCI state on stdin is not valid"),
        (br#"{"id":"abc","pid":1}"#, "has no bundle"),
    ] {
        assert_one_line_error(&hook(&["admit", "--state-dir", s, "--inventory", "builtin:rtx4070"], input), want);
    }
    assert_one_line_error(&hook(&["precreate"], b""), "no config on stdin");
    assert_one_line_error(&hook(&["precreate"], b"{oops"), "is not an OCI config");
    assert!(!state.exists(), "no state was created");
}

#[test]
fn precreate_passes_other_containers_through_byte_for_byte() {
    let input = b"{\"ociVersion\":\"1.0.2\",  \"process\":{\"env\":[\"A=1\"]}, \"unknown\":{\"x\":[1,2]}}\n";
    let o = hook(&["precreate"], input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, input.to_vec());
}

#[test]
fn releasing_an_unknown_container_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = hook(&["release", "--state-dir", dir.path().to_str().unwrap()], br#"{"id":"never-seen","bundle":"/x"}"#);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "a hook prints nothing it need not");
}

/// A bundle holding a comfyui container as the precreate hook leaves it, and
/// the OCI state that points at it (this test process stands for its pid).
fn conforming_container(dir: &std::path::Path) -> String {
    let raw = r#"{"process":{"env":["GPUWARDEN_PROFILE=comfyui"]},"linux":{"devices":[{"path":"/dev/nvidia0"}]}}"#;
    let rewritten = hook(&["precreate"], raw.as_bytes());
    assert!(rewritten.status.success(), "{}", stderr(&rewritten));
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), &rewritten.stdout).unwrap();
    serde_json::json!({"id": "c1", "pid": std::process::id(), "bundle": bundle}).to_string()
}

#[test]
fn a_torn_ledger_closes_admission_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let state = conforming_container(dir.path());
    std::fs::write(dir.path().join("ledger.json"), "{\"version\": 1, \"reserv").unwrap();
    // This test is about the ledger: MPS (tested against the real daemon in tests/podman.rs) is off.
    let off = write(dir.path(), "mps-off.toml", "[mps]\nenabled = false\n");
    let admit = ["admit", "--config", &off, "--state-dir", s, "--inventory", "builtin:rtx4070"];
    assert_one_line_error(&hook(&admit, state.as_bytes()), &format!("run `gpuwarden ledger reset --state-dir {s}`"));
    assert_eq!(std::fs::read_to_string(dir.path().join("ledger.json")).unwrap(), "{\"version\": 1, \"reserv", "untouched");
    let o = gpuwarden(&["ledger", "reset", "--state-dir", s], b"");
    assert!(stdout(&o).contains("ledger.json.bad-"), "{}", stdout(&o));
    let o = hook(&admit, state.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gpuwarden(&["status", "--json", "--state-dir", s, "--inventory", "builtin:rtx4070"], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["gpus"][0]["reservations"][0]["id"], "c1");
    assert_eq!(v["gpus"][0]["threads"]["used"], 25);
    // A readable ledger with reservations is not reset by mistake.
    assert_one_line_error(&gpuwarden(&["ledger", "reset", "--state-dir", s], b""), "holds 1 reservation(s)");
}

#[test]
fn hooks_take_their_gpus_from_a_file_never_from_stdin_or_nvml() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    let state = conforming_container(dir.path());
    let o = hook(&["admit", "--state-dir", s.to_str().unwrap(), "--inventory", "-"], state.as_bytes());
    assert_one_line_error(&o, "hooks read the OCI state on stdin");
    let o = hook(&["admit", "--state-dir", s.to_str().unwrap(), "--inventory", "nvml"], state.as_bytes());
    assert_one_line_error(&o, "the hooks do not load NVML");
    let empty = write(dir.path(), "empty.toml", "");
    let o = hook(&["admit", "--config", &empty, "--state-dir", s.to_str().unwrap()], state.as_bytes());
    assert_one_line_error(&o, "the hooks read the GPUs from the one `gpuwarden cdi generate` writes (/var/lib/gpuwarden/inventory.json)");
    assert!(!s.exists(), "no state was created");
}

#[test]
fn cdi_validate_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "x.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia9, hostPath: /nonexistent/nvidia9}]\n",
    );
    let o = gpuwarden(&["cdi", "validate", &spec], b"");
    assert!(!o.status.success());
    assert!(stdout(&o).contains("x.yaml: error: devices[0].containerEdits.deviceNodes[0].hostPath: /nonexistent/nvidia9 does not exist"), "{}", stdout(&o));
}

#[test]
fn cdi_list_shows_devices_with_their_file_and_flags_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let a = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits: {deviceNodes: [{path: /dev/null}]}\n";
    write(dir.path(), "a.yaml", a);
    write(dir.path(), "b.yaml", a);
    write(dir.path(), "broken.json", "{");
    let o = gpuwarden(&["cdi", "list", "--cdi-dir", dir.path().to_str().unwrap()], b"");
    let out = stdout(&o);
    assert!(out.contains("nvidia.com/gpu=0") && out.contains("a.yaml") && out.contains("b.yaml") && out.contains("defined twice"), "{out}");
    assert!(stderr(&o).contains("skipped") && stderr(&o).contains("broken.json"), "{}", stderr(&o));
}

#[test]
fn a_broken_config_toml_does_not_stop_containers_without_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "config.toml", "[budget\n");
    let plain = br#"{"process":{"env":["A=1"]}}"#;
    let o = hook(&["precreate", "--config", &bad], plain);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, plain.to_vec());
    // A profile container goes on to admission with the reason, which refuses with it.
    let profiled = br#"{"process":{"env":["GPUWARDEN_PROFILE=comfyui"]},"linux":{"devices":[{"path":"/dev/nvidia0"}]}}"#;
    let o = hook(&["precreate", "--config", &bad], profiled);
    assert!(o.status.success(), "Podman would drop the reason: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reason = v["annotations"]["gpuwarden.io/refusal"].as_str().unwrap();
    assert!(reason.starts_with(&format!("config {bad}:1:8: ")), "{reason}");
    let admit = &v["hooks"]["createRuntime"][0];
    assert_eq!(admit["path"], hook_bin());
    assert_eq!(admit["args"], serde_json::json!(["gpuwarden-hook", "admit", "--config", bad]));
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), &o.stdout).unwrap();
    let state = serde_json::json!({"id": "c1abcdef0123456", "pid": std::process::id(), "bundle": bundle}).to_string();
    assert_one_line_error(&hook(&["admit", "--config", &bad], state.as_bytes()), &format!("refused c1abcdef0123 (comfyui): config {bad}:1:8: "));
}

#[test]
fn config_show_says_which_file_it_read_or_that_defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[budget]\nthread_ceiling = 90\n");
    let o = gpuwarden(&["config", "show", "--config", &good], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().next(), Some(format!("# read from {good}").as_str()));
    if std::path::Path::new("/etc/gpuwarden/config.toml").exists() {
        skip("config_show_says_which_file_it_read_or_that_defaults_apply (default file)", "/etc/gpuwarden/config.toml exists on this host");
        return;
    }
    let o = gpuwarden(&["config", "show"], b"");
    assert_eq!(stdout(&o).lines().next(), Some("# /etc/gpuwarden/config.toml not found: built-in defaults"));
}

#[test]
fn reserves_larger_than_the_gpu_are_said_by_config_show_status_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.toml", "inventory = \"builtin:rtx4070\"\n[budget.reserves]\nsteam = \"40GiB\"\nsystem = \"512MiB\"\n");
    let want = "GPU 0 (RTX 4070) has 12.0 GiB and the reserves (steam 40.0 GiB, system 0.5 GiB) add up to 40.5 GiB, which leaves nothing to share";
    let o = gpuwarden(&["config", "show", "--config", &cfg], b"");
    assert_one_line_error(&o, want);
    assert!(stdout(&o).contains("steam = \"40GiB\""), "the configuration is still shown: {}", stdout(&o));
    let s = dir.path().join("state");
    let o = gpuwarden(&["status", "--config", &cfg, "--state-dir", s.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("! {want}")), "{}", stdout(&o));
    assert!(!stdout(&o).contains("0 B of 0 B"), "{}", stdout(&o));
    let out = dir.path().join("spec.yaml");
    let o = gpuwarden(&["cdi", "generate", "--config", &cfg, "--output", out.to_str().unwrap(), "--no-hooks"], b"");
    assert_one_line_error(&o, want);
    assert!(!out.exists(), "nothing written");
}

#[test]
fn resetting_a_healthy_empty_ledger_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let o = gpuwarden(&["ledger", "reset", "--state-dir", s], b"");
    assert_one_line_error(&o, &format!("there is no ledger at {s}/ledger.json: nothing to reset"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a folder named by mistake gets no ledger");
    std::fs::write(dir.path().join("ledger.json"), r#"{"version":1,"reservations":[]}"#).unwrap();
    let o = gpuwarden(&["ledger", "reset", "--state-dir", s], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is readable and empty: nothing to reset"), "{}", stdout(&o));
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains(".bad-")), "{names:?}");
}

#[test]
fn the_live_view_gpuwarden_live_writes_reaches_admission_while_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    let live = dir.path().join("live.json");
    // The hooks' inventory has no processes (like the file `cdi generate` writes);
    // MPS is off: this test is about memory (MPS is tested in tests/mps.rs, tests/podman.rs).
    let config = write(
        dir.path(),
        "config.toml",
        &format!("inventory = \"builtin:rtx4070\"\n[mps]\nenabled = false\n[live]\nfile = \"{}\"\n[budget.reserves]\nsystem = \"512MiB\"\n", live.display()),
    );
    // An inventory file with processes stands in for NVML.
    let mut standin: serde_json::Value = serde_json::from_slice(&gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"").stdout).unwrap();
    standin["gpus"][0]["processes"] = serde_json::json!([{"pid": 4242, "name": "steam_game", "used_memory_bytes": 11u64 << 30}]);
    let standin = write(dir.path(), "standin.json", &standin.to_string());
    let o = gpuwarden(&["--config", &config, "live", "--once", "--inventory", &standin], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("wrote {} (1 GPU(s), 1 process(es))", live.display()));
    let state = conforming_container(dir.path());
    let admit = ["admit", "--config", &config, "--state-dir", s.to_str().unwrap()];
    let o = hook(&admit, state.as_bytes());
    assert_one_line_error(&o, "needs 3.0 GiB pinned memory, 1.0 GiB left of 11.5 GiB (held by nobody; in use outside gpuwarden: 4242 steam_game 11.0 GiB, 10.5 GiB beyond the reserves");
    let o = gpuwarden(&["--config", &config, "status", "--state-dir", s.to_str().unwrap()], b"");
    assert!(stdout(&o).contains(&format!("LIVE live view from {} (", live.display())), "{}", stdout(&o));
    // Stale (its writer died): ignored, and said.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&live).unwrap()).unwrap();
    v["written_at"] = 1.into();
    std::fs::write(&live, v.to_string()).unwrap();
    let o = gpuwarden(&["--config", &config, "status", "--state-dir", s.to_str().unwrap()], b"");
    assert!(stdout(&o).contains("too old to trust (is `gpuwarden live` running?): the check is ledger-only"), "{}", stdout(&o));
    let o = hook(&admit, state.as_bytes());
    assert!(o.status.success(), "ledger-only: it fits: {}", stderr(&o));
    // An inventory that says nothing of processes is no live view.
    assert_one_line_error(&gpuwarden(&["--config", &config, "live", "--once", "--inventory", "builtin:rtx4070"], b""), "no `processes`");
}
