//! Device nodes: `/dev/nvidiaN` per GPU (required), `nvidiactl` (required),
//! the UVM and modeset nodes and the GPU's `/dev/dri` nodes (when present).

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{DeviceNode, DiscoveryError, GpuNodes};
use crate::host::inventory::Inventory;

const REQUIRED_CONTROL: &[&str] = &["nvidiactl"];
const OPTIONAL_CONTROL: &[&str] = &["nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"];

/// Whether `host` is a character device; `Err` if it exists but is not one.
fn char_device(host: &Path) -> Result<bool, DiscoveryError> {
    match std::fs::metadata(host) {
        Ok(m) if m.file_type().is_char_device() => Ok(true),
        Ok(_) => Err(DiscoveryError::NotADevice { path: host.to_path_buf() }),
        Err(_) => Ok(false),
    }
}

fn node(dev_root: &Path, name: &str) -> DeviceNode {
    DeviceNode { path: Path::new("/dev").join(name), host_path: dev_root.join(name) }
}

/// The control nodes every GPU container gets, and the nodes of each GPU.
pub fn device_nodes(dev_root: &Path, inventory: &Inventory) -> Result<(Vec<DeviceNode>, GpuNodes), DiscoveryError> {
    let mut control = Vec::new();
    for name in REQUIRED_CONTROL {
        let n = node(dev_root, name);
        if !char_device(&n.host_path)? {
            return Err(DiscoveryError::MissingControlNode { path: n.host_path });
        }
        control.push(n);
    }
    for name in OPTIONAL_CONTROL {
        let n = node(dev_root, name);
        if char_device(&n.host_path)? {
            control.push(n);
        } else {
            tracing::info!("{} is absent: skipped", n.host_path.display());
        }
    }
    let mut per_gpu = BTreeMap::new();
    for gpu in &inventory.gpus {
        let main = node(dev_root, &format!("nvidia{}", gpu.minor));
        if !char_device(&main.host_path)? {
            return Err(DiscoveryError::MissingGpuNode { index: gpu.index, uuid: gpu.uuid.clone(), path: main.host_path });
        }
        let mut nodes = vec![main];
        nodes.extend(dri_nodes(dev_root, gpu.short_bus_id())?);
        per_gpu.insert(gpu.index, nodes);
    }
    Ok((control, per_gpu))
}

/// The card and render nodes that `/dev/dri/by-path` links to this GPU.
fn dri_nodes(dev_root: &Path, bus_id: &str) -> Result<Vec<DeviceNode>, DiscoveryError> {
    let mut nodes = Vec::new();
    for kind in ["card", "render"] {
        let link = dev_root.join(format!("dri/by-path/pci-{bus_id}-{kind}"));
        let Ok(target) = std::fs::read_link(&link) else { continue };
        let Some(name) = target.file_name() else { continue };
        let host_path: PathBuf = dev_root.join("dri").join(name);
        if char_device(&host_path)? {
            nodes.push(DeviceNode { path: Path::new("/dev/dri").join(name), host_path });
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::inventory::builtin;
    use crate::host::inventory::test_support::two_gpus;
    use std::os::unix::fs::symlink;

    /// A dev root whose nodes link to /dev/null, a character device every
    /// machine has, so no mknod (and no root) is needed.
    fn dev_root(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink("/dev/null", p).unwrap();
        }
        dir
    }

    #[test]
    fn each_gpu_gets_its_own_node_and_dri_nodes() {
        let dir = dev_root(&["nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1", "dri/card1", "dri/renderD129"]);
        std::fs::create_dir_all(dir.path().join("dri/by-path")).unwrap();
        symlink("../card1", dir.path().join("dri/by-path/pci-0000:02:00.0-card")).unwrap();
        symlink("../renderD129", dir.path().join("dri/by-path/pci-0000:02:00.0-render")).unwrap();
        let (control, per_gpu) = device_nodes(dir.path(), &two_gpus()).unwrap();
        let paths = |v: &[DeviceNode]| v.iter().map(|n| n.path.display().to_string()).collect::<Vec<_>>();
        assert_eq!(paths(&control), ["/dev/nvidiactl", "/dev/nvidia-uvm"]);
        assert_eq!(paths(&per_gpu[&0]), ["/dev/nvidia0"]);
        assert_eq!(paths(&per_gpu[&1]), ["/dev/nvidia1", "/dev/dri/card1", "/dev/dri/renderD129"]);
        assert_eq!(per_gpu[&1][1].host_path, dir.path().join("dri/card1"));
    }

    #[test]
    fn a_missing_gpu_node_is_an_error_naming_the_gpu() {
        let dir = dev_root(&["nvidiactl", "nvidia0"]);
        let e = device_nodes(dir.path(), &two_gpus()).unwrap_err().to_string();
        assert!(e.contains("GPU 1") && e.contains("nvidia1"), "{e}");
    }

    #[test]
    fn missing_nvidia0_and_missing_nvidiactl_are_errors() {
        let e = device_nodes(dev_root(&["nvidiactl"]).path(), &builtin("rtx4070").unwrap()).unwrap_err().to_string();
        assert!(e.contains("nvidia0"), "{e}");
        let e = device_nodes(dev_root(&["nvidia0"]).path(), &builtin("rtx4070").unwrap()).unwrap_err().to_string();
        assert!(e.contains("nvidiactl"), "{e}");
    }

    #[test]
    fn a_regular_file_posing_as_a_node_is_refused() {
        let dir = dev_root(&["nvidiactl"]);
        std::fs::write(dir.path().join("nvidia0"), "").unwrap();
        let e = device_nodes(dir.path(), &builtin("rtx4070").unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a character device"), "{e}");
    }
}
