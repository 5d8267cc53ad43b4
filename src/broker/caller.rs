//! Who asks, as the kernel tells it, and what they may ask for: only
//! containers in their own user namespaces, only while a runtime creates them.

/// The processes runtimes make a container's first process of, as they are
/// at createRuntime: runc's init, crun itself.
pub const RUNTIME_INITS: &[&str] = &["runc:[2:INIT]", "crun"];

/// Whether the container of `state`, with first process `pid`, is one a
/// runtime is creating now: its status `creating` (runc) or `created` (crun
/// passes that to createRuntime hooks), and `pid` a runtime's init. A user
/// runs their own runtime, so this cannot prove the container real; it
/// refuses a plain process passed off as one.
pub fn container_being_created(state: &crate::oci::HookState, pid: i32, processes: &dyn crate::base::proc::Processes) -> Result<(), String> {
    if !matches!(state.status.as_str(), "creating" | "created") {
        return Err(format!("the OCI state's status is {:?}: a container is admitted while its runtime creates it (createRuntime)", crate::base::text::truncate(&state.status, 20)));
    }
    let comm = processes.comm(pid).unwrap_or_default();
    if !RUNTIME_INITS.contains(&comm.as_str()) {
        return Err(format!("process {pid} ({comm}) is no runtime's container init (runc:[2:INIT], crun): a share is only for a container being created"));
    }
    Ok(())
}

/// Who is asking, as the kernel tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub pid: i32,
    pub who: crate::model::Who,
}

/// Whether `caller` may act for the container whose process runs in a user
/// namespace owned by `owner` (`None`: that process is gone or unreadable).
/// Root may act for any; anyone else only for a namespace of their own,
/// never for one of root's (the initial namespace is root's).
pub fn may_act_for(caller: &Caller, pid: i32, owner: Option<u32>) -> Result<(), String> {
    if caller.who.uid == 0 {
        return Ok(());
    }
    match owner {
        Some(uid) if uid == caller.who.uid => Ok(()),
        Some(uid) => Err(format!("process {pid} is not in a user namespace of uid {}'s (its owner is uid {uid}): a hook speaks only for its own containers", caller.who.uid)),
        None => Err(format!("process {pid} is gone, or its user namespace cannot be read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Caller {
        Caller { pid: 1234, who: crate::model::Who::new(uid, Some("ana".into())) }
    }

    #[test]
    fn a_caller_speaks_only_for_namespaces_it_owns() {
        assert!(may_act_for(&user(1000), 42, Some(1000)).is_ok());
        let e = may_act_for(&user(1000), 42, Some(0)).unwrap_err();
        assert!(e.contains("process 42 is not in a user namespace of uid 1000's (its owner is uid 0)"), "{e}");
        assert!(may_act_for(&user(1000), 42, Some(1001)).is_err());
        assert!(may_act_for(&user(1000), 42, None).unwrap_err().contains("gone"));
        assert!(may_act_for(&user(0), 42, Some(1001)).is_ok(), "root may act for any");
    }

    #[test]
    fn only_a_container_being_created_is_admitted_for_a_user() {
        let t = crate::base::proc::fake::Table::default().with(10, 1, "runc:[2:INIT]", "", 1).with(11, 1, "crun", "", 1).with(12, 1, "sleep", "", 1);
        let state = |status: &str| crate::oci::HookState::parse(format!(r#"{{"id":"c1","status":"{status}","bundle":"/b"}}"#).as_bytes()).unwrap();
        assert!(container_being_created(&state("creating"), 10, &t).is_ok());
        assert!(container_being_created(&state("created"), 11, &t).is_ok(), "crun passes created");
        let e = container_being_created(&state("creating"), 12, &t).unwrap_err();
        assert_eq!(e, "process 12 (sleep) is no runtime's container init (runc:[2:INIT], crun): a share is only for a container being created");
        assert!(container_being_created(&state("running"), 10, &t).unwrap_err().contains("status is \"running\""));
        assert!(container_being_created(&state("creating"), 99, &t).is_err(), "gone");
    }
}
