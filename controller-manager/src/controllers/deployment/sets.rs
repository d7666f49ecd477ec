//! A Deployment's ReplicaSets: which one is new (its template is the Deployment's), creating it
//! with the next revision, scaling one, and trimming the history.

use std::sync::Arc;

use bytes::Bytes;
use rudder_client::ClientError;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Map, Value, json};

use super::{
    Ctx, DESIRED_REPLICAS, Dep, MAX_REPLICAS, REVISION, REVISION_HISTORY, TEMPLATE_HASH_LABEL,
};
use crate::error::Error;
use crate::util::hash::template_hash;
use crate::util::template::controller_ref;
use crate::util::{merge_patch, str_at};

/// Deployment annotations not copied onto its ReplicaSets (`skipCopyAnnotation`).
const NOT_COPIED: [&str; 8] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    // A command to the controller, consumed on the Deployment.
    super::canary::ACTION,
    // The config-rollout controller's record of what the Deployment read: copied onto a
    // ReplicaSet, `rollout undo` would bring an old record back and look like a config change.
    "rudder.io/config-hash",
    "rudder.io/config-versions",
];

pub fn spec_replicas(rs: &CachedObject) -> i64 {
    rs.value
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

pub fn status_count(rs: &CachedObject, field: &str) -> i64 {
    rs.value
        .pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn revision(obj: &CachedObject) -> i64 {
    annotation(obj, REVISION).parse().unwrap_or(0)
}

pub fn annotation<'a>(obj: &'a CachedObject, key: &str) -> &'a str {
    obj.value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether two pod templates are equal once the `pod-template-hash` label is ignored
/// (`EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(labels) = t
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(TEMPLATE_HASH_LABEL);
        }
        t
    };
    strip(a) == strip(b)
}

/// The Deployment and the ReplicaSets it controls, updated in place as the reconcile writes.
pub struct View {
    pub d: Dep,
    pub all: Vec<Arc<CachedObject>>,
    /// Index of the new ReplicaSet in `all`, once found or created.
    pub new: Option<usize>,
    /// Name of a ReplicaSet this reconcile created (for the Progressing condition).
    pub created: Option<String>,
    /// A Progressing condition a canary or rollback decided (status, reason, message), in
    /// place of the progress estimate.
    pub progressing: Option<(&'static str, &'static str, String)>,
}

impl View {
    pub fn new(d: Dep, mut all: Vec<Arc<CachedObject>>) -> View {
        // Oldest first, as `FindNewReplicaSet` and the scale-down order want.
        all.sort_by(|a, b| {
            str_at(&a.value, "/metadata/creationTimestamp")
                .cmp(str_at(&b.value, "/metadata/creationTimestamp"))
                .then_with(|| a.name.cmp(&b.name))
        });
        View {
            d,
            all,
            new: None,
            created: None,
            progressing: None,
        }
    }

    /// Finds the ReplicaSet whose template is the Deployment's (the oldest, if several).
    pub fn find_new(&mut self) {
        self.new = self.all.iter().position(|rs| {
            rs.value
                .pointer("/spec/template")
                .is_some_and(|t| equal_ignore_hash(t, &self.d.template))
        });
    }

    pub fn new_rs(&self) -> Option<&Arc<CachedObject>> {
        self.new.map(|i| &self.all[i])
    }

    /// Indexes of the old ReplicaSets, oldest first.
    pub fn old(&self) -> Vec<usize> {
        (0..self.all.len())
            .filter(|&i| Some(i) != self.new)
            .collect()
    }

    /// Old ReplicaSets that still want pods (`FilterActiveReplicaSets`).
    pub fn active_old(&self) -> Vec<usize> {
        self.old()
            .into_iter()
            .filter(|&i| spec_replicas(&self.all[i]) > 0)
            .collect()
    }

    fn replace(&mut self, obj: &pb::Object) {
        if let Some(o) = CachedObject::from_wire(obj)
            && let Some(slot) = self.all.iter_mut().find(|r| r.name == o.name)
        {
            *slot = Arc::new(o);
        }
    }
}

