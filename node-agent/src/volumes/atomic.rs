//! Kubelet's AtomicWriter: a volume's files replaced as one set, so that a reader never sees a
//! half-written update.
//!
//! Layout of a volume directory:
//! ```text
//! ..2026_03_01_10_20_30.123456789/   the files of one version (dirs 0755, files at their mode)
//! ..data -> ..2026_03_01_10_20_30.123456789
//! key -> ..data/key                  one symlink per top-level name of the payload
//! ```
//! A write puts the new version in a fresh timestamped directory, points a temporary symlink
//! at it and renames that over `..data` (rename(2) is atomic), then adds the user-visible
//! symlinks of new names, drops those of removed names, and deletes the old version. Any path
//! opened through `..data` therefore resolves to one complete version. When names, contents and
//! modes are all unchanged nothing is rewritten, so periodic re-projection costs only a read.
//!
//! Payload paths are relative, without `..` components, and must not start with `..` (the
//! writer's own names). Callers serialize writes to one directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use rudder_client::clock::Clock;

/// The symlink to the current version.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`0o644`); bits beyond `0o777` are ignored.
    pub mode: u32,
}

/// A volume's files by relative path (`key`, `dir/key`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Makes `dir` hold exactly `payload`. Returns whether a new version was written (false:
/// nothing changed).
pub fn write(dir: &Path, payload: &Payload, clock: &dyn Clock) -> io::Result<bool> {
    let payload = clean_payload(payload)?;
    let old = current_version(dir)?;
    let unchanged = match &old {
        Some(name) => dir.join(name).is_dir() && read_version(&dir.join(name))? == payload,
        None => false,
    };
    let current = if unchanged {
        old.clone()
    } else {
        let name = new_version_dir(dir, clock)?;
        let version = dir.join(&name);
        for (path, file) in &payload {
            write_file(&version.join(path), file)?;
        }
        swap_data_link(dir, &name)?;
        Some(name)
    };
    update_visible_links(dir, &payload)?;
    // Old versions, and any left by an interrupted write, are no longer reachable.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_version = name.starts_with("..") && name != DATA_DIR && name != DATA_DIR_TMP;
        if is_version && Some(&name) != current.as_ref() && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(!unchanged)
}

/// Validates the payload's paths and normalises them (`./a//b` → `a/b`).
fn clean_payload(payload: &Payload) -> io::Result<Payload> {
    let invalid = |path: &str, why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path {path:?}: {why}"),
        )
    };
    let mut clean = Payload::new();
    for (path, file) in payload {
        if path.len() > MAX_PATH {
            return Err(invalid(path, "longer than 4096 characters"));
        }
        let mut parts = Vec::new();
        for c in Path::new(path).components() {
            match c {
                Component::Normal(s) => {
                    let s = s.to_str().ok_or_else(|| invalid(path, "not UTF-8"))?;
                    if s.len() > MAX_NAME {
                        return Err(invalid(path, "a name is longer than 255 characters"));
                    }
                    parts.push(s);
                }
                Component::CurDir => {}
                Component::ParentDir => return Err(invalid(path, "must not contain '..'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid(path, "must be a relative path"));
                }
            }
        }
        match parts.first() {
            None => return Err(invalid(path, "must not be empty")),
            Some(first) if first.starts_with("..") => {
                return Err(invalid(path, "must not start with '..'"));
            }
            Some(_) => {}
        }
        let file = FileProjection {
            data: file.data.clone(),
            mode: file.mode & 0o777,
        };
        clean.insert(parts.join("/"), file);
    }
    Ok(clean)
}

/// The version `..data` points to, if it is one of ours.
fn current_version(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_link(dir.join(DATA_DIR)) {
        Ok(target) => {
            let name = target.to_string_lossy().into_owned();
            let ours = name.starts_with("..") && !name.contains('/');
            Ok(ours.then_some(name))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every regular file under `version`, with its contents and mode.
fn read_version(version: &Path) -> io::Result<Payload> {
    let mut out = Payload::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(version.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let data = std::fs::read(entry.path())?;
                let mode = meta.permissions().mode() & 0o777;
                out.insert(path, FileProjection { data, mode });
            }
        }
    }
    Ok(out)
}

/// Creates `..YYYY_MM_DD_HH_MM_SS.<random>` (UTC, from the injected clock) and returns its name.
fn new_version_dir(dir: &Path, clock: &dyn Clock) -> io::Result<String> {
    let stamp = clock.now().strftime("..%Y_%m_%d_%H_%M_%S").to_string();
    let mut last = None;
    for _ in 0..16 {
        let suffix = (clock.random() * 1e9) as u64;
        let name = format!("{stamp}.{suffix:09}");
        match std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir.join(&name))
        {
            Ok(()) => {
                // The umask may have narrowed the mode.
                std::fs::set_permissions(dir.join(&name), std::fs::Permissions::from_mode(0o755))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free version directory name")))
}

fn write_file(path: &Path, file: &FileProjection) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file.mode)
        .open(path)?;
    f.write_all(&file.data)?;
    f.set_permissions(std::fs::Permissions::from_mode(file.mode))
}

/// Points `..data` at `version` in one rename.
fn swap_data_link(dir: &Path, version: &str) -> io::Result<()> {
    let tmp = dir.join(DATA_DIR_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(version, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_DIR))
}

/// Adds `name -> ..data/name` for each top-level name of the payload and removes such links
/// whose name is gone. Entries the writer did not make are left alone.
fn update_visible_links(dir: &Path, payload: &Payload) -> io::Result<()> {
    let top: BTreeSet<&str> = payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    for name in &top {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
            }
            Err(e) => return Err(e),
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || top.contains(name.as_str()) {
            continue;
        }
        if !entry.file_type()?.is_symlink() {
            continue;
        }
        let target = std::fs::read_link(entry.path())?;
        if target == Path::new(DATA_DIR).join(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
