//! `hostPath`: a path of the node, used in place after the check its `type` asks for, with
//! kubelet's messages.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rudder_api::k8s_openapi::api::core::v1::HostPathVolumeSource;

use crate::objects::ConfigError;

/// Checks (and for the `...OrCreate` types creates) the path; returns it.
///
/// `DirectoryOrCreate` creates missing directories with mode 0755, `FileOrCreate` an empty
/// file with mode 0644 (its directory must exist, as in kubelet). `Directory`, `File`,
/// `Socket`, `CharDevice` and `BlockDevice` require an existing path of that kind (symlinks
/// followed); an empty type checks nothing.
pub fn setup(src: &HostPathVolumeSource) -> Result<PathBuf, ConfigError> {
    let path = Path::new(&src.path);
    if !path.is_absolute() {
        return Err(ConfigError::Invalid(format!(
            "hostPath {:?} must be an absolute path",
            src.path
        )));
    }
    let ty = src.type_.as_deref().unwrap_or_default();
    let failed = |what: &str| {
        ConfigError::Invalid(format!(
            "hostPath type check failed: {} is not {what}",
            src.path
        ))
    };
    let kind = std::fs::metadata(path).ok().map(|m| m.file_type());
    match ty {
        "" => {}
        "DirectoryOrCreate" if kind.is_none() => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| ConfigError::io("creating", path, &e))?;
        }
        "DirectoryOrCreate" | "Directory" => {
            if !kind.is_some_and(|k| k.is_dir()) {
                return Err(failed("a directory"));
            }
        }
        "FileOrCreate" if kind.is_none() => {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(|e| ConfigError::io("creating", path, &e))?;
        }
        "FileOrCreate" | "File" => {
            if !kind.is_some_and(|k| k.is_file()) {
                return Err(failed("a file"));
            }
        }
        "Socket" => {
            if !kind.is_some_and(|k| k.is_socket()) {
                return Err(failed("a socket file"));
            }
        }
        "CharDevice" => {
            if !kind.is_some_and(|k| k.is_char_device()) {
                return Err(failed("a character device"));
            }
        }
        "BlockDevice" => {
            if !kind.is_some_and(|k| k.is_block_device()) {
                return Err(failed("a block device"));
            }
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "{other} is an invalid volume type"
            )));
        }
    }
    Ok(path.to_path_buf())
}
