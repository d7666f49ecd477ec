//! tmpfs mounts on the node, for `emptyDir.medium: Memory` and for secret-holding volumes, whose
//! bytes must never reach a disk. Mounted with mount(2) in the agent's mount namespace (the
//! agent runs as root), so the engine's bind mount of the directory carries the tmpfs.
//!
//! Which directories are mount points is read from `/proc/self/mountinfo`, so that setup is
//! idempotent and teardown finds every mount under a pod's directory, including ones a crashed
//! agent left behind.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// Mounts a tmpfs on `dir` unless something is already mounted there. `size_bytes`: the
/// tmpfs's size limit (`None`: the kernel's default, half of RAM).
pub fn ensure(dir: &Path, size_bytes: Option<u64>, mode: u32) -> io::Result<()> {
    if is_mount_point(dir)? {
        return Ok(());
    }
    let mut data = format!("mode={:o}", mode & 0o7777);
    if let Some(size) = size_bytes {
        data.push_str(&format!(",size={size}"));
    }
    let data = CString::new(data).map_err(io::Error::other)?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mounting tmpfs on {}: {e}", dir.display()),
        )
    })
}

/// Whether something is mounted exactly on `dir`.
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let dir = std::fs::canonicalize(dir)?;
    Ok(mount_points()?.contains(&dir))
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match std::fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts everything at or below `dir`. A busy mount (a container still holding it) is
/// detached lazily: the pod is going, and its directory must not keep the mount.
pub fn unmount_all_under(dir: &Path) -> io::Result<()> {
    // Mounts may be stacked on one directory; each pass removes the top one.
    for _ in 0..16 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            let res = rustix::mount::unmount(&m, UnmountFlags::empty()).or_else(|e| {
                if e == rustix::io::Errno::BUSY {
                    rustix::mount::unmount(&m, UnmountFlags::DETACH)
                } else {
                    Err(e)
                }
            });
            match res {
                // Already gone (a parent's unmount took it, or another pass did).
                Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("unmounting {}: {e}", m.display()),
                    ));
                }
            }
        }
    }
    Err(io::Error::other(format!(
        "mounts remain under {} after unmounting",
        dir.display()
    )))
}

fn mount_points() -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u16, |acc, c| acc * 8 + u16::from(c - b'0'));
                u8::try_from(v).ok()
            });
        match (b[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
    }
}
