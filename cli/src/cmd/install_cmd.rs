//! `gpuwarden install` and `uninstall`: every piece in place in one step, and
//! taken away again. The pieces are decided here; putting them in place and
//! the record of what was put where are the library's (`gpuwarden::admin::install`).

use std::path::Path;
use std::process::ExitCode;

use super::cdi_cmd::{write_spec, SpecJob};
use super::{podman_cmd, InstallArgs, Result, UninstallArgs};
use gpuwarden::hookcall::{HookCall, HookOptions};
use gpuwarden::admin::install::{self, FilePiece, Plan};

/// The configuration the package and `install` put in place (never overwritten).
pub const DEFAULT_CONFIG: &str = include_str!("../../../packaging/config.toml");
pub const CONFIG_PATH: &str = "/etc/gpuwarden/config.toml";
pub const SPEC_PATH: &str = gpuwarden::cdi::DEFAULT_SPEC;
const HOOKS_D: &str = "/usr/share/containers/oci/hooks.d";
const UNIT_DIR: &str = "/etc/systemd/system";

/// The units in the repository, naming /usr/local/bin: every one is installed
/// and enabled (the package's postinst enables the same list; a test holds it so).
pub const UNITS: &[(&str, &str)] = &[
    ("gpuwarden-mps.service", include_str!("../../../systemd/gpuwarden-mps.service")),
    ("gpuwarden-cdi-refresh.service", include_str!("../../../systemd/gpuwarden-cdi-refresh.service")),
    ("gpuwarden-cdi-refresh.path", include_str!("../../../systemd/gpuwarden-cdi-refresh.path")),
    ("gpuwarden-watch.service", include_str!("../../../systemd/gpuwarden-watch.service")),
    ("gpuwarden-live.service", include_str!("../../../systemd/gpuwarden-live.service")),
    ("gpuwarden-broker.socket", include_str!("../../../systemd/gpuwarden-broker.socket")),
    ("gpuwarden-broker.service", include_str!("../../../systemd/gpuwarden-broker.service")),
];

/// `systemctl enable --now ...` for every unit.
pub fn enable_command() -> String {
    let names: Vec<&str> = UNITS.iter().map(|(n, _)| *n).collect();
    format!("systemctl daemon-reload && systemctl enable --now {}", names.join(" "))
}

/// Which engines get their pieces: those asked for, else those on the target.
fn engines(args: &InstallArgs) -> (bool, bool) {
    if args.podman || args.docker {
        return (args.podman, args.docker);
    }
    let has = |names: &[&str]| names.iter().any(|n| install::under(&args.root, Path::new(n)).exists());
    (has(&["/usr/bin/podman"]), has(&["/usr/bin/dockerd", "/usr/sbin/dockerd"]))
}

/// Whether the Docker engine knows CDI (25 and later).
fn docker_has_cdi(args: &InstallArgs) -> bool {
    match args.docker_cdi.as_str() {
        "yes" => return true,
        "no" => return false,
        _ => {}
    }
    if args.root != Path::new("/") {
        return false;
    }
    let Ok(o) = std::process::Command::new("dockerd").arg("--version").output() else { return false };
    knows_cdi(&String::from_utf8_lossy(&o.stdout))
}

/// Whether `dockerd --version` ("Docker version 26.1.5+dfsg1, build ...") names 25 or later.
fn knows_cdi(version: &str) -> bool {
    gpuwarden::admin::doctor::version_at_least(version, 25, 0) == Some(true)
}

/// A binary to install: the one beside this `gpuwarden` (scripts/build.sh puts them together).
fn binary(name: &str) -> Result<Vec<u8>> {
    let me = std::env::current_exe()?.canonicalize()?;
    let path = me.with_file_name(name);
    std::fs::read(&path).map_err(|e| format!("cannot read {} ({e}): install runs from the folder scripts/build.sh fills (target/dist)", path.display()).into())
}

