//! `gpuwarden cdi generate | list | validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{absolute, inventory_cmd, GenerateArgs, ListArgs, Result, ValidateArgs};
use crate::spec_check::{minimum_version, validate_file, Severity};
use gpuwarden::cdi::{self, build_spec, Kind, MpsMounts, SpecInput};
use gpuwarden::hook::HookCall;
use gpuwarden::config::Config;
use gpuwarden::discover::{discover, Roots};
use gpuwarden::inventory::InventorySource;

/// The options after `admit|release` that make the hooks see what the
/// generator saw: the same configuration, GPUs and state folder. GPUs found
/// through NVML are handed over as a file (`snapshot`), since the hooks never
/// load NVML.
fn hook_args(args: &GenerateArgs, source: &InventorySource, snapshot: Option<&Path>, config_file: Option<&Path>) -> Result<Vec<String>> {
    let mut extra = Vec::new();
    if let Some(c) = config_file {
        extra.extend(["--config".to_string(), absolute(c).display().to_string()]);
    }
    let named = match (source, snapshot) {
        (InventorySource::File(p), _) if p.as_os_str() == "-" => {
            return Err("the hooks cannot read an inventory from stdin: write it to a file and pass --inventory FILE".into());
        }
        (InventorySource::Nvml { .. }, Some(file)) => Some(absolute(file).display().to_string()),
        _ if args.source.inventory.is_some() => Some(source.to_string()),
        _ => None,
    };
    if let Some(named) = named {
        extra.extend(["--inventory".to_string(), named]);
    }
    if let Some(dir) = &args.state_dir {
        extra.extend(["--state-dir".to_string(), absolute(dir).display().to_string()]);
    }
    Ok(extra)
}

pub fn generate(args: &GenerateArgs, config: &Config, config_file: Option<&Path>) -> Result<ExitCode> {
    let kind = Kind::new(&args.vendor, &args.class)?;
    let root = inventory_cmd::driver_root(args.source.driver_root.as_deref().unwrap_or(&config.cdi.driver_root))?;
    let (source, inventory) = inventory_cmd::load(&args.source, config)?;
    // A profile device on a GPU whose reserves leave nothing could never start.
    if let Some(problem) = gpuwarden::budget::reserve_problems(&inventory, &config.budget).into_iter().next() {
        return Err(problem.into());
    }
    let roots = Roots { driver: root, dev: absolute(args.dev_root.as_deref().unwrap_or(&config.cdi.dev_root)).join("dev") };
    let discovery = discover(&roots, &inventory)?;
    let nvml = matches!(source, InventorySource::Nvml { .. });
    let hooks = match args.no_hooks {
        true => None,
        false => {
            let snapshot = nvml.then_some(args.inventory_file.as_path());
            Some(HookCall { path: super::hook_binary(args.hook_path.as_deref())?, options: hook_args(args, &source, snapshot, config_file)? })
        }
    };
    let profiles = config.profile_names();
    let mps = config.mps.enabled.then(|| MpsMounts { pipe: config.mps.pipe_directory.clone(), shm: config.mps.shm_directory.clone() });
    let launcher = super::companion(args.launcher_path.as_deref(), "gpuwarden-launch", "--launcher-path")?;
    let input = SpecInput {
        kind: &kind,
        inventory: &inventory,
        discovery: &discovery,
        profiles: &profiles,
        hooks: hooks.as_ref(),
        mps: mps.as_ref(),
        launcher: Some(&launcher),
    };
    let mut spec = build_spec(&input);
    // NVIDIA's toolkit keeps the index, UUID and `all` names where it is installed or its spec is.
    let (others, _) = cdi::scan(&args.cdi_dirs);
    let path: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let left = cdi::leave_to_others(&mut spec, &others, &args.output, cdi::find_toolkit(&path).as_deref(), &inventory);
    spec.cdi_version = minimum_version(&spec);
    let format = args.format.unwrap_or_else(|| cdi::Format::for_path(&args.output));
    if args.output == Path::new("-") {
        print!("{}", cdi::render(&spec, format));
        return Ok(ExitCode::SUCCESS);
    }
    if nvml && !args.no_hooks {
        write_inventory(&inventory, &args.inventory_file)?;
    }
    if config.mps.enabled && !args.no_mps_folders {
        // The profile devices mount them; runc cannot mount what does not exist.
        gpuwarden::mps::daemon::prepare_folders(&config.mps)?;
    }
    cdi::install(&spec, format, &args.output, &args.cdi_dirs)?;
    print!("{}", summary(&spec, &discovery, &args.output, &mps_line(config), &left));
    Ok(ExitCode::SUCCESS)
}

/// What the profile devices get of MPS, and whether its daemon runs.
fn mps_line(config: &Config) -> String {
    let m = &config.mps;
    if !m.enabled {
        return "MPS is off ([mps] enabled = false): profile containers are NOT limited on the GPU".into();
    }
    let running = match gpuwarden::mps::daemon(&m.pipe_directory, Path::new("/proc")) {
        Ok(d) => format!("its control daemon runs (pid {})", d.pid),
        Err(_) => "its control daemon is not running: profile containers are refused until `gpuwarden mps start`".into(),
    };
    format!("profile devices get the MPS pipe directory {} and {} as /dev/shm; {running}", m.pipe_directory.display(), m.shm_directory.display())
}

/// Writes the inventory NVML gave, for the hooks, atomically (0644).
fn write_inventory(inventory: &gpuwarden::inventory::Inventory, path: &Path) -> Result<()> {
    // What runs on the GPUs now is no part of what they are.
    let mut inventory = inventory.clone();
    for g in &mut inventory.gpus {
        g.processes = None;
    }
    let mut text = serde_json::to_vec_pretty(&inventory)?;
    text.push(b'\n');
    gpuwarden::fsutil::write_atomic_creating_folder(path, &text, 0o644)?;
    Ok(())
}

