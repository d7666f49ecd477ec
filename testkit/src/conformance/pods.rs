//! Cases on pods: graceful deletion, binding, field selectors.

use rudder_client::WatchEvent;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::*;

/// Seconds between two RFC 3339 timestamps of an object.
fn seconds_between(from: &Value, to: &Value) -> i64 {
    let parse = |v: &Value| -> jiff::Timestamp {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{v} is not an RFC 3339 timestamp"))
    };
    parse(to).as_second() - parse(from).as_second()
}

pub async fn pods_on_a_node_are_deleted_gracefully(t: Target) {
    let bound = create(&t, POD, "default", &pod("g1", "node-a")).await;
    let res = delete(&t, POD, "default", "g1").await;
    assert!(!res.deleted, "a pod on a node waits for its node agent");
    let v = json_of(
        &res.object
            .unwrap_or_else(|| panic!("delete returns the pod")),
    );
    assert_eq!(
        v["metadata"]["deletionGracePeriodSeconds"], 30,
        "the default grace"
    );
    let created = &json_of(&bound)["metadata"]["creationTimestamp"];
    let secs = seconds_between(created, &v["metadata"]["deletionTimestamp"]);
    assert!(
        (30..90).contains(&secs),
        "deletionTimestamp is now + grace: {secs}s after creation"
    );
    get(&t, POD, "default", "g1").await;
    let mut now = delete_req(POD, "default", "g1");
    now.grace_period_seconds = Some(0);
    let res = t
        .api
        .delete(now)
        .await
        .unwrap_or_else(|e| panic!("delete, grace 0: {e}"));
    assert!(res.deleted, "grace 0 removes a terminating pod");
    assert_err(
        try_get(&t, POD, "default", "g1").await,
        is_not_found,
        "after grace 0",
    );

    create(&t, POD, "default", &pod("g2", "")).await;
    assert!(
        delete(&t, POD, "default", "g2").await.deleted,
        "an unscheduled pod goes at once"
    );

    let mut own = pod("g3", "node-a");
    own["spec"]["terminationGracePeriodSeconds"] = json!(5);
    create(&t, POD, "default", &own).await;
    let v = json_of(
        &delete(&t, POD, "default", "g3")
            .await
            .object
            .unwrap_or_default(),
    );
    assert_eq!(
        v["metadata"]["deletionGracePeriodSeconds"], 5,
        "the pod's own grace"
    );

    create(&t, POD, "default", &pod("g4", "node-a")).await;
    let mut req = delete_req(POD, "default", "g4");
    req.grace_period_seconds = Some(2);
    let v = json_of(
        &t.api
            .delete(req)
            .await
            .unwrap_or_default()
            .object
            .unwrap_or_default(),
    );
    assert_eq!(
        v["metadata"]["deletionGracePeriodSeconds"], 2,
        "the requested grace"
    );

    create(&t, POD, "default", &pod("g5", "node-a")).await;
    let mut req = delete_req(POD, "default", "g5");
    req.grace_period_seconds = Some(0);
    let res = t
        .api
        .delete(req)
        .await
        .unwrap_or_else(|e| panic!("delete g5: {e}"));
    assert!(res.deleted, "grace 0 removes a running pod at once");

    let done = create(&t, POD, "default", &pod("g6", "node-a")).await;
    let mut st = json_of(&done);
    st["status"] = json!({"phase": "Succeeded"});
    t.api
        .update_status(update_req(POD, "default", &st))
        .await
        .unwrap_or_else(|e| panic!("pod status: {e}"));
    assert!(
        delete(&t, POD, "default", "g6").await.deleted,
        "a finished pod goes at once"
    );

    create(&t, POD, "default", &pod("g7", "node-a")).await;
    let mut req = delete_req(POD, "default", "g7");
    req.grace_period_seconds = Some(-1);
    assert_err(
        t.api.delete(req).await,
        is_bad_request,
        "a negative grace period",
    );
}

