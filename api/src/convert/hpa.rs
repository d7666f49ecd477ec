//! `autoscaling/v1` HorizontalPodAutoscalers, served from `autoscaling/v2` storage as
//! Kubernetes converts them (`pkg/apis/autoscaling/v1/conversion.go`).
//!
//! Guarantees:
//! - v1's `targetCPUUtilizationPercentage` is v2's `Resource` metric on `cpu` with a
//!   `Utilization` target; `currentCPUUtilizationPercentage` is the matching current metric.
//! - What v1 cannot express survives a v1 round trip in Kubernetes' annotations: the other
//!   metrics (`autoscaling.alpha.kubernetes.io/metrics`, in v1's own metric shape), `behavior`
//!   (`.../behavior`, with Go's field names, as Kubernetes writes it), the current metrics
//!   (`.../current-metrics`) and the conditions (`.../conditions`). A v1 reader sees them; a v2
//!   object never carries them, and converting to v2 removes them.
//! - An HPA written in v1 without metrics gets v1's old implicit target, 80% CPU, made explicit.
//! - Restored metrics come first and the CPU target last, as in Kubernetes, so a v2 object
//!   whose CPU target is not last comes back from a v1 round trip reordered.
//! - An annotation that does not parse is dropped, not an error: it was never the client's data.

use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler as V1Hpa;
use serde_json::{Map, Value, json};

use super::{ConvertError, set_api_version};
use crate::decode::{DecodeError, from_value_strict};
use crate::defaults::Defaulting;
use crate::registry::AdmitError;

/// The v2 metrics a v1 object cannot express, in v1's metric shape.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// The v2 status metrics, in v1's metric status shape.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// The v2 status conditions.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// The v2 `spec.behavior`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const ROUND_TRIP: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    CONDITIONS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
];

/// v1's implicit target when an HPA names no metric.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

pub const V1: &str = "autoscaling/v1";
pub const V2: &str = "autoscaling/v2";

/// The converter between `autoscaling/v1` and the `autoscaling/v2` storage version.
pub struct HpaV1;

impl super::Convert for HpaV1 {
    fn to_storage(&self, obj: Value) -> Result<Value, AdmitError> {
        let mut typed: V1Hpa = from_value_strict(obj)?;
        typed.apply_defaults();
        let v1 = serde_json::to_value(&typed).map_err(|e| DecodeError::Shape(e.to_string()))?;
        Ok(v1_to_v2(v1))
    }

    fn to_served(&self, obj: Value) -> Result<Value, ConvertError> {
        if !obj.is_object() {
            return Err(ConvertError::Failed {
                api_version: V1.into(),
                reason: "the stored object is not a JSON object".into(),
            });
        }
        Ok(v2_to_v1(obj))
    }
}

impl Defaulting for V1Hpa {
    /// v1's only default; the CPU target is defaulted in conversion, which sees the annotations.
    fn apply_defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            spec.min_replicas.get_or_insert(1);
        }
    }
}

// === v2 → v1 ===

