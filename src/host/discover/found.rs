//! What discovery finds, as plain data: device nodes, libraries, mounted
//! files, and the errors that stop it.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::DriverRoot;

/// The nodes of each GPU, by GPU index.
pub type GpuNodes = BTreeMap<u32, Vec<DeviceNode>>;

/// The folder libraries are mounted into inside containers (Debian/Ubuntu's).
pub const CONTAINER_LIB_DIR: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu"
} else {
    "/usr/lib/x86_64-linux-gnu"
};

/// A device node: its path in the container and the node on the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub host_path: PathBuf,
}

/// A driver library found under the driver root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// The real file on the host (links resolved inside the driver root).
    pub host_path: PathBuf,
    /// `libcuda.so.535.261.03`.
    pub file_name: String,
    /// `libcuda.so.1`, from the file's ELF dynamic section.
    pub soname: Option<String>,
}

/// A file or folder bind-mounted into containers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub writable: bool,
}

/// Where to look: the driver's files, and the folder that stands for `/dev`
/// (the CLI's `--dev-root` names the folder holding it, as nvidia-ctk does).
#[derive(Clone, Debug)]
pub struct Roots {
    pub driver: DriverRoot,
    pub dev: PathBuf,
}

/// Everything discovery found, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Nodes every GPU container needs: `nvidiactl`, `nvidia-uvm`, ...
    pub control_nodes: Vec<DeviceNode>,
    /// Per GPU index: `/dev/nvidiaN` and its `/dev/dri` nodes.
    pub gpu_nodes: GpuNodes,
    pub libraries: Vec<Library>,
    /// Data files (EGL, Vulkan, OptiX) and binaries.
    pub files: Vec<FileMount>,
}

impl Discovery {
    /// Library mounts: each library at the container's library folder under its
    /// file name and under its SONAME, so the linker finds it without an ld
    /// cache and nothing writes into a read-only root.
    pub fn library_mounts(&self) -> Vec<FileMount> {
        let mut mounts = Vec::new();
        for lib in &self.libraries {
            let linker_name = lib.soname.as_deref().and_then(linker_name);
            let names = std::iter::once(&lib.file_name).chain(lib.soname.iter().filter(|s| **s != lib.file_name)).chain(linker_name.as_ref());
            for name in names {
                mounts.push(FileMount {
                    host_path: lib.host_path.clone(),
                    container_path: Path::new(CONTAINER_LIB_DIR).join(name),
                    writable: false,
                });
            }
        }
        mounts
    }
}

/// Libraries that programs link by name at run time (`cc -lcuda`), which needs
/// the linker name `libcuda.so` beside the SONAME: Triton (`torch.compile`)
/// builds its CUDA launcher that way.
const LINKED_BY_NAME: &[(&str, &str)] = &[("libcuda.so.1", "libcuda.so")];

fn linker_name(soname: &str) -> Option<String> {
    LINKED_BY_NAME.iter().find(|(s, _)| *s == soname).map(|(_, l)| l.to_string())
}

/// The env that tells Triton where libcuda is (it reads this before it asks
/// `ldconfig -p`, whose cache in the image does not list the mounted driver,
/// and no hook writes into a read-only root).
pub const TRITON_ENV: &str = "TRITON_LIBCUDA_PATH";

/// [`TRITON_ENV`] naming the spec's library folder, when libcuda is among the libraries.
pub fn triton_env(libraries: &[Library]) -> Option<String> {
    libraries.iter().any(|l| l.soname.as_deref() == Some("libcuda.so.1")).then(|| format!("{TRITON_ENV}={CONTAINER_LIB_DIR}"))
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("GPU {index} ({uuid}) has no device node {}: is the driver loaded? (if dev/ is elsewhere, pass --dev-root DIR, the folder that holds it)", path.display())]
    MissingGpuNode { index: u32, uuid: String, path: PathBuf },
    #[error("{} is missing: the NVIDIA driver is not loaded (modprobe nvidia), or pass --dev-root DIR, the folder that holds dev/", path.display())]
    MissingControlNode { path: PathBuf },
    #[error("{} is not a character device", path.display())]
    NotADevice { path: PathBuf },
    #[error("no driver libraries ending in .so.{version} under {} (looked in its ld.so.cache and {dirs}): install driver {version} there, or pass --driver-root or an inventory of the installed driver", root.display())]
    NoLibraries { root: PathBuf, version: String, dirs: String },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}
