//! `configMap` volumes and projections: the ConfigMap's `data` and `binaryData` keys as files.

use std::collections::BTreeMap;

use rudder_api::k8s_openapi::api::core::v1::KeyToPath;

use super::atomic::Payload;
use super::project_keys;
use crate::objects::{ConfigError, ObjectSource};

/// The files of ConfigMap `namespace/name`; a missing ConfigMap is an empty volume when
/// `optional`.
pub async fn payload(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, ConfigError> {
    let Some(cm) = objects.config_map(namespace, name).await? else {
        if optional {
            return Ok(Payload::new());
        }
        return Err(ConfigError::ConfigMapNotFound(name.to_string()));
    };
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.binary_data.into_iter().flatten() {
        data.insert(k, v.0);
    }
    // Validation keeps the two key sets apart; should they meet, `data` wins as in kubelet.
    for (k, v) in cm.data.into_iter().flatten() {
        data.insert(k, v.into_bytes());
    }
    project_keys(&data, items, default_mode, optional, |key| {
        ConfigError::ConfigMapKeyNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        }
    })
}
