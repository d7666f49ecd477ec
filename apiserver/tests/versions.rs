//! Every version Kubernetes 1.34 serves, against a real `rudder-apiserver`: an HPA written as
//! `autoscaling/v1` is stored as `autoscaling/v2` and read, listed and watched in either, v2-only
//! fields survive updates through v1, discovery lists both versions, and removed versions are
//! refused with kubectl's line.

mod common;

use common::*;
use rudder_apiserver::server::{ServerConfig, open_api};
use rudder_apiserver::service::Identity;
use rudder_apiserver::storage::MemStorage;
use rudder_client::proto as pb;
use serde_json::{Value, json};

const HPA: &str = "HorizontalPodAutoscaler";
const V1: &str = "autoscaling/v1";
const V2: &str = "autoscaling/v2";

/// The Kubernetes documentation's HPA walkthrough manifest (autoscaling/v1).
fn php_apache() -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "php-apache"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
            "minReplicas": 1, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50}})
}

fn memory_metric() -> Value {
    json!({"type": "Resource", "resource": {"name": "memory",
        "target": {"type": "AverageValue", "averageValue": "500Mi"}}})
}

fn cpu_metric(percent: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

fn watch_req(api_version: &str, rv: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        kind: kref(api_version, HPA),
        namespace: "default".into(),
        resource_version: rv,
        ..Default::default()
    }
}

async fn get(c: &rudder_client::Client, api_version: &str) -> (pb::Object, Value) {
    let o = c
        .get(get_req(api_version, HPA, "default", "php-apache"))
        .await
        .expect("get");
    let v = json(&o);
    (o, v)
}

#[tokio::test]
async fn an_hpa_written_as_v1_is_served_in_v1_and_v2() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let created = create(c, V1, HPA, "default", php_apache()).await;
    assert_eq!(created.api_version, V1);
    let v = json(&created);
    assert_eq!(v["apiVersion"], V1);
    assert_eq!(v["spec"]["targetCPUUtilizationPercentage"], 50);

    let (o2, v2) = get(c, V2).await;
    assert_eq!(o2.api_version, V2);
    assert_eq!(v2["apiVersion"], V2);
    assert_eq!(v2["spec"]["metrics"], json!([cpu_metric(50)]));
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
    let (o1, v1) = get(c, V1).await;
    assert_eq!(o1.api_version, V1);
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(
        o1.resource_version, o2.resource_version,
        "one stored object"
    );
    assert_eq!(v1["metadata"]["uid"], v2["metadata"]["uid"]);

    for (av, field) in [(V1, "targetCPUUtilizationPercentage"), (V2, "metrics")] {
        let l = c.list(list_req(av, HPA, "default")).await.expect("list");
        assert_eq!(l.items.len(), 1, "{av}");
        assert_eq!(l.items[0].api_version, av);
        let item = json(&l.items[0]);
        assert_eq!(item["apiVersion"], av);
        assert!(item["spec"].get(field).is_some(), "{av}: {item}");
    }
}

