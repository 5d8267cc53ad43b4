//! NVML, through `nvml-wrapper`, behind the [`GpuProbe`] seam. Its failures
//! become one of a few errors that each tell the user what to do.

use std::ffi::OsStr;
use std::path::Path;

use nvml_wrapper::error::NvmlError as RawNvmlError;
use nvml_wrapper::Nvml;

use super::{Gpu, GpuProcess, Inventory};
use crate::base::size::ByteSize;

const FALLBACK: &str = "or pass --inventory FILE (or --inventory builtin:rtx4070 for a demo)";

/// Why NVML could not list the GPUs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NvmlError {
    #[error("NVML library not found ({detail}): install the NVIDIA driver (Debian: apt install libnvidia-ml1), {FALLBACK}")]
    LibraryMissing { detail: String },
    #[error("NVML: the NVIDIA driver is not loaded (libnvidia-ml is installed, the kernel module is not): load it with `modprobe nvidia`, {FALLBACK}")]
    DriverNotLoaded,
    #[error("NVML: no permission to query the GPUs: run as root or give this user access to /dev/nvidia*, {FALLBACK}")]
    NoPermission,
    #[error("NVML: {0}")]
    Other(String),
}

impl From<RawNvmlError> for NvmlError {
    fn from(e: RawNvmlError) -> Self {
        match e {
            RawNvmlError::LibloadingError(inner) => NvmlError::LibraryMissing { detail: inner.to_string() },
            RawNvmlError::LibraryNotFound => NvmlError::LibraryMissing { detail: "NVML_ERROR_LIBRARY_NOT_FOUND".into() },
            RawNvmlError::FailedToLoadSymbol(sym) => {
                NvmlError::LibraryMissing { detail: format!("the library lacks symbol {sym}: driver too old") }
            }
            RawNvmlError::DriverNotLoaded => NvmlError::DriverNotLoaded,
            RawNvmlError::NoPermission => NvmlError::NoPermission,
            other => NvmlError::Other(other.to_string()),
        }
    }
}

/// Something that lists the GPUs of this host.
pub trait GpuProbe {
    /// `library`: where `libnvidia-ml.so.1` is, or `None` for the loader's search.
    fn probe(&self, library: Option<&Path>) -> Result<Inventory, NvmlError>;
}

/// The real probe: loads NVML and asks it.
pub struct NvmlProbe;

impl GpuProbe for NvmlProbe {
    fn probe(&self, library: Option<&Path>) -> Result<Inventory, NvmlError> {
        let nvml = match library {
            Some(path) => Nvml::builder().lib_path(OsStr::new(path)).init()?,
            None => Nvml::init()?,
        };
        let count = nvml.device_count()?;
        let mut gpus = Vec::with_capacity(count as usize);
        for i in 0..count {
            let dev = nvml.device_by_index(i)?;
            let cc = dev.cuda_compute_capability()?;
            gpus.push(Gpu {
                index: dev.index()?,
                uuid: dev.uuid()?,
                name: dev.name()?,
                memory_total_bytes: ByteSize::bytes(dev.memory_info()?.total),
                minor: dev.minor_number()?,
                pci_bus_id: dev.pci_info()?.bus_id.to_lowercase(),
                compute_capability: format!("{}.{}", cc.major, cc.minor),
                processes: Some(processes(&dev)?),
            });
        }
        Ok(Inventory { driver_version: nvml.sys_driver_version()?, gpus })
    }
}

/// The compute and graphics processes on `dev`, each once, with their memory
/// (0 where NVML cannot tell, as under some Windows display drivers).
fn processes(dev: &nvml_wrapper::Device) -> Result<Vec<GpuProcess>, NvmlError> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let mut all = dev.running_compute_processes()?;
    all.extend(dev.running_graphics_processes()?);
    let mut out: Vec<GpuProcess> = Vec::new();
    for p in all {
        let pid = i32::try_from(p.pid).unwrap_or(i32::MAX);
        let used = match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => ByteSize::bytes(b),
            UsedGpuMemory::Unavailable => ByteSize::ZERO,
        };
        match out.iter_mut().find(|o| o.pid == pid) {
            Some(o) => o.used_memory_bytes = o.used_memory_bytes.max(used),
            None => {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or_else(|_| format!("pid {pid}"), |n| n.trim().to_string());
                out.push(GpuProcess { pid, name, used_memory_bytes: used });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nvml_failure_tells_what_to_do() {
        let cases = [
            (RawNvmlError::DriverNotLoaded, "modprobe nvidia"),
            (RawNvmlError::NoPermission, "run as root"),
            (RawNvmlError::LibraryNotFound, "install the NVIDIA driver"),
            (RawNvmlError::FailedToLoadSymbol("nvmlInit_v2".into()), "driver too old"),
            (RawNvmlError::Unknown, "NVML: "),
        ];
        for (raw, hint) in cases {
            let msg = NvmlError::from(raw).to_string();
            assert!(msg.contains(hint), "{msg}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn a_library_that_is_not_there_is_reported_as_missing() {
        let e = NvmlProbe.probe(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))).unwrap_err();
        match e {
            NvmlError::LibraryMissing { detail } => assert!(detail.contains("/nonexistent/libnvidia-ml.so.1"), "{detail}"),
            other => panic!("expected LibraryMissing, got {other:?}"),
        }
    }
}