/// A stored `autoscaling/v2` object as `autoscaling/v1`.
pub fn v2_to_v1(v2: Value) -> Value {
    let Value::Object(mut root) = v2 else {
        return v2;
    };
    let spec = root.remove("spec").unwrap_or_else(|| json!({}));
    let status = root.remove("status");
    let mut notes = Map::new();

    let metrics = array(&spec, "metrics");
    let mut spec1 = Map::new();
    copy(&spec, &mut spec1, "scaleTargetRef");
    copy(&spec, &mut spec1, "minReplicas");
    copy(&spec, &mut spec1, "maxReplicas");
    // The first CPU resource metric is v1's target, whatever its target type.
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_resource(m, "resource")) {
        copy(&cpu["resource"]["target"], &mut spec1, "averageUtilization");
        if let Some(v) = spec1.remove("averageUtilization") {
            spec1.insert("targetCPUUtilizationPercentage".into(), v);
        }
    }
    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| {
            !(is_cpu_resource(m, "resource")
                && m.pointer("/resource/target/averageUtilization")
                    .is_some_and(|v| !v.is_null()))
        })
        .map(metric_spec_to_v1)
        .collect();
    if !others.is_empty() {
        notes.insert(METRICS_ANNOTATION.into(), Value::Array(others));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.insert(BEHAVIOR_ANNOTATION.into(), behavior_to_go(b));
    }

    if let Some(status) = status.filter(Value::is_object) {
        let current = array(&status, "currentMetrics");
        let conditions = array(&status, "conditions");
        let mut st = Map::new();
        copy(&status, &mut st, "observedGeneration");
        copy(&status, &mut st, "lastScaleTime");
        st.insert(
            "currentReplicas".into(),
            status.get("currentReplicas").cloned().unwrap_or(json!(0)),
        );
        st.insert(
            "desiredReplicas".into(),
            status.get("desiredReplicas").cloned().unwrap_or(json!(0)),
        );
        // The last CPU utilisation reported wins, as in Kubernetes.
        if let Some(u) = current
            .iter()
            .filter(|m| is_cpu_resource(m, "resource"))
            .filter_map(|m| m.pointer("/resource/current/averageUtilization"))
            .rfind(|u| !u.is_null())
        {
            st.insert("currentCPUUtilizationPercentage".into(), u.clone());
        }
        if !current.is_empty() {
            let v1: Vec<Value> = current.iter().map(metric_status_to_v1).collect();
            notes.insert(CURRENT_METRICS_ANNOTATION.into(), Value::Array(v1));
        }
        if !conditions.is_empty() {
            notes.insert(CONDITIONS_ANNOTATION.into(), Value::Array(conditions));
        }
        root.insert("status".into(), Value::Object(st));
    }

    let meta = metadata_mut(&mut root);
    let annotations = annotations_mut(meta);
    for k in ROUND_TRIP {
        annotations.remove(k);
    }
    for (k, v) in notes {
        annotations.insert(k, Value::String(v.to_string()));
    }
    tidy_annotations(meta);
    root.insert("spec".into(), Value::Object(spec1));
    set_api_version(Value::Object(root), V1)
}

fn metric_spec_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, "type");
    if let Some(o) = source(m, "object") {
        let mut s = Map::new();
        s.insert("target".into(), or_obj(o.get("describedObject")));
        s.insert("metricName".into(), or_str(o.pointer("/metric/name")));
        s.insert("targetValue".into(), or_zero(o.pointer("/target/value")));
        put(&mut s, "selector", o.pointer("/metric/selector"));
        put(&mut s, "averageValue", o.pointer("/target/averageValue"));
        out.insert("object".into(), Value::Object(s));
    }
    if let Some(p) = source(m, "pods") {
        let mut s = Map::new();
        s.insert("metricName".into(), or_str(p.pointer("/metric/name")));
        s.insert(
            "targetAverageValue".into(),
            or_zero(p.pointer("/target/averageValue")),
        );
        put(&mut s, "selector", p.pointer("/metric/selector"));
        out.insert("pods".into(), Value::Object(s));
    }
    for field in ["resource", "containerResource"] {
        if let Some(r) = source(m, field) {
            let mut s = Map::new();
            s.insert("name".into(), or_str(r.get("name")));
            put(
                &mut s,
                "targetAverageUtilization",
                r.pointer("/target/averageUtilization"),
            );
            put(
                &mut s,
                "targetAverageValue",
                r.pointer("/target/averageValue"),
            );
            put(&mut s, "container", r.get("container"));
            out.insert(field.into(), Value::Object(s));
        }
    }
    if let Some(e) = source(m, "external") {
        let mut s = Map::new();
        s.insert("metricName".into(), or_str(e.pointer("/metric/name")));
        put(&mut s, "metricSelector", e.pointer("/metric/selector"));
        put(&mut s, "targetValue", e.pointer("/target/value"));
        put(
            &mut s,
            "targetAverageValue",
            e.pointer("/target/averageValue"),
        );
        out.insert("external".into(), Value::Object(s));
    }
    Value::Object(out)
}

