//! A pod's volumes as directories of the node, bind-mounted into its containers.
//!
//! Each pod has `<root>/<uid>/volumes/<plugin>/<name>` (`<root>` is `<data-dir>/pods`) for the
//! volumes the agent materialises; hostPath and PersistentVolume directories are used in place.
//! As in Kubernetes:
//! - `emptyDir`: an empty directory (mode 0777) living as long as the pod; `medium: Memory`
//!   puts a tmpfs on it, sized by `sizeLimit`, capped at (or, unset, equal to) the node's
//!   allocatable memory. A disk `sizeLimit` is not enforced (kubelet evicts for it).
//! - `hostPath`: the node path, checked against `type` ([`hostpath`]).
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written by the [`atomic`] writer,
//!   re-projected on every [`Volumes::setup`] so that running containers see updates; mounted
//!   read-only. Secret volumes, and projected volumes with a secret source, live on a tmpfs so
//!   that secret bytes never reach the disk. A projected `serviceAccountToken` source is
//!   skipped: Rudder issues no tokens.
//! - `persistentVolumeClaim`: the bound PersistentVolume's `hostPath.path` or `local.path`
//!   ([`pvc`]); its data outlives the pod.
//!
//! Setup is idempotent and continues past a failing volume (the first error is returned, the
//! others are still refreshed). Setup and teardown of one pod must not run concurrently; the
//! pod's worker serializes them.

pub mod atomic;
mod configmap;
mod downward;
mod emptydir;
mod hostpath;
mod projected;
mod pvc;
mod secret;
pub mod tmpfs;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rudder_api::k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};
use rudder_client::clock::{RealClock, SharedClock};

use crate::objects::{ConfigError, ObjectSource};
use crate::pod::env::{EnvContext, pod_namespace};
use crate::runtime::Mount;
use atomic::{FileProjection, Payload};

/// kubelet's default for `defaultMode`.
const DEFAULT_MODE: u32 = 0o644;

/// The node-side directories of pods' volumes.
pub struct Volumes {
    root: PathBuf,
    clock: SharedClock,
    allocatable_cpu_milli: i64,
    allocatable_memory_bytes: i64,
}

/// What downward API files and memory volumes are computed from, besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct VolumeContext<'a> {
    pub node_name: &'a str,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

/// One volume of a pod, ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    /// The directory (or, for a hostPath file, the file) on the node.
    pub path: PathBuf,
    /// Whether every mount of it is read-only whatever the volumeMount says.
    pub read_only: bool,
}

/// A pod's volumes by name, as [`Volumes::setup`] prepared them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    volumes: BTreeMap<String, PodVolume>,
}

impl PodVolumes {
    pub fn get(&self, name: &str) -> Option<&PodVolume> {
        self.volumes.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &PodVolume)> {
        self.volumes.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.volumes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }
}

impl Volumes {
    /// Pods' directories under `root` (`<data-dir>/pods`), with the real clock and no known
    /// allocatable resources until [`Volumes::with_clock`] / [`Volumes::with_allocatable`].
    pub fn new(root: PathBuf) -> Self {
        Volumes {
            root,
            clock: RealClock::shared(),
            allocatable_cpu_milli: 0,
            allocatable_memory_bytes: 0,
        }
    }

    /// The clock whose wall time names the version directories of projected volumes.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The node's allocatable CPU (millicores) and memory (bytes): the values downward API
    /// files show for a container without limits, and the default size of memory volumes.
    pub fn with_allocatable(mut self, cpu_milli: i64, memory_bytes: i64) -> Self {
        self.allocatable_cpu_milli = cpu_milli;
        self.allocatable_memory_bytes = memory_bytes;
        self
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join(pod_uid)
    }

