//! Moves the driver's library mounts of a container to the folder its
//! image's loader searches. Only a container that got gpuwarden's spec is
//! touched, and only the libraries the spec put in its library folder.

use crate::oci::OWNER_ENV;
use crate::host::discover::{CONTAINER_LIB_DIR, TRITON_ENV};
use crate::oci::ContainerConfig;

/// What [`place_libraries`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// Nothing of gpuwarden's spec to place.
    Nothing,
    /// Left in the spec's folder, which the loader searches (or no loader could be read).
    Kept,
    /// `count` mounts moved to `to`.
    Moved { to: String, count: usize },
}

/// True when `cfg` holds libraries mounted by gpuwarden's spec.
pub fn has_spec_libraries(cfg: &ContainerConfig) -> bool {
    cfg.env(OWNER_ENV).is_some() && cfg.mounts().iter().any(|(d, _)| is_library_mount(d))
}

/// A library the spec mounted: `lib*.so*` directly in its library folder.
fn is_library_mount(destination: &str) -> bool {
    destination
        .strip_prefix(CONTAINER_LIB_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.contains('/') && name.starts_with("lib") && name.contains(".so"))
}

/// Moves the spec's library mounts (and the folder `TRITON_LIBCUDA_PATH`
/// names) to `to` when it is not the spec's folder. `to` comes from
/// [`super::Loader::library_dir`].
pub fn place_libraries(cfg: &mut ContainerConfig, to: Option<&str>) -> Placed {
    if !has_spec_libraries(cfg) {
        return Placed::Nothing;
    }
    let Some(to) = to.filter(|t| *t != CONTAINER_LIB_DIR) else { return Placed::Kept };
    let count = cfg.retarget_mounts(|dest| is_library_mount(dest).then(|| format!("{to}{}", &dest[CONTAINER_LIB_DIR.len()..])));
    if cfg.env(TRITON_ENV) == Some(CONTAINER_LIB_DIR) {
        cfg.set_env(TRITON_ENV, to);
    }
    Placed::Moved { to: to.to_string(), count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_config(marker: bool) -> ContainerConfig {
        let mut env = vec!["PATH=/usr/bin".to_string(), format!("{TRITON_ENV}={CONTAINER_LIB_DIR}")];
        if marker {
            env.push(crate::oci::owner_marker());
        }
        let lib = |name: &str| serde_json::json!({"destination": format!("{CONTAINER_LIB_DIR}/{name}"), "type": "bind", "source": format!("/drv/{name}"), "options": ["ro", "nosuid", "nodev", "bind"]});
        let v = serde_json::json!({
            "process": {"env": env},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                lib("libcuda.so.1"), lib("libcuda.so"), lib("libnvidia-ml.so.535.261.03"),
                {"destination": format!("{CONTAINER_LIB_DIR}/gconv/x.so"), "source": "/x"},
                {"destination": "/usr/bin/nvidia-smi", "source": "/drv/nvidia-smi"},
                {"destination": "/etc/vulkan/icd.d/nvidia_icd.json", "source": "/drv/icd.json"}
            ]
        });
        ContainerConfig::parse(v.to_string().as_bytes(), "t").unwrap()
    }

    #[test]
    fn the_spec_libraries_move_with_tritons_folder_and_nothing_else() {
        let mut cfg = spec_config(true);
        assert_eq!(place_libraries(&mut cfg, Some("/usr/lib64")), Placed::Moved { to: "/usr/lib64".into(), count: 3 });
        let mounts = cfg.mounts();
        let dests: Vec<&str> = mounts.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dests,
            ["/proc", "/usr/lib64/libcuda.so.1", "/usr/lib64/libcuda.so", "/usr/lib64/libnvidia-ml.so.535.261.03", "/usr/lib/x86_64-linux-gnu/gconv/x.so", "/usr/bin/nvidia-smi", "/etc/vulkan/icd.d/nvidia_icd.json"],
            "in place, sources and the rest untouched"
        );
        assert_eq!(mounts[1].1, "/drv/libcuda.so.1");
        assert_eq!(cfg.env(TRITON_ENV), Some("/usr/lib64"));
    }

    #[test]
    fn debian_images_and_other_specs_are_left_alone() {
        let before = spec_config(true);
        let mut cfg = before.clone();
        assert_eq!(place_libraries(&mut cfg, None), Placed::Kept);
        assert_eq!(place_libraries(&mut cfg, Some(CONTAINER_LIB_DIR)), Placed::Kept);
        assert_eq!(cfg, before);
        let before = spec_config(false);
        let mut cfg = before.clone();
        assert_eq!(place_libraries(&mut cfg, Some("/usr/lib64")), Placed::Nothing, "NVIDIA's spec runs its own ldconfig hook");
        assert_eq!(cfg, before);
    }

    #[test]
    fn a_triton_folder_the_user_chose_is_kept() {
        let mut cfg = spec_config(true);
        cfg.set_env(TRITON_ENV, "/opt/cuda/lib");
        place_libraries(&mut cfg, Some("/usr/lib64"));
        assert_eq!(cfg.env(TRITON_ENV), Some("/opt/cuda/lib"));
    }
}
