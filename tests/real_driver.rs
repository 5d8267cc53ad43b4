//! Against NVIDIA's real 535.261.03 userspace (Debian's packages unpacked into
//! a driver root by scripts/driver-root.sh, device nodes made by mknod).

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// `cdi generate` on the real packages, with a config whose MPS folders are
/// in `dir` (the default ones under /run are not the tests' to make).
fn generate_in(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let f = driver_fixture();
    let config = write(dir, "gpuwarden.toml", &format!("[mps]\npipe_directory = \"{d}/mps/pipe\"\nlog_directory = \"{d}/mps/log\"\nshm_directory = \"{d}/mps/shm\"\n", d = dir.display()));
    let mut args = vec!["--config", config.as_str(), "cdi", "generate", "--inventory", "builtin:rtx4070", "--driver-root", f.root.to_str().unwrap(), "--dev-root", f.dev.to_str().unwrap()];
    args.extend_from_slice(extra);
    gpuwarden(&args, b"")
}

macro_rules! require_root {
    ($name:expr) => {
        if !is_root() {
            skip($name, "the driver root's device nodes are made with mknod, which needs root");
            return;
        }
    };
}

#[test]
fn the_spec_holds_the_real_libraries_under_their_real_sonames() {
    require_root!("the_spec_holds_the_real_libraries_under_their_real_sonames");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cdi/gpuwarden.yaml");
    let o = generate_in(dir.path(), &["--output", out.to_str().unwrap(), "--cdi-dir", dir.path().join("cdi").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(spec["cdiVersion"], "0.5.0");
    let root = &driver_fixture().root;
    let current = root.join("usr/lib/x86_64-linux-gnu/nvidia/current");
    let mounts: Vec<(String, PathBuf)> = spec["containerEdits"]["mounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (m["containerPath"].as_str().unwrap().to_string(), PathBuf::from(m["hostPath"].as_str().unwrap())))
        .collect();
    let host_of = |c: &str| mounts.iter().find(|(cp, _)| cp == c).map(|(_, h)| h.clone()).unwrap_or_else(|| panic!("{c} not mounted: {mounts:?}"));
    let lib = |n: &str| format!("/usr/lib/x86_64-linux-gnu/{n}");
    // Each SONAME comes from the file itself, not from its name.
    for (soname, file) in [
        ("libcuda.so.1", "libcuda.so.535.261.03"),
        ("libnvidia-ml.so.1", "libnvidia-ml.so.535.261.03"),
        ("libnvoptix.so.1", "libnvoptix.so.535.261.03"),
        ("libnvidia-ptxjitcompiler.so.1", "libnvidia-ptxjitcompiler.so.535.261.03"),
        ("libnvidia-nvvm.so.4", "libnvidia-nvvm.so.535.261.03"),
        ("libEGL_nvidia.so.0", "libEGL_nvidia.so.535.261.03"),
        ("libGLX_nvidia.so.0", "libGLX_nvidia.so.535.261.03"),
        ("libnvcuvid.so.1", "libnvcuvid.so.535.261.03"),
        ("libnvidia-encode.so.1", "libnvidia-encode.so.535.261.03"),
    ] {
        assert_eq!(host_of(&lib(soname)), current.join(file), "{soname}");
        assert_eq!(host_of(&lib(file)), current.join(file), "{file}");
    }
    // Libraries outside nvidia/current, and those whose SONAME is their full name.
    let plain = root.join("usr/lib/x86_64-linux-gnu");
    for file in ["libnvidia-rtcore.so.535.261.03", "libnvidia-glcore.so.535.261.03", "libnvidia-eglcore.so.535.261.03"] {
        assert_eq!(host_of(&lib(file)), plain.join(file));
    }
    assert_eq!(host_of("/usr/share/nvidia/nvoptix.bin"), current.join("nvoptix.bin"));
    assert_eq!(host_of("/usr/bin/nvidia-smi"), root.join("usr/lib/nvidia/current/nvidia-smi"));
    assert_eq!(host_of("/usr/bin/nvidia-cuda-mps-control"), root.join("usr/bin/nvidia-cuda-mps-control"));
    assert_eq!(host_of("/usr/share/glvnd/egl_vendor.d/10_nvidia.json"), root.join("usr/share/glvnd/egl_vendor.d/10_nvidia.json"));
    assert_eq!(host_of("/etc/vulkan/icd.d/nvidia_icd.json"), root.join("usr/share/vulkan/icd.d/nvidia_icd.json"));
    for (_, host) in &mounts {
        assert!(host.starts_with(root), "{} is outside the driver root: links were followed on the host", host.display());
    }
    // Every host path exists and the CNCF crate accepts the spec.
    let spec = container_device_interface::spec::read_spec(&out, 0).expect("the container-device-interface crate accepts the spec");
    assert!(spec.get_device("comfyui").is_some() && spec.get_device("0").is_some() && spec.get_device("all").is_some());
    let o = gpuwarden(&["cdi", "validate", out.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn nvml_from_the_real_library_reports_the_driver_not_loaded() {
    require_root!("nvml_from_the_real_library_reports_the_driver_not_loaded");
    let _nodes = NodesAsBefore::now();
    let root = &driver_fixture().root;
    let o = gpuwarden(&["inventory", "--driver-root", root.to_str().unwrap()], b"");
    assert_one_line_error(&o, "NVML: the NVIDIA driver is not loaded");
    assert!(stderr(&o).contains("modprobe nvidia"), "{}", stderr(&o));
    let o = gpuwarden(&["cdi", "generate", "--driver-root", root.to_str().unwrap(), "--output", "-"], b"");
    assert_one_line_error(&o, "the NVIDIA driver is not loaded");
}

#[test]
fn a_second_gpu_without_its_node_is_an_error_and_nothing_is_written() {
    require_root!("a_second_gpu_without_its_node_is_an_error_and_nothing_is_written");
    let dir = tempfile::tempdir().unwrap();
    let o = gpuwarden(&["inventory", "--inventory", "builtin:rtx4070", "--json"], b"");
    let mut inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut second = inv["gpus"][0].clone();
    second["index"] = 1.into();
    second["minor"] = 1.into();
    second["uuid"] = "GPU-11111111-2222-3333-4444-555555555555".into();
    second["pci_bus_id"] = "00000000:02:00.0".into();
    inv["gpus"].as_array_mut().unwrap().push(second);
    let inv_path = write(dir.path(), "two.json", &inv.to_string());
    let out = dir.path().join("spec.yaml");
    let f = driver_fixture();
    let o = gpuwarden(
        &["cdi", "generate", "--inventory", &inv_path, "--driver-root", f.root.to_str().unwrap(), "--dev-root", f.dev.to_str().unwrap(), "--no-mps-folders", "--output", out.to_str().unwrap()],
        b"",
    );
    assert_one_line_error(&o, "GPU 1 (GPU-11111111-2222-3333-4444-555555555555) has no device node");
    assert!(!out.exists());
}

#[test]
fn beside_nvidia_ctks_spec_its_names_are_left_to_it_and_only_a_profile_clash_is_refused() {
    require_root!("beside_nvidia_ctks_spec_its_names_are_left_to_it_and_only_a_profile_clash_is_refused");
    let dir = tempfile::tempdir().unwrap();
    let ctk = write(dir.path(), "nvidia.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0}]\n");
    let out = dir.path().join("gpuwarden.yaml");
    let cdi_dir = dir.path().to_str().unwrap();
    let o = generate_in(dir.path(), &["--output", out.to_str().unwrap(), "--cdi-dir", cdi_dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim_start().starts_with("nvidia.com/gpu=all ") && l.ends_with(&format!("not written: {ctk}"))), "{}", stdout(&o));
    let spec: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let names: Vec<&str> = spec["devices"].as_sequence().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"all") && names.contains(&"0") && names.contains(&"comfyui") && names.contains(&"blender"), "{names:?}");
    let o = gpuwarden(&["cdi", "list", "--cdi-dir", cdi_dir], b"");
    assert!(!stdout(&o).contains("defined twice"), "{}", stdout(&o));
    // A spec that takes a profile device's name is a conflict, refused with the way out.
    std::fs::write(&ctk, "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: comfyui\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia0}]\n").unwrap();
    let before = std::fs::read(&out).unwrap();
    let o = generate_in(dir.path(), &["--output", out.to_str().unwrap(), "--cdi-dir", cdi_dir]);
    assert_one_line_error(&o, &format!("{ctk} already defines nvidia.com/gpu=comfyui, a name of gpuwarden's profile devices"));
    assert!(stderr(&o).contains("--class gpuwarden"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), before, "nothing written");
    // Over a file it did not write, gpuwarden writes nothing either.
    let o = generate_in(dir.path(), &["--output", &ctk, "--cdi-dir", "/nonexistent"]);
    assert_one_line_error(&o, "was not written by gpuwarden");
}

#[test]
fn profile_devices_always_carry_the_mps_folders_and_generate_makes_them() {
    require_root!("profile_devices_always_carry_the_mps_folders_and_generate_makes_them");
    let dir = tempfile::tempdir().unwrap();
    let (pipe, shm) = (dir.path().join("mps/pipe"), dir.path().join("mps/shm"));
    let config = write(
        dir.path(),
        "config.toml",
        &format!("[mps]\npipe_directory = \"{}\"\nlog_directory = \"{}\"\nshm_directory = \"{}\"\n", pipe.display(), dir.path().join("mps/log").display(), shm.display()),
    );
    let f = driver_fixture();
    let (r, d) = (f.root.to_str().unwrap(), f.dev.to_str().unwrap());
    // Printed with none of the folders there: the mounts are in the spec all the same.
    let o = gpuwarden(&["--config", &config, "cdi", "generate", "--inventory", "builtin:rtx4070", "--driver-root", r, "--dev-root", d, "--output", "-", "--format", "json"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!pipe.exists(), "--output - changes nothing");
    let spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let comfy = spec["devices"].as_array().unwrap().iter().find(|d| d["name"] == "comfyui").unwrap();
    let mounts: Vec<(String, String)> = comfy["containerEdits"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["containerPath"].as_str().unwrap().to_string(), m["hostPath"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(mounts[..2], [(pipe.display().to_string(), pipe.display().to_string()), ("/dev/shm".to_string(), shm.display().to_string())]);
    assert_eq!(mounts[2].0, "/usr/libexec/gpuwarden/gpuwarden-launch", "and the launcher");
    let everyone = spec["containerEdits"].to_string();
    assert!(!everyone.contains(pipe.to_str().unwrap()) && !everyone.contains("/dev/shm"), "not on plain devices: {everyone}");
    // Written: the folders exist (runc mounts them), and the summary says the daemon is not running.
    let out = dir.path().join("cdi/gpuwarden.yaml");
    let cdi_dir = dir.path().join("cdi");
    let o = gpuwarden(&["--config", &config, "cdi", "generate", "--inventory", "builtin:rtx4070", "--driver-root", r, "--dev-root", d, "--output", out.to_str().unwrap(), "--cdi-dir", cdi_dir.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(pipe.is_dir() && shm.is_dir());
    assert!(stdout(&o).contains("its control daemon is not running: profile containers are refused until `gpuwarden mps start`"), "{}", stdout(&o));
    let o = gpuwarden(&["cdi", "validate", out.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn generate_prints_a_summary_and_where_the_whole_spec_is() {
    require_root!("generate_prints_a_summary_and_where_the_whole_spec_is");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cdi/gpuwarden.yaml");
    let o = generate_in(dir.path(), &["--output", out.to_str().unwrap(), "--cdi-dir", dir.path().join("cdi").to_str().unwrap(), "--hook-path", "/usr/bin/gpuwarden-hook"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("wrote {} (cdiVersion 0.5.0)", out.display()));
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["DEVICE", "NODES", "HOOKS", "PROFILE"]);
    let row = |name: &str| lines.iter().find(|l| l.split_whitespace().next() == Some(name)).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>());
    assert_eq!(row("nvidia.com/gpu=comfyui"), Some(vec!["3", "2", "comfyui"]), "{text}");
    assert_eq!(row("nvidia.com/gpu=0"), Some(vec!["3", "0", "-"]), "{text}");
    let every = lines.iter().find(|l| l.contains("every device also gets")).unwrap_or_else(|| panic!("{text}"));
    assert!(every.contains("4 control nodes") && every.contains("driver libraries"), "{every}");
    assert_eq!(lines.last().map(|l| l.trim()), Some(format!("the whole spec: {}", out.display()).as_str()));
    assert!(lines.iter().any(|l| l.contains("profile devices get the MPS pipe directory")), "{text}");
    assert!(lines.len() < 15, "a summary, not the spec: {text}");
}

#[test]
fn dev_root_is_the_folder_that_holds_dev_as_in_nvidia_ctk() {
    require_root!("dev_root_is_the_folder_that_holds_dev_as_in_nvidia_ctk");
    let f = driver_fixture();
    let args = |dev_root: &Path| {
        let r = f.root.to_str().unwrap().to_string();
        let d = dev_root.to_str().unwrap().to_string();
        gpuwarden(&["cdi", "generate", "--inventory", "builtin:rtx4070", "--driver-root", &r, "--dev-root", &d, "--output", "-", "--format", "json"], b"")
    };
    let o = args(&f.dev);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(spec["containerEdits"]["deviceNodes"][0]["hostPath"], f.dev.join("dev/nvidiactl").to_str().unwrap());
    // /dev itself, as the old meaning had it, is named with the node it lacks.
    let o = args(&f.dev.join("dev"));
    assert_one_line_error(&o, &format!("{} is missing", f.dev.join("dev/dev/nvidiactl").display()));
    assert!(stderr(&o).contains("--dev-root DIR, the folder that holds dev/"), "{}", stderr(&o));
}