    /// Idempotent: creates what is missing, re-projects configMap/secret/downwardAPI/projected
    /// contents (atomically, only when they changed). Called before containers start and again
    /// periodically so running pods see updates.
    pub async fn setup(
        &self,
        pod: &Pod,
        ctx: &VolumeContext<'_>,
        objects: &dyn ObjectSource,
    ) -> Result<PodVolumes, ConfigError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !is_single_name(uid) {
            return Err(ConfigError::Invalid(format!(
                "pod has no usable uid ({uid:?}) to name its volume directory"
            )));
        }
        let ectx = EnvContext {
            pod,
            node_name: ctx.node_name,
            host_ip: ctx.host_ip,
            pod_ip: ctx.pod_ip,
            node_allocatable_cpu_milli: self.allocatable_cpu_milli,
            node_allocatable_memory_bytes: self.allocatable_memory_bytes,
        };
        let mut out = PodVolumes::default();
        let mut first_err = None;
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for v in volumes.into_iter().flatten() {
            match self.setup_one(pod, uid, v, &ectx, objects).await {
                Ok(pv) => {
                    out.volumes.insert(v.name.clone(), pv);
                }
                Err(e) => {
                    first_err.get_or_insert(e.in_volume(&v.name));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn setup_one(
        &self,
        pod: &Pod,
        uid: &str,
        v: &Volume,
        ectx: &EnvContext<'_>,
        objects: &dyn ObjectSource,
    ) -> Result<PodVolume, ConfigError> {
        if !is_single_name(&v.name) {
            return Err(ConfigError::Invalid("invalid volume name".into()));
        }
        let ns = pod_namespace(pod);
        let dir = |plugin: &str| {
            self.pod_dir(uid)
                .join("volumes")
                .join(format!("kubernetes.io~{plugin}"))
                .join(&v.name)
        };
        let read_only = |path: PathBuf| PodVolume {
            path,
            read_only: true,
        };
        if let Some(src) = &v.empty_dir {
            let path = dir("empty-dir");
            let size = emptydir::memory_size(src, self.allocatable_memory_bytes)?;
            let (src, p) = (src.clone(), path.clone());
            blocking(move || emptydir::setup(&p, &src, size)).await?;
            return Ok(PodVolume {
                path,
                read_only: false,
            });
        }
        if let Some(src) = &v.host_path {
            let src = src.clone();
            let path = blocking(move || hostpath::setup(&src)).await?;
            return Ok(PodVolume {
                path,
                read_only: false,
            });
        }
        if let Some(src) = &v.persistent_volume_claim {
            let path = pvc::resolve(ns, src, objects).await?;
            let p = path.clone();
            blocking(move || pvc::prepare(&p)).await?;
            return Ok(PodVolume {
                path,
                read_only: src.read_only == Some(true),
            });
        }
        let (path, payload, on_tmpfs) = if let Some(src) = &v.config_map {
            let mode = mode_or(src.default_mode, DEFAULT_MODE);
            let optional = src.optional == Some(true);
            let items = src.items.as_deref();
            let payload = configmap::payload(objects, ns, &src.name, items, mode, optional).await?;
            (dir("configmap"), payload, false)
        } else if let Some(src) = &v.secret {
            let mode = mode_or(src.default_mode, DEFAULT_MODE);
            let optional = src.optional == Some(true);
            let name = src.secret_name.as_deref().unwrap_or_default();
            let items = src.items.as_deref();
            let payload = secret::payload(objects, ns, name, items, mode, optional).await?;
            (dir("secret"), payload, true)
        } else if let Some(src) = &v.downward_api {
            let mode = mode_or(src.default_mode, DEFAULT_MODE);
            let items = src.items.as_deref().unwrap_or_default();
            (
                dir("downward-api"),
                downward::payload(items, mode, ectx)?,
                false,
            )
        } else if let Some(src) = &v.projected {
            let payload = projected::payload(src, ns, objects, ectx).await?;
            (dir("projected"), payload, projected::holds_secrets(src))
        } else {
            return Err(ConfigError::Invalid(
                "no volume plugin matched: this node supports emptyDir, hostPath, configMap, \
                 secret, downwardAPI, projected and persistentVolumeClaim volumes"
                    .into(),
            ));
        };
        let clock = self.clock.clone();
        let p = path.clone();
        blocking(move || {
            make_dirs(&p, 0o755)?;
            if on_tmpfs {
                tmpfs::ensure(&p, None, 0o755).map_err(|e| ConfigError::Io(e.to_string()))?;
            }
            atomic::write(&p, &payload, &*clock).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidInput => ConfigError::Invalid(e.to_string()),
                _ => ConfigError::io("writing", &p, &e),
            })
        })
        .await?;
        Ok(read_only(path))
    }

    /// The container's volumeMounts as bind mounts (subPath, readOnly, mountPath), error naming
    /// the volume when a mount names a volume the pod does not have.
    ///
    /// A `subPath` that does not exist is created (with the volume directory's mode), and one
    /// that resolves outside its volume through a symlink is refused; the mount's source is
    /// the resolved path. `subPathExpr` is not supported.
    pub fn mounts_for(&self, vols: &PodVolumes, c: &Container) -> Result<Vec<Mount>, ConfigError> {
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let v = vols
                .get(&m.name)
                .ok_or_else(|| ConfigError::VolumeNotFound {
                    volume: m.name.clone(),
                    container: c.name.clone(),
                })?;
            if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(ConfigError::Invalid(format!(
                    "volumeMount {:?} of container {:?}: subPathExpr is not supported by this node",
                    m.name, c.name
                )));
            }
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => sub_path(&v.path, sub).map_err(|why| {
                    ConfigError::Invalid(format!(
                        "failed to prepare subPath {sub:?} for volumeMount {:?} of container {:?}: {why}",
                        m.name, c.name
                    ))
                })?,
                None => v.path.clone(),
            };
            mounts.push(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: v.read_only || m.read_only == Some(true),
            });
        }
        Ok(mounts)
    }

    /// Unmounts tmpfs and removes the pod's directory (never PVC data, never hostPath: those
    /// live outside it). Removing a missing directory succeeds.
    pub async fn teardown(&self, pod_uid: &str) -> io::Result<()> {
        if !is_single_name(pod_uid) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid pod uid {pod_uid:?}"),
            ));
        }
        let dir = self.pod_dir(pod_uid);
        tokio::task::spawn_blocking(move || {
            match std::fs::symlink_metadata(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            // Whatever is mounted below is unmounted, never deleted through.
            tmpfs::unmount_all_under(&dir)?;
            std::fs::remove_dir_all(&dir)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Pod uids that have a directory here (for cleanup of pods that no longer exist).
    pub fn pod_uids(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                uids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        uids.sort();
        Ok(uids)
    }
}

/// Files of a ConfigMap's or Secret's keys: every key with `default_mode` without `items`, else
/// each item's key at its path and mode. A missing item key is skipped when `optional`, else
/// `missing(key)`.
fn project_keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> ConfigError,
) -> Result<Payload, ConfigError> {
    let mut out = Payload::new();
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        for (k, v) in data {
            let file = FileProjection {
                data: v.clone(),
                mode: default_mode,
            };
            out.insert(k.clone(), file);
        }
        return Ok(out);
    };
    for item in items {
        let Some(v) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(missing(&item.key));
        };
        let file = FileProjection {
            data: v.clone(),
            mode: mode_or(item.mode, default_mode),
        };
        out.insert(item.path.clone(), file);
    }
    Ok(out)
}

