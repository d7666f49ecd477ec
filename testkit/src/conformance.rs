//! The API conformance suite: Kubernetes' API semantics as Rudder serves them, written once
//! against `Arc<dyn Api>` and run against every implementation (the in-process server and the
//! client's `FakeApi`), as openraft runs one suite against every store.
//!
//! Each case is an `async fn(Target)` that panics with a message naming the broken rule. The
//! server is the reference: where the fake disagrees, the fake is wrong. Cases use only the
//! [`Api`] trait and wall-clock-free assertions, so they run under real time (the server) or
//! paused tokio time (the fake) alike; they wait on events, never on sleeps.
//!
//! Run them with [`for_each_case!`](crate::for_each_case), which calls a macro of yours once per
//! case name, so each case becomes its own test per backend and a new case cannot be forgotten
//! by one of them (see `testkit/tests/conformance.rs`).

mod eviction;
mod namespaces;
mod pods;
mod watch;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError, WatchEvent, WatchStream};
use serde_json::{Value, json};

pub use eviction::*;
pub use namespaces::*;
pub use pods::*;
pub use watch::*;
pub use writes::*;

/// What a case runs against.
#[derive(Clone)]
pub struct Target {
    pub api: Arc<dyn Api>,
    /// The backend's watch history, in events: a watch from a version followed by more writes
    /// than this has expired.
    pub history_window: usize,
}

/// Calls `$m!(case)` for every case of the suite, in a stable order.
#[macro_export]
macro_rules! for_each_case {
    ($m:ident) => {
        $m!(create_sets_server_fields_and_get_returns_it);
        $m!(create_refuses_duplicates_versions_and_nameless_objects);
        $m!(missing_objects_are_not_found);
        $m!(generate_name_gives_distinct_names);
        $m!(list_is_scoped_by_namespace_and_ordered);
        $m!(update_with_a_stale_version_conflicts);
        $m!(patch_with_a_stale_version_conflicts);
        $m!(delete_preconditions);
        $m!(noop_writes_keep_the_version_and_emit_nothing);
        $m!(generation_counts_spec_changes_only);
        $m!(status_is_kept_apart);
        $m!(finalizers_hold_deletion_until_the_last_is_removed);
        $m!(orphan_and_foreground_deletes_add_the_collectors_finalizer);
        $m!(pods_on_a_node_are_deleted_gracefully);
        $m!(bind_assigns_a_node_once);
        $m!(eviction_charges_the_budget_then_refuses_with_429);
        $m!(eviction_lets_go_what_budgets_do_not_guard);
        $m!(pod_field_selectors);
        $m!(namespaces_must_exist);
        $m!(namespaces_carry_the_kubernetes_finalizer);
        $m!(deleting_a_namespace_marks_it_terminating_and_nothing_else);
        $m!(a_namespace_goes_once_both_finalizer_lists_and_its_content_are_empty);
        $m!(watch_from_a_version_replays_without_gap_or_duplicate);
        $m!(watch_from_zero_starts_with_the_current_objects);
        $m!(watch_selector_turns_entering_and_leaving_into_added_and_deleted);
        $m!(watch_selector_leaving_sends_the_last_matching_version);
        $m!(watch_bookmarks_carry_the_latest_version);
        $m!(watch_from_an_expired_version_ends_with_expired);
        $m!(list_pages_are_consistent_at_the_first_page_version);
    };
}

// === helpers shared by the cases ===

pub(crate) const CM: (&str, &str) = ("v1", "ConfigMap");
pub(crate) const POD: (&str, &str) = ("v1", "Pod");
pub(crate) const DEPLOY: (&str, &str) = ("apps/v1", "Deployment");
pub(crate) const NS: (&str, &str) = ("v1", "Namespace");

/// How long a case waits for an event that must come.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn kind(k: (&str, &str)) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: k.0.into(),
        kind: k.1.into(),
    })
}

pub(crate) fn json_of(o: &pb::Object) -> Value {
    serde_json::from_slice(&o.json).unwrap_or_else(|e| panic!("object {} is not JSON: {e}", o.name))
}

pub(crate) fn configmap(name: &str, labels: Value, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": data})
}

/// A valid pod; `node` empty leaves it unscheduled.
pub(crate) fn pod(name: &str, node: &str) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    if !node.is_empty() {
        p["spec"]["nodeName"] = json!(node);
    }
    p
}

pub(crate) fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}})
}

