//! The launcher's rules, as the profile rewrite writes them on its command
//! line, and the Landlock ruleset they make.

use std::ffi::OsString;

use landlock::{
    Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

/// The Landlock ABI whose file-system rights gpuwarden asks for: V5 adds
/// `IoctlDev`, which CUDA needs on `/dev/nvidia*`.
pub const FS_ABI: ABI = ABI::V5;

/// What a profile asks of the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub read: Vec<OsString>,
    pub write: Vec<OsString>,
    pub exec: Vec<OsString>,
    pub bind: Vec<u16>,
    pub connect: Vec<u16>,
    /// Refuse unless every requested right is enforced.
    pub require_full: bool,
    /// Capabilities the workload may keep (`CAP_SYS_NICE`, ...).
    pub caps: Vec<String>,
    /// Lines to say on stderr at every start (MPS off, ...).
    pub warn: Vec<String>,
    /// The workload's program, exactly as given.
    pub program: OsString,
    /// Its arguments, exactly as given.
    pub args: Vec<OsString>,
}

/// Reads `--read P --write P --exec P --bind N --connect N --require full|abi1
/// --caps A,B -- PROGRAM ARGS...`; everything after `--` is the workload, kept
/// byte for byte.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Rules, String> {
    let mut r = Rules::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--" {
            r.program = it.next().ok_or("no program after --")?;
            r.args = it.collect();
            return Ok(r);
        }
        let flag = flag.to_string_lossy().into_owned();
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let text = || value.to_string_lossy().into_owned();
        let port = || text().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{flag} {}: not a TCP port", text()));
        match flag.as_str() {
            "--read" => r.read.push(value),
            "--write" => r.write.push(value),
            "--exec" => r.exec.push(value),
            "--bind" => r.bind.push(port()?),
            "--connect" => r.connect.push(port()?),
            "--require" => match text().as_str() {
                "full" => r.require_full = true,
                "abi1" => r.require_full = false,
                other => return Err(format!("--require {other}: full or abi1")),
            },
            "--caps" => r.caps = text().split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
            "--warn" => r.warn.push(text()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Err("no -- before the program".into())
}

/// What came of applying the rules.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    pub status: RulesetStatus,
    pub abi: String,
    /// Paths the image does not have: skipped, the rest still applies.
    pub missing: Vec<OsString>,
}

/// The rights the ruleset handles (denies unless a rule grants them): every
/// file-system right up to [`FS_ABI`], and TCP bind or connect only when the
/// profile names ports for them.
pub fn handled(r: &Rules) -> (enumflags2::BitFlags<AccessFs>, enumflags2::BitFlags<AccessNet>) {
    let mut net = enumflags2::BitFlags::empty();
    if !r.bind.is_empty() {
        net |= AccessNet::BindTcp;
    }
    if !r.connect.is_empty() {
        net |= AccessNet::ConnectTcp;
    }
    (AccessFs::from_all(FS_ABI), net)
}

/// Builds the ruleset and restricts this process (and what it execs) to it.
pub fn apply(r: &Rules) -> Result<Applied, String> {
    let err = |e: landlock::RulesetError| e.to_string();
    let (fs, net) = handled(r);
    let mut ruleset = Ruleset::default().handle_access(fs).map_err(err)?;
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut missing = Vec::new();
    for (paths, access) in [(&r.read, read), (&r.exec, read | AccessFs::Execute), (&r.write, AccessFs::from_all(FS_ABI))] {
        for p in paths {
            // A path the image lacks is skipped alone: it must not void the whole ruleset.
            match PathFd::new(p) {
                Ok(fd) => created = created.add_rule(PathBeneath::new(fd, access)).map_err(err)?,
                Err(_) => missing.push(p.clone()),
            }
        }
    }
    for port in &r.bind {
        created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp)).map_err(err)?;
    }
    for port in &r.connect {
        created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp)).map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    let abi = match status.landlock {
        landlock::LandlockStatus::Available { effective_abi, kernel_abi } => format!("ABI {}", kernel_abi.unwrap_or(effective_abi as i32)),
        landlock::LandlockStatus::NotEnabled => "Landlock not enabled".into(),
        landlock::LandlockStatus::NotImplemented => "no Landlock".into(),
    };
    Ok(Applied { abi, status: status.ruleset, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_workload_keeps_its_arguments_exactly() {
        let args = os(&["--read", "/", "--write", "/tmp", "--bind", "8188", "--require", "full", "--caps", "CAP_SYS_NICE", "--", "sh", "-c", "echo 'a  b' \"q\"", "", "--read", "x"]);
        let r = parse(args).unwrap();
        assert_eq!(std::iter::once(r.program.clone()).chain(r.args.clone()).collect::<Vec<_>>(), os(&["sh", "-c", "echo 'a  b' \"q\"", "", "--read", "x"]));
        assert_eq!((r.read, r.write, r.bind, r.require_full, r.caps), (os(&["/"]), os(&["/tmp"]), vec![8188], true, vec!["CAP_SYS_NICE".to_string()]));
    }

    #[test]
    fn what_is_handled_per_profile_and_what_each_abi_can_enforce() {
        let comfy = parse(os(&["--read", "/", "--write", "/tmp", "--bind", "8188", "--", "x"])).unwrap();
        let (fs, net) = handled(&comfy);
        assert!(fs.contains(AccessFs::IoctlDev) && fs.contains(AccessFs::Truncate) && fs.contains(AccessFs::Refer), "{fs:?}");
        assert_eq!(net, AccessNet::BindTcp, "connect stays open without connect ports");
        let blender = parse(os(&["--read", "/", "--write", "/render", "--", "x"])).unwrap();
        assert!(handled(&blender).1.is_empty(), "no ports: the network is left alone");
        // What a kernel of each ABI leaves out of the requested rights (enforced partly there).
        let missing = |abi| fs & !AccessFs::from_all(abi);
        assert_eq!(missing(ABI::V1), AccessFs::Refer | AccessFs::Truncate | AccessFs::IoctlDev);
        assert_eq!(missing(ABI::V3), enumflags2::BitFlags::from(AccessFs::IoctlDev));
        assert!(missing(ABI::V5).is_empty() && missing(ABI::V7).is_empty());
        assert!(AccessNet::from_all(ABI::V3).is_empty() && AccessNet::from_all(ABI::V4).contains(AccessNet::BindTcp), "TCP rules need ABI 4");
    }

    #[test]
    fn malformed_command_lines_are_refused() {
        for (args, want) in [
            (os(&["--bind", "99999", "--", "x"]), "not a TCP port"),
            (os(&["--bind", "0", "--", "x"]), "not a TCP port"),
            (os(&["--require", "most", "--", "x"]), "full or abi1"),
            (os(&["--read", "/"]), "no -- before the program"),
            (os(&["--"]), "no program"),
            (os(&["--fly", "1", "--", "x"]), "unknown option --fly"),
            (os(&["--read"]), "needs a value"),
        ] {
            assert!(parse(args).unwrap_err().contains(want), "{want}");
        }
    }
}
