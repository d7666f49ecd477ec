//! A StatefulSet pod's stable identity, pure (Kubernetes' `stateful_set_utils.go`): its name
//! `<set>-<ordinal>`, the labels `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index`, hostname and subdomain, its claims `<claim>-<set>-<ordinal>`
//! mounted in place of the template's volumes of the same name, and which owner references
//! the retention policy wants on those claims.

use std::sync::Arc;

use rudder_client::cache::CachedObject;
use serde_json::{Map, Value, json};

use super::Ss;
use crate::util::revision::POD_REVISION_LABEL;
use crate::util::str_at;
use crate::util::template::pod_from_template;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The set name and ordinal a pod name carries (`getParentNameAndOrdinal`); `None` when the
/// name does not end in `-<digits>`.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i64)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The ordinal of a pod of the set, if its name is one.
pub fn ordinal(pod: &CachedObject) -> Option<i64> {
    parent_and_ordinal(&pod.name).map(|(_, o)| o)
}

/// Whether the pod's name makes it one of the set's (`isMemberOf`).
pub fn is_member(set_name: &str, pod_name: &str) -> bool {
    parent_and_ordinal(pod_name).is_some_and(|(p, _)| p == set_name)
}

pub fn pod_name(set: &str, ordinal: i64) -> String {
    format!("{set}-{ordinal}")
}

pub fn claim_name(template: &str, set: &str, ordinal: i64) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The revision a pod is of (its `controller-revision-hash` label, a revision name).
pub fn revision_of(pod: &CachedObject) -> String {
    pod.labels()
        .get(POD_REVISION_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// The claims of the pod with `ordinal`, by claim template name (`getPersistentVolumeClaims`):
/// each template named `<claim>-<set>-<ordinal>` in the set's namespace, with the set's selector
/// labels added to its own.
pub fn claims(ss: &Ss, ordinal: i64) -> Vec<(String, Value)> {
    ss.claim_templates
        .iter()
        .filter_map(|t| {
            let tname = str_at(t, "/metadata/name");
            if tname.is_empty() {
                return None;
            }
            let mut meta = t
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for server_owned in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                meta.remove(server_owned);
            }
            let name = claim_name(tname, &ss.obj.name, ordinal);
            meta.insert("name".into(), json!(name));
            meta.insert("namespace".into(), json!(ss.obj.namespace));
            let mut labels = meta
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in &ss.match_labels {
                labels.insert(k.clone(), v.clone());
            }
            meta.insert("labels".into(), Value::Object(labels));
            let body = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta,
                "spec": t.get("spec").cloned().unwrap_or_else(|| json!({})),
            });
            Some((tname.to_string(), body))
        })
        .collect()
}

/// The pod spec's volumes with each claim template mounted as its claim (`updateStorage`).
fn with_storage(ss: &Ss, spec: &Value, ordinal: i64) -> Vec<Value> {
    let claims = claims(ss, ordinal);
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|(t, c)| {
            json!({"name": t, "persistentVolumeClaim": {"claimName": c["metadata"]["name"]}})
        })
        .collect();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !claims.iter().any(|(t, _)| t == str_at(v, "/name")) {
            volumes.push(v.clone());
        }
    }
    volumes
}

/// The pod with `ordinal` made from `template` (a revision's) at revision `revision`
/// (`newVersionedStatefulSetPod`): named, labelled, with hostname, subdomain and its claims.
pub fn new_pod(ss: &Ss, template: &Value, revision: &str, ordinal: i64) -> Value {
    let name = pod_name(&ss.obj.name, ordinal);
    let mut pod = pod_from_template(template, &ss.obj.namespace, &ss.obj.value, "", Some(&name));
    let labels = pod["metadata"]
        .as_object_mut()
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(l) = labels.and_then(Value::as_object_mut) {
        l.insert(POD_NAME_LABEL.into(), json!(name));
        l.insert(POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
        l.insert(POD_REVISION_LABEL.into(), json!(revision));
    }
    let volumes = with_storage(ss, &pod["spec"], ordinal);
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.insert("hostname".into(), json!(name));
        if !ss.service_name.is_empty() {
            spec.insert("subdomain".into(), json!(ss.service_name));
        }
        if !volumes.is_empty() {
            spec.insert("volumes".into(), Value::Array(volumes));
        }
    }
    pod
}

