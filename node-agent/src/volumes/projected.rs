//! `projected` volumes: configMap, secret and downwardAPI sources merged into one directory
//! (a later source's file replaces an earlier one's at the same path), `defaultMode` applying
//! to all. `serviceAccountToken` sources are skipped (Rudder issues no tokens);
//! `clusterTrustBundle` and `podCertificate` sources are refused.

use rudder_api::k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::atomic::Payload;
use super::{DEFAULT_MODE, configmap, downward, mode_or, secret};
use crate::objects::{ConfigError, ObjectSource};
use crate::pod::env::EnvContext;

pub async fn payload(
    src: &ProjectedVolumeSource,
    namespace: &str,
    objects: &dyn ObjectSource,
    ctx: &EnvContext<'_>,
) -> Result<Payload, ConfigError> {
    let mode = mode_or(src.default_mode, DEFAULT_MODE);
    let mut out = Payload::new();
    for s in src.sources.iter().flatten() {
        let part = if let Some(cm) = &s.config_map {
            let optional = cm.optional == Some(true);
            let items = cm.items.as_deref();
            configmap::payload(objects, namespace, &cm.name, items, mode, optional).await?
        } else if let Some(sec) = &s.secret {
            let optional = sec.optional == Some(true);
            let items = sec.items.as_deref();
            secret::payload(objects, namespace, &sec.name, items, mode, optional).await?
        } else if let Some(d) = &s.downward_api {
            downward::payload(d.items.as_deref().unwrap_or_default(), mode, ctx)?
        } else if s.service_account_token.is_some() {
            continue;
        } else if s.cluster_trust_bundle.is_some() || s.pod_certificate.is_some() {
            return Err(ConfigError::Invalid(
                "projected clusterTrustBundle and podCertificate sources are not supported by \
                 this node"
                    .into(),
            ));
        } else {
            continue;
        };
        out.extend(part);
    }
    Ok(out)
}

/// Whether the volume projects a Secret (and so must live on a tmpfs).
pub fn holds_secrets(src: &ProjectedVolumeSource) -> bool {
    src.sources.iter().flatten().any(|s| s.secret.is_some())
}
