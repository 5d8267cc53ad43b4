//! The dynamic loader of a container's image, and where the driver's
//! libraries must be mounted for it to find them.
//!
//! The spec mounts the libraries at Debian's multiarch folder, which only a
//! glibc built with multiarch folders searches by itself. Fedora, RHEL/Rocky
//! and openSUSE build glibc to search `/lib64` and `/usr/lib64`, Arch
//! `/usr/lib`. Nothing may be written into the image (no ldconfig, no
//! `/etc/ld.so.conf.d`), and `LD_LIBRARY_PATH` would replace the image's own,
//! so the mounts move to a folder the image's own loader searches. The
//! loader names its folders itself: glibc keeps them in `ld.so` as one run
//! of NUL-terminated paths (what `ld.so --list-diagnostics` prints as
//! `path.system_dirs`), which [`system_dirs`] reads.

mod ldso;
mod look;
mod place;

pub use ldso::{system_dirs, system_dirs_in, Loader, GLIBC_LOADER, MUSL_LOADER};
pub use look::look;
pub use place::{has_spec_libraries, place_libraries, Placed};
