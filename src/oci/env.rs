//! The env entries gpuwarden puts in a container: the profile it runs
//! under, and the mark of gpuwarden's own edits.

/// The env entry that names a profile device's profile for the hooks.
pub const PROFILE_ENV: &str = "GPUWARDEN_PROFILE";

/// The env entry that marks edits as gpuwarden's: a spec it wrote, a config
/// its hooks prepared. An env entry rather than an annotation, because
/// annotations need cdiVersion 0.6.0.
pub const OWNER_ENV: &str = "GPUWARDEN_CDI";

/// The value of [`OWNER_ENV`] for this build.
pub fn owner_marker() -> String {
    format!("{OWNER_ENV}=gpuwarden/{}", env!("CARGO_PKG_VERSION"))
}
