//! Pure helpers the controllers share, each tested here once rather than copied per controller:
//! pod readiness and availability ([`pods`]), the deletion ranking ([`rank`]), int-or-percent
//! arithmetic ([`intstr`]), the pod-template hash ([`hash`]), owner-reference decisions
//! ([`owner`]), pods made from templates ([`template`]), slow-start batches ([`batch`]) and
//! taint toleration ([`taints`]).

pub mod batch;
pub mod cron;
pub mod endpoints;
pub mod hash;
pub mod intervals;
pub mod intstr;
pub mod owner;
pub mod pods;
pub mod rank;
pub mod revision;
pub mod taints;
pub mod template;

use bytes::Bytes;
use rudder_api::selector::LabelSelector;
use rudder_api::typed::Object;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::Value;

use crate::error::Error;

/// A JSON merge patch (RFC 7386) of `obj`'s main resource.
pub fn merge_patch(obj: &CachedObject, patch: &Value) -> pb::PatchRequest {
    pb::PatchRequest {
        kind: Some(kind_ref(&obj.api_version, &obj.kind)),
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(patch.to_string()),
        status: false,
        options: None,
    }
}

/// The `spec.selector` of a workload of type `T`, parsed; an unreadable one is
/// [`Error::Invalid`], naming the field.
pub fn spec_selector<T: Object>(
    obj: &CachedObject,
    get: impl Fn(
        &T,
    )
        -> Option<rudder_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<LabelSelector, Error> {
    let t = obj
        .typed::<T>()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let sel = get(&t).unwrap_or_default();
    LabelSelector::from_object(&sel).map_err(|e| Error::Invalid(format!("spec.selector: {e}")))
}

/// An integer field of a JSON object, with a default when absent.
pub fn int_at(v: &Value, pointer: &str, default: i64) -> i64 {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// A string field of a JSON object (empty when absent).
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// RFC 3339 with seconds, as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    format!("{:.0}", t)
}

/// Parses a `metav1.Time`; `None` when absent or unreadable.
pub fn parse_time(v: Option<&Value>) -> Option<jiff::Timestamp> {
    v.and_then(Value::as_str).and_then(|s| s.parse().ok())
}
