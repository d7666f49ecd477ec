//! `emptyDir`: a directory for the pod's lifetime, on the node's disk or, with
//! `medium: Memory`, on a tmpfs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rudder_api::k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use rudder_api::quantity::Quantity;

use super::{make_dirs, tmpfs};
use crate::objects::ConfigError;

/// The tmpfs size of a memory volume: `sizeLimit` capped at the node's allocatable memory, or
/// that allocatable memory when no limit is set (`None`: neither is known). Zero counts as
/// unset, since a tmpfs of size 0 is unlimited.
pub fn memory_size(
    src: &EmptyDirVolumeSource,
    allocatable_memory_bytes: i64,
) -> Result<Option<u64>, ConfigError> {
    let limit = match &src.size_limit {
        Some(q) => {
            let q = Quantity::try_from(q)
                .map_err(|e| ConfigError::Invalid(format!("emptyDir sizeLimit: {e}")))?;
            u64::try_from(q.value()).ok().filter(|b| *b > 0)
        }
        None => None,
    };
    let allocatable = u64::try_from(allocatable_memory_bytes)
        .ok()
        .filter(|b| *b > 0);
    Ok(match (limit, allocatable) {
        (Some(l), Some(a)) => Some(l.min(a)),
        (l, a) => l.or(a),
    })
}

/// Creates the directory (world-writable, as kubelet makes it, so that any container user
/// can write) and mounts the tmpfs for `medium: Memory`.
pub fn setup(
    dir: &Path,
    src: &EmptyDirVolumeSource,
    memory_size: Option<u64>,
) -> Result<(), ConfigError> {
    let memory = match src.medium.as_deref().unwrap_or_default() {
        "" => false,
        "Memory" => true,
        other => {
            return Err(ConfigError::Invalid(format!(
                "emptyDir medium {other:?} is not supported by this node"
            )));
        }
    };
    make_dirs(dir, 0o777)?;
    if memory {
        tmpfs::ensure(dir, memory_size, 0o777).map_err(|e| ConfigError::Io(e.to_string()))?;
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| ConfigError::io("setting the mode of", dir, &e))?;
    }
    Ok(())
}
