//! `downwardAPI` volumes and projections: pod fields and container resources as files.
//!
//! Values are those of env vars ([`crate::pod::env::field_value`],
//! [`crate::pod::env::resource_value`]): whole `metadata.labels` / `metadata.annotations` as
//! sorted `key="value"` lines, `resourceFieldRef` naming its container. Kubernetes' API allows
//! only `metadata.*` field paths in volumes; the agent resolves the env-var ones too rather
//! than fail a pod an unvalidating server let through.

use rudder_api::k8s_openapi::api::core::v1::DownwardAPIVolumeFile;

use super::atomic::{FileProjection, Payload};
use super::mode_or;
use crate::objects::ConfigError;
use crate::pod::env::{EnvContext, field_value, resource_value};

pub fn payload(
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    ctx: &EnvContext<'_>,
) -> Result<Payload, ConfigError> {
    let mut out = Payload::new();
    for item in items {
        let value = if let Some(fs) = &item.field_ref {
            field_value(ctx, fs)?
        } else if let Some(rs) = &item.resource_field_ref {
            resource_value(ctx, rs, None)?
        } else {
            return Err(ConfigError::Invalid(format!(
                "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
                item.path
            )));
        };
        let file = FileProjection {
            data: value.into_bytes(),
            mode: mode_or(item.mode, default_mode),
        };
        out.insert(item.path.clone(), file);
    }
    Ok(out)
}
