//! The namespace controller, as Kubernetes' `namespace` controller: it empties a terminating
//! namespace and then releases it.
//!
//! The API server only marks a deleted namespace (`deletionTimestamp`, `status.phase:
//! Terminating`) and keeps it while its `spec.finalizers` holds `kubernetes`. For such a
//! namespace, each pass:
//! 1. reads the namespace afresh and asks discovery (`Api::api_resources`) for every namespaced
//!    kind the server serves, in its preferred version (custom kinds included as the server
//!    serves them);
//! 2. deletes the pods first ([`content::delete_all`]: live lists, each object deleted with
//!    propagation Background, pods with their grace period) and, while any pod is left, nothing
//!    else (Kubernetes' ordered namespace deletion, GA in 1.34: workloads stop before the
//!    objects they use go);
//! 3. then deletes every other kind, and reports what is left;
//! 4. writes the namespace's conditions ([`conditions`]: discovery, group/version parsing,
//!    content deletion failures, content and finalizers remaining), guarded by the
//!    resourceVersion it read, only when they change;
//! 5. with nothing left and nothing failed, removes `kubernetes` from `spec.finalizers`
//!    (`Api::finalize`, the `namespaces/finalize` subresource), and the server removes the
//!    namespace once no finalizer of either kind is left.
//!
//! A pass that failed (discovery, a list or a delete) is retried with the work queue's
//! back-off (5 ms doubling to 60 s, as Kubernetes' namespace queue); one that left content is
//! looked at again after Kubernetes' estimate (half the longest pod grace period or finalizer
//! estimate, plus a second), sooner while the namespace is young (see
//! [`content::requeue_after`]), and whenever a pod in a terminating namespace goes (pods are
//! the common long wait). Active namespaces are left alone. A terminating namespace whose
//! `kubernetes` finalizer someone already removed still has its content deleted: Rudder's
//! store never removes a namespace that holds objects, so finishing the job is the only way
//! it can go. No Events, as Kubernetes.

mod conditions;
mod content;

pub use conditions::{
    CONTENT_FAILURE, CONTENT_REMAINING, DISCOVERY_FAILURE, FINALIZERS_REMAINING, Findings,
    GV_PARSING_FAILURE,
};
pub use content::requeue_after;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::{Key, QueueConfig, WorkQueue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::{parse_time, rfc3339};
use content::Resource;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "namespace",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// The controller's token in `spec.finalizers`.
pub const FINALIZER: &str = rudder_api::meta::NAMESPACE_FINALIZER;

pub struct Ctx {
    pub api: Arc<dyn Api>,
    pub clock: SharedClock,
    pub namespaces: Reader,
}

async fn run(env: Env, cancel: CancellationToken) {
    let namespaces = env.informers.for_kind("v1", "Namespace");
    let pods = env.informers.for_kind("v1", "Pod");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        namespaces: namespaces.reader(),
    });
    // Kubernetes' namespace queue: failures back off from 5 ms to 60 s.
    let queue = WorkQueue::with_clock(
        QueueConfig {
            max_delay: Duration::from_secs(60),
            ..QueueConfig::default()
        },
        Arc::clone(&env.clock),
    );
    Controller::new(ctx)
        .named("namespace")
        .with_queue(queue)
        .workers(env.workers)
        .watches(namespaces.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(namespaces.reader()))
        .run(reconcile, policy, cancel)
        .await;
}