fn mode_or(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(default, |m| m & 0o777)
}

/// A name usable as one path component.
fn is_single_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

fn make_dirs(path: &Path, mode: u32) -> Result<(), ConfigError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| ConfigError::io("creating", path, &e))
}

/// Runs filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConfigError> + Send + 'static,
) -> Result<T, ConfigError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConfigError::Io(format!("volume setup task failed: {e}")))?
}

/// Resolves `sub` inside `volume`, creating missing directories one at a time so that no
/// symlink is followed out of the volume while creating them.
fn sub_path(volume: &Path, sub: &str) -> Result<PathBuf, String> {
    let rel = Path::new(sub);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("must not contain '..'".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be a relative path".into());
            }
        }
    }
    let base = std::fs::canonicalize(volume).map_err(|e| format!("{}: {e}", volume.display()))?;
    let mode = std::fs::metadata(&base)
        .map_err(|e| format!("{}: {e}", base.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let mut cur = base.clone();
    for part in parts {
        let next = cur.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(_) => {
                cur =
                    std::fs::canonicalize(&next).map_err(|e| format!("{}: {e}", next.display()))?;
                if !cur.starts_with(&base) {
                    return Err(format!("{} resolves outside the volume", next.display()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Not recursive: an entry that appeared meanwhile (a symlink) fails the create.
                std::fs::DirBuilder::new()
                    .mode(mode)
                    .create(&next)
                    .and_then(|()| {
                        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))
                    })
                    .map_err(|e| format!("creating {}: {e}", next.display()))?;
                cur = next;
            }
            Err(e) => return Err(format!("{}: {e}", next.display())),
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests;