fn metric_status_to_v1(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, "type");
    if let Some(o) = source(m, "object") {
        let mut s = Map::new();
        s.insert("target".into(), or_obj(o.get("describedObject")));
        s.insert("metricName".into(), or_str(o.pointer("/metric/name")));
        s.insert("currentValue".into(), or_zero(o.pointer("/current/value")));
        put(&mut s, "selector", o.pointer("/metric/selector"));
        put(&mut s, "averageValue", o.pointer("/current/averageValue"));
        out.insert("object".into(), Value::Object(s));
    }
    if let Some(p) = source(m, "pods") {
        let mut s = Map::new();
        s.insert("metricName".into(), or_str(p.pointer("/metric/name")));
        s.insert(
            "currentAverageValue".into(),
            or_zero(p.pointer("/current/averageValue")),
        );
        put(&mut s, "selector", p.pointer("/metric/selector"));
        out.insert("pods".into(), Value::Object(s));
    }
    for field in ["resource", "containerResource"] {
        if let Some(r) = source(m, field) {
            let mut s = Map::new();
            s.insert("name".into(), or_str(r.get("name")));
            put(
                &mut s,
                "currentAverageUtilization",
                r.pointer("/current/averageUtilization"),
            );
            s.insert(
                "currentAverageValue".into(),
                or_zero(r.pointer("/current/averageValue")),
            );
            put(&mut s, "container", r.get("container"));
            out.insert(field.into(), Value::Object(s));
        }
    }
    if let Some(e) = source(m, "external") {
        let mut s = Map::new();
        s.insert("metricName".into(), or_str(e.pointer("/metric/name")));
        put(&mut s, "metricSelector", e.pointer("/metric/selector"));
        s.insert("currentValue".into(), or_zero(e.pointer("/current/value")));
        put(
            &mut s,
            "currentAverageValue",
            e.pointer("/current/averageValue"),
        );
        out.insert("external".into(), Value::Object(s));
    }
    Value::Object(out)
}

/// Kubernetes marshals its internal behavior type, which has no JSON tags: Go field names,
/// absent values as `null`.
fn behavior_to_go(b: &Value) -> Value {
    let rules = |r: Option<&Value>| match r.filter(|r| r.is_object()) {
        None => Value::Null,
        Some(r) => {
            let policies = match r.get("policies").and_then(Value::as_array) {
                None => Value::Null,
                Some(ps) => ps
                    .iter()
                    .map(|p| {
                        json!({
                            "Type": or_str(p.get("type")),
                            "Value": p.get("value").cloned().unwrap_or(json!(0)),
                            "PeriodSeconds": p.get("periodSeconds").cloned().unwrap_or(json!(0)),
                        })
                    })
                    .collect(),
            };
            json!({
                "StabilizationWindowSeconds": or_null(r.get("stabilizationWindowSeconds")),
                "SelectPolicy": or_null(r.get("selectPolicy")),
                "Policies": policies,
                "Tolerance": or_null(r.get("tolerance")),
            })
        }
    };
    json!({"ScaleUp": rules(b.get("scaleUp")), "ScaleDown": rules(b.get("scaleDown"))})
}

// === v1 → v2 ===

/// An `autoscaling/v1` object (decoded and defaulted) as `autoscaling/v2`.
pub fn v1_to_v2(v1: Value) -> Value {
    let Value::Object(mut root) = v1 else {
        return v1;
    };
    let spec = root.remove("spec").unwrap_or_else(|| json!({}));
    let status = root.remove("status");
    let meta = metadata_mut(&mut root);
    let notes: Map<String, Value> = {
        let annotations = annotations_mut(meta);
        ROUND_TRIP
            .iter()
            .filter_map(|k| annotations.remove(*k).map(|v| (k.to_string(), v)))
            .filter_map(|(k, v)| Some((k, serde_json::from_str(v.as_str()?).ok()?)))
            .collect()
    };
    tidy_annotations(meta);

    let mut spec2 = Map::new();
    copy(&spec, &mut spec2, "scaleTargetRef");
    copy(&spec, &mut spec2, "minReplicas");
    copy(&spec, &mut spec2, "maxReplicas");
    let cpu = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
        .map(|p| cpu_utilization(p.clone()));
    let mut metrics: Vec<Value> = match notes.get(METRICS_ANNOTATION) {
        Some(Value::Array(others)) => others.iter().map(metric_spec_to_v2).collect(),
        _ => Vec::new(),
    };
    metrics.extend(cpu);
    if metrics.is_empty() {
        metrics.push(cpu_utilization(json!(DEFAULT_CPU_UTILIZATION)));
    }
    spec2.insert("metrics".into(), Value::Array(metrics));
    if let Some(b) = notes.get(BEHAVIOR_ANNOTATION).and_then(behavior_from_go) {
        spec2.insert("behavior".into(), b);
    }
    root.insert("spec".into(), Value::Object(spec2));

    let status_notes =
        notes.contains_key(CURRENT_METRICS_ANNOTATION) || notes.contains_key(CONDITIONS_ANNOTATION);
    if status.is_some() || status_notes {
        let status = status.unwrap_or_else(|| json!({}));
        let mut st = Map::new();
        copy(&status, &mut st, "observedGeneration");
        copy(&status, &mut st, "lastScaleTime");
        copy(&status, &mut st, "currentReplicas");
        st.insert(
            "desiredReplicas".into(),
            status.get("desiredReplicas").cloned().unwrap_or(json!(0)),
        );
        // The annotation has more than the percentage: it wins when present.
        let current = match notes.get(CURRENT_METRICS_ANNOTATION) {
            Some(Value::Array(ms)) => Some(ms.iter().map(metric_status_to_v2).collect()),
            _ => status
                .get("currentCPUUtilizationPercentage")
                .filter(|v| !v.is_null())
                .map(|p| {
                    vec![json!({"type": "Resource",
                        "resource": {"name": "cpu", "current": {"averageUtilization": p}}})]
                }),
        };
        if let Some(c) = current {
            st.insert("currentMetrics".into(), Value::Array(c));
        }
        if let Some(c @ Value::Array(_)) = notes.get(CONDITIONS_ANNOTATION) {
            st.insert("conditions".into(), c.clone());
        }
        root.insert("status".into(), Value::Object(st));
    }
    set_api_version(Value::Object(root), V2)
}

