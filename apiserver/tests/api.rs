//! The API over gRPC against a real `rudder-apiserver`: CRUD, generateName, conflicts, status,
//! finalizers, namespaces, validation, selectors, pagination, dry run, patch, bind, limits.

mod common;

use common::*;
use rudder_client::ClientError;
use rudder_client::proto as pb;
use serde_json::json;

#[tokio::test]
async fn crud_and_generate_name() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let created = create(
        c,
        "v1",
        "ConfigMap",
        "default",
        configmap("cfg", json!({"a": "1"})),
    )
    .await;
    let v = json(&created);
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(v["metadata"]["generation"], 1);
    assert!(v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        v["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        v["metadata"]["resourceVersion"],
        created.resource_version.to_string()
    );

    let got = c
        .get(get_req("v1", "ConfigMap", "default", "cfg"))
        .await
        .unwrap();
    assert_eq!(got.json, created.json);

    let dup = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "default",
            configmap("cfg", json!({})),
        ))
        .await
        .unwrap_err();
    assert!(matches!(dup, ClientError::AlreadyExists(_)), "{dup:?}");
    assert_eq!(dup.to_string(), "configmaps \"cfg\" already exists");

    let mut gen_body = configmap("", json!({}));
    gen_body["metadata"] = json!({"generateName": "web-"});
    let g = create(c, "v1", "ConfigMap", "default", gen_body).await;
    assert!(
        g.name.starts_with("web-") && g.name.len() == 9,
        "{}",
        g.name
    );

    // Update, then delete; a get afterwards is NotFound.
    let mut upd = v.clone();
    upd["data"]["a"] = json!("2");
    let u = c
        .update(update_req("v1", "ConfigMap", "default", &upd))
        .await
        .unwrap();
    assert!(u.resource_version > created.resource_version);
    assert_eq!(json(&u)["metadata"]["generation"], 2);
    let d = c
        .delete(delete_req("v1", "ConfigMap", "default", "cfg"))
        .await
        .unwrap();
    assert!(d.deleted);
    let e = c
        .get(get_req("v1", "ConfigMap", "default", "cfg"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "configmaps \"cfg\" not found");

    // Resource names work as kind references too.
    let l = c
        .list(pb::ListRequest {
            kind: kref("", "cm"),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
}

#[tokio::test]
async fn conflicts_on_stale_versions_and_noop_updates() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let v1 = json(
        &create(
            c,
            "v1",
            "ConfigMap",
            "default",
            configmap("c", json!({"k": "1"})),
        )
        .await,
    );
    let mut a = v1.clone();
    a["data"]["k"] = json!("2");
    c.update(update_req("v1", "ConfigMap", "default", &a))
        .await
        .unwrap();
    let mut b = v1.clone();
    b["data"]["k"] = json!("3");
    let e = c
        .update(update_req("v1", "ConfigMap", "default", &b))
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e:?}");
    assert!(
        e.to_string().contains("the object has been modified"),
        "{e}"
    );
    // Without a resourceVersion the update is unconditional.
    b["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let ok = c
        .update(update_req("v1", "ConfigMap", "default", &b))
        .await
        .unwrap();
    // The same content again changes nothing, not even the version.
    let again = c
        .update(update_req("v1", "ConfigMap", "default", &b))
        .await
        .unwrap();
    assert_eq!(ok.resource_version, again.resource_version);
}

#[tokio::test]
async fn status_is_kept_apart_from_spec() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut body = pod("p", json!({"app": "x"}));
    body["status"] = json!({"phase": "Running"});
    let p = json(&create(c, "v1", "Pod", "default", body).await);
    assert_eq!(
        p["status"]["phase"], "Pending",
        "status is the server's on create"
    );

    // An update cannot change status, and a spec change bumps generation.
    let mut u = p.clone();
    u["status"] = json!({"phase": "Failed"});
    u["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    let after = json(
        &c.update(update_req("v1", "Pod", "default", &u))
            .await
            .unwrap(),
    );
    assert_eq!(after["status"]["phase"], "Pending");
    assert_eq!(after["spec"]["containers"][0]["image"], "busybox:1.37");
    assert_eq!(after["metadata"]["generation"], 2);

    // A status update cannot change spec, and does not bump generation.
    let mut st = after.clone();
    st["status"] = json!({"phase": "Running"});
    st["spec"]["containers"][0]["image"] = json!("busybox:9");
    let s2 = json(
        &c.update_status(update_req("v1", "Pod", "default", &st))
            .await
            .unwrap(),
    );
    assert_eq!(s2["status"]["phase"], "Running");
    assert_eq!(s2["spec"]["containers"][0]["image"], "busybox:1.37");
    assert_eq!(s2["metadata"]["generation"], 2);

    // Kinds without a status subresource refuse status updates.
    let cm = json(&create(c, "v1", "ConfigMap", "default", configmap("x", json!({}))).await);
    let e = c
        .update_status(update_req("v1", "ConfigMap", "default", &cm))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut body = configmap("held", json!({}));
    body["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    create(c, "v1", "ConfigMap", "default", body).await;
    let d = c
        .delete(delete_req("v1", "ConfigMap", "default", "held"))
        .await
        .unwrap();
    assert!(!d.deleted);
    let held = json(d.object.as_ref().unwrap());
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    // New finalizers cannot be added while deleting.
    let e = c
        .patch(patch_req(
            "v1",
            "ConfigMap",
            "default",
            "held",
            pb::PatchType::Merge,
            json!({"metadata": {"finalizers": ["example.com/cleanup", "example.com/more"]}}),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Forbidden(_)), "{e:?}");
    // Removing the last finalizer deletes the object.
    c.patch(patch_req(
        "v1",
        "ConfigMap",
        "default",
        "held",
        pb::PatchType::Merge,
        json!({"metadata": {"finalizers": null}}),
    ))
    .await
    .unwrap();
    let e = c
        .get(get_req("v1", "ConfigMap", "default", "held"))
        .await
        .unwrap_err();
    assert!(e.is_not_found());
}

#[tokio::test]
async fn namespaces_exist_refuse_and_terminate() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let l = c.list(list_req("v1", "Namespace", "")).await.unwrap();
    let names: Vec<_> = l.items.iter().map(|o| o.name.clone()).collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    let e = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "nope",
            configmap("x", json!({})),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "namespaces \"nope\" not found");

    let e = c
        .delete(delete_req("v1", "Namespace", "", "default"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Forbidden(_)), "{e:?}");

    create(
        c,
        "v1",
        "Namespace",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
    )
    .await;
    create(c, "v1", "ConfigMap", "dev", configmap("plain", json!({}))).await;
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/x"]);
    create(c, "v1", "ConfigMap", "dev", held).await;
    let d = c
        .delete(delete_req("v1", "Namespace", "", "dev"))
        .await
        .unwrap();
    assert!(!d.deleted);
    let ns = json(&c.get(get_req("v1", "Namespace", "", "dev")).await.unwrap());
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    // The server deletes nothing in it (the namespace controller does); new content is refused.
    let left = c.list(list_req("v1", "ConfigMap", "dev")).await.unwrap();
    assert_eq!(
        left.items
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        vec!["held", "plain"]
    );
    let e = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "dev",
            configmap("new", json!({})),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Forbidden(_)), "{e:?}");
    assert!(
        e.to_string().contains("because it is being terminated"),
        "{e}"
    );
    // What the namespace controller does: delete the content, then finalize. The finalized
    // namespace stays while an object is left, and goes with its removal.
    for name in ["plain", "held"] {
        c.delete(delete_req("v1", "ConfigMap", "dev", name))
            .await
            .unwrap();
    }
    let fin = c
        .finalize(update_req(
            "v1",
            "Namespace",
            "",
            &json!({"metadata": {"name": "dev"}, "spec": {"finalizers": []}}),
        ))
        .await
        .unwrap();
    assert_eq!(json(&fin)["status"]["phase"], "Terminating");
    c.patch(patch_req(
        "v1",
        "ConfigMap",
        "dev",
        "held",
        pb::PatchType::Json,
        json!([{"op": "remove", "path": "/metadata/finalizers"}]),
    ))
    .await
    .unwrap();
    let e = c
        .get(get_req("v1", "Namespace", "", "dev"))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn decoding_errors_name_the_field() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut body = pod("p", json!({}));
    body["spec"]["containers"][0]["comand"] = json!(["sh"]);
    let e = c
        .create(create_req("v1", "Pod", "default", body))
        .await
        .unwrap_err();
    // Strict decoding errors are BadRequest in Kubernetes; validation errors are Invalid.
    assert!(matches!(e, ClientError::BadRequest(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("spec.containers[0]: unknown field \"comand\""),
        "{e}"
    );

    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "three"}});
    let e = c
        .create(create_req("apps/v1", "Deployment", "default", bad))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("spec.replicas: invalid type: string \"three\""),
        "{e}"
    );

    let e = c
        .create(create_req(
            "example.com/v1",
            "Widget",
            "default",
            json!({"metadata": {"name": "w"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no kind \"Widget\" is registered in version \"example.com/v1\""
    );

    let e = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "default",
            configmap("Bad_Name", json!({})),
        ))
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{e}"
    );

    let huge = "x".repeat(2 * 1024 * 1024);
    let e = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "default",
            configmap("big", json!({"k": huge})),
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("Request entity too large"), "{e}");
}

