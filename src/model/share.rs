//! A share of a GPU: MPS threads (percent of the SMs) and pinned memory.

use crate::base::size::ByteSize;

/// What one container gets: the profile's share, or less if it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub threads: u32,
    pub pinned: ByteSize,
}
