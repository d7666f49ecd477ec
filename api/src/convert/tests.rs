//! Conversion tests: Kubernetes' HPA v1 ↔ v2 conversion, round trips, and the registry's
//! served versions.

use serde_json::{Value, json};

use super::hpa::{
    BEHAVIOR_ANNOTATION, CONDITIONS_ANNOTATION, CURRENT_METRICS_ANNOTATION, HpaV1,
    METRICS_ANNOTATION, v1_to_v2, v2_to_v1,
};
use super::{Convert, SameSchema};
use crate::registry::{LookupError, Registry};

/// The Kubernetes documentation's HPA walkthrough, in autoscaling/v1.
fn php_apache_v1() -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "php-apache"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
            "minReplicas": 1, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50}})
}

fn annotation(obj: &Value, key: &str) -> Option<Value> {
    let s = obj.pointer("/metadata/annotations")?.get(key)?.as_str()?;
    Some(serde_json::from_str(s).expect("annotations hold JSON"))
}

/// A v2 object using everything v1 cannot say: a memory metric, a pods metric, behavior,
/// current metrics and conditions. The CPU target is last, where a v1 round trip puts it.
fn rich_v2() -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 2, "maxReplicas": 8,
        "metrics": [
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "packets-per-second"},
                "target": {"type": "AverageValue", "averageValue": "1k"}}},
            {"type": "External", "external": {
                "metric": {"name": "queue_depth", "selector": {"matchLabels": {"queue": "jobs"}}},
                "target": {"type": "Value", "value": "30"}}},
            {"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60}}}
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}}
    },
    "status": {
        "observedGeneration": 3, "currentReplicas": 3, "desiredReplicas": 4,
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 72, "averageValue": "144m"}}}
        ],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]
    }})
}

#[test]
fn the_documentation_manifest_becomes_a_cpu_utilization_metric() {
    let v2 = HpaV1.to_storage(php_apache_v1()).expect("converts");
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}])
    );
    assert_eq!(v2["spec"]["maxReplicas"], 10);
    assert!(v2["metadata"].get("annotations").is_none(), "{v2}");
    let back = HpaV1.to_served(v2).expect("converts back");
    assert_eq!(back, php_apache_v1());
}

#[test]
fn v1_defaults_min_replicas_and_the_old_implicit_cpu_target() {
    let mut v1 = php_apache_v1();
    let spec = v1["spec"].as_object_mut().expect("spec");
    spec.remove("minReplicas");
    spec.remove("targetCPUUtilizationPercentage");
    let v2 = HpaV1.to_storage(v1).expect("converts");
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
}

#[test]
fn v1_is_decoded_strictly_with_its_own_field_paths() {
    let mut v1 = php_apache_v1();
    v1["spec"]["targetCPUUtilization"] = json!(50);
    let e = HpaV1.to_storage(v1).expect_err("unknown field");
    assert_eq!(
        e.to_string(),
        "spec: unknown field \"targetCPUUtilization\""
    );
    let mut v1 = php_apache_v1();
    v1["spec"]["maxReplicas"] = json!("ten");
    let e = HpaV1.to_storage(v1).expect_err("wrong type").to_string();
    assert!(e.starts_with("spec.maxReplicas: invalid type"), "{e}");
}

#[test]
fn v2_only_fields_are_kept_in_kubernetes_annotations() {
    let v1 = v2_to_v1(rich_v2());
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    assert!(v1["spec"].get("metrics").is_none());
    assert_eq!(v1["metadata"]["annotations"]["team"], "a");
    // The other metrics, in v1's own (v2beta1-like) metric shape.
    assert_eq!(
        annotation(&v1, METRICS_ANNOTATION),
        Some(json!([
            {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "500Mi"}},
            {"type": "Pods", "pods": {"metricName": "packets-per-second", "targetAverageValue": "1k"}},
            {"type": "External", "external": {"metricName": "queue_depth",
                "metricSelector": {"matchLabels": {"queue": "jobs"}}, "targetValue": "30"}}
        ]))
    );
    // Behavior as Kubernetes marshals its internal type: Go field names, nulls kept.
    assert_eq!(
        annotation(&v1, BEHAVIOR_ANNOTATION),
        Some(
            json!({"ScaleUp": null, "ScaleDown": {"StabilizationWindowSeconds": 300,
            "SelectPolicy": "Max", "Policies": [{"Type": "Percent", "Value": 10, "PeriodSeconds": 60}],
            "Tolerance": null}})
        )
    );
    assert_eq!(
        annotation(&v1, CURRENT_METRICS_ANNOTATION),
        Some(json!([{"type": "Resource", "resource": {"name": "cpu",
            "currentAverageUtilization": 72, "currentAverageValue": "144m"}}]))
    );
    assert_eq!(
        annotation(&v1, CONDITIONS_ANNOTATION),
        Some(rich_v2()["status"]["conditions"].clone())
    );
    assert_eq!(
        v1["status"],
        json!({"observedGeneration": 3, "currentReplicas": 3, "desiredReplicas": 4,
            "currentCPUUtilizationPercentage": 72})
    );
}

#[test]
fn a_v1_round_trip_loses_nothing() {
    let v1 = HpaV1.to_served(rich_v2()).expect("to v1");
    let v2 = HpaV1.to_storage(v1).expect("back to v2");
    assert_eq!(v2, rich_v2());
}

