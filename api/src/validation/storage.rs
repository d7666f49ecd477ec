//! Storage validation: PersistentVolumes (capacity, access modes, exactly one source),
//! PersistentVolumeClaims (and what may change after creation) and StorageClasses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::helpers::{Errs, Path, enum_value, exactly_one, opt_enum, quantity, required_str};
use super::{FieldError, Validate};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// The PersistentVolume spec fields that are volume sources (JSON names).
const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

fn access_modes(errs: &mut Errs, path: &Path, modes: Option<&Vec<String>>) {
    match modes {
        None => errs.push(FieldError::required(path)),
        Some(m) if m.is_empty() => errs.push(FieldError::required(path)),
        Some(m) => {
            for (i, mode) in m.iter().enumerate() {
                enum_value(errs, &path.index(i), mode, ACCESS_MODES);
            }
        }
    }
}

/// `storage` in a resource list: required and greater than zero.
fn storage_size(errs: &mut Errs, path: &Path, list: Option<&BTreeMap<String, K8sQuantity>>) {
    let p = path.key("storage");
    match list.and_then(|l| l.get("storage")) {
        None => errs.push(FieldError::required(&p)),
        Some(q) => {
            if quantity(errs, &p, q).is_some_and(|v| v.nanos() <= 0) {
                errs.push(FieldError::invalid(&p, &q.0, "must be greater than zero"));
            }
        }
    }
}

impl Validate for PersistentVolume {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        access_modes(
            &mut errs,
            &p.child("accessModes"),
            spec.access_modes.as_ref(),
        );
        match spec.capacity.as_ref() {
            None => errs.push(FieldError::required(p.child("capacity"))),
            c => storage_size(&mut errs, &p.child("capacity"), c),
        }
        let set: Vec<&str> = match serde_json::to_value(spec) {
            Ok(serde_json::Value::Object(m)) => PV_SOURCES
                .iter()
                .copied()
                .filter(|s| m.contains_key(*s))
                .collect(),
            _ => Vec::new(),
        };
        exactly_one(&mut errs, &p, &set, "volume type");
        opt_enum(
            &mut errs,
            &p.child("persistentVolumeReclaimPolicy"),
            spec.persistent_volume_reclaim_policy.as_deref(),
            &["Delete", "Recycle", "Retain"],
        );
        opt_enum(
            &mut errs,
            &p.child("volumeMode"),
            spec.volume_mode.as_deref(),
            VOLUME_MODES,
        );
        errs
    }
}

const PVC_UPDATE_MSG: &str = "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";

impl Validate for PersistentVolumeClaim {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let p = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(p)];
        };
        let mut errs = Vec::new();
        access_modes(
            &mut errs,
            &p.child("accessModes"),
            spec.access_modes.as_ref(),
        );
        let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
        storage_size(&mut errs, &p.child("resources"), requests);
        opt_enum(
            &mut errs,
            &p.child("volumeMode"),
            spec.volume_mode.as_deref(),
            VOLUME_MODES,
        );
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            pvc_update(&mut errs, spec, old_spec, &p);
        }
        errs
    }
}

/// After creation a claim may only grow its storage request, change its attributes class, and
/// be bound to a volume once.
fn pvc_update(
    errs: &mut Errs,
    new: &PersistentVolumeClaimSpec,
    old: &PersistentVolumeClaimSpec,
    p: &Path,
) {
    let mut frozen = new.clone();
    frozen.resources.clone_from(&old.resources);
    frozen
        .volume_attributes_class_name
        .clone_from(&old.volume_attributes_class_name);
    if old.volume_name.as_deref().unwrap_or("").is_empty() {
        frozen.volume_name.clone_from(&old.volume_name);
    }
    if frozen != *old {
        errs.push(FieldError::forbidden(p, PVC_UPDATE_MSG));
    }
    let storage = |s: &PersistentVolumeClaimSpec| {
        s.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| crate::quantity::parse_quantity(&q.0).ok())
    };
    if let (Some(n), Some(o)) = (storage(new), storage(old))
        && n < o
    {
        errs.push(FieldError::forbidden(
            p.child("resources").child("requests").child("storage"),
            "field can not be less than previous value",
        ));
    }
}

impl Validate for StorageClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        required_str(
            &mut errs,
            &Path::new("provisioner"),
            Some(self.provisioner.as_str()),
        );
        opt_enum(
            &mut errs,
            &Path::new("reclaimPolicy"),
            self.reclaim_policy.as_deref(),
            &["Delete", "Retain"],
        );
        opt_enum(
            &mut errs,
            &Path::new("volumeBindingMode"),
            self.volume_binding_mode.as_deref(),
            &["Immediate", "WaitForFirstConsumer"],
        );
        if let Some(old) = old {
            if self.provisioner != old.provisioner {
                errs.push(FieldError::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            if self.parameters != old.parameters {
                errs.push(FieldError::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::helpers::validate_json as errs;
    use serde_json::json;

    #[test]
    fn persistent_volumes() {
        let ok = json!({"metadata": {}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/mnt/data"}}});
        assert!(errs::<PersistentVolume>(ok, None).is_empty());
        let bad = json!({"metadata": {}, "spec": {"capacity": {"storage": "0"}, "accessModes": ["ReadWriteSometimes"],
            "hostPath": {"path": "/a"}, "nfs": {"server": "s", "path": "/b"}}});
        assert_eq!(
            errs::<PersistentVolume>(bad, None),
            vec![
                "spec.accessModes[0]: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
                "spec.nfs: Forbidden: may not specify more than 1 volume type",
            ]
        );
        assert_eq!(
            errs::<PersistentVolume>(json!({"metadata": {}, "spec": {}}), None),
            vec![
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec: Required value",
            ]
        );
    }

    #[test]
    fn claims_grow_only() {
        let pvc = |size: &str, class: &str| {
            json!({"metadata": {}, "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "resources": {"requests": {"storage": size}}}})
        };
        assert!(errs::<PersistentVolumeClaim>(pvc("2Gi", "a"), Some(pvc("1Gi", "a"))).is_empty());
        assert_eq!(
            errs::<PersistentVolumeClaim>(pvc("1Gi", "a"), Some(pvc("2Gi", "a"))),
            vec![
                "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
            ]
        );
        assert_eq!(
            errs::<PersistentVolumeClaim>(pvc("1Gi", "b"), Some(pvc("1Gi", "a"))),
            vec![format!("spec: Forbidden: {PVC_UPDATE_MSG}")]
        );
        assert_eq!(
            errs::<PersistentVolumeClaim>(json!({"metadata": {}, "spec": {}}), None),
            vec![
                "spec.accessModes: Required value",
                "spec.resources[storage]: Required value"
            ]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = |p: &str| json!({"metadata": {}, "provisioner": p, "reclaimPolicy": "Recycle"});
        assert_eq!(
            errs::<StorageClass>(sc(""), None),
            vec![
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
            ]
        );
        let ok = |p: &str| json!({"metadata": {}, "provisioner": p});
        assert_eq!(
            errs::<StorageClass>(ok("b"), Some(ok("a"))),
            vec!["provisioner: Forbidden: updates to provisioner are forbidden."]
        );
    }
}
