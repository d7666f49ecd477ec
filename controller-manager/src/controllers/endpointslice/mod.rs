//! The EndpointSlice controller, as Kubernetes' `endpointslice-controller`: every Service with
//! a selector gets `discovery.k8s.io/v1` EndpointSlices listing the pods it selects.
//!
//! Per Service (a key; level-triggered over the Service, Pod, Node and EndpointSlice caches):
//! - no selector (or an empty one), or type ExternalName: nothing is touched; such a Service's
//!   slices, if any, are the user's;
//! - otherwise the desired endpoints ([`desired`]: one per selected pod that is not finished
//!   and has an IP, terminating ones included, grouped by the ports the pod resolves) are
//!   reconciled against the Service's slices ([`slices`]: in place, fill before create, delete
//!   what empties, at most `--max-endpoints-per-slice` endpoints a slice);
//! - slices are the ones labelled `kubernetes.io/service-name: <service>` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`; the Service's
//!   labels are copied onto them; they are named by the server from `<service>-` and controlled
//!   by the Service (so the garbage collector deletes them with it);
//! - a Service being deleted gets no new slices (the garbage collector is removing them);
//! - a Service that is gone has its slices deleted here as well (uid preconditions), so they
//!   go even when the garbage collector does not run.
//!
//! Writes are guarded: updates by the slice's resourceVersion, deletes by its uid. Before acting
//! on a Service, its cache must show every write this controller made for it
//! ([`tracker`]), so a reconcile on a lagging cache neither duplicates a slice nor sends a stale
//! version. A failed sync is recorded as a Warning Event `FailedToUpdateEndpointSlices` on the
//! Service and retried with back-off.
//!
//! Pods reach the Services selecting them (before and after a relabel; updates that change no
//! endpoint field are skipped); a node's events reach the Services of its pods (their zone);
//! a slice's events reach the Service it is labelled for.

pub mod desired;
pub mod slices;
pub mod tracker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::cache::{CachedObject, INDEX_NODE_NAME, Reader, split_key};
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use rudder_client::{Api, ClientError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::desired::{Content, MANAGED_BY, NodeLookup};
use self::slices::{Existing, Plan};
use self::tracker::Tracker;
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::endpoints::{
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE, add_indexes, labels_of, pod_mapper,
    selected_pods, services_selecting,
};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "endpointslice",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// Kubernetes' default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The slices' index: `namespace/service` from the service-name label.
pub const INDEX_SERVICE: &str = "endpointslice.service";

const SLICE_API_VERSION: &str = "discovery.k8s.io/v1";
const SLICE_KIND: &str = "EndpointSlice";

/// What reconcile reads and writes through.
pub struct Ctx {
    api: Arc<dyn Api>,
    events: EventRecorder,
    services: Reader,
    pods: Reader,
    nodes: Reader,
    slices: Reader,
    tracker: Arc<Tracker>,
    max_per_slice: usize,
}

/// The key of the Service a slice is labelled for.
fn service_key(slice: &CachedObject) -> Option<Key> {
    let name = labels_of(&slice.value)
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
        .and_then(Value::as_str)?;
    Some(format!("{}/{name}", slice.namespace))
}

fn managed(slice: &CachedObject) -> bool {
    labels_of(&slice.value)
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
}

async fn run(env: Env, cancel: CancellationToken) {
    let services = env.informers.for_kind("v1", "Service");
    let pods = env.informers.for_kind("v1", "Pod");
    let nodes = env.informers.for_kind("v1", "Node");
    let slices = env.informers.for_kind(SLICE_API_VERSION, SLICE_KIND);
    add_indexes(&services, &pods);
    slices.ensure_index(
        INDEX_SERVICE,
        Arc::new(|o: &CachedObject| service_key(o).into_iter().collect()),
    );
    let (events, events_task) = env.recorder("endpoint-slice");
    let tracker = Arc::new(Tracker::new(Arc::clone(&env.clock)));
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        events,
        services: services.reader(),
        pods: pods.reader(),
        nodes: nodes.reader(),
        slices: slices.reader(),
        tracker: Arc::clone(&tracker),
        max_per_slice: env.max_endpoints_per_slice.max(1),
    });
    Controller::new(ctx)
        .named("endpointslice")
        .workers(env.workers)
        .watches(services.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(services.reader()))
        .watches(
            nodes.subscribe(),
            node_mapper(services.reader(), pods.reader()),
        )
        .watches(slices.subscribe(), slice_mapper(tracker))
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// A node's arrival, departure or zone change reaches the Services of the pods on it.
fn node_mapper(services: Reader, pods: Reader) -> Mapper {
    Box::new(move |ev| {
        let nodes = match ev {
            ReflectorEvent::Restarted(_) => return services.keys(),
            ReflectorEvent::Updated { old, new } => {
                let zone = |n: &CachedObject| n.labels().get(LABEL_ZONE).cloned();
                if zone(old) == zone(new) {
                    return Vec::new();
                }
                vec![new]
            }
            ReflectorEvent::Added(n) | ReflectorEvent::Deleted(n) => vec![n],
        };
        let mut keys: Vec<Key> = nodes
            .iter()
            .flat_map(|n| pods.by_index(INDEX_NODE_NAME, &n.name))
            .flat_map(|p| services_selecting(&services, &p))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    })
}

