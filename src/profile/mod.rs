//! A profile applied to one container: its config rewritten at precreate
//! ([`rewrite`]), the launcher's command line ([`launch`]), and, at
//! admission, whether the container still keeps to it ([`conform`]).

pub mod conform;
pub mod launch;
pub mod rewrite;