fn copied_annotations(d: &CachedObject) -> Map<String, Value> {
    d.value
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the new ReplicaSet, raising its revision above the old ones', or creates it (when
/// `create`) sized by `initial(view)`; keeps the Deployment's revision annotation in step.
pub async fn ensure_new(
    ctx: &Ctx,
    view: &mut View,
    create: bool,
    initial: impl Fn(&View) -> i64,
) -> Result<(), Error> {
    view.find_new();
    let max_old = view
        .old()
        .into_iter()
        .map(|i| revision(&view.all[i]))
        .max()
        .unwrap_or(0);
    let next = max_old + 1;
    if let Some(i) = view.new {
        let rs = Arc::clone(&view.all[i]);
        let current = revision(&rs);
        let mut annotations = copied_annotations(&view.d.obj);
        if current < next {
            annotations.insert(REVISION.into(), json!(next.to_string()));
            if current > 0 {
                let mut history: Vec<String> = annotation(&rs, REVISION_HISTORY)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                history.push(current.to_string());
                annotations.insert(REVISION_HISTORY.into(), json!(history.join(",")));
            }
        }
        let min_ready_differs = rs
            .value
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != view.d.min_ready;
        let stale = annotations
            .iter()
            .any(|(k, v)| Some(v.as_str().unwrap_or("")) != Some(annotation(&rs, k)));
        if stale || min_ready_differs {
            let patch = json!({
                "metadata": {"resourceVersion": rs.resource_version.to_string(), "annotations": annotations},
                "spec": {"minReadySeconds": view.d.min_ready},
            });
            let updated = ctx.api.patch(merge_patch(&rs, &patch)).await?;
            view.replace(&updated);
        }
        let rev = revision(&view.all[i]);
        return set_deployment_revision(ctx, &view.d.obj, rev).await;
    }
    if !create {
        return Ok(());
    }
    let d = &view.d;
    let hash = template_hash(&d.template, d.collision_count);
    let mut template = d.template.clone();
    template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = json!(hash);
    let mut selector = d
        .obj
        .value
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    selector["matchLabels"][TEMPLATE_HASH_LABEL] = json!(hash);
    let mut annotations = copied_annotations(&d.obj);
    annotations.insert(REVISION.into(), json!(next.to_string()));
    annotations.insert(DESIRED_REPLICAS.into(), json!(d.replicas.to_string()));
    annotations.insert(
        MAX_REPLICAS.into(),
        json!((d.replicas + d.max_surge()).to_string()),
    );
    let replicas = initial(view);
    let name = format!("{}-{hash}", d.obj.name);
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": d.obj.namespace,
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [controller_ref(&d.obj.value)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": d.min_ready,
            "selector": selector,
            "template": template,
        },
    });
    let req = pb::CreateRequest {
        kind: Some(kind_ref("apps/v1", "ReplicaSet")),
        namespace: d.obj.namespace.clone(),
        json: Bytes::from(rs.to_string()),
        options: None,
    };
    match ctx.api.create(req).await {
        Ok(created) => {
            if replicas > 0 {
                ctx.events.normal(
                    &d.obj.value,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
            }
            if let Some(o) = CachedObject::from_wire(&created) {
                view.all.push(Arc::new(o));
                view.new = Some(view.all.len() - 1);
            }
            view.created = Some(name);
            set_deployment_revision(ctx, &view.d.obj, next).await
        }
        Err(ClientError::AlreadyExists(_)) => collided(ctx, view, &name).await,
        Err(e) => Err(e.into()),
    }
}