/// The identity labels a pod lacks or has wrong (`identityMatches`); empty when it matches.
pub fn identity_fix(pod: &CachedObject) -> Map<String, Value> {
    let mut fix = Map::new();
    let Some(ord) = ordinal(pod) else {
        return fix;
    };
    let labels = pod.labels();
    for (k, v) in [
        (POD_NAME_LABEL, pod.name.clone()),
        (POD_INDEX_LABEL, ord.to_string()),
    ] {
        if labels.get(k) != Some(&v) {
            fix.insert(k.into(), json!(v));
        }
    }
    fix
}

/// Whether every claim template is mounted as its claim (`storageMatches`).
pub fn storage_matches(ss: &Ss, pod: &CachedObject) -> bool {
    let Some(ord) = ordinal(pod) else {
        return false;
    };
    let volumes = pod
        .value
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    claims(ss, ord).iter().all(|(t, c)| {
        volumes.iter().any(|v| {
            str_at(v, "/name") == t
                && v.pointer("/persistentVolumeClaim/claimName") == Some(&c["metadata"]["name"])
        })
    })
}

/// Whether a pod with `ordinal` is within the set's ordinals.
pub fn in_range(ss: &Ss, ordinal: i64) -> bool {
    ordinal >= ss.start && ordinal < ss.start + ss.replicas
}

fn plain_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": owner.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    })
}

/// The owner references the retention policy wants on a claim of `pod`
/// (`updateClaimOwnerRefForSetAndPod`): the set when `whenDeleted: Delete` (and the pod is not
/// scaled down under `whenScaled: Delete`), the pod when it is scaled down under
/// `whenScaled: Delete`; references to anything else are kept. `None` when nothing changes.
pub fn wanted_claim_refs(ss: &Ss, claim: &CachedObject, pod: &Value) -> Option<Vec<Value>> {
    let ord = parent_and_ordinal(str_at(pod, "/metadata/name"))
        .map(|(_, o)| o)
        .unwrap_or(-1);
    let scaled_down = !in_range(ss, ord);
    let (want_set, want_pod) = match (ss.retention.when_deleted, ss.retention.when_scaled) {
        (false, false) => (false, false),
        (true, false) => (true, false),
        (false, true) => (false, scaled_down),
        (true, true) => (!scaled_down, scaled_down),
    };
    let current: Vec<Value> = claim
        .value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let set_uid = ss.obj.uid();
    let pod_uid = str_at(pod, "/metadata/uid");
    let is = |r: &Value, uid: &str| !uid.is_empty() && str_at(r, "/uid") == uid;
    let mut refs: Vec<Value> = current
        .iter()
        .filter(|r| !is(r, set_uid) && !is(r, pod_uid))
        .cloned()
        .collect();
    let keep_or_add =
        |refs: &mut Vec<Value>, uid: &str, owner: &Value| match current.iter().find(|r| is(r, uid))
        {
            Some(r) => refs.push(r.clone()),
            None => refs.push(plain_ref(owner)),
        };
    if want_set {
        keep_or_add(&mut refs, set_uid, &ss.obj.value);
    }
    if want_pod && !pod_uid.is_empty() {
        let mut owner = pod.clone();
        owner["apiVersion"] = json!("v1");
        owner["kind"] = json!("Pod");
        keep_or_add(&mut refs, pod_uid, &owner);
    }
    let same = refs.len() == current.len() && refs.iter().all(|r| current.contains(r));
    (!same).then_some(refs)
}

/// Whether a claim is held by an earlier pod of the same name (`hasStaleOwnerRef`): a pod
/// reference naming `pod_name` with another uid (any uid, when the pod does not exist yet).
pub fn is_stale(claim: &CachedObject, pod_name: &str, pod_uid: &str) -> bool {
    claim
        .owner_references()
        .iter()
        .any(|r| r.kind == "Pod" && r.name == pod_name && r.uid != pod_uid)
}

/// Pods sorted by ordinal, highest first (`descendingOrdinal`).
pub fn sort_descending(pods: &mut [Arc<CachedObject>]) {
    pods.sort_by_key(|p| std::cmp::Reverse(ordinal(p).unwrap_or(-1)));
}