fn plan(args: &InstallArgs, podman: bool, docker: bool) -> Result<Plan> {
    let bin = &args.bin_dir;
    let at = |name: &str| bin.join(name);
    let docker = docker.then(|| (at("gpuwarden-runtime").display().to_string(), docker_has_cdi(args)));
    if args.package {
        return Ok(Plan { files: Vec::new(), docker });
    }
    let mut files = Vec::new();
    let mut names = vec!["gpuwarden", "gpuwarden-hook", "gpuwarden-launch"];
    if docker.is_some() {
        names.push("gpuwarden-runtime");
    }
    for name in names {
        let content = binary(name)?;
        files.push(FilePiece { path: at(name), content, mode: 0o755, keep_existing: false });
    }
    files.push(FilePiece { path: CONFIG_PATH.into(), content: DEFAULT_CONFIG.into(), mode: 0o644, keep_existing: true });
    let prefix = format!("{}/", bin.display());
    for (name, text) in UNITS {
        files.push(FilePiece { path: Path::new(UNIT_DIR).join(name), content: text.replace("/usr/local/bin/", &prefix).into_bytes(), mode: 0o644, keep_existing: false });
    }
    if podman {
        let hook = HookCall { path: at("gpuwarden-hook"), options: HookOptions { launcher_path: Some(at("gpuwarden-launch")), ..Default::default() } };
        files.push(FilePiece { path: Path::new(HOOKS_D).join(podman_cmd::HOOK_FILE), content: podman_cmd::precreate_hook_json(&hook).into_bytes(), mode: 0o644, keep_existing: false });
    }
    Ok(Plan { files, docker })
}

/// Writes the CDI spec for the target with its own configuration; where that
/// cannot be done now (no driver loaded), says why and what writes it later.
fn generate_spec(args: &InstallArgs) -> Result<()> {
    let root = &args.root;
    let config_file = install::under(root, Path::new(CONFIG_PATH));
    let config = gpuwarden::config::Config::load_from(Some(&config_file))?;
    let spec = install::under(root, Path::new(SPEC_PATH));
    let job = SpecJob {
        inventory: None,
        driver_root: None,
        output: spec.clone(),
        format: None,
        dev_root: None,
        kind: gpuwarden::cdi::Kind::new("nvidia.com", "gpu")?,
        cdi_dirs: gpuwarden::cdi::DEFAULT_SPEC_DIRS.iter().map(|d| install::under(root, Path::new(d))).collect(),
        hook_path: Some(args.bin_dir.join("gpuwarden-hook")),
        launcher_path: Some(args.bin_dir.join("gpuwarden-launch")),
        inventory_file: install::under(root, Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT)),
        state_dir: None,
        hooks: true,
        mps_folders: false,
    };
    install::prepare_dirs(root, Path::new(SPEC_PATH))?;
    let snapshot_before = job.inventory_file.exists();
    match write_spec(&job, &config, None) {
        Ok(summary) => {
            print!("{}", summary.unwrap_or_default());
            install::adopt(root, Path::new(SPEC_PATH))?;
            if !snapshot_before && job.inventory_file.exists() {
                install::adopt(root, Path::new(gpuwarden::hookcall::INVENTORY_SNAPSHOT))?;
            }
        }
        Err(e) => println!(
            "note    the CDI spec is not written now: {}\n        gpuwarden-cdi-refresh.service writes it at boot and when the driver changes (or run `gpuwarden cdi generate`)",
            gpuwarden::base::text::one_line(e.as_ref())
        ),
    }
    Ok(())
}

