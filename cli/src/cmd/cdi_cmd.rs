//! `gpuwarden cdi generate | list | validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{absolute, inventory_cmd, GenerateArgs, ListArgs, Result, ValidateArgs};
use crate::spec_check::{validate_file, Severity};
use gpuwarden::cdi::{self, Generated, Kind, MpsMounts, Placement, SpecInput};
use gpuwarden::hookcall::{HookCall, HookOptions};
use gpuwarden::config::Config;
use gpuwarden::host::discover::{discover, Roots};
use gpuwarden::host::inventory::InventorySource;

/// One generation of gpuwarden's spec, as `cdi generate` and `install` ask
/// for it: plain values, whatever asked.
#[derive(Debug)]
pub struct SpecJob {
    /// `--inventory`: a file, `builtin:NAME`, `-`; `None` for the configuration's, else NVML.
    pub inventory: Option<String>,
    pub driver_root: Option<PathBuf>,
    pub output: PathBuf,
    pub format: Option<cdi::Format>,
    pub dev_root: Option<PathBuf>,
    pub kind: Kind,
    pub cdi_dirs: Vec<PathBuf>,
    pub hook_path: Option<PathBuf>,
    pub launcher_path: Option<PathBuf>,
    /// Where the GPUs NVML found are written for the hooks.
    pub inventory_file: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub hooks: bool,
    pub mps_folders: bool,
}

impl GenerateArgs {
    pub fn job(&self) -> Result<SpecJob> {
        Ok(SpecJob {
            inventory: self.source.inventory.clone(),
            driver_root: self.source.driver_root.clone(),
            output: self.output.clone(),
            format: self.format,
            dev_root: self.dev_root.clone(),
            kind: Kind::new(&self.vendor, &self.class)?,
            cdi_dirs: self.cdi_dirs.clone(),
            hook_path: self.hook_path.clone(),
            launcher_path: self.launcher_path.clone(),
            inventory_file: self.inventory_file.clone(),
            state_dir: self.state_dir.clone(),
            hooks: !self.no_hooks,
            mps_folders: !self.no_mps_folders,
        })
    }
}

/// The options after `admit|release` that make the hooks see what the
/// generator saw: the same configuration, GPUs and state folder. GPUs found
/// through NVML are handed over as a file (`snapshot`), since the hooks never
/// load NVML.
fn hook_args(job: &SpecJob, source: &InventorySource, snapshot: Option<&Path>, config_file: Option<&Path>) -> Result<HookOptions> {
    let inventory = match (source, snapshot) {
        (InventorySource::File(p), _) if p.as_os_str() == "-" => {
            return Err("the hooks cannot read an inventory from stdin: write it to a file and pass --inventory FILE".into());
        }
        (InventorySource::Nvml { .. }, Some(file)) => Some(absolute(file).display().to_string()),
        _ if job.inventory.is_some() => Some(source.to_string()),
        _ => None,
    };
    Ok(HookOptions { config: config_file.map(Path::to_path_buf), inventory, state_dir: job.state_dir.clone(), launcher_path: None })
}

