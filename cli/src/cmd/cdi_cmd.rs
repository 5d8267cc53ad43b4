//! `gpuwarden cdi generate | list | validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{absolute, inventory_cmd, GenerateArgs, ListArgs, Result, ValidateArgs};
use crate::spec_check::{minimum_version, validate_file, Severity};
use gpuwarden::cdi::{self, build_spec, Kind, SpecInput};
use gpuwarden::hook::HookCall;
use gpuwarden::config::Config;
use gpuwarden::discover::{discover, Roots};
use gpuwarden::inventory::InventorySource;

/// The options after `admit|release` that make the hooks see what the
/// generator saw: the same configuration, inventory, driver root and state folder.
fn hook_args(args: &GenerateArgs, source: &InventorySource, config_file: Option<&Path>) -> Result<Vec<String>> {
    let mut extra = Vec::new();
    if let Some(c) = config_file {
        extra.extend(["--config".to_string(), absolute(c).display().to_string()]);
    }
    if args.source.inventory.is_some() {
        let named = match source {
            InventorySource::File(p) if p.as_os_str() == "-" => {
                return Err("the hooks cannot read an inventory from stdin: write it to a file and pass --inventory FILE".into());
            }
            other => other.to_string(),
        };
        extra.extend(["--inventory".to_string(), named]);
    }
    if args.source.driver_root != Path::new("/") {
        extra.extend(["--driver-root".to_string(), absolute(&args.source.driver_root).display().to_string()]);
    }
    if let Some(dir) = &args.state_dir {
        extra.extend(["--state-dir".to_string(), absolute(dir).display().to_string()]);
    }
    Ok(extra)
}

pub fn generate(args: &GenerateArgs, config: &Config, config_file: Option<&Path>) -> Result<ExitCode> {
    let root = inventory_cmd::driver_root(&args.source.driver_root)?;
    let (source, inventory) = inventory_cmd::load(&args.source, config)?;
    // A profile device on a GPU whose reserves leave nothing could never start.
    if let Some(problem) = gpuwarden::budget::reserve_problems(&inventory, &config.budget).into_iter().next() {
        return Err(problem.into());
    }
    let roots = Roots { driver: root, dev: absolute(&args.dev_root).join("dev") };
    let discovery = discover(&roots, &inventory, &config.mps.pipe_directory)?;
    let kind = Kind::new(&args.vendor, &args.class)?;
    let hooks = match args.no_hooks {
        true => None,
        false => Some(HookCall { path: super::hook_binary(args.hook_path.as_deref())?, options: hook_args(args, &source, config_file)? }),
    };
    let profiles = config.profile_names();
    let mut spec = build_spec(&SpecInput { kind: &kind, inventory: &inventory, discovery: &discovery, profiles: &profiles, hooks: hooks.as_ref() });
    spec.cdi_version = minimum_version(&spec);
    let format = args.format.unwrap_or_else(|| cdi::Format::for_path(&args.output));
    if args.output == Path::new("-") {
        print!("{}", cdi::render(&spec, format));
    } else {
        cdi::install(&spec, format, &args.output, &args.cdi_dirs)?;
        print!("{}", summary(&spec, &discovery, &args.output));
    }
    // Said after success only, so that a failure stays one line.
    if discovery.mps_pipe_dir.is_none() {
        tracing::warn!(
            "MPS pipe directory {} is absent, so containers run without MPS and its limits: start nvidia-cuda-mps-control -d, then generate the spec again",
            config.mps.pipe_directory.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `generate` wrote, in a few lines: each device with its own nodes and
/// hooks, then what every device gets.
fn summary(spec: &cdi::Spec, discovery: &gpuwarden::discover::Discovery, path: &Path) -> String {
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
    let e = &spec.container_edits;
    let mps = discovery.mps_pipe_dir.as_ref().map_or_else(|| "no MPS pipe directory".to_string(), |p| format!("the MPS pipe directory {}", p.display()));
    let _ = writeln!(
        out,
        "  every device also gets {} control nodes, {} driver libraries ({} mounts with their SONAMEs), {} data files and binaries, {mps}",
        e.device_nodes.len(),
        discovery.libraries.len(),
        discovery.library_mounts().len(),
        discovery.files.len()
    );
    let _ = writeln!(out, "  the whole spec: {}", path.display());
    out
}

pub fn list(args: &ListArgs) -> Result<ExitCode> {
    let (specs, broken) = cdi::scan(&args.cdi_dirs);
    for (path, why) in &broken {
        eprintln!("gpuwarden: skipped {}: {why}", path.display());
    }
    let mut defined: BTreeMap<String, Vec<&Path>> = BTreeMap::new();
    for s in &specs {
        for d in &s.devices {
            defined.entry(format!("{}={d}", s.kind)).or_default().push(&s.path);
        }
    }
    if defined.is_empty() {
        let dirs: Vec<String> = args.cdi_dirs.iter().map(|d| d.display().to_string()).collect();
        println!("no CDI devices in {}", dirs.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let width = defined.keys().map(String::len).max().unwrap_or(6).max(6);
    println!("{:<width$}  SPEC", "DEVICE");
    for (device, files) in &defined {
        for f in files {
            let note = if files.len() > 1 { "  (defined twice: unusable until one spec drops it)" } else { "" };
            println!("{device:<width$}  {}{note}", f.display());
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
