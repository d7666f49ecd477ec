//! `persistentVolumeClaim`: the claim's PersistentVolume, as a directory of this node.
//!
//! The claim must exist and be bound: `spec.volumeName` names the volume. Rudder has no
//! binding controller yet, so a claim pre-bound through `spec.volumeName` counts as bound
//! unless its phase says otherwise (`Pending` with a volume name is accepted, `Lost` is not).
//! The volume's `claimRef`, when set, must be this claim. Only `hostPath` and `local` volumes
//! can be used on a node without a storage driver; their path is created if missing and is
//! never removed by the agent, so the data outlives the pod.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rudder_api::k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource;

use crate::objects::{ConfigError, ObjectSource};

/// The node directory of the claim's volume.
pub async fn resolve(
    namespace: &str,
    src: &PersistentVolumeClaimVolumeSource,
    objects: &dyn ObjectSource,
) -> Result<PathBuf, ConfigError> {
    let claim = &src.claim_name;
    let Some(pvc) = objects.pvc(namespace, claim).await? else {
        return Err(ConfigError::PvcNotFound(claim.clone()));
    };
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let Some(volume_name) =
        volume_name.filter(|_| matches!(phase, None | Some("Bound" | "Pending")))
    else {
        return Err(ConfigError::PvcNotBound(claim.clone()));
    };
    let Some(pv) = objects.pv(&volume_name).await? else {
        return Err(ConfigError::PvNotFound(volume_name));
    };
    let spec = pv.spec.unwrap_or_default();
    if let Some(r) = &spec.claim_ref {
        let same_name = r.name.as_deref() == Some(claim.as_str())
            && r.namespace.as_deref().unwrap_or(namespace) == namespace;
        let same_uid = match (r.uid.as_deref(), pvc.metadata.uid.as_deref()) {
            (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => a == b,
            _ => true,
        };
        if !same_name || !same_uid {
            return Err(ConfigError::PvBoundElsewhere {
                pv: volume_name,
                claim: format!("{namespace}/{claim}"),
                bound_to: format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "persistentvolume {volume_name:?} has neither hostPath nor local: this node \
                 mounts only those"
            ))
        })?;
    if !Path::new(&path).is_absolute() {
        return Err(ConfigError::Invalid(format!(
            "persistentvolume {volume_name:?}: path {path:?} must be absolute"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Creates the volume's directory if missing, world-writable as local-path provisioners make
/// it, since this agent does not apply `fsGroup`.
pub fn prepare(path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid(format!(
            "persistent volume path {} is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777)
            .create(path)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)))
            .map_err(|e| ConfigError::io("creating", path, &e)),
        Err(e) => Err(ConfigError::io("checking", path, &e)),
    }
}