pub fn generate(args: &GenerateArgs, config: &Config, config_file: Option<&Path>) -> Result<ExitCode> {
    let job = args.job()?;
    if let Some(summary) = write_spec(&job, config, config_file)? {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates the spec `job` asks for (`gpuwarden::cdi::generate`) and writes
/// it, with the NVML snapshot the hooks read; returns what was written, in a
/// few lines. An output of `-` prints the spec and returns `None`.
pub fn write_spec(job: &SpecJob, config: &Config, config_file: Option<&Path>) -> Result<Option<String>> {
    let root = inventory_cmd::driver_root(job.driver_root.as_deref().unwrap_or(&config.cdi.driver_root))?;
    let (source, inventory) = inventory_cmd::load(job.inventory.as_deref(), job.driver_root.as_deref(), config)?;
    // A profile device on a GPU whose reserves leave nothing could never start.
    if let Some(problem) = gpuwarden::admission::budget::reserve_problems(&inventory, &config.budget).into_iter().next() {
        return Err(problem.into());
    }
    let roots = Roots { driver: root, dev: absolute(job.dev_root.as_deref().unwrap_or(&config.cdi.dev_root)).join("dev") };
    let discovery = discover(&roots, &inventory)?;
    let nvml = matches!(source, InventorySource::Nvml { .. });
    let hooks = match job.hooks {
        false => None,
        true => {
            let snapshot = nvml.then_some(job.inventory_file.as_path());
            Some(HookCall { path: super::hook_binary(job.hook_path.as_deref())?, options: hook_args(job, &source, snapshot, config_file)? })
        }
    };
    let profiles = config.profile_names();
    let mps = config.mps.enabled.then(|| MpsMounts { pipe: config.mps.pipe_directory.clone(), shm: config.mps.shm_directory.clone() });
    let launcher = super::companion(job.launcher_path.as_deref(), "gpuwarden-launch", "--launcher-path")?;
    let input = SpecInput {
        kind: &job.kind,
        inventory: &inventory,
        discovery: &discovery,
        profiles: &profiles,
        hooks: hooks.as_ref(),
        mps: mps.as_ref(),
        launcher: Some(&launcher),
    };
    // NVIDIA's toolkit keeps the index, UUID and `all` names where it is installed or its spec is.
    let path: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let toolkit = cdi::find_toolkit(&path);
    let Generated { spec, left } = cdi::generate(&input, &Placement { output: &job.output, cdi_dirs: &job.cdi_dirs, toolkit: toolkit.as_deref() });
    let format = job.format.unwrap_or_else(|| cdi::Format::for_path(&job.output));
    if job.output == Path::new("-") {
        print!("{}", cdi::render(&spec, format));
        return Ok(None);
    }
    if nvml && job.hooks {
        write_inventory(&inventory, &job.inventory_file)?;
    }
    if config.mps.enabled && job.mps_folders {
        // The profile devices mount them; runc cannot mount what does not exist.
        gpuwarden::host::mps::daemon::prepare_folders(&config.mps)?;
    }
    cdi::install(&spec, format, &job.output, &job.cdi_dirs)?;
    Ok(Some(summary(&spec, &discovery, &job.output, &mps_line(config), &left)))
}

/// What the profile devices get of MPS, and whether its daemon runs.
fn mps_line(config: &Config) -> String {
    let m = &config.mps;
    if !m.enabled {
        return "MPS is off ([mps] enabled = false): profile containers are NOT limited on the GPU".into();
    }
    let running = match gpuwarden::host::mps::daemon(&m.pipe_directory, Path::new("/proc")) {
        Ok(d) => format!("its control daemon runs (pid {})", d.pid),
        Err(_) => "its control daemon is not running: profile containers are refused until `gpuwarden mps start`".into(),
    };
    format!("profile devices get the MPS pipe directory {} and {} as /dev/shm; {running}", m.pipe_directory.display(), m.shm_directory.display())
}

/// Writes the inventory NVML gave, for the hooks, atomically (0644).
fn write_inventory(inventory: &gpuwarden::host::inventory::Inventory, path: &Path) -> Result<()> {
    // What runs on the GPUs now is no part of what they are.
    let mut inventory = inventory.clone();
    for g in &mut inventory.gpus {
        g.processes = None;
    }
    gpuwarden::base::fsutil::write_atomic_creating_folder(path, gpuwarden::base::json::pretty(&inventory).as_bytes(), 0o644)?;
    Ok(())
}

/// What `generate` wrote, in a few lines: each device with its own nodes and
/// hooks, then what every device gets.
fn summary(spec: &cdi::Spec, discovery: &gpuwarden::host::discover::Discovery, path: &Path, mps: &str, left: &[(String, cdi::Owner)]) -> String {
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
        let opts = hook_args(&args.job().unwrap(), &nvml, Some(Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT)), None).unwrap();
        assert_eq!(opts.to_args(), ["--inventory", gpuwarden::hookcall::INVENTORY_SNAPSHOT]);
        assert_eq!(args.inventory_file, Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT), "written there by default");
    }

    #[test]
    fn a_named_inventory_config_and_state_folder_pass_to_the_hooks() {
        let args = generate_args(&["--inventory", "builtin:rtx4070", "--state-dir", "/srv/state"]);
        let opts = hook_args(&args.job().unwrap(), &InventorySource::Builtin("rtx4070".into()), None, Some(Path::new("/etc/g.toml"))).unwrap();
        assert_eq!(opts.to_args(), ["--config", "/etc/g.toml", "--inventory", "builtin:rtx4070", "--state-dir", "/srv/state"]);
        // From config.toml: the hooks read the same file, so nothing is added.
        let opts = hook_args(&generate_args(&[]).job().unwrap(), &InventorySource::Builtin("rtx4070".into()), None, None).unwrap();
        assert!(opts.to_args().is_empty(), "{opts:?}");
        let e = hook_args(&generate_args(&["--inventory", "-"]).job().unwrap(), &InventorySource::File("-".into()), None, None).unwrap_err();
        assert!(e.to_string().contains("cannot read an inventory from stdin"), "{e}");
    }
}
