//! Generic access to an object's `metadata` on untyped JSON, for the server's kind-independent
//! machinery (uid, resourceVersion, generation, finalizers, labels).

use serde_json::{Map, Value};

/// Borrowed view of a JSON object's metadata fields.
pub fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// Mutable metadata, created if absent.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = match obj {
        Value::Object(m) => m,
        other => {
            *other = Value::Object(Map::new());
            match other {
                Value::Object(m) => m,
                _ => unreachable!("just assigned an object"),
            }
        }
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("ensured an object above"),
    }
}

pub fn str_field<'a>(obj: &'a Value, field: &str) -> &'a str {
    metadata(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    str_field(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    str_field(obj, "namespace")
}

pub fn uid(obj: &Value) -> &str {
    str_field(obj, "uid")
}

/// `metadata.resourceVersion` as a number; 0 when absent or not a number.
pub fn resource_version(obj: &Value) -> u64 {
    str_field(obj, "resourceVersion").parse().unwrap_or(0)
}

pub fn generation(obj: &Value) -> i64 {
    metadata(obj)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    string_list(obj, "/metadata/finalizers")
}

/// The strings of the JSON array at `pointer`; empty when absent.
pub fn string_list(obj: &Value, pointer: &str) -> Vec<String> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace controller's token in a Namespace's `spec.finalizers` (Kubernetes'
/// `FinalizerKubernetes`): the namespace stays until that controller has emptied it.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// A Namespace's `spec.finalizers`.
pub fn spec_finalizers(ns: &Value) -> Vec<String> {
    string_list(ns, "/spec/finalizers")
}

/// Sets (`Some`) or removes (`None`) a Namespace's `spec.finalizers`.
pub fn set_spec_finalizers(ns: &mut Value, finalizers: Option<Value>) {
    let Some(root) = ns.as_object_mut() else {
        return;
    };
    let spec = root
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    if !spec.is_object() {
        *spec = Value::Object(Map::new());
    }
    if let Some(spec) = spec.as_object_mut() {
        match finalizers {
            Some(f) => spec.insert("finalizers".into(), f),
            None => spec.remove("finalizers"),
        };
    }
}

/// As Kubernetes at a Namespace's create: [`NAMESPACE_FINALIZER`] is always among its
/// `spec.finalizers`, after any the client gave.
pub fn require_namespace_finalizer(ns: &mut Value) {
    let mut fs = spec_finalizers(ns);
    if !fs.iter().any(|f| f == NAMESPACE_FINALIZER) {
        fs.push(NAMESPACE_FINALIZER.into());
    }
    set_spec_finalizers(ns, Some(Value::from(fs)));
}

/// Kubernetes' finalizer for a delete with `propagationPolicy: Orphan`: the garbage collector
/// removes the object's owner reference from its dependents, then this finalizer.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Kubernetes' finalizer for `propagationPolicy: Foreground`: the garbage collector deletes the
/// dependents first, then removes this finalizer.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The finalizer a delete's propagation policy adds (none for Background), or the error naming
/// the field and the values Kubernetes accepts.
pub fn propagation_finalizer(policy: &str) -> Result<Option<&'static str>, String> {
    match policy {
        "" | "Background" => Ok(None),
        "Orphan" => Ok(Some(ORPHAN_FINALIZER)),
        "Foreground" => Ok(Some(FOREGROUND_FINALIZER)),
        other => Err(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
        )),
    }
}

/// Adds `finalizer` to the object's `metadata.finalizers` unless there.
pub fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let m = metadata_mut(obj);
    let list = m
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(a) = list.as_array_mut()
        && !a.iter().any(|f| f.as_str() == Some(finalizer))
    {
        a.push(Value::String(finalizer.to_string()));
    }
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// The grace period a pod deletion gets, as the API server decides it (and its fake mirrors):
/// none unless the pod is on a node and not finished; else the request's, else the pod's
/// `terminationGracePeriodSeconds`, else 30 s; never negative.
pub fn pod_deletion_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let on_node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !on_node || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
        .max(0)
}

/// Status kept apart, as Kubernetes' status subresource: an update of the status (`status_only`)
/// takes only `new`'s status onto `old`; a main-resource update of a kind with a status keeps
/// `old`'s status whatever `new` says. Kinds without a status subresource store `new` as given.
pub fn separate_status(mut new: Value, old: &Value, status_only: bool, has_status: bool) -> Value {
    fn set_status(obj: &mut Value, status: Option<Value>) {
        if let Some(map) = obj.as_object_mut() {
            match status {
                Some(s) => map.insert("status".into(), s),
                None => map.remove("status"),
            };
        }
    }
    if status_only {
        let status = new.get_mut("status").map(Value::take);
        let mut out = old.clone();
        set_status(&mut out, status);
        out
    } else {
        if has_status {
            set_status(&mut new, old.get("status").cloned());
        }
        new
    }
}

pub fn is_deleting(obj: &Value) -> bool {
    metadata(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// Labels as owned pairs, sorted by key.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    string_map(obj, "labels")
}

pub fn annotations(obj: &Value) -> std::collections::BTreeMap<String, String> {
    string_map(obj, "annotations")
}

fn string_map(obj: &Value, field: &str) -> std::collections::BTreeMap<String, String> {
    metadata(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Follows a dotted path (`spec.nodeName`) to a scalar and renders it as a field selector sees
/// it: strings as they are, numbers and booleans in JSON form, absent as "".
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Everything but `metadata` and `status`: a change here bumps `metadata.generation`.
pub fn content_differs(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    let skip = |k: &String| k != "metadata" && k != "status";
    let ka: Vec<_> = a.iter().filter(|(k, _)| skip(k)).collect();
    let kb: Vec<_> = b.iter().filter(|(k, _)| skip(k)).collect();
    ka != kb
}
