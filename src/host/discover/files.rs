//! Data files (EGL and Vulkan ICDs, OptiX's `nvoptix.bin`) and binaries
//! (`nvidia-smi`, `nvidia-cuda-mps-control`): each is looked for at a few
//! places in the driver root and mounted at its standard place.

use std::path::Path;

use super::{DriverRoot, FileMount};

/// (where containers expect it, where distributions put it).
const DATA_FILES: &[(&str, &[&str])] = &[
    ("/usr/share/glvnd/egl_vendor.d/10_nvidia.json", &["/usr/share/glvnd/egl_vendor.d/10_nvidia.json", "/etc/glvnd/egl_vendor.d/10_nvidia.json"]),
    ("/etc/vulkan/icd.d/nvidia_icd.json", &["/etc/vulkan/icd.d/nvidia_icd.json", "/usr/share/vulkan/icd.d/nvidia_icd.json"]),
    ("/etc/vulkan/implicit_layer.d/nvidia_layers.json", &["/etc/vulkan/implicit_layer.d/nvidia_layers.json", "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json"]),
    ("/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json", &["/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json"]),
    ("/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json", &["/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json"]),
    // Debian keeps nvoptix.bin beside the libraries; OptiX reads it from /usr/share/nvidia.
    (
        "/usr/share/nvidia/nvoptix.bin",
        &[
            "/usr/share/nvidia/nvoptix.bin",
            "/usr/lib/x86_64-linux-gnu/nvidia/current/nvoptix.bin",
            "/usr/lib/aarch64-linux-gnu/nvidia/current/nvoptix.bin",
        ],
    ),
];

const BINARIES: &[(&str, &[&str])] = &[
    // Debian keeps nvidia-smi in /usr/lib/nvidia/current behind an alternatives link.
    ("/usr/bin/nvidia-smi", &["/usr/bin/nvidia-smi", "/usr/lib/nvidia/current/nvidia-smi", "/usr/sbin/nvidia-smi"]),
    ("/usr/bin/nvidia-cuda-mps-control", &["/usr/bin/nvidia-cuda-mps-control", "/usr/sbin/nvidia-cuda-mps-control"]),
];

fn first_found(root: &DriverRoot, table: &[(&str, &[&str])]) -> Vec<FileMount> {
    table
        .iter()
        .filter_map(|(container, candidates)| {
            let found = candidates.iter().find_map(|c| root.resolve(Path::new(c)).ok());
            if found.is_none() {
                tracing::debug!("{container}: not found in {}", root.path().display());
            }
            found.filter(|inner| root.host_path(inner).is_file()).map(|inner| FileMount {
                host_path: root.host_path(&inner),
                container_path: container.into(),
                writable: false,
            })
        })
        .collect()
}

pub fn data_files(root: &DriverRoot) -> Vec<FileMount> {
    first_found(root, DATA_FILES)
}

pub fn binaries(root: &DriverRoot) -> Vec<FileMount> {
    first_found(root, BINARIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_places_are_found_and_mounted_at_the_standard_ones() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["usr/lib/x86_64-linux-gnu/nvidia/current/nvoptix.bin", "usr/lib/nvidia/current/nvidia-smi", "usr/share/vulkan/icd.d/nvidia_icd.json"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let root = DriverRoot::new(dir.path()).unwrap();
        let mut all = data_files(&root);
        all.extend(binaries(&root));
        let pairs: Vec<(String, String)> = all
            .iter()
            .map(|m| (m.container_path.display().to_string(), m.host_path.strip_prefix(root.path()).unwrap().display().to_string()))
            .collect();
        assert!(pairs.contains(&("/usr/share/nvidia/nvoptix.bin".into(), "usr/lib/x86_64-linux-gnu/nvidia/current/nvoptix.bin".into())), "{pairs:?}");
        assert!(pairs.contains(&("/usr/bin/nvidia-smi".into(), "usr/lib/nvidia/current/nvidia-smi".into())), "{pairs:?}");
        assert!(pairs.contains(&("/etc/vulkan/icd.d/nvidia_icd.json".into(), "usr/share/vulkan/icd.d/nvidia_icd.json".into())), "{pairs:?}");
        assert_eq!(all.len(), 3, "absent files are skipped: {pairs:?}");
    }
}