/// A managed slice's events reach its Service (a slice that stops or starts being managed
/// too), and lower the tracker's records.
fn slice_mapper(tracker: Arc<Tracker>) -> Mapper {
    Box::new(move |ev| {
        tracker.observe(ev, service_key);
        let mut keys: Vec<Key> = ev
            .objects()
            .into_iter()
            .filter(|s| managed(s))
            .filter_map(|s| service_key(s))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    })
}

/// Reconciles one Service by key. Public so tests can drive it.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (namespace, name) = split_key(&key);
    let Some(svc) = ctx.services.get_key(&key) else {
        delete_leftovers(&ctx, &key, namespace).await?;
        return Ok(Action::AwaitChange);
    };
    let svc = &svc.value;
    let Some(pods) = selected_pods(svc, &ctx.pods) else {
        return Ok(Action::AwaitChange);
    };
    if !ctx.tracker.caught_up(&key, &ctx.slices, namespace) {
        // The cache's event for our last write queues the Service again; this is a fallback.
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    let node = |n: &str| match ctx.nodes.get("", n) {
        Some(node) => NodeLookup::Found(node.labels().get(LABEL_ZONE).cloned()),
        None => NodeLookup::Missing,
    };
    let mut want = BTreeMap::new();
    let mut skipped = Vec::new();
    for t in desired::address_types(svc) {
        let (groups, s) = desired::desired(svc, &pods, &node, t);
        want.insert(t.to_string(), groups);
        skipped = s;
    }
    if !skipped.is_empty() {
        // Their node's arrival queues the Service again.
        tracing::info!(service = %key, pods = ?skipped, "skipping pods whose node is not known");
    }
    let uid = rudder_api::meta::uid(svc);
    let existing: Vec<Existing> = ctx
        .slices
        .by_index(INDEX_SERVICE, &key)
        .into_iter()
        .filter(|s| managed(s) && !s.is_deleting())
        .map(|s| Existing {
            name: s.name.clone(),
            owned: s
                .owner_references()
                .iter()
                .any(|r| r.uid == uid && r.kind == "Service" && r.api_version == "v1"),
            content: Content::from_json(&s.value),
        })
        .collect();
    let plan = slices::plan(
        &existing,
        &want,
        &desired::slice_labels(svc),
        ctx.max_per_slice,
    );
    if plan.is_empty() {
        return Ok(Action::AwaitChange);
    }
    tracing::debug!(service = %key, create = plan.create.len(), update = plan.update.len(),
        delete = plan.delete.len(), "writing endpoint slices");
    let deleting = rudder_api::meta::is_deleting(svc);
    if let Err(e) = apply(&ctx, &key, svc, plan, deleting).await {
        if !e.is_conflict() {
            ctx.events.warning(
                svc,
                "FailedToUpdateEndpointSlices",
                &format!("Error updating Endpoint Slices for Service {namespace}/{name}: {e}"),
            );
        }
        return Err(e.into());
    }
    Ok(Action::AwaitChange)
}

/// Makes the writes of `plan`, recording each in the tracker.
async fn apply(
    ctx: &Ctx,
    key: &str,
    svc: &Value,
    plan: Plan,
    deleting: bool,
) -> Result<(), ClientError> {
    let namespace = rudder_api::meta::namespace(svc).to_string();
    if !deleting {
        for c in &plan.create {
            let body = desired::new_slice(svc, c);
            let req = pb::CreateRequest {
                kind: Some(kind_ref(SLICE_API_VERSION, SLICE_KIND)),
                namespace: namespace.clone(),
                json: Bytes::from(body.to_string()),
                options: None,
            };
            match ctx.api.create(req).await {
                Ok(o) => ctx.tracker.wrote(key, &o.name, o.resource_version),
                // Nothing can be created in a namespace being deleted: drop it, as Kubernetes.
                Err(ClientError::Forbidden(m)) if m.contains("being terminated") => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    for (name, c) in &plan.update {
        let Some(current) = ctx.slices.get(&namespace, name) else {
            continue;
        };
        let mut body = current.value.clone();
        c.write_into(&mut body);
        let req = pb::UpdateRequest {
            kind: Some(kind_ref(SLICE_API_VERSION, SLICE_KIND)),
            namespace: namespace.clone(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        let o = ctx.api.update(req).await?;
        ctx.tracker.wrote(key, &o.name, o.resource_version);
    }
    for name in &plan.delete {
        if let Some(s) = ctx.slices.get(&namespace, name) {
            delete_slice(ctx, key, &s).await?;
        }
    }
    Ok(())
}

async fn delete_slice(ctx: &Ctx, key: &str, s: &CachedObject) -> Result<(), ClientError> {
    let req = pb::DeleteRequest {
        kind: Some(kind_ref(SLICE_API_VERSION, SLICE_KIND)),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        precondition_uid: s.uid().to_string(),
        ..Default::default()
    };
    match ctx.api.delete(req).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    ctx.tracker.deleted(key, &s.name, s.uid());
    Ok(())
}

/// The Service is gone: its managed slices go too.
async fn delete_leftovers(ctx: &Ctx, key: &str, namespace: &str) -> Result<(), Error> {
    let left: Vec<Arc<CachedObject>> = ctx
        .slices
        .by_index(INDEX_SERVICE, key)
        .into_iter()
        .filter(|s| managed(s) && !s.is_deleting() && s.namespace == namespace)
        .collect();
    for s in &left {
        delete_slice(ctx, key, s).await?;
    }
    if left.is_empty() {
        ctx.tracker.forget(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
