//! Making sure the pin directory lives on bpffs.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    mount::{mount, MsFlags},
    sys::statfs::statfs,
};

use crate::DatapathError;

/// Where bpffs is conventionally mounted; the only place we mount it.
pub(crate) const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// statfs f_type of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Serialises the check-and-mount across processes: two racing mounts would
/// stack two bpffs instances and hide the first one's pins.
const MOUNT_LOCK: &str = "/run/furrow-bpffs.lock";

/// Ensures `pin_dir` (absolute) will be created on bpffs, mounting bpffs on
/// /sys/fs/bpf if `pin_dir` is below it and it is not mounted yet.
pub(crate) fn ensure_on_bpffs(pin_dir: &Path) -> Result<(), DatapathError> {
    let anchor = existing_ancestor(pin_dir)?;
    if is_bpffs(&anchor)? {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    if !pin_dir.starts_with(root) || !root.starts_with(&anchor) {
        return Err(DatapathError::NotBpffs { path: anchor });
    }

    let _lock = lock()?;
    if !is_bpffs(root)? {
        mount(
            Some("bpf"),
            root,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| DatapathError::Bpffs {
            what: "mounting bpffs on",
            path: root.to_path_buf(),
            cause: e.into(),
        })?;
        tracing::info!(path = BPFFS_ROOT, "mounted bpffs");
    }
    let anchor = existing_ancestor(pin_dir)?;
    if is_bpffs(&anchor)? {
        Ok(())
    } else {
        Err(DatapathError::NotBpffs { path: anchor })
    }
}

pub(crate) fn is_bpffs(path: &Path) -> Result<bool, DatapathError> {
    let st = statfs(path).map_err(|e| DatapathError::Bpffs {
        what: "statfs",
        path: path.to_path_buf(),
        cause: e.into(),
    })?;
    // fs_type_t is i64 or u32 depending on the libc; compare as i64.
    #[allow(clippy::unnecessary_cast)]
    let fs_type = st.filesystem_type().0 as i64;
    Ok(fs_type == BPF_FS_MAGIC)
}

/// The deepest existing directory on the way to `path` (`path` itself if it exists).
fn existing_ancestor(path: &Path) -> Result<PathBuf, DatapathError> {
    for p in path.ancestors() {
        match p.try_exists() {
            Ok(true) => return Ok(p.to_path_buf()),
            Ok(false) => continue,
            Err(cause) => {
                return Err(DatapathError::Bpffs {
                    what: "checking",
                    path: p.to_path_buf(),
                    cause,
                })
            }
        }
    }
    Err(DatapathError::InvalidConfig(format!(
        "pin directory {} has no existing ancestor",
        path.display()
    )))
}

fn lock() -> Result<Flock<File>, DatapathError> {
    let path = if Path::new("/run").is_dir() {
        PathBuf::from(MOUNT_LOCK)
    } else {
        std::env::temp_dir().join("furrow-bpffs.lock")
    };
    let err = |cause: io::Error| DatapathError::Bpffs {
        what: "locking",
        path: path.clone(),
        cause,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| err(e.into()))
}
