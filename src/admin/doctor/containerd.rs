//! Whether containerd's CRI (what the kubelet talks to) applies CDI devices.
//! containerd 1.7 has CDI off unless `enable_cdi = true`; 2.0 has it on; 1.6
//! has none. Where it is off, a pod's `nvidia.com/gpu=comfyui` is dropped
//! without a word: the container runs with no GPU and no profile. Docker and
//! Podman apply CDI themselves, so on a host without a kubelet this is only
//! worth knowing.

use super::version::{version_at_least, version_number};
use super::finding::{Finding, Level};

/// What doctor reads of containerd.
#[derive(Clone, Debug, Default)]
pub struct ContainerdFacts {
    /// What `containerd --version` printed.
    pub version: Option<String>,
    /// /etc/containerd/config.toml, parsed, or why not (`None`: there is none,
    /// so containerd's defaults apply).
    pub config: Option<Result<toml::Table, String>>,
    /// Whether a kubelet is installed: then the CRI is what starts GPU pods.
    pub kubelet: bool,
}

impl ContainerdFacts {
    /// containerd's config file as read, or why it cannot be, on one line.
    pub fn parse_config(text: &str) -> Result<toml::Table, String> {
        text.parse::<toml::Table>().map_err(|e| format!("not valid TOML: {}", crate::base::text::one_line(&e)))
    }
}

/// Where the CRI plugin keeps its CDI settings, by config version.
fn cri_table(config: &toml::Table) -> Option<&toml::Table> {
    let plugins = config.get("plugins")?.as_table()?;
    let key = match config.get("version").and_then(toml::Value::as_integer) {
        Some(3) => "io.containerd.cri.v1.runtime",
        Some(2) => "io.containerd.grpc.v1.cri",
        _ => "cri",
    };
    plugins.get(key)?.as_table()
}

fn cri_disabled(config: &toml::Table) -> bool {
    let mut names = config.get("disabled_plugins").and_then(toml::Value::as_array).into_iter().flatten().filter_map(toml::Value::as_str);
    names.any(|n| matches!(n, "cri" | "io.containerd.grpc.v1.cri" | "io.containerd.cri.v1.runtime"))
}