fn cpu_utilization(percent: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

fn metric_spec_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, "type");
    if let Some(o) = source(m, "object") {
        let average = o.get("averageValue").filter(|v| !v.is_null());
        let mut target = Map::new();
        target.insert(
            "type".into(),
            json!(if average.is_some() {
                "AverageValue"
            } else {
                "Value"
            }),
        );
        target.insert("value".into(), or_zero(o.get("targetValue")));
        put(&mut target, "averageValue", average);
        out.insert(
            "object".into(),
            json!({"describedObject": or_obj(o.get("target")),
                "target": target, "metric": identifier(o.get("metricName"), o.get("selector"))}),
        );
    }
    if let Some(p) = source(m, "pods") {
        out.insert(
            "pods".into(),
            json!({"metric": identifier(p.get("metricName"), p.get("selector")),
                "target": {"type": "AverageValue", "averageValue": or_zero(p.get("targetAverageValue"))}}),
        );
    }
    for field in ["resource", "containerResource"] {
        if let Some(r) = source(m, field) {
            let utilization = r.get("targetAverageUtilization").filter(|v| !v.is_null());
            let mut target = Map::new();
            target.insert(
                "type".into(),
                json!(if utilization.is_some() {
                    "Utilization"
                } else {
                    "AverageValue"
                }),
            );
            put(&mut target, "averageUtilization", utilization);
            put(&mut target, "averageValue", r.get("targetAverageValue"));
            let mut s = Map::new();
            s.insert("name".into(), or_str(r.get("name")));
            s.insert("target".into(), Value::Object(target));
            put(&mut s, "container", r.get("container"));
            out.insert(field.into(), Value::Object(s));
        }
    }
    if let Some(e) = source(m, "external") {
        let value = e.get("targetValue").filter(|v| !v.is_null());
        let mut target = Map::new();
        target.insert(
            "type".into(),
            json!(if value.is_some() {
                "Value"
            } else {
                "AverageValue"
            }),
        );
        put(&mut target, "value", value);
        put(&mut target, "averageValue", e.get("targetAverageValue"));
        out.insert(
            "external".into(),
            json!({"metric": identifier(e.get("metricName"), e.get("metricSelector")),
                "target": target}),
        );
    }
    Value::Object(out)
}

fn metric_status_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    copy(m, &mut out, "type");
    if let Some(o) = source(m, "object") {
        let mut current = Map::new();
        current.insert("value".into(), or_zero(o.get("currentValue")));
        put(&mut current, "averageValue", o.get("averageValue"));
        out.insert(
            "object".into(),
            json!({"describedObject": or_obj(o.get("target")), "current": current,
                "metric": identifier(o.get("metricName"), o.get("selector"))}),
        );
    }
    if let Some(p) = source(m, "pods") {
        out.insert(
            "pods".into(),
            json!({"metric": identifier(p.get("metricName"), p.get("selector")),
                "current": {"averageValue": or_zero(p.get("currentAverageValue"))}}),
        );
    }
    for field in ["resource", "containerResource"] {
        if let Some(r) = source(m, field) {
            let mut current = Map::new();
            current.insert("averageValue".into(), or_zero(r.get("currentAverageValue")));
            put(
                &mut current,
                "averageUtilization",
                r.get("currentAverageUtilization"),
            );
            let mut s = Map::new();
            s.insert("name".into(), or_str(r.get("name")));
            s.insert("current".into(), Value::Object(current));
            put(&mut s, "container", r.get("container"));
            out.insert(field.into(), Value::Object(s));
        }
    }
    if let Some(e) = source(m, "external") {
        let mut current = Map::new();
        current.insert("value".into(), or_zero(e.get("currentValue")));
        put(&mut current, "averageValue", e.get("currentAverageValue"));
        out.insert(
            "external".into(),
            json!({"metric": identifier(e.get("metricName"), e.get("metricSelector")),
                "current": current}),
        );
    }
    Value::Object(out)
}

