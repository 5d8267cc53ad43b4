//! The lowest `cdiVersion` a spec needs (`gpuwarden::cdi::check`), and how
//! versions compare.

use gpuwarden::cdi::Spec;

/// The newest version Podman 4.3 reads; it silently drops newer specs.
pub const PODMAN_43_MAX_VERSION: &str = "0.5.0";

/// The lowest CDI version whose features cover everything in `spec`
/// (0.3.0 at least; 0.5.0 once a device name starts with a digit or a node
/// has a `hostPath`; 0.6.0 with annotations; 0.7.0 with `additionalGids`).
pub fn minimum_version(spec: &Spec) -> String {
    let raw: gpuwarden::cdi::check::RawSpec = serde_json::to_value(spec).and_then(serde_json::from_value).expect("our spec model is a subset of the CDI one");
    gpuwarden::cdi::check::minimum_version(&raw).to_string()
}

/// Compares dotted versions numerically (`0.10.0` > `0.5.0`).
pub fn version_newer(a: &str, b: &str) -> bool {
    gpuwarden::cdi::check::newer(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden::cdi::{ContainerEdits, Device, DeviceNode};

    fn spec(name: &str, host_path: Option<&str>) -> Spec {
        Spec {
            cdi_version: String::new(),
            kind: "nvidia.com/gpu".into(),
            devices: vec![Device {
                name: name.into(),
                container_edits: ContainerEdits {
                    device_nodes: vec![DeviceNode { path: "/dev/nvidia0".into(), host_path: host_path.map(Into::into), ..Default::default() }],
                    ..Default::default()
                },
            }],
            container_edits: ContainerEdits::default(),
        }
    }

    #[test]
    fn plain_specs_need_the_oldest_version() {
        assert_eq!(minimum_version(&spec("comfyui", None)), "0.3.0");
    }

    #[test]
    fn digit_names_and_host_paths_need_0_5_0() {
        assert_eq!(minimum_version(&spec("0", None)), "0.5.0");
        assert_eq!(minimum_version(&spec("comfyui", Some("/tmp/dev/nvidia0"))), "0.5.0");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_newer("0.6.0", PODMAN_43_MAX_VERSION));
        assert!(version_newer("0.10.0", "0.5.0"));
        assert!(!version_newer("0.5.0", "0.5.0"));
        assert!(!version_newer("0.3.0", "0.5.0"));
    }
}
