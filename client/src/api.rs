//! The process boundary: everything a controller needs from the API server, as one trait.
//!
//! [`Api`] is object safe (boxed futures and streams), so components hold an `Arc<dyn Api>` and
//! tests swap the gRPC [`Client`] for the in-memory [`crate::fake::FakeApi`]. Requests are the
//! wire messages themselves (`rudder_proto::ListRequest`, ...): they already carry every option
//! and keep this layer from growing a second vocabulary.
//!
//! Watch streams yield typed [`WatchEvent`]s. A malformed event from the server (an ADDED without
//! its object, an unknown type) becomes an `Err` item rather than a panic; callers treat it like
//! a broken stream and re-watch.

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use rudder_proto as pb;

use crate::conn::{Client, ClientError};

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Added(pb::Object),
    Modified(pb::Object),
    /// The object as last stored; its resourceVersion is the deletion's.
    Deleted(pb::Object),
    /// Nothing to report: the watch has seen every change up to this version.
    Bookmark(u64),
    /// The watch ends. Reason `Expired` (code 410): relist. Reason `TooSlow`: re-watch from
    /// `resume_resource_version`.
    Error(pb::WatchError),
}

pub use pb::watch_error::{CODE_EXPIRED, CODE_TOO_SLOW, REASON_EXPIRED, REASON_TOO_SLOW};

impl WatchEvent {
    /// Whether this ends the watch with "your version is gone, relist". Decided by reason
    /// alone: codes are for people reading logs, and a server cutting a slow watcher may use
    /// any code (an older server sent 410 for that too).
    pub fn is_expired(&self) -> bool {
        matches!(self, WatchEvent::Error(e) if e.reason == REASON_EXPIRED)
    }

    /// Whether this ends the watch with "you fell behind; watch again from
    /// `resume_resource_version`".
    pub fn is_too_slow(&self) -> bool {
        matches!(self, WatchEvent::Error(e) if e.reason == REASON_TOO_SLOW)
    }
}

impl TryFrom<pb::WatchEvent> for WatchEvent {
    type Error = ClientError;

    fn try_from(ev: pb::WatchEvent) -> Result<Self, ClientError> {
        let ty = pb::EventType::try_from(ev.r#type)
            .map_err(|_| ClientError::Other(format!("unknown watch event type {}", ev.r#type)))?;
        let object = |o: Option<pb::Object>| {
            o.ok_or_else(|| ClientError::Other(format!("{ty:?} watch event without an object")))
        };
        Ok(match ty {
            pb::EventType::Added => WatchEvent::Added(object(ev.object)?),
            pb::EventType::Modified => WatchEvent::Modified(object(ev.object)?),
            pb::EventType::Deleted => WatchEvent::Deleted(object(ev.object)?),
            pb::EventType::Bookmark => WatchEvent::Bookmark(ev.resource_version),
            pb::EventType::Error => WatchEvent::Error(ev.error.unwrap_or_default()),
            pb::EventType::Unspecified => {
                return Err(ClientError::Other("watch event without a type".into()));
            }
        })
    }
}

/// A watch: events in version order, ending with an ERROR event, an `Err` or the stream's end.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, ClientError>>;

/// Result of an API call, boxed so that [`Api`] stays object safe.
pub type ApiFuture<'a, T> = BoxFuture<'a, Result<T, ClientError>>;

/// The API server as controllers see it. Implemented by [`Client`] (gRPC, with failover) and
/// [`crate::fake::FakeApi`] (in memory).
pub trait Api: Send + Sync + 'static {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object>;
    /// One page of a list; a non-empty `continue_token` in the reply asks for the next page.
    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse>;
    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream>;
    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object>;
    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object>;
    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object>;
    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object>;
    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse>;
    /// Assigns a pending pod to a node (the `pods/binding` subresource): sets `spec.nodeName`
    /// and the `PodScheduled` condition; `Conflict` if the pod is already bound or being
    /// deleted, or if `uid` is given and differs.
    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object>;
    /// Sets a Namespace's `spec.finalizers` (the `namespaces/finalize` subresource); only that
    /// field of the object is read, a `metadata.resourceVersion` in it is a precondition. A
    /// terminating namespace left without finalizers and content is removed.
    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object>;
    /// Evicts a pod (the `pods/eviction` subresource, a policy/v1 Eviction in `json`): deletes
    /// it with the Eviction's deleteOptions unless its PodDisruptionBudget forbids the
    /// disruption, which is `TooManyRequests` naming the budget (try again later).
    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse>;
    /// Discovery: every served kind, one entry per served version.
    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse>;
}

impl Api for Client {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::get(self, req))
    }

    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        Box::pin(Client::list(self, req))
    }

    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        Box::pin(async move {
            let stream = Client::watch_guarded(self, req).await?;
            let events = stream.map(|item| item.and_then(WatchEvent::try_from));
            Ok(events.boxed())
        })
    }

    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::create(self, req))
    }

    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::update(self, req))
    }

    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::update_status(self, req))
    }

    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::patch(self, req))
    }

    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        Box::pin(Client::delete(self, req))
    }

    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::bind(self, req))
    }

    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(Client::finalize(self, req))
    }

    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        Box::pin(Client::evict(self, req))
    }

    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse> {
        Box::pin(Client::api_resources(self))
    }
}

/// Decodes an object's JSON, reporting a server that sent something unparsable.
pub fn decode_json(obj: &pb::Object) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(&obj.json).map_err(|e| {
        ClientError::Other(format!(
            "undecodable JSON for {} {}/{}: {e}",
            obj.kind, obj.namespace, obj.name
        ))
    })
}

/// Discovery of the built-in kinds, as the server answers it: every served version of every
/// kind, the storage version preferred (what the fake serves, and the CLI's fallback).
pub fn builtin_discovery() -> pb::DiscoveryResponse {
    let resources = rudder_api::Registry::builtin()
        .served()
        .map(|k| pb::ApiResource {
            group: k.group.to_string(),
            version: k.version.to_string(),
            kind: k.kind.to_string(),
            plural: k.plural.to_string(),
            singular: k.singular.to_string(),
            short_names: k.short_names.iter().map(|s| s.to_string()).collect(),
            namespaced: k.namespaced,
            has_status: k.has_status,
            preferred: k.is_storage(),
            storage_version: k.storage_version.to_string(),
        })
        .collect();
    pb::DiscoveryResponse { resources }
}