pub(crate) fn create_req(k: (&str, &str), ns: &str, body: &Value) -> pb::CreateRequest {
    pb::CreateRequest {
        kind: kind(k),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

pub(crate) async fn create(t: &Target, k: (&str, &str), ns: &str, body: &Value) -> pb::Object {
    t.api
        .create(create_req(k, ns, body))
        .await
        .unwrap_or_else(|e| panic!("create {} {}: {e}", k.1, body["metadata"]["name"]))
}

pub(crate) async fn try_get(
    t: &Target,
    k: (&str, &str),
    ns: &str,
    name: &str,
) -> Result<pb::Object, ClientError> {
    t.api
        .get(pb::GetRequest {
            kind: kind(k),
            namespace: ns.into(),
            name: name.into(),
            allow_stale: false,
        })
        .await
}

pub(crate) async fn get(t: &Target, k: (&str, &str), ns: &str, name: &str) -> pb::Object {
    try_get(t, k, ns, name)
        .await
        .unwrap_or_else(|e| panic!("get {} {ns}/{name}: {e}", k.1))
}

pub(crate) fn update_req(k: (&str, &str), ns: &str, body: &Value) -> pb::UpdateRequest {
    pb::UpdateRequest {
        kind: kind(k),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

pub(crate) fn merge_req(k: (&str, &str), ns: &str, name: &str, patch: &Value) -> pb::PatchRequest {
    pb::PatchRequest {
        kind: kind(k),
        namespace: ns.into(),
        name: name.into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(patch.to_string()),
        ..Default::default()
    }
}

pub(crate) async fn patch(
    t: &Target,
    k: (&str, &str),
    ns: &str,
    name: &str,
    patch: Value,
) -> pb::Object {
    t.api
        .patch(merge_req(k, ns, name, &patch))
        .await
        .unwrap_or_else(|e| panic!("patch {} {ns}/{name} with {patch}: {e}", k.1))
}

pub(crate) fn delete_req(k: (&str, &str), ns: &str, name: &str) -> pb::DeleteRequest {
    pb::DeleteRequest {
        kind: kind(k),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

pub(crate) async fn delete(
    t: &Target,
    k: (&str, &str),
    ns: &str,
    name: &str,
) -> pb::DeleteResponse {
    t.api
        .delete(delete_req(k, ns, name))
        .await
        .unwrap_or_else(|e| panic!("delete {} {ns}/{name}: {e}", k.1))
}

pub(crate) async fn list(t: &Target, req: pb::ListRequest) -> pb::ListResponse {
    t.api
        .list(req.clone())
        .await
        .unwrap_or_else(|e| panic!("list {req:?}: {e}"))
}

pub(crate) fn list_req(k: (&str, &str), ns: &str) -> pb::ListRequest {
    pb::ListRequest {
        kind: kind(k),
        namespace: ns.into(),
        ..Default::default()
    }
}

pub(crate) fn names(items: &[pb::Object]) -> Vec<String> {
    items.iter().map(|o| o.name.clone()).collect()
}

pub(crate) fn watch_req(k: (&str, &str), ns: &str, rv: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        kind: kind(k),
        namespace: ns.into(),
        resource_version: rv,
        ..Default::default()
    }
}

pub(crate) async fn watch(t: &Target, req: pb::WatchRequest) -> WatchStream {
    t.api
        .watch(req.clone())
        .await
        .unwrap_or_else(|e| panic!("watch {req:?}: {e}"))
}

/// The next event that is not a BOOKMARK; panics when the stream fails, ends or stays silent.
pub(crate) async fn next_change(w: &mut WatchStream, what: &str) -> WatchEvent {
    loop {
        match next_any(w, what).await {
            WatchEvent::Bookmark(_) => continue,
            ev => return ev,
        }
    }
}

/// The next event of any type.
pub(crate) async fn next_any(w: &mut WatchStream, what: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_DEADLINE, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("{what}: the watch failed: {e}"),
        Ok(None) => panic!("{what}: the watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_DEADLINE:?}"),
    }
}

/// A short name for an event, for assertions: `("ADDED", name, rv)`.
pub(crate) fn summary(ev: &WatchEvent) -> (&'static str, String, u64) {
    match ev {
        WatchEvent::Added(o) => ("ADDED", o.name.clone(), o.resource_version),
        WatchEvent::Modified(o) => ("MODIFIED", o.name.clone(), o.resource_version),
        WatchEvent::Deleted(o) => ("DELETED", o.name.clone(), o.resource_version),
        WatchEvent::Bookmark(rv) => ("BOOKMARK", String::new(), *rv),
        WatchEvent::Error(e) => ("ERROR", e.reason.clone(), e.resume_resource_version),
    }
}

/// Asserts a result is an error of the given kind, naming the rule otherwise.
#[track_caller]
pub(crate) fn assert_err<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    want: fn(&ClientError) -> bool,
    rule: &str,
) {
    match r {
        Err(e) if want(&e) => {}
        Err(e) => panic!("{rule}: wrong error {e:?}"),
        Ok(v) => panic!("{rule}: succeeded with {v:?}"),
    }
}

pub(crate) fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::NotFound(_))
}
pub(crate) fn is_conflict(e: &ClientError) -> bool {
    matches!(e, ClientError::Conflict(_))
}
pub(crate) fn is_invalid(e: &ClientError) -> bool {
    matches!(e, ClientError::Invalid(_))
}
/// Kubernetes' BadRequest: the request as given cannot be served (a selector on an
/// unselectable field, a resourceVersion on create, a negative grace period), as opposed to an
/// object that fails validation (`Invalid`).
pub(crate) fn is_bad_request(e: &ClientError) -> bool {
    matches!(e, ClientError::BadRequest(_))
}
pub(crate) fn is_exists(e: &ClientError) -> bool {
    matches!(e, ClientError::AlreadyExists(_))
}
pub(crate) fn is_forbidden(e: &ClientError) -> bool {
    matches!(e, ClientError::Forbidden(_))
}
pub(crate) fn is_expired(e: &ClientError) -> bool {
    matches!(e, ClientError::Expired(_))
}
