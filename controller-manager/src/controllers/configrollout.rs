//! Rollout on config change: a Deployment annotated `rudder.io/rollout-on-config-change: "true"`
//! rolls out when a ConfigMap or Secret its pod template references changes (Kubernetes issue
//! 22368 left this to users). A Rudder controller of its own, beside the Deployment controller:
//! it only changes the pod template, and the Deployment controller rolls that out like any
//! template change, gated by readiness, held while paused, recorded in the revision history.
//!
//! Each reconcile of an annotated Deployment:
//! 1. lists the configs its template references ([`refs::references`]) and their versions, the
//!    resourceVersions in the caches (`absent` for a missing one), as a sorted version string
//!    `configmap/web=12,secret/db=absent`, and a short hash of it;
//! 2. compares with what it recorded on the Deployment's metadata (`rudder.io/config-hash`,
//!    and the version string in `rudder.io/config-versions`, which names what changed):
//!    - nothing recorded (a new Deployment, or one just annotated): record only, no rollout;
//!    - a config's version changed: one merge patch, on the Deployment's resourceVersion, that
//!      sets the hash as pod template annotation `rudder.io/config-hash` (the change that
//!      rolls), records the new state and sets `kubernetes.io/change-cause` to
//!      `config change: configmap/web@13`, which the new ReplicaSet inherits for
//!      `rudder rollout history`; a `ConfigChanged` Event names the changed configs;
//!    - only the set of references changed (the template was edited, which rolls by itself), or
//!      a required config went missing (a new pod could not start): record only; the latter
//!      with a `ConfigMissing` warning. Its creation later is a change, and rolls.
//!
//! Versions, not contents, are hashed, so no Secret data reaches the Deployment. A write that
//! stores no change keeps the config's resourceVersion and rolls nothing. Without the
//! annotation the controller never writes; removing it stops it (the record stays).

mod refs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use refs::{ConfigKind, ConfigRef, Versions, parse_version_string, references, version_string};

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::hash::template_hash;
use crate::util::merge_patch;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "config-rollout",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// The opt-in annotation on a Deployment (value `"true"`).
pub const ENABLED: &str = "rudder.io/rollout-on-config-change";
/// The hash of the referenced configs' versions: recorded on the Deployment's metadata, and
/// set on its pod template to roll.
pub const CONFIG_HASH: &str = "rudder.io/config-hash";
/// The version string the recorded hash was made from (Deployment metadata).
pub const CONFIG_VERSIONS: &str = "rudder.io/config-versions";
/// kubectl's revision note, copied onto the new ReplicaSet by the Deployment controller.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Deployment cache index: `<namespace>/configmap/<name>` (or `secret`) → the opted-in
/// Deployments referencing it.
const INDEX_REFS: &str = "rudder.io/config-refs";

struct Ctx {
    api: Arc<dyn Api>,
    events: EventRecorder,
    deployments: Reader,
    configmaps: Reader,
    secrets: Reader,
}

impl Ctx {
    fn version_of(&self, namespace: &str, r: &ConfigRef) -> Option<u64> {
        let cache = match r.kind {
            ConfigKind::ConfigMap => &self.configmaps,
            ConfigKind::Secret => &self.secrets,
        };
        cache.get(namespace, &r.name).map(|o| o.resource_version)
    }
}

fn annotation<'a>(obj: &'a CachedObject, key: &str) -> Option<&'a str> {
    obj.value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Whether the Deployment opted in.
pub fn enabled(d: &CachedObject) -> bool {
    annotation(d, ENABLED) == Some("true")
}

fn template(d: &CachedObject) -> &Value {
    d.value.pointer("/spec/template").unwrap_or(&Value::Null)
}

fn index_value(namespace: &str, r: &ConfigRef) -> String {
    format!("{namespace}/{}", r.label())
}

/// Files an opted-in Deployment under every config it references.
fn index_refs(d: &CachedObject) -> Vec<String> {
    if !enabled(d) {
        return Vec::new();
    }
    references(template(d))
        .keys()
        .map(|r| index_value(&d.namespace, r))
        .collect()
}

