//! The DaemonSet's writes: its revision history (`constructHistory`, `cleanupHistory`), the
//! pods a plan creates and deletes (`syncNodes`), and the status.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rudder_client::cache::{CachedObject, INDEX_NAMESPACE};
use serde_json::{Value, json};

use super::nodes::{add_daemon_tolerations, pin_to_node};
use super::plan::{ByNode, Counts, GENERATION_LABEL, Plan, counts};
use super::{BURST, Ctx, Ds};
use crate::claim::claim;
use crate::error::Error;
use crate::podwrite;
use crate::util::batch::slow_start;
use crate::util::merge_patch;
use crate::util::revision::{self, Labels, Limit, POD_REVISION_LABEL};
use crate::util::template::{generate_name_prefix, pod_from_template};

/// The hash a DaemonSet revision gives its pods: its `controller-revision-hash` label, or its
/// name for a revision made without one.
pub fn pod_hash(cr: &CachedObject) -> String {
    cr.labels()
        .get(POD_REVISION_LABEL)
        .cloned()
        .unwrap_or_else(|| cr.name.clone())
}

/// Finds or makes the revision of the current template; returns its pod hash and the old
/// revisions. Several revisions of the current template (a race) are folded into the newest,
/// its pods relabelled to it; a current revision numbered below an old one (a rollback) is
/// renumbered above them.
pub async fn history(
    ctx: &Ctx,
    ds: &Ds,
    collisions: &mut i64,
) -> Result<(String, Vec<Arc<CachedObject>>), Error> {
    let candidates = ctx.revisions.by_index(INDEX_NAMESPACE, &ds.obj.namespace);
    let owned = claim(ctx.api.as_ref(), &ds.obj, &ds.selector, candidates).await?;
    let data = revision::patch_for(&ds.template);
    let (mut current, mut old): (Vec<_>, Vec<_>) =
        owned.into_iter().partition(|r| revision::records(r, &data));
    revision::sort(&mut old);
    let next = revision::next_number(&old);
    revision::sort(&mut current);
    let cur = match current.pop() {
        None => {
            let template_labels: BTreeMap<String, String> = ds
                .template
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let labels = Labels {
                template: &template_labels,
                also_hash: Some(POD_REVISION_LABEL),
            };
            revision::create(ctx.api.as_ref(), &ds.obj, &labels, &data, next, collisions).await?
        }
        Some(keep) => {
            for dup in current {
                relabel_pods(ctx, ds, &pod_hash(&dup), &pod_hash(&keep)).await?;
                revision::delete(ctx.api.as_ref(), &dup).await?;
            }
            if revision::number(&keep) < next {
                revision::renumber(ctx.api.as_ref(), &keep, next).await?
            } else {
                keep
            }
        }
    };
    Ok((pod_hash(&cur), old))
}