#[test]
fn a_v1_round_trip_puts_the_cpu_target_last_as_kubernetes_does() {
    let mut v2 = rich_v2();
    let metrics = v2["spec"]["metrics"].as_array_mut().expect("metrics");
    metrics.rotate_right(1);
    assert_eq!(metrics[0]["resource"]["name"], "cpu");
    let back = v1_to_v2(v2_to_v1(v2));
    assert_eq!(back["spec"]["metrics"], rich_v2()["spec"]["metrics"]);
}

#[test]
fn stale_and_malformed_round_trip_annotations_are_dropped() {
    // A v2 object never carries them; only what this conversion produced reaches v1.
    let mut v2 = rich_v2();
    v2["metadata"]["annotations"][METRICS_ANNOTATION] = json!("[{\"type\":\"Stale\"}]");
    v2["spec"]["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60}}}]);
    let v1 = v2_to_v1(v2);
    assert_eq!(annotation(&v1, METRICS_ANNOTATION), None);
    // Written in v1 with a broken annotation: the annotation goes, the object stays.
    let mut v1 = php_apache_v1();
    v1["metadata"]["annotations"] = json!({METRICS_ANNOTATION: "{not json", "team": "a"});
    let v2 = HpaV1.to_storage(v1).expect("converts");
    assert_eq!(v2["metadata"]["annotations"], json!({"team": "a"}));
    assert_eq!(v2["spec"]["metrics"].as_array().map(Vec::len), Some(1));
}

#[test]
fn object_and_container_metrics_convert_both_ways() {
    let metrics = json!([
        {"type": "Object", "object": {
            "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
            "metric": {"name": "requests-per-second"},
            "target": {"type": "Value", "value": "10k"}}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
            "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]);
    let mut v2 = rich_v2();
    v2["spec"]["metrics"] = metrics.clone();
    v2["spec"].as_object_mut().map(|s| s.remove("behavior"));
    v2.as_object_mut().map(|o| o.remove("status"));
    let v1 = v2_to_v1(v2.clone());
    assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
    assert_eq!(
        annotation(&v1, METRICS_ANNOTATION),
        Some(json!([
            {"type": "Object", "object": {"metricName": "requests-per-second",
                "target": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                "targetValue": "10k"}},
            {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                "targetAverageUtilization": 70}}
        ]))
    );
    assert_eq!(v1_to_v2(v1), v2);
}

#[test]
fn same_schema_rewrites_only_the_api_version() {
    let c = SameSchema::new("example.com/v1beta1", "example.com/v1");
    let obj = json!({"apiVersion": "example.com/v1beta1", "kind": "Widget", "spec": {"a": 1}});
    let stored = c.to_storage(obj.clone()).expect("converts");
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(stored["spec"], obj["spec"]);
    assert_eq!(c.to_served(stored).expect("converts back"), obj);
}

#[test]
fn the_registry_serves_hpa_v1_from_v2_storage() {
    let r = Registry::builtin();
    assert_eq!(r.kinds().count(), 31, "one entry per kind");
    let served: Vec<String> = r
        .served()
        .filter(|k| !k.is_storage())
        .map(|k| format!("{}/{}", k.api_version(), k.kind))
        .collect();
    assert_eq!(served, ["autoscaling/v1/HorizontalPodAutoscaler"]);
    let v1 = r
        .by_api_version_kind("autoscaling/v1", "HorizontalPodAutoscaler")
        .expect("v1 is served");
    assert!(!v1.is_storage());
    assert_eq!(v1.storage_api_version(), "autoscaling/v2");
    assert_eq!(
        r.storage_of(v1).expect("storage").api_version(),
        "autoscaling/v2"
    );
    // Names resolve to the storage (preferred) version.
    assert_eq!(r.by_resource_name("hpa").expect("hpa").version, "v2");
    // The v1 entry's admission converts, then validates in v2, with v2's field paths.
    let mut bad = php_apache_v1();
    bad["metadata"]["namespace"] = json!("default");
    bad["spec"]["targetCPUUtilizationPercentage"] = json!(0);
    let e = v1.ops.admit(v1, bad, None).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than or equal to 1"
    );
    let mut ok = php_apache_v1();
    ok["metadata"]["namespace"] = json!("default");
    let ok = v1.ops.admit(v1, ok, None).expect("admitted");
    assert_eq!(ok["apiVersion"], "autoscaling/v2");
}

#[test]
fn removed_versions_are_refused_as_kubectl_refuses_them() {
    let r = Registry::builtin();
    let no_match = |av: &str, kind: &str| LookupError::NoMatch {
        api_version: av.into(),
        kind: kind.into(),
    };
    let e = r
        .by_api_version_kind("batch/v1beta1", "CronJob")
        .expect_err("removed in 1.25");
    assert_eq!(
        e.to_string(),
        "no matches for kind \"CronJob\" in version \"batch/v1beta1\""
    );
    for removed in crate::removed::REMOVED {
        for kind in removed.kinds {
            assert_eq!(
                r.by_api_version_kind(removed.api_version, kind).err(),
                Some(no_match(removed.api_version, kind)),
            );
        }
    }
    // A served group that never had the version: the same answer.
    assert_eq!(
        r.by_api_version_kind("apps/v2", "Deployment").err(),
        Some(no_match("apps/v2", "Deployment"))
    );
    // A group Rudder has never heard of keeps the scheme's words.
    assert!(matches!(
        r.by_api_version_kind("example.com/v1", "Widget"),
        Err(LookupError::UnknownKind { .. })
    ));
}
