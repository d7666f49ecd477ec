//! Pod creations and deletions as every owner makes them, with the Events Kubernetes'
//! `PodControl` records on the owner: SuccessfulCreate ("Created pod: NAME"), FailedCreate
//! ("Error creating: …"), SuccessfulDelete ("Deleted pod: NAME") and FailedDelete ("Error
//! deleting: …"). A deletion names the pod's uid as precondition, so a pod recreated under the
//! same name is never deleted by mistake, and a pod already gone counts as deleted.

use bytes::Bytes;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError};
use serde_json::Value;

/// Creates `pod` (its JSON) for `owner` (the owner's JSON, for the Events).
pub async fn create(
    api: &dyn Api,
    events: &EventRecorder,
    owner: &Value,
    pod: &Value,
) -> Result<pb::Object, ClientError> {
    let namespace = rudder_api::meta::namespace(pod).to_string();
    let req = pb::CreateRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace,
        json: Bytes::from(pod.to_string()),
        options: None,
    };
    match api.create(req).await {
        Ok(created) => {
            events.normal(
                owner,
                "SuccessfulCreate",
                &format!("Created pod: {}", created.name),
            );
            Ok(created)
        }
        Err(e) => {
            events.warning(owner, "FailedCreate", &format!("Error creating: {e}"));
            Err(e)
        }
    }
}

/// The deletion of `pod` with its uid as precondition; `grace`: a grace period in seconds
/// other than the pod's own (0 forces it).
pub fn delete_request(pod: &CachedObject, grace: Option<i64>) -> pb::DeleteRequest {
    pb::DeleteRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        precondition_uid: pod.uid().to_string(),
        grace_period_seconds: grace,
        ..Default::default()
    }
}

/// Deletes `pod` for `owner`; a pod already gone is fine.
pub async fn delete(
    api: &dyn Api,
    events: &EventRecorder,
    owner: &Value,
    pod: &CachedObject,
) -> Result<(), ClientError> {
    match api.delete(delete_request(pod, None)).await {
        Ok(_) => {
            events.normal(
                owner,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", pod.name),
            );
            Ok(())
        }
        // Already gone: what was wanted (the watch reports the deletion).
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => {
            events.warning(owner, "FailedDelete", &format!("Error deleting: {e}"));
            Err(e)
        }
    }
}