pub fn install(args: &InstallArgs) -> Result<ExitCode> {
    let (podman, docker) = engines(args);
    let plan = plan(args, podman, docker)?;
    let root = &args.root;
    println!(
        "{} gpuwarden under {} for {}",
        if args.dry_run { "would install" } else { "installing" },
        root.display(),
        match (podman, docker) {
            (true, true) => "Podman and Docker",
            (true, false) => "Podman",
            (false, true) => "Docker",
            (false, false) => "neither Podman nor Docker (none found: --podman, --docker)",
        }
    );
    let changes = install::install(root, &plan, args.dry_run, &mut std::io::stdout())?;
    if args.dry_run {
        println!("would generate {}", install::under(root, Path::new(SPEC_PATH)).display());
        return Ok(ExitCode::SUCCESS);
    }
    generate_spec(args)?;
    if changes.is_empty() {
        println!("nothing to change: every piece is in place");
    }
    if !args.package {
        println!("next: {}", enable_command());
    }
    if changes.iter().any(|c| matches!(c, install::Change::MergeDaemonJson(_))) {
        println!("next: restart Docker so it reads daemon.json (systemctl restart docker, or kill -HUP the dockerd process)");
    }
    if args.package {
        // The package's own lines start the units after this; a report now would list them as missing.
        println!("the package enables and starts the units next; then `gpuwarden doctor` says what is still missing");
        return Ok(ExitCode::SUCCESS);
    }
    // What is still missing before a GPU container runs (units not started yet, no driver, ...).
    let config = gpuwarden::config::Config::load_from(Some(&install::under(root, Path::new(CONFIG_PATH))))?;
    println!("\nthe host now, as `gpuwarden doctor` sees it:");
    print!("{}", gpuwarden::admin::doctor::render_text(&gpuwarden::admin::doctor::check(&super::doctor_cmd::gather(root, None, &[], None, &config))));
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(args: &UninstallArgs) -> Result<ExitCode> {
    install::uninstall(&args.root, args.dry_run, &mut std::io::stdout())?;
    if !args.dry_run {
        println!("next: systemctl daemon-reload; restart Docker if its daemon.json changed");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_the_defaults_written_out() {
        let parsed = gpuwarden::config::Config::parse(DEFAULT_CONFIG, Path::new(CONFIG_PATH)).unwrap();
        assert_eq!(parsed, gpuwarden::config::Config::default());
    }

    #[test]
    fn docker_25_and_later_know_cdi() {
        assert!(knows_cdi("Docker version 26.1.5+dfsg1, build 411e817\n"));
        assert!(!knows_cdi("Docker version 20.10.24+dfsg1, build 5d6db84\n"));
        assert!(!knows_cdi("garbage"));
    }

    #[test]
    fn the_package_the_help_and_install_name_the_same_units() {
        let names: Vec<&str> = UNITS.iter().map(|(n, _)| *n).collect();
        let cmd = <super::super::Cli as clap::CommandFactory>::command();
        let install = cmd.find_subcommand("install").unwrap();
        let help = install.get_long_about().or(install.get_about()).unwrap().to_string();
        for n in &names {
            assert!(help.contains(n), "install --help names {n}: {help}");
        }
        // The package enables and starts each through debhelper's lines: one systemd-units
        // entry per unit name, which installs its .service, .socket and .path files.
        let deb = include_str!("../../Cargo.toml");
        for n in &names {
            let stem = n.rsplit_once('.').unwrap().0;
            assert!(deb.contains(&format!("unit-name = \"{stem}\", unit-scripts = \"../target/deb-assets/units\", enable = true, start = true")), "the package enables {n}");
        }
        for script in [include_str!("../../../packaging/debian/postinst"), include_str!("../../../packaging/debian/prerm"), include_str!("../../../packaging/debian/postrm")] {
            assert!(script.contains("#DEBHELPER#"), "debhelper's lines go into every maintainer script");
            assert!(!script.lines().any(|l| l.trim_start().starts_with("systemctl")), "units are debhelper's: {script}");
        }
    }

    #[test]
    fn units_name_the_binaries_where_install_puts_them() {
        for (name, text) in UNITS.iter().filter(|(n, _)| n.ends_with(".service")) {
            assert!(text.contains("ExecStart=/usr/local/bin/gpuwarden"), "{name} runs gpuwarden from /usr/local/bin");
        }
    }
}