#[tokio::test]
async fn watches_deliver_each_version_and_updates_through_v1_keep_v2_fields() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let created = create(c, V1, HPA, "default", php_apache()).await;
    let mut w1 = c
        .watch(watch_req(V1, created.resource_version))
        .await
        .expect("watch v1");
    let mut w2 = c
        .watch(watch_req(V2, created.resource_version))
        .await
        .expect("watch v2");

    // A v2 client adds what v1 cannot say: a memory metric and a scale-down behavior.
    let (_, mut v2) = get(c, V2).await;
    v2["spec"]["metrics"] = json!([memory_metric(), cpu_metric(50)]);
    v2["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 120}});
    c.update(update_req(V2, HPA, "default", &v2))
        .await
        .expect("update v2");

    let e1 = next_event(&mut w1).await;
    let e2 = next_event(&mut w2).await;
    assert_eq!(e1.r#type, pb::EventType::Modified as i32);
    assert_eq!(e1.resource_version, e2.resource_version);
    let (o1, o2) = (e1.object.expect("object"), e2.object.expect("object"));
    assert_eq!((o1.api_version.as_str(), o2.api_version.as_str()), (V1, V2));
    let ev1 = json(&o1);
    assert_eq!(ev1["apiVersion"], V1);
    let notes = &ev1["metadata"]["annotations"];
    assert!(
        notes["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .is_some_and(|m| m.contains("memory")),
        "{ev1}"
    );
    assert!(
        notes["autoscaling.alpha.kubernetes.io/behavior"].is_string(),
        "{ev1}"
    );
    assert_eq!(
        json(&o2)["spec"]["metrics"],
        json!([memory_metric(), cpu_metric(50)])
    );

    // A v1 client updates what it can see, sending back what it read.
    let (_, mut v1) = get(c, V1).await;
    v1["spec"]["maxReplicas"] = json!(12);
    v1["spec"]["targetCPUUtilizationPercentage"] = json!(70);
    let updated = c
        .update(update_req(V1, HPA, "default", &v1))
        .await
        .expect("update v1");
    assert_eq!(updated.api_version, V1);
    let (_, v2) = get(c, V2).await;
    assert_eq!(v2["spec"]["maxReplicas"], 12);
    assert_eq!(
        v2["spec"]["metrics"],
        json!([memory_metric(), cpu_metric(70)])
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        120
    );
    assert!(
        v2["metadata"].get("annotations").is_none(),
        "round-trip annotations are never stored: {v2}"
    );

    // A merge patch through v1 applies to the v1 form and keeps the rest.
    let patched = c
        .patch(patch_req(
            V1,
            HPA,
            "default",
            "php-apache",
            pb::PatchType::Merge,
            json!({"spec": {"minReplicas": 2}}),
        ))
        .await
        .expect("patch v1");
    assert_eq!(json(&patched)["spec"]["minReplicas"], 2);
    let (_, v2) = get(c, V2).await;
    assert_eq!(v2["spec"]["minReplicas"], 2);
    assert_eq!(v2["spec"]["metrics"][0], memory_metric());

    // Re-sending what was read changes nothing: no new version.
    let (o1, v1) = get(c, V1).await;
    let same = c
        .update(update_req(V1, HPA, "default", &v1))
        .await
        .expect("no-op update");
    assert_eq!(same.resource_version, o1.resource_version);

    // Deleting through v1 answers in v1; both watches see it, each in its version.
    let deleted = c
        .delete(delete_req(V1, HPA, "default", "php-apache"))
        .await
        .expect("delete");
    assert_eq!(deleted.object.expect("deleted object").api_version, V1);
    for (w, av) in [(&mut w1, V1), (&mut w2, V2)] {
        loop {
            let e = next_event(w).await;
            if e.r#type == pb::EventType::Deleted as i32 {
                assert_eq!(e.object.expect("object").api_version, av);
                break;
            }
        }
    }
}

#[tokio::test]
async fn status_updates_and_dry_runs_through_v1() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut dry = create_req(V1, HPA, "default", php_apache());
    dry.options = Some(pb::WriteOptions {
        dry_run: true,
        ..Default::default()
    });
    let o = c.create(dry).await.expect("dry run");
    assert_eq!(o.api_version, V1);
    assert_eq!(json(&o)["spec"]["targetCPUUtilizationPercentage"], 50);
    create(c, V1, HPA, "default", php_apache()).await;

    // The controller reports in v2: current metrics and conditions v1 has no field for.
    let (_, mut v2) = get(c, V2).await;
    let current = json!([{"type": "Resource", "resource": {"name": "cpu",
        "current": {"averageUtilization": 40, "averageValue": "80m"}}}]);
    let conditions = json!([{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
        "lastTransitionTime": "2025-01-01T00:00:00Z"}]);
    v2["status"] = json!({"currentReplicas": 2, "desiredReplicas": 2,
        "currentMetrics": current, "conditions": conditions});
    c.update_status(update_req(V2, HPA, "default", &v2))
        .await
        .expect("status v2");

    // A v1 client sees the percentage and sends the status back with a change.
    let (_, mut v1) = get(c, V1).await;
    assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
    v1["status"]["desiredReplicas"] = json!(3);
    let o = c
        .update_status(update_req(V1, HPA, "default", &v1))
        .await
        .expect("status v1");
    assert_eq!(o.api_version, V1);
    let (_, v2) = get(c, V2).await;
    assert_eq!(v2["status"]["desiredReplicas"], 3);
    assert_eq!(v2["status"]["currentMetrics"], current);
    assert_eq!(v2["status"]["conditions"], conditions);
}