/// What `generate` wrote, in a few lines: each device with its own nodes and
/// hooks, then what every device gets.
fn summary(spec: &cdi::Spec, discovery: &gpuwarden::discover::Discovery, path: &Path, mps: &str, left: &[(String, cdi::Owner)]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("wrote {} (cdiVersion {})\n", path.display(), spec.cdi_version);
    let names: Vec<String> = spec.devices.iter().map(|d| format!("{}={}", spec.kind, d.name)).collect();
    let width = names.iter().map(String::len).max().unwrap_or(6).max(6);
    let _ = writeln!(out, "  {:<width$}  NODES  HOOKS  PROFILE", "DEVICE");
    for (name, d) in names.iter().zip(&spec.devices) {
        let e = &d.container_edits;
        let profile = e.env.iter().find_map(|v| v.strip_prefix(&format!("{}=", cdi::PROFILE_ENV))).unwrap_or("-");
        let _ = writeln!(out, "  {name:<width$}  {:>5}  {:>5}  {profile}", e.device_nodes.len(), e.hooks.len());
    }
    for (name, owner) in left {
        let _ = writeln!(out, "  {:<width$}  not written: {owner}", format!("{}={name}", spec.kind));
    }
    let e = &spec.container_edits;
    let _ = writeln!(
        out,
        "  every device also gets {} control nodes, {} driver libraries ({} mounts with their SONAMEs), {} data files and binaries",
        e.device_nodes.len(),
        discovery.libraries.len(),
        discovery.library_mounts().len(),
        discovery.files.len()
    );
    let _ = writeln!(out, "  {mps}");
    let _ = writeln!(out, "  the whole spec: {}", path.display());
    out
}

pub fn list(args: &ListArgs) -> Result<ExitCode> {
    let (specs, broken) = cdi::scan(&args.cdi_dirs);
    for (path, why) in &broken {
        eprintln!("gpuwarden: skipped {}: {why}", path.display());
    }
    let mut defined: BTreeMap<String, Vec<&cdi::SpecFile>> = BTreeMap::new();
    for s in &specs {
        for d in &s.devices {
            defined.entry(format!("{}={d}", s.kind)).or_default().push(s);
        }
    }
    if defined.is_empty() {
        let dirs: Vec<String> = args.cdi_dirs.iter().map(|d| d.display().to_string()).collect();
        println!("no CDI devices in {}", dirs.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let width = defined.keys().map(String::len).max().unwrap_or(6).max(6);
    println!("{:<width$}  {:<10}  SPEC", "DEVICE", "WRITER");
    for (device, files) in &defined {
        for f in files {
            let note = if files.len() > 1 { "  (defined twice: unusable until one spec drops it)" } else { "" };
            let writer = if f.writer.is_empty() { "-" } else { f.writer };
            println!("{device:<width$}  {writer:<10}  {}{note}", f.path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let files: Vec<PathBuf> = if args.files.is_empty() {
        let (specs, broken) = cdi::scan(&args.cdi_dirs);
        specs.into_iter().map(|s| s.path).chain(broken.into_iter().map(|(p, _)| p)).collect()
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        println!("no CDI specs to check");
        return Ok(ExitCode::SUCCESS);
    }
    let (mut errors, mut warnings) = (0, 0);
    for file in &files {
        let findings = validate_file(file);
        for f in &findings {
            match f.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
            println!("{f}");
        }
        if findings.is_empty() {
            println!("{}: ok", file.display());
        }
    }
    if errors > 0 {
        eprintln!("gpuwarden: {errors} error(s), {warnings} warning(s) in {} spec(s)", files.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{CdiCommand, Cli, Command};
    use clap::Parser;

    fn generate_args(extra: &[&str]) -> GenerateArgs {
        let cli = Cli::try_parse_from(["gpuwarden", "cdi", "generate"].iter().chain(extra)).unwrap();
        match cli.command {
            Command::Cdi(CdiCommand::Generate(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gpus_from_nvml_reach_the_hooks_as_the_file_generate_writes() {
        let args = generate_args(&[]);
        let nvml = InventorySource::Nvml { library: None };
        let opts = hook_args(&args, &nvml, Some(Path::new(gpuwarden::hook::INVENTORY_SNAPSHOT)), None).unwrap();
        assert_eq!(opts, ["--inventory", gpuwarden::hook::INVENTORY_SNAPSHOT]);
        assert_eq!(args.inventory_file, Path::new(gpuwarden::hook::INVENTORY_SNAPSHOT), "written there by default");
    }

    #[test]
    fn a_named_inventory_config_and_state_folder_pass_to_the_hooks() {
        let args = generate_args(&["--inventory", "builtin:rtx4070", "--state-dir", "/srv/state"]);
        let opts = hook_args(&args, &InventorySource::Builtin("rtx4070".into()), None, Some(Path::new("/etc/g.toml"))).unwrap();
        assert_eq!(opts, ["--config", "/etc/g.toml", "--inventory", "builtin:rtx4070", "--state-dir", "/srv/state"]);
        // From config.toml: the hooks read the same file, so nothing is added.
        let opts = hook_args(&generate_args(&[]), &InventorySource::Builtin("rtx4070".into()), None, None).unwrap();
        assert!(opts.is_empty(), "{opts:?}");
        let e = hook_args(&generate_args(&["--inventory", "-"]), &InventorySource::File("-".into()), None, None).unwrap_err();
        assert!(e.to_string().contains("cannot read an inventory from stdin"), "{e}");
    }
}
