//! Images whose dynamic loader is not Debian's (scripts/loader-images.sh),
//! and what a container on them must show to have found the driver.

use super::*;

use std::path::PathBuf;
use std::process::Command;

/// glibc with Fedora's folders (/lib64, /usr/lib64), no /etc/debian_version.
pub const LIB64_IMAGE: &str = "localhost/gpuwarden-lib64:glibc-2.36";
/// musl's loader, as in Alpine.
pub const MUSL_IMAGE: &str = "localhost/gpuwarden-musl:1.2";

/// Builds the images once (Podman's), and returns the folder with their
/// roots and tars (`lib64`, `lib64.tar`, `musl.tar`).
pub fn loader_images() -> PathBuf {
    let out = repo().join("target/fixtures/loader-images");
    let _lock = process_lock("loader-images");
    let st = Command::new(repo().join("scripts/loader-images.sh")).arg(&out).status().unwrap();
    assert!(st.success(), "scripts/loader-images.sh failed (it needs Debian's archive, podman and cc)");
    out
}

/// What the container runs: each library dlopened by name (those the EGL and
/// Vulkan data files name, by SONAME, included), nvidia-smi, Triton's
/// folder, and checksums of the image's loader configuration.
pub const PROBE: &str = "gpuprobe libcuda.so.1 libnvidia-ml.so.1 \
    $(sed -n 's/.*library_path\" *: *\"\\([^\"]*\\)\".*/\\1/p' /usr/share/glvnd/egl_vendor.d/10_nvidia.json /etc/vulkan/icd.d/nvidia_icd.json); \
    nvidia-smi 2>&1; echo \"triton=$TRITON_LIBCUDA_PATH\"; \
    md5sum \"$TRITON_LIBCUDA_PATH/libcuda.so\" /usr/lib64/libcuda.so.1 /etc/ld.so.cache /etc/ld.so.conf /etc/ld.so.conf.d/*";

fn md5(path: &std::path::Path) -> String {
    let o = Command::new("md5sum").arg(path).output().unwrap();
    stdout(&o).split_whitespace().next().unwrap_or_else(|| panic!("md5sum {}", path.display())).to_string()
}

/// Asserts that [`PROBE`]'s output shows the driver found by the lib64 loader,
/// and the image's loader configuration byte for byte as built.
pub fn assert_found_in_lib64(out: &str) {
    for lib in ["libcuda.so.1", "libnvidia-ml.so.1", "libEGL_nvidia.so.0"] {
        assert!(out.lines().any(|l| l == format!("ok {lib}")), "{lib} did not load:\n{out}");
    }
    // GLX's library needs libX11, which this image lacks: found itself, it fails on that alone.
    let glx = out.lines().find(|l| l.contains(" libGLX_nvidia.so.0")).unwrap_or_else(|| panic!("the Vulkan ICD file was not read:\n{out}"));
    assert!(glx == "ok libGLX_nvidia.so.0" || glx.starts_with("fail libGLX_nvidia.so.0: libX11.so.6: cannot open"), "{glx}");
    assert!(out.contains("couldn't communicate with the NVIDIA driver") && !out.contains("couldn't find libnvidia-ml.so"), "nvidia-smi:\n{out}");
    assert!(out.contains("triton=/usr/lib64\n"), "{out}");
    let fixture = driver_fixture().root.join("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03");
    let libcuda = md5(&fixture);
    assert!(out.contains(&format!("{libcuda}  /usr/lib64/libcuda.so\n")) && out.contains(&format!("{libcuda}  /usr/lib64/libcuda.so.1\n")), "{out}");
    let root = loader_images().join("lib64");
    for f in ["etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d/zz_amd64-biarch-compat.conf"] {
        assert!(out.contains(&format!("{}  /{f}\n", md5(&root.join(f)))), "/{f} differs from the image's:\n{out}");
    }
}