fn identifier(name: Option<&Value>, selector: Option<&Value>) -> Value {
    let mut id = Map::new();
    id.insert("name".into(), or_str(name));
    put(&mut id, "selector", selector);
    Value::Object(id)
}

/// Reads the Go-named behavior back, matching names case-insensitively as Go's decoder does.
/// `None` when it holds neither direction.
fn behavior_from_go(b: &Value) -> Option<Value> {
    let rules = |r: Option<&Value>| -> Option<Value> {
        let r = r.filter(|r| r.is_object())?;
        let mut out = Map::new();
        put(
            &mut out,
            "stabilizationWindowSeconds",
            field_ci(r, "StabilizationWindowSeconds"),
        );
        put(&mut out, "selectPolicy", field_ci(r, "SelectPolicy"));
        if let Some(ps) = field_ci(r, "Policies").and_then(Value::as_array) {
            let policies = ps
                .iter()
                .map(|p| {
                    json!({
                        "type": or_str(field_ci(p, "Type")),
                        "value": field_ci(p, "Value").cloned().unwrap_or(json!(0)),
                        "periodSeconds": field_ci(p, "PeriodSeconds").cloned().unwrap_or(json!(0)),
                    })
                })
                .collect();
            out.insert("policies".into(), Value::Array(policies));
        }
        put(&mut out, "tolerance", field_ci(r, "Tolerance"));
        Some(Value::Object(out))
    };
    let up = rules(field_ci(b, "ScaleUp"));
    let down = rules(field_ci(b, "ScaleDown"));
    if up.is_none() && down.is_none() {
        return None;
    }
    let mut out = Map::new();
    put(&mut out, "scaleUp", up.as_ref());
    put(&mut out, "scaleDown", down.as_ref());
    Some(Value::Object(out))
}

// === helpers ===

fn is_cpu_resource(m: &Value, field: &str) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.get(field)
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            == Some("cpu")
}

fn array(v: &Value, field: &str) -> Vec<Value> {
    v.get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn source<'a>(m: &'a Value, field: &str) -> Option<&'a Value> {
    m.get(field).filter(|s| s.is_object())
}

/// Copies a field when present and not null.
fn copy(from: &Value, to: &mut Map<String, Value>, field: &str) {
    put(to, field, from.get(field));
}

fn put(to: &mut Map<String, Value>, field: &str, v: Option<&Value>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        to.insert(field.into(), v.clone());
    }
}

fn or_str(v: Option<&Value>) -> Value {
    v.filter(|v| v.is_string())
        .cloned()
        .unwrap_or_else(|| json!(""))
}

/// Go's zero `resource.Quantity`, for v1 fields that are not optional.
fn or_zero(v: Option<&Value>) -> Value {
    v.filter(|v| !v.is_null())
        .cloned()
        .unwrap_or_else(|| json!("0"))
}

fn or_obj(v: Option<&Value>) -> Value {
    v.filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn or_null(v: Option<&Value>) -> Value {
    v.cloned().unwrap_or(Value::Null)
}

fn field_ci<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let map = v.as_object()?;
    map.get(name)
        .or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn metadata_mut(root: &mut Map<String, Value>) -> &mut Map<String, Value> {
    object_at(root, "metadata")
}

fn annotations_mut(meta: &mut Map<String, Value>) -> &mut Map<String, Value> {
    object_at(meta, "annotations")
}

/// The object under `key`, made one if absent or not an object.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Go omits an empty annotation map.
fn tidy_annotations(meta: &mut Map<String, Value>) {
    if meta
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
}