pub fn check(c: &ContainerdFacts, out: &mut Vec<Finding>) {
    let name = c.version.as_deref().and_then(version_number).map_or_else(|| "containerd".to_string(), |v| format!("containerd {v}"));
    let (off, fix_level) = if c.kubelet { ("Kubernetes pods asking for nvidia.com/gpu=comfyui get no GPU and no profile", Level::Fail) } else { ("only Kubernetes pods would need it", Level::Note) };
    let config = match &c.config {
        Some(Err(why)) => {
            out.push(Finding::new("containerd", Level::Warn, format!("/etc/containerd/config.toml: {why}")).fix("fix the file: containerd does not start with it"));
            return;
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    if config.is_some_and(cri_disabled) {
        out.push(Finding::new("containerd", Level::Ok, format!("{name}: its CRI is disabled (Docker's containerd): CDI there is Docker's")));
        return;
    }
    let major_2 = c.version.as_deref().and_then(|v| version_at_least(v, 2, 0)) == Some(true);
    if c.version.as_deref().and_then(|v| version_at_least(v, 1, 7)) == Some(false) {
        out.push(Finding::new("containerd", fix_level, format!("{name} cannot apply CDI devices (1.7 or later can): {off}")).fix("install containerd 1.7 or later (Debian 13's, or containerd.io)"));
        return;
    }
    let cri = config.and_then(cri_table);
    // The CRI's table, for the lines to set.
    let table = if config.and_then(|t| t.get("version")).and_then(toml::Value::as_integer) == Some(3) { "io.containerd.cri.v1.runtime" } else { "io.containerd.grpc.v1.cri" };
    let enabled = cri.and_then(|t| t.get("enable_cdi")).and_then(toml::Value::as_bool).unwrap_or(major_2);
    if !enabled {
        out.push(
            Finding::new("containerd", fix_level, format!("{name}: its CRI ignores CDI devices (enable_cdi is off): {off}"))
                .fix(format!("set enable_cdi = true under [plugins.\"{table}\"] in /etc/containerd/config.toml (version = 2), then systemctl restart containerd")),
        );
        return;
    }
    let dirs: Option<Vec<&str>> = cri.and_then(|t| t.get("cdi_spec_dirs")).and_then(toml::Value::as_array).map(|a| a.iter().filter_map(toml::Value::as_str).collect());
    match dirs {
        Some(d) if !d.iter().any(|p| matches!(p.trim_end_matches('/'), "/etc/cdi" | "/var/run/cdi" | "/run/cdi")) => out.push(
            Finding::new("containerd", fix_level, format!("{name} reads CDI specs only from {}: not gpuwarden's /etc/cdi", d.join(", ")))
                .fix("add \"/etc/cdi\" to cdi_spec_dirs in /etc/containerd/config.toml"),
        ),
        _ => out.push(Finding::new("containerd", Level::Ok, format!("{name}: its CRI applies CDI devices"))),
    }
    runtime(&name, cri, table, c.kubelet, out);
}

/// Whether the CRI's default runtime is gpuwarden's: containerd has no
/// precreate stage, so the profile's rewrite (the launcher, a read-only
/// root, no capabilities) comes from `gpuwarden-runtime` as runc's binary.
/// Without it admission still runs (CDI's hooks) and refuses every profile
/// pod, since none conforms: fail-closed, but no pod runs.
fn runtime(name: &str, cri: Option<&toml::Table>, table: &str, kubelet: bool, out: &mut Vec<Finding>) {
    let containerd = cri.and_then(|t| t.get("containerd")).and_then(toml::Value::as_table);
    let default = containerd.and_then(|t| t.get("default_runtime_name")).and_then(toml::Value::as_str).unwrap_or("runc");
    let options = containerd.and_then(|t| t.get("runtimes")).and_then(|r| r.get(default)).and_then(|r| r.get("options"));
    let binary = options.and_then(|o| o.get("BinaryName")).and_then(toml::Value::as_str).unwrap_or("runc");
    if binary.rsplit('/').next() == Some(crate::hookcall::RUNTIME_BINARY) {
        out.push(Finding::new("containerd", Level::Ok, format!("{name}: its runtime {default:?} runs {binary}, which applies the profiles")));
        return;
    }
    let level = if kubelet { Level::Warn } else { Level::Note };
    out.push(
        Finding::new("containerd", level, format!("{name}: its runtime {default:?} runs {binary}, not gpuwarden-runtime: every profile pod is refused (the profile's launcher, read-only root and dropped capabilities are never applied)"))
            .fix(format!("set BinaryName = \"/usr/bin/gpuwarden-runtime\" under [plugins.\"{table}\".containerd.runtimes.{default}.options] in /etc/containerd/config.toml, then systemctl restart containerd")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: &str, config: Option<&str>, kubelet: bool) -> ContainerdFacts {
        ContainerdFacts { version: Some(version.into()), config: config.map(ContainerdFacts::parse_config), kubelet }
    }

    /// The CDI finding (the first).
    fn one(c: &ContainerdFacts) -> Finding {
        let mut out = Vec::new();
        check(c, &mut out);
        assert!(!out.is_empty() && out.len() <= 2, "{out:?}");
        out.remove(0)
    }

    #[test]
    fn the_default_runtime_must_be_gpuwarden_runtime_or_every_profile_pod_is_refused() {
        let cdi = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = true\n";
        let mut out = Vec::new();
        check(&facts(V17, Some(cdi), true), &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[1].level == Level::Warn && out[1].text.contains("runs runc, not gpuwarden-runtime") && out[1].fix.as_deref().is_some_and(|f| f.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]")), "{:?}", out[1]);
        let ours = format!("{cdi}[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"gw\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.gw.options]\nBinaryName = \"/usr/bin/gpuwarden-runtime\"\n");
        let mut out = Vec::new();
        check(&facts(V17, Some(&ours), true), &mut out);
        assert!(out[1].level == Level::Ok && out[1].text.contains("runtime \"gw\" runs /usr/bin/gpuwarden-runtime"), "{out:?}");
        let mut out = Vec::new();
        check(&facts(V17, Some(cdi), false), &mut out);
        assert_eq!(out[1].level, Level::Note, "without a kubelet, only worth knowing");
    }

    const V17: &str = "containerd containerd.io 1.7.24 88bf19b";

    #[test]
    fn containerd_1_7_has_cdi_off_until_the_config_turns_it_on() {
        let f = one(&facts(V17, None, true));
        assert_eq!(f.level, Level::Fail);
        assert!(f.text.contains("enable_cdi is off") && f.fix.as_deref().is_some_and(|x| x.contains("[plugins.\"io.containerd.grpc.v1.cri\"]")), "{f:?}");
        let on = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = true\n";
        assert_eq!(one(&facts(V17, Some(on), true)).level, Level::Ok);
        // Without a kubelet it is only worth knowing.
        assert_eq!(one(&facts(V17, None, false)).level, Level::Note);
    }

    #[test]
    fn containerd_2_has_cdi_on_unless_turned_off() {
        let v2 = "containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257";
        assert_eq!(one(&facts(v2, None, true)).level, Level::Ok);
        let off = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\nenable_cdi = false\n";
        let f = one(&facts(v2, Some(off), true));
        assert!(f.level == Level::Fail && f.fix.as_deref().is_some_and(|x| x.contains("io.containerd.cri.v1.runtime")), "{f:?}");
    }

    #[test]
    fn old_containerd_a_disabled_cri_other_spec_folders_and_a_broken_file() {
        let f = one(&facts("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1", None, true));
        assert!(f.level == Level::Fail && f.text.contains("containerd 1.6.20~ds1 cannot apply CDI devices"), "{f:?}");
        assert_eq!(one(&facts(V17, Some("disabled_plugins = [\"cri\"]\n"), true)).level, Level::Ok);
        let dirs = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = true\ncdi_spec_dirs = [\"/opt/cdi\"]\n";
        assert!(one(&facts(V17, Some(dirs), true)).text.contains("only from /opt/cdi"));
        let broken = facts(V17, Some("version = ["), true);
        assert_eq!(one(&broken).level, Level::Warn);
    }
}