/// A pod that went, in a terminating namespace: that namespace may be ready for its next step.
pub fn pod_mapper(namespaces: Reader) -> Mapper {
    Box::new(move |ev| {
        let gone: Vec<&Arc<CachedObject>> = match ev {
            ReflectorEvent::Deleted(p) => vec![p],
            // A relist may hide deletions.
            ReflectorEvent::Restarted(all) => all.iter().collect(),
            _ => return Vec::new(),
        };
        let mut keys: Vec<Key> = gone
            .iter()
            .filter_map(|p| namespaces.get("", &p.namespace))
            .filter(|ns| ns.is_deleting())
            .map(|ns| ns.key())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    })
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(cached) = ctx.namespaces.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    if !cached.is_deleting() {
        return Ok(Action::AwaitChange);
    }
    // The cache may lag: act on the namespace as stored.
    let ns = match ctx
        .api
        .get(pb::GetRequest {
            kind: Some(kind_ref("v1", "Namespace")),
            namespace: String::new(),
            name: cached.name.clone(),
            allow_stale: false,
        })
        .await
    {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(Action::AwaitChange),
        Err(e) => return Err(e.into()),
    };
    let Some(ns) = CachedObject::from_wire(&ns) else {
        return Ok(Action::AwaitChange);
    };
    if !ns.is_deleting() {
        return Ok(Action::AwaitChange);
    }
    let now = ctx.clock.now();
    let (findings, estimate) = sweep(ctx.api.as_ref(), &ns.name, now).await;
    let rv = write_conditions(ctx.api.as_ref(), &ns, &findings, now).await?;
    if findings.failed() {
        let why = findings
            .failing()
            .into_iter()
            .filter(|(t, _, _)| {
                [DISCOVERY_FAILURE, GV_PARSING_FAILURE, CONTENT_FAILURE].contains(t)
            })
            .map(|(_, _, m)| m)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Api(rudder_client::ClientError::Other(format!(
            "deleting the content of namespace {}: {why}",
            ns.name
        ))));
    }
    if findings.remaining_total() > 0 {
        let since = parse_time(ns.value.pointer("/metadata/deletionTimestamp"))
            .map(|t| (now.as_second() - t.as_second()).max(0) as u64)
            .unwrap_or(0);
        return Ok(Action::Requeue(requeue_after(estimate, since)));
    }
    let fs = rudder_api::meta::spec_finalizers(&ns.value);
    if fs.iter().any(|f| f == FINALIZER) {
        let rest: Vec<&String> = fs.iter().filter(|f| *f != FINALIZER).collect();
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns.name, "resourceVersion": rv.to_string()},
            "spec": {"finalizers": rest}});
        match ctx
            .api
            .finalize(pb::UpdateRequest {
                kind: Some(kind_ref("v1", "Namespace")),
                namespace: String::new(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
        {
            Ok(_) => tracing::info!(namespace = %ns.name, "namespace emptied and finalized"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::AwaitChange)
}

/// One pass over the namespace's content: pods first, the rest once no pod is left. Returns
/// what was found and the longest estimate of what is left, in seconds.
async fn sweep(api: &dyn Api, ns: &str, now: jiff::Timestamp) -> (Findings, u64) {
    let mut findings = Findings::default();
    let resources = match api.api_resources().await {
        Ok(d) => d.resources,
        Err(e) => {
            findings.discovery = Some(e.to_string());
            return (findings, 0);
        }
    };
    let (resources, bad) = content::namespaced(&resources);
    findings.group_versions = bad;
    let (pods, rest): (Vec<Resource>, Vec<Resource>) =
        resources.into_iter().partition(Resource::is_pod);
    let mut estimate = 0;
    for phase in [pods, rest] {
        for r in &phase {
            let left = content::delete_all(api, r, ns, now).await;
            if let Some(e) = left.error {
                findings.content.push(e);
            }
            if left.count > 0 {
                findings.remaining.insert(r.name(), left.count);
            }
            for (f, n) in left.finalizers {
                *findings.finalizers.entry(f).or_default() += n;
            }
            estimate = estimate.max(left.estimate_secs);
        }
        // Ordered deletion: nothing else goes while pods are left.
        if findings.remaining_total() > 0 || findings.failed() {
            break;
        }
    }
    (findings, estimate)
}

/// Writes the namespace's phase and conditions when they change, guarded by the version read;
/// returns the namespace's resourceVersion afterwards.
async fn write_conditions(
    api: &dyn Api,
    ns: &CachedObject,
    findings: &Findings,
    now: jiff::Timestamp,
) -> Result<u64, Error> {
    let old: Vec<Value> = ns
        .value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let merged = conditions::merge(&old, findings, &rfc3339(now));
    let phase = ns.value.pointer("/status/phase").and_then(Value::as_str);
    if merged == old && phase == Some("Terminating") {
        return Ok(ns.resource_version);
    }
    let patch = json!({
        "metadata": {"resourceVersion": ns.resource_version.to_string()},
        "status": {"phase": "Terminating", "conditions": merged},
    });
    let req = pb::PatchRequest {
        kind: Some(kind_ref("v1", "Namespace")),
        namespace: String::new(),
        name: ns.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(patch.to_string()),
        status: true,
        options: None,
    };
    Ok(api.patch(req).await?.resource_version)
}

#[cfg(test)]
mod tests;