#[tokio::test]
async fn selectors_filter_lists() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
    ] {
        create(
            c,
            "v1",
            "Pod",
            "default",
            pod(name, json!({"app": app, "tier": tier})),
        )
        .await;
    }
    c.bind(pb::BindRequest {
        namespace: "default".into(),
        name: "a".into(),
        node_name: "n1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let names = |r: pb::ListResponse| r.items.into_iter().map(|o| o.name).collect::<Vec<_>>();
    let mut req = list_req("v1", "Pod", "default");
    req.label_selector = "app=web".into();
    assert_eq!(names(c.list(req.clone()).await.unwrap()), ["a", "b"]);
    req.label_selector = "tier in (back),app!=web".into();
    assert_eq!(names(c.list(req.clone()).await.unwrap()), ["c"]);
    req.label_selector = String::new();
    req.field_selector = "spec.nodeName=n1".into();
    assert_eq!(names(c.list(req.clone()).await.unwrap()), ["a"]);
    req.field_selector = "spec.nodeName=,metadata.name!=c".into();
    assert_eq!(names(c.list(req.clone()).await.unwrap()), ["b"]);
    req.field_selector = "status.phase=Pending".into();
    assert_eq!(names(c.list(req.clone()).await.unwrap()).len(), 3);
    req.field_selector = "spec.bogus=1".into();
    let e = c.list(req.clone()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("field label not supported: \"spec.bogus\""),
        "{e}"
    );
    req.field_selector = String::new();
    req.label_selector = "app in (".into();
    assert!(matches!(
        c.list(req).await.unwrap_err(),
        ClientError::BadRequest(_)
    ));
    // Across namespaces.
    assert_eq!(
        c.list(list_req("v1", "Pod", "")).await.unwrap().items.len(),
        3
    );
}

#[tokio::test]
async fn pagination_is_consistent_under_concurrent_writes() {
    let s = TestServer::start(&[]);
    let c = s.client.clone();
    for i in 0..120 {
        create(
            &c,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("cm-{i:03}"), json!({})),
        )
        .await;
    }
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                create(
                    &c,
                    "v1",
                    "ConfigMap",
                    "default",
                    configmap(&format!("new-{i:03}"), json!({})),
                )
                .await;
                let _ = c
                    .delete(pb::DeleteRequest {
                        kind: kref("v1", "ConfigMap"),
                        namespace: "default".into(),
                        name: format!("cm-{:03}", i * 2),
                        ..Default::default()
                    })
                    .await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut version = None;
    loop {
        let mut req = list_req("v1", "ConfigMap", "default");
        req.limit = 7;
        req.continue_token = token.clone();
        let page = c.list(req).await.unwrap();
        if let Some(v) = version {
            assert_eq!(
                page.resource_version, v,
                "every page is at the first page's version"
            );
        }
        version = Some(page.resource_version);
        seen.extend(page.items.into_iter().map(|o| o.name));
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..120).map(|i| format!("cm-{i:03}")).collect();
    assert_eq!(
        seen, expected,
        "the pages form the list as of the first page: no gap, no duplicate"
    );
}