#[tokio::test]
async fn list_and_watch_from_the_start_in_both_versions() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut v2 = php_apache();
    v2["apiVersion"] = json!(V2);
    v2["metadata"]["name"] = json!("web");
    let spec = v2["spec"].as_object_mut().expect("spec");
    spec.remove("targetCPUUtilizationPercentage");
    spec.insert("metrics".into(), json!([memory_metric()]));
    create(c, V2, HPA, "default", v2).await;
    create(c, V1, HPA, "default", php_apache()).await;
    for av in [V1, V2] {
        let mut w = c.watch(watch_req(av, 0)).await.expect("watch");
        let mut names = Vec::new();
        for _ in 0..2 {
            let e = next_event(&mut w).await;
            assert_eq!(e.r#type, pb::EventType::Added as i32);
            let o = e.object.expect("object");
            assert_eq!(o.api_version, av);
            assert_eq!(json(&o)["apiVersion"], av);
            names.push(o.name);
        }
        names.sort();
        assert_eq!(names, ["php-apache", "web"], "{av}");
    }
    // The v2-only HPA, read as v1: no CPU target, its metric in the annotation.
    let o = c
        .get(get_req(V1, HPA, "default", "web"))
        .await
        .expect("get");
    let v1 = json(&o);
    assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
    assert!(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"].is_string());
}

#[tokio::test]
async fn removed_versions_are_refused_with_kubectls_line() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let cronjob = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": "hello"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "hello", "image": "busybox:1.36"}]}}}}}});
    let e = c
        .create(create_req(
            "batch/v1beta1",
            "CronJob",
            "default",
            cronjob.clone(),
        ))
        .await
        .expect_err("removed in 1.25");
    assert_eq!(
        e.to_string(),
        "no matches for kind \"CronJob\" in version \"batch/v1beta1\""
    );
    // Sent to the served version with the removed one in the body: the body's version is named.
    let e = c
        .create(create_req("batch/v1", "CronJob", "default", cronjob))
        .await
        .expect_err("body in a removed version");
    assert_eq!(
        e.to_string(),
        "no matches for kind \"CronJob\" in version \"batch/v1beta1\""
    );
    for (av, kind) in [
        ("networking.k8s.io/v1beta1", "Ingress"),
        ("extensions/v1beta1", "Deployment"),
        ("policy/v1beta1", "PodDisruptionBudget"),
        ("autoscaling/v2beta2", HPA),
    ] {
        let e = c
            .list(list_req(av, kind, "default"))
            .await
            .expect_err("removed");
        assert_eq!(
            e.to_string(),
            format!("no matches for kind \"{kind}\" in version \"{av}\"")
        );
    }
}

#[tokio::test]
async fn discovery_lists_every_served_version() {
    let s = TestServer::start(&[]);
    let d = s.client.api_resources().await.expect("discovery");
    let hpas: Vec<(String, bool, String)> = d
        .resources
        .iter()
        .filter(|r| r.kind == HPA)
        .map(|r| (r.version.clone(), r.preferred, r.storage_version.clone()))
        .collect();
    assert_eq!(
        hpas,
        [
            ("v2".to_string(), true, "v2".to_string()),
            ("v1".to_string(), false, "v2".to_string())
        ]
    );
    // Every other kind: one version, preferred and stored.
    let others = d.resources.iter().filter(|r| r.kind != HPA);
    assert_eq!(others.clone().count(), 30);
    assert!(
        others
            .into_iter()
            .all(|r| r.preferred && r.storage_version == r.version)
    );
}

/// Watchers of one version share one conversion per event (checked in-process, where the
/// conversion count is visible).
#[tokio::test]
async fn watch_events_are_converted_once_per_version() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let api = open_api(MemStorage::new(), &ServerConfig::new(tmp.path()))
        .await
        .expect("open");
    let id = Identity::anonymous();
    let created = api
        .create(
            &id,
            create_req(V2, HPA, "default", {
                let mut v = php_apache();
                v["apiVersion"] = json!(V2);
                v["spec"]
                    .as_object_mut()
                    .map(|s| s.remove("targetCPUUtilizationPercentage"));
                v
            }),
        )
        .await
        .expect("create");
    let mut watchers = Vec::new();
    for av in [V1, V1, V1, V2, V2] {
        let rx = api
            .watch(&id, watch_req(av, created.resource_version))
            .await
            .expect("watch");
        watchers.push((av, rx));
    }
    let before = api.conversions();
    let patch = patch_req(
        V2,
        HPA,
        "default",
        "php-apache",
        pb::PatchType::Merge,
        json!({"spec": {"maxReplicas": 5}}),
    );
    api.patch(&id, patch).await.expect("patch");
    let mut bodies = Vec::new();
    for (av, rx) in &mut watchers {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("event in time")
            .expect("event");
        let o = e.object.expect("object");
        assert_eq!(o.api_version, *av);
        bodies.push(o.json);
    }
    assert_eq!(
        api.conversions() - before,
        1,
        "three v1 watchers, one conversion; v2 watchers need none"
    );
    // The three v1 watchers were sent the very same bytes.
    assert!(
        bodies[..3]
            .windows(2)
            .all(|w| w[0].as_ptr() == w[1].as_ptr())
    );
}
