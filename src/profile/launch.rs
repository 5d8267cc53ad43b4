//! The launcher's command line: the profile's Landlock rules and
//! capabilities, what CUDA needs whatever the profile says, then the
//! workload's own arguments after `--`, unchanged. The rewrite puts it in
//! front of `process.args`; admission refuses a profile container whose first
//! argument is not the launcher, so the rules cannot be skipped.

use crate::config::{Config, Profile, Require};
use crate::hookcall::LAUNCHER_PATH;

/// What any CUDA process needs: device nodes with ioctl (`/dev`), `/proc`
/// (`/proc/driver/nvidia`, and writes to `/proc/<pid>/task/<tid>/comm` from
/// every process, children too, or cuInit fails with 304), and the driver's
/// files, and the MPS pipe directory (read: clients connect to its sockets).
/// Rules bind to inodes, so `/proc` as a whole is opened: the kernel's
/// own checks still keep each process to its own writable entries.
const CUDA_WRITE: &[&str] = &["/dev", "/proc"];
const CUDA_READ: &[&str] = &[crate::host::discover::CONTAINER_LIB_DIR, "/usr/share/nvidia", "/usr/share/glvnd", "/usr/share/egl", "/etc/vulkan", "/usr/share/vulkan"];

/// The launcher's argv for `profile`, wrapping `args`.
pub fn command(profile: &Profile, config: &Config, args: &[String]) -> Vec<String> {
    let l = &profile.landlock;
    let mut out = vec![LAUNCHER_PATH.to_string()];
    let mut push = |flag: &str, value: String| out.extend([flag.to_string(), value]);
    let mps = config.mps.enabled.then(|| config.mps.pipe_directory.display().to_string());
    for p in l.read.iter().map(|p| p.path().display().to_string()).chain(CUDA_READ.iter().map(|s| s.to_string())).chain(mps) {
        push("--read", p);
    }
    for p in &l.exec {
        push("--exec", p.path().display().to_string());
    }
    for p in l.write.iter().map(|p| p.path().display().to_string()).chain(CUDA_WRITE.iter().map(|s| s.to_string())) {
        push("--write", p);
    }
    for p in &l.bind {
        push("--bind", p.0.to_string());
    }
    for p in &l.connect {
        push("--connect", p.0.to_string());
    }
    push("--require", if l.require == Require::Full { "full" } else { "abi1" }.into());
    if !config.mps.enabled {
        // The hooks' stderr is not shown when they succeed; the workload's is.
        push("--warn", "MPS is off ([mps] enabled = false in gpuwarden's config.toml): nothing limits this container on the GPU".into());
    }
    push("--caps", profile.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    out.push("--".into());
    out.extend(args.iter().cloned());
    out
}

/// Mounts the launcher from `host` at [`LAUNCHER_PATH`], read-only, unless a
/// mount there exists (the CDI profile device's): a profile named by
/// annotation alone gets it this way.
pub fn ensure_mounted(cfg: &mut crate::oci::ContainerConfig, host: &std::path::Path) {
    if !cfg.mounts().iter().any(|(d, _)| *d == LAUNCHER_PATH) {
        cfg.ensure_bind_mount(LAUNCHER_PATH, &host.display().to_string(), true);
    }
}

/// The workload's own arguments in a launcher command line, if `args` is one.
pub fn workload(args: &[String]) -> Option<&[String]> {
    if args.first().map(String::as_str) != Some(LAUNCHER_PATH) {
        return None;
    }
    let at = args.iter().position(|a| a == "--")?;
    Some(&args[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_keeps_its_arguments_exactly_and_cuda_its_paths() {
        let c = Config::default();
        let args: Vec<String> = ["sh", "-c", "echo 'a  b' \"q\"", "", "--", "--read"].map(String::from).to_vec();
        let cmd = command(c.profile("comfyui").unwrap(), &c, &args);
        assert_eq!(cmd[0], LAUNCHER_PATH);
        assert_eq!(workload(&cmd), Some(&args[..]));
        let pairs: Vec<(&str, &str)> = cmd[1..].chunks(2).take_while(|p| p[0] != "--").map(|p| (p[0].as_str(), p[1].as_str())).collect();
        for want in [("--write", "/dev"), ("--write", "/proc"), ("--read", "/run/gpuwarden/mps/pipe"), ("--write", "/opt/ComfyUI/output"), ("--bind", "8188"), ("--read", "/usr/lib/x86_64-linux-gnu"), ("--exec", "/usr"), ("--require", "abi1"), ("--caps", "")] {
            assert!(pairs.contains(&want), "{want:?} missing from {pairs:?}");
        }
        assert_eq!(workload(&args), None, "not a launcher command line");
        assert!(!cmd.contains(&"--warn".to_string()));
        let off = Config::parse("[mps]\nenabled = false\n", std::path::Path::new("c")).unwrap();
        let cmd = command(off.profile("comfyui").unwrap(), &off, &args);
        assert!(cmd.windows(2).any(|w| w[0] == "--warn" && w[1].starts_with("MPS is off")), "{cmd:?}");
    }
}