/// Moves the DaemonSet's pods labelled `from` to the revision hash `to`.
async fn relabel_pods(ctx: &Ctx, ds: &Ds, from: &str, to: &str) -> Result<(), Error> {
    for p in ctx.pods.owned_by(ds.obj.uid()) {
        if p.labels().get(POD_REVISION_LABEL).map(String::as_str) != Some(from) {
            continue;
        }
        let patch = json!({"metadata": {
            "resourceVersion": p.resource_version.to_string(),
            "labels": {POD_REVISION_LABEL: to},
        }});
        match ctx.api.patch(merge_patch(&p, &patch)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes old revisions beyond the history limit that no pod of the DaemonSet uses.
pub async fn cleanup_history(
    ctx: &Ctx,
    ds: &Ds,
    pods: &[Arc<CachedObject>],
    old: &[Arc<CachedObject>],
) -> Result<(), Error> {
    let live: HashSet<String> = pods
        .iter()
        .filter_map(|p| p.labels().get(POD_REVISION_LABEL).cloned())
        .collect();
    let gone = revision::surplus(
        old,
        |r| live.contains(&pod_hash(r)),
        |_| false,
        ds.history_limit,
        Limit::AllOld,
    );
    for r in gone {
        revision::delete(ctx.api.as_ref(), &r).await?;
    }
    Ok(())
}

/// The template every new pod starts from (`CreatePodTemplate`): the DaemonSet's, labelled
/// with the template generation and the revision hash, with the daemon tolerations.
fn pod_template(ds: &Ds, hash: &str) -> Value {
    let mut t = ds.template.clone();
    if !t.is_object() {
        t = json!({});
    }
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    if !t["metadata"]["labels"].is_object() {
        t["metadata"]["labels"] = json!({});
    }
    t["metadata"]["labels"][GENERATION_LABEL] = json!(ds.generation.to_string());
    t["metadata"]["labels"][POD_REVISION_LABEL] = json!(hash);
    if !t["spec"].is_object() {
        t["spec"] = json!({});
    }
    add_daemon_tolerations(&mut t["spec"]);
    t
}

/// Carries a plan out, at most [`BURST`] creations and deletions, recording each as an
/// expectation first: creations in slow-start batches, deletions at once.
pub async fn apply(ctx: &Ctx, key: &str, ds: &Ds, plan: &Plan, hash: &str) -> Result<(), Error> {
    let create: Vec<&String> = plan.create_on.iter().take(BURST).collect();
    let delete: Vec<&Arc<CachedObject>> = plan.delete.iter().take(BURST).collect();
    if create.is_empty() && delete.is_empty() {
        return Ok(());
    }
    ctx.exp.expect_creations(key, create.len());
    ctx.exp
        .expect_deletions(key, delete.iter().map(|p| p.uid().to_string()));
    let template = pod_template(ds, hash);
    let prefix = generate_name_prefix(&ds.obj.name);
    let next = AtomicUsize::new(0);
    let (ok, mut first) = slow_start(create.len(), 1, || {
        let node = create[next.fetch_add(1, Ordering::SeqCst)];
        create_pod(ctx, ds, &template, &prefix, node)
    })
    .await;
    // No event will come for what was not created.
    for _ in ok..create.len() {
        ctx.exp.creation_observed(key);
    }
    let results = futures::future::join_all(delete.iter().map(|p| delete_pod(ctx, ds, p))).await;
    for (p, r) in delete.iter().zip(results) {
        if let Err(e) = r {
            ctx.exp.deletion_observed(key, p.uid());
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

async fn create_pod(
    ctx: &Ctx,
    ds: &Ds,
    template: &Value,
    prefix: &str,
    node: &str,
) -> Result<(), Error> {
    let mut t = template.clone();
    pin_to_node(&mut t["spec"], node);
    let pod = pod_from_template(&t, &ds.obj.namespace, &ds.obj.value, prefix, None);
    podwrite::create(ctx.api.as_ref(), &ctx.events, &ds.obj.value, &pod).await?;
    Ok(())
}

async fn delete_pod(ctx: &Ctx, ds: &Ds, pod: &CachedObject) -> Result<(), Error> {
    Ok(podwrite::delete(ctx.api.as_ref(), &ctx.events, &ds.obj.value, pod).await?)
}

/// Writes the status counts (`observedGeneration` moves only when `observed`: the pass acted
/// on this generation); skipped when nothing changed. Returns the counts.
pub async fn write_status(
    ctx: &Ctx,
    ds: &Ds,
    nodes: &[Arc<CachedObject>],
    pods: &ByNode,
    hash: &str,
    collisions: i64,
    observed: bool,
) -> Result<Counts, Error> {
    let c = counts(ds, nodes, pods, hash, ctx.clock.now());
    let generation = if observed {
        ds.obj.generation()
    } else {
        ds.obj.observed_generation()
    };
    let mut status = json!({
        "desiredNumberScheduled": c.desired,
        "currentNumberScheduled": c.current,
        "numberMisscheduled": c.misscheduled,
        "numberReady": c.ready,
        "numberAvailable": c.available,
        "numberUnavailable": c.desired - c.available,
        "updatedNumberScheduled": c.updated,
        "observedGeneration": generation,
    });
    if collisions > 0 || ds.obj.value.pointer("/status/collisionCount").is_some() {
        status["collisionCount"] = json!(collisions);
    }
    let current = ds.obj.value.get("status").cloned().unwrap_or(Value::Null);
    let same = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| current.get(k) == Some(v)));
    if !same {
        rudder_client::write::patch_status(ctx.api.as_ref(), &ds.obj, status).await?;
    }
    Ok(c)
}