/// A ConfigMap or Secret event reaches the opted-in Deployments of its namespace that
/// reference it; a relist reaches every opted-in Deployment.
fn config_mapper(kind: ConfigKind, deployments: Reader) -> Mapper {
    Box::new(move |ev| {
        let mut keys: Vec<Key> = match ev {
            ReflectorEvent::Restarted(_) => deployments
                .list()
                .into_iter()
                .filter(|d| enabled(d))
                .map(|d| d.key())
                .collect(),
            _ => ev
                .objects()
                .into_iter()
                .flat_map(|o| {
                    let r = ConfigRef::new(kind, &o.name);
                    deployments.by_index(INDEX_REFS, &index_value(&o.namespace, &r))
                })
                .map(|d| d.key())
                .collect(),
        };
        keys.sort();
        keys.dedup();
        keys
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let deployments = env.informers.for_kind("apps/v1", "Deployment");
    deployments.ensure_index(INDEX_REFS, Arc::new(index_refs));
    let configmaps = env.informers.for_kind("v1", "ConfigMap");
    let secrets = env.informers.for_kind("v1", "Secret");
    let (events, events_task) = env.recorder("config-rollout");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        events,
        deployments: deployments.reader(),
        configmaps: configmaps.reader(),
        secrets: secrets.reader(),
    });
    Controller::new(ctx)
        .named("config-rollout")
        .workers(env.workers)
        .watches(deployments.subscribe(), self_mapper())
        .watches(
            configmaps.subscribe(),
            config_mapper(ConfigKind::ConfigMap, deployments.reader()),
        )
        .watches(
            secrets.subscribe(),
            config_mapper(ConfigKind::Secret, deployments.reader()),
        )
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// The short hash of a version string (the pod-template hash's encoding).
pub fn config_hash(version_string: &str) -> String {
    template_hash(&Value::String(version_string.to_string()), None)
}

/// What a reconcile does, given the record and the current versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The record is current.
    Nothing,
    /// Record the current versions, template untouched; `missing` names the required configs
    /// that went missing since the record (`configmap/web`).
    Record { missing: Vec<String> },
    /// Roll out: the configs whose version changed, as `configmap/web@13`.
    Roll { changed: Vec<String> },
}

/// Compares the recorded hash and version string with `current`; `required` says which
/// references are required (see [`references`]).
pub fn decide(
    recorded_hash: Option<&str>,
    recorded_versions: Option<&str>,
    required: &BTreeMap<ConfigRef, bool>,
    current: &Versions,
) -> Decision {
    let Some(recorded) = recorded_hash else {
        return Decision::Record {
            missing: Vec::new(),
        };
    };
    if recorded == config_hash(&version_string(current)) {
        return Decision::Nothing;
    }
    // Without a readable version string we cannot tell what changed: every reference counts.
    let previous = recorded_versions.and_then(parse_version_string);
    let (mut changed, mut missing) = (Vec::new(), Vec::new());
    for (r, rv) in current {
        let (label, now) = (r.label(), refs::render(*rv));
        let differs = previous
            .as_ref()
            .is_none_or(|p| p.get(&label).is_some_and(|before| *before != now));
        if differs {
            changed.push(format!("{label}@{now}"));
            if rv.is_none() && required.get(r).copied().unwrap_or(true) {
                missing.push(label);
            }
        }
    }
    // Only required configs vanished: a new pod could not start, so the running ones stay.
    if changed.is_empty() || changed.len() == missing.len() {
        return Decision::Record { missing };
    }
    Decision::Roll { changed }
}

/// Reconciles one Deployment by key.
async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(d) = ctx.deployments.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    if !enabled(&d) || d.is_deleting() {
        return Ok(Action::AwaitChange);
    }
    let required = references(template(&d));
    let current: Versions = required
        .keys()
        .map(|r| (r.clone(), ctx.version_of(&d.namespace, r)))
        .collect();
    let versions = version_string(&current);
    let hash = config_hash(&versions);
    let decision = decide(
        annotation(&d, CONFIG_HASH),
        annotation(&d, CONFIG_VERSIONS),
        &required,
        &current,
    );
    let mut patch = json!({"metadata": {
        // A stale cache ends in a conflict and a retry, never in a rollout decided on it.
        "resourceVersion": d.resource_version.to_string(),
        "annotations": {CONFIG_HASH: hash, CONFIG_VERSIONS: versions},
    }});
    match &decision {
        Decision::Nothing => return Ok(Action::AwaitChange),
        Decision::Record { .. } => {}
        Decision::Roll { changed } => {
            let cause = format!("config change: {}", changed.join(", "));
            patch["metadata"]["annotations"][CHANGE_CAUSE] = json!(cause);
            patch["spec"] = json!({"template": {"metadata": {"annotations": {CONFIG_HASH: hash}}}});
        }
    }
    ctx.api.patch(merge_patch(&d, &patch)).await?;
    match decision {
        Decision::Roll { changed } => {
            let paused = d
                .value
                .pointer("/spec/paused")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let held = if paused {
                "; the Deployment is paused, so the rollout starts when it is resumed"
            } else {
                ""
            };
            ctx.events.normal(
                &d.value,
                "ConfigChanged",
                &format!(
                    "Rolling out for config change: {}{held}",
                    changed.join(", ")
                ),
            );
        }
        Decision::Record { missing } if !missing.is_empty() => {
            ctx.events.warning(
                &d.value,
                "ConfigMissing",
                &format!(
                    "Referenced config {} does not exist; no rollout until it is created",
                    missing.join(", ")
                ),
            );
        }
        _ => {}
    }
    Ok(Action::AwaitChange)
}