#[tokio::test]
async fn dry_run_patch_and_bind() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut req = create_req("v1", "ConfigMap", "default", configmap("dry", json!({})));
    req.options = Some(pb::WriteOptions {
        dry_run: true,
        field_manager: String::new(),
    });
    let o = c.create(req).await.unwrap();
    assert_eq!(json(&o)["metadata"]["name"], "dry");
    assert!(
        c.get(get_req("v1", "ConfigMap", "default", "dry"))
            .await
            .unwrap_err()
            .is_not_found()
    );

    create(
        c,
        "v1",
        "ConfigMap",
        "default",
        configmap("p", json!({"a": "1", "b": "2"})),
    )
    .await;
    let m = c
        .patch(patch_req(
            "v1",
            "ConfigMap",
            "default",
            "p",
            pb::PatchType::Merge,
            json!({"data": {"a": null, "c": "3"}}),
        ))
        .await
        .unwrap();
    assert_eq!(json(&m)["data"], json!({"b": "2", "c": "3"}));
    let j = c
        .patch(patch_req(
            "v1",
            "ConfigMap",
            "default",
            "p",
            pb::PatchType::Json,
            json!([{"op": "replace", "path": "/data/b", "value": "9"}]),
        ))
        .await
        .unwrap();
    assert_eq!(json(&j)["data"]["b"], "9");
    let e = c
        .patch(patch_req(
            "v1",
            "ConfigMap",
            "default",
            "p",
            pb::PatchType::Json,
            json!([{"op": "test", "path": "/data/b", "value": "0"}]),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");

    create(c, "v1", "Pod", "default", pod("web", json!({}))).await;
    let b = json(
        &c.bind(pb::BindRequest {
            namespace: "default".into(),
            name: "web".into(),
            node_name: "node-1".into(),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(b["spec"]["nodeName"], "node-1");
    assert_eq!(b["status"]["conditions"][0]["type"], "PodScheduled");
    let e = c
        .bind(pb::BindRequest {
            namespace: "default".into(),
            name: "web".into(),
            node_name: "node-2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.is_conflict() && e.to_string().contains("already assigned"),
        "{e}"
    );
    // A pod on a node is deleted gracefully; grace 0 then removes it.
    let d = c
        .delete(delete_req("v1", "Pod", "default", "web"))
        .await
        .unwrap();
    assert!(!d.deleted);
    assert_eq!(
        json(d.object.as_ref().unwrap())["metadata"]["deletionGracePeriodSeconds"],
        30
    );
    let d = c
        .delete(pb::DeleteRequest {
            kind: kref("v1", "Pod"),
            namespace: "default".into(),
            name: "web".into(),
            grace_period_seconds: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(d.deleted);
}

#[tokio::test]
async fn a_full_disk_refuses_writes_but_serves_reads() {
    let s = TestServer::start(&["--min-free-bytes", "18446744073709551615"]);
    let c = &s.client;
    let h = c.health().await.unwrap();
    assert!(!h.writable);
    assert!(h.status.contains("insufficient storage"), "{}", h.status);
    let e = c
        .create(create_req(
            "v1",
            "ConfigMap",
            "default",
            configmap("x", json!({})),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InsufficientStorage(_)), "{e:?}");
    assert!(e.to_string().contains("writes are refused"), "{e}");
    // The namespaces bootstrapped before... none could be written: reads still answer.
    let l = c.list(list_req("v1", "Namespace", "")).await;
    assert!(l.is_ok());
    let st = c.stats().await.unwrap();
    assert!(!st.writable && !st.unwritable_reason.is_empty());
}
