//! `secret` volumes and projections: the Secret's keys as files (on a tmpfs, see the module
//! above).

use rudder_api::k8s_openapi::api::core::v1::KeyToPath;

use super::atomic::Payload;
use super::project_keys;
use crate::objects::{ConfigError, ObjectSource, secret_data};

/// The files of Secret `namespace/name`; a missing Secret is an empty volume when `optional`.
pub async fn payload(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, ConfigError> {
    let Some(secret) = objects.secret(namespace, name).await? else {
        if optional {
            return Ok(Payload::new());
        }
        return Err(ConfigError::SecretNotFound(name.to_string()));
    };
    project_keys(
        &secret_data(&secret),
        items,
        default_mode,
        optional,
        |key| ConfigError::SecretKeyNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        },
    )
}
