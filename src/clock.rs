//! The one clock gpuwarden reads: seconds since the Unix epoch, for the
//! ledger's admission times and the live view's age.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
