//! The MPS client environment: the variables that limit one container, how
//! gpuwarden writes them and how it reads them back.

use crate::base::size::ByteSize;

pub const THREADS_ENV: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
pub const PINNED_ENV: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
pub const PIPE_ENV: &str = "CUDA_MPS_PIPE_DIRECTORY";

/// `0=3G,1=3G`: the same limit on each of the container's `gpus` ordinals.
pub fn pinned_limit_value(gpus: usize, limit: ByteSize) -> String {
    (0..gpus).map(|i| format!("{i}={}", limit.mps_limit())).collect::<Vec<_>>().join(",")
}

/// Reads `0=3G,1=2560MB` into (ordinal, limit) pairs.
pub fn parse_pinned_limits(value: &str) -> Result<Vec<(u32, ByteSize)>, String> {
    value
        .split(',')
        .map(|item| {
            let (ordinal, size) = item.trim().split_once('=').ok_or_else(|| format!("{item:?} is not ORDINAL=SIZE"))?;
            let ordinal = ordinal.trim().parse().map_err(|_| format!("{ordinal:?} is not a device ordinal"))?;
            // MPS writes binary units as G/M or GB/MB.
            let size = size.trim();
            let size = size.strip_suffix('B').filter(|s| s.ends_with(['K', 'M', 'G', 'T'])).unwrap_or(size);
            Ok((ordinal, size.parse::<ByteSize>().map_err(|e| e.to_string())?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip() {
        let v = pinned_limit_value(2, ByteSize::gib(3));
        assert_eq!(v, "0=3G,1=3G");
        assert_eq!(parse_pinned_limits(&v).unwrap(), [(0, ByteSize::gib(3)), (1, ByteSize::gib(3))]);
        assert_eq!(parse_pinned_limits("0=2560MB").unwrap(), [(0, ByteSize::mib(2560))]);
    }

    #[test]
    fn malformed_limits_are_refused() {
        for bad in ["", "3G", "x=3G", "0=lots"] {
            assert!(parse_pinned_limits(bad).is_err(), "{bad}");
        }
    }
}
