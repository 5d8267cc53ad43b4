//! The admission broker: admission and release for callers that cannot take
//! the ledger's lock themselves, rootless Podman's hooks above all. They run
//! in the user's namespaces, where `/run/gpuwarden` is root's; the broker, a
//! root service on a unix socket, runs the same admission against the one
//! ledger rootful Podman and Docker use.
//!
//! What the broker guards is the budget and everyone else's reservations,
//! so it trusts nothing but the kernel: the caller is who `SO_PEERCRED`
//! says, the container's process must live in a user namespace that caller
//! owns (`NS_GET_OWNER_UID`), a reservation is released only by the uid
//! that holds it, and the broker opens no path a caller names (the hook
//! sends its bundle's config, not its path). Requests are bounded in size
//! and time, one connection per thread, so one slow client stalls nobody.

mod caller;
mod client;
mod handle;
mod protocol;
mod serve;

pub use caller::{container_being_created, may_act_for, Caller, RUNTIME_INITS};
pub use client::{ask, in_user_namespace, BrokerDown, ANSWER_TIMEOUT};
pub use handle::handle;
pub use protocol::{Answer, Request, MAX_ANSWER, MAX_REQUEST, REQUEST_TIMEOUT, SOCKET_UNIT};
pub use serve::{serve, Listener, ServeEnv};

pub use crate::config::DEFAULT_BROKER_SOCKET as DEFAULT_SOCKET;