pub async fn bind_assigns_a_node_once(t: Target) {
    let bind = |name: &str, node: &str, uid: &str| pb::BindRequest {
        namespace: "default".into(),
        name: name.into(),
        node_name: node.into(),
        uid: uid.into(),
        options: None,
    };
    let p = create(&t, POD, "default", &pod("b1", "")).await;
    let mut w = watch(&t, watch_req(POD, "default", p.resource_version)).await;
    let b = t
        .api
        .bind(bind("b1", "node-a", ""))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    assert!(b.resource_version > p.resource_version);
    let v = json_of(&b);
    assert_eq!(v["spec"]["nodeName"], "node-a");
    let scheduled: Vec<&Value> = v["status"]["conditions"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["type"] == "PodScheduled").collect())
        .unwrap_or_default();
    assert_eq!(scheduled.len(), 1, "one PodScheduled condition: {v}");
    assert_eq!(scheduled[0]["status"], "True");
    assert_eq!(
        json_of(&get(&t, POD, "default", "b1").await),
        v,
        "the binding is stored"
    );
    let ev = next_change(&mut w, "binding").await;
    assert!(
        matches!(&ev, WatchEvent::Modified(o) if o.resource_version == b.resource_version),
        "binding is a MODIFIED event: {:?}",
        summary(&ev)
    );
    assert_err(
        t.api.bind(bind("b1", "node-b", "")).await,
        is_conflict,
        "binding a bound pod",
    );

    let p2 = create(&t, POD, "default", &pod("b2", "")).await;
    assert_err(
        t.api.bind(bind("b2", "node-a", "not-the-uid")).await,
        is_conflict,
        "binding with another uid",
    );
    let uid = json_of(&p2)["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    t.api
        .bind(bind("b2", "node-a", &uid))
        .await
        .unwrap_or_else(|e| panic!("bind with the right uid: {e}"));
    assert_err(
        t.api.bind(bind("ghost", "node-a", "")).await,
        is_not_found,
        "binding a missing pod",
    );
    create(&t, POD, "default", &pod("b3", "")).await;
    assert_err(
        t.api.bind(bind("b3", "", "")).await,
        is_invalid,
        "binding to no node",
    );
    let mut held = pod("b4", "");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&t, POD, "default", &held).await;
    delete(&t, POD, "default", "b4").await;
    assert_err(
        t.api.bind(bind("b4", "node-a", "")).await,
        is_conflict,
        "binding a pod being deleted",
    );
}

pub async fn pod_field_selectors(t: Target) {
    let p1 = create(&t, POD, "default", &pod("p1", "node-a")).await;
    let mut st = json_of(&p1);
    st["status"] = json!({"phase": "Running"});
    t.api
        .update_status(update_req(POD, "default", &st))
        .await
        .unwrap_or_else(|e| panic!("pod status: {e}"));
    create(&t, POD, "default", &pod("p2", "node-b")).await;
    let p3 = create(&t, POD, "default", &pod("p3", "")).await;
    let select = |fields: &str| {
        let mut r = list_req(POD, "default");
        r.field_selector = fields.into();
        r
    };
    for (fields, want) in [
        ("spec.nodeName=node-a", vec!["p1"]),
        ("status.phase=Pending", vec!["p2", "p3"]),
        ("status.phase=Running", vec!["p1"]),
        ("metadata.name=p3", vec!["p3"]),
        ("spec.nodeName=", vec!["p3"]),
        ("spec.nodeName!=node-a", vec!["p2", "p3"]),
        ("spec.nodeName=node-a,status.phase=Running", vec!["p1"]),
        (
            "metadata.namespace=default,metadata.name!=p1",
            vec!["p2", "p3"],
        ),
    ] {
        let l = list(&t, select(fields)).await;
        assert_eq!(names(&l.items), want, "pods with {fields}");
    }
    assert_err(
        t.api.list(select("spec.containers=x")).await,
        is_bad_request,
        "a field pods cannot be selected by",
    );
    let mut cms = list_req(CM, "default");
    cms.field_selector = "spec.nodeName=node-a".into();
    assert_err(
        t.api.list(cms).await,
        is_bad_request,
        "a pod field on config maps",
    );
    // A watch by node sees a pod enter its selection when it is bound there.
    let mut req = watch_req(POD, "default", p3.resource_version);
    req.field_selector = "spec.nodeName=node-c".into();
    let mut w = watch(&t, req).await;
    let b = t
        .api
        .bind(pb::BindRequest {
            namespace: "default".into(),
            name: "p3".into(),
            node_name: "node-c".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("bind p3: {e}"));
    let ev = next_change(&mut w, "pod bound to the watched node").await;
    assert_eq!(summary(&ev), ("ADDED", "p3".into(), b.resource_version));
}