/// The name is taken: ours already (the cache lags), or someone else's, in which case the
/// collision count is raised so the next attempt hashes to another name.
async fn collided(ctx: &Ctx, view: &mut View, name: &str) -> Result<(), Error> {
    let d = &view.d;
    let existing = ctx
        .api
        .get(pb::GetRequest {
            kind: Some(kind_ref("apps/v1", "ReplicaSet")),
            namespace: d.obj.namespace.clone(),
            name: name.to_string(),
            allow_stale: false,
        })
        .await?;
    if let Some(o) = CachedObject::from_wire(&existing)
        && o.is_controlled_by(&d.obj)
        && o.value
            .pointer("/spec/template")
            .is_some_and(|t| equal_ignore_hash(t, &d.template))
    {
        view.all.push(Arc::new(o));
        view.new = Some(view.all.len() - 1);
        return Ok(());
    }
    let count = d.collision_count.unwrap_or(0) + 1;
    rudder_client::write::patch_status(ctx.api.as_ref(), &d.obj, json!({"collisionCount": count}))
        .await?;
    Err(ClientError::Conflict(format!(
        "replica set {name} exists and is not this deployment's; collisionCount raised to {count}"
    ))
    .into())
}

async fn set_deployment_revision(ctx: &Ctx, d: &CachedObject, rev: i64) -> Result<(), Error> {
    if revision(d) == rev {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
    ctx.api.patch(merge_patch(d, &patch)).await?;
    Ok(())
}

/// Sets ReplicaSet `i` to `size` replicas with the Deployment's size annotations; returns
/// whether the size changed.
pub async fn scale_rs(ctx: &Ctx, view: &mut View, i: usize, size: i64) -> Result<bool, Error> {
    let rs = Arc::clone(&view.all[i]);
    let from = spec_replicas(&rs);
    let desired = view.d.replicas.to_string();
    let max = (view.d.replicas + view.d.max_surge()).to_string();
    if from == size
        && annotation(&rs, DESIRED_REPLICAS) == desired
        && annotation(&rs, MAX_REPLICAS) == max
    {
        return Ok(false);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": rs.resource_version.to_string(),
            "annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max},
        },
        "spec": {"replicas": size},
    });
    let updated = ctx.api.patch(merge_patch(&rs, &patch)).await?;
    view.replace(&updated);
    if from != size {
        let dir = if size > from { "up" } else { "down" };
        ctx.events.normal(
            &view.d.obj.value,
            "ScalingReplicaSet",
            &format!("Scaled {dir} replica set {} from {from} to {size}", rs.name),
        );
    }
    Ok(from != size)
}

/// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit` (`cleanupDeployment`).
pub async fn cleanup(ctx: &Ctx, view: &View) -> Result<(), Error> {
    let mut empty: Vec<&Arc<CachedObject>> = view
        .old()
        .into_iter()
        .map(|i| &view.all[i])
        .filter(|rs| {
            spec_replicas(rs) == 0 && status_count(rs, "replicas") == 0 && !rs.is_deleting()
        })
        .collect();
    let limit = view.d.history_limit.max(0) as usize;
    if empty.len() <= limit {
        return Ok(());
    }
    empty.sort_by_key(|rs| revision(rs));
    let surplus = empty.len() - limit;
    for rs in empty.into_iter().take(surplus) {
        let req = pb::DeleteRequest {
            kind: Some(kind_ref("apps/v1", "ReplicaSet")),
            namespace: rs.namespace.clone(),
            name: rs.name.clone(),
            precondition_resource_version: rs.resource_version,
            ..Default::default()
        };
        match ctx.api.delete(req).await {
            Ok(_) => tracing::info!(replicaset = %rs.key(), "deleted old revision"),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets (or, with `null`, removes) annotations on ReplicaSet `i`, guarded by its
/// resourceVersion; nothing is sent when they already hold.
pub async fn annotate_rs(
    ctx: &Ctx,
    view: &mut View,
    i: usize,
    changes: &[(&str, Option<String>)],
) -> Result<(), Error> {
    let rs = Arc::clone(&view.all[i]);
    let stale = changes.iter().any(|(k, v)| match v {
        Some(v) => annotation(&rs, k) != v,
        None => rs
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(*k))
            .is_some(),
    });
    if !stale {
        return Ok(());
    }
    let annotations: Map<String, Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": rs.resource_version.to_string(),
        "annotations": annotations,
    }});
    let updated = ctx.api.patch(merge_patch(&rs, &patch)).await?;
    view.replace(&updated);
    Ok(())
}
