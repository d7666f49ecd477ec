//! Cases on writes: server-set fields, errors, preconditions, no-op writes, generation, the
//! status subresource, finalizers.

use rudder_client::proto as pb;
use serde_json::json;

use super::*;

pub async fn create_sets_server_fields_and_get_returns_it(t: Target) {
    let mut body = configmap("c1", json!({"app": "web"}), json!({"k": "v"}));
    body["metadata"]["uid"] = json!("client-chosen");
    body["metadata"]["generation"] = json!(7);
    let o = create(&t, CM, "", &body).await;
    assert_eq!(
        (o.namespace.as_str(), o.name.as_str()),
        ("default", "c1"),
        "a namespaced object created without a namespace lands in default"
    );
    assert_eq!(
        (o.api_version.as_str(), o.kind.as_str()),
        ("v1", "ConfigMap")
    );
    let v = json_of(&o);
    let m = &v["metadata"];
    assert_eq!(m["namespace"], "default");
    let uid = m["uid"].as_str().unwrap_or("");
    assert!(
        !uid.is_empty() && uid != "client-chosen",
        "the server chooses the uid: {uid:?}"
    );
    assert_eq!(m["generation"], 1, "generation starts at 1");
    assert!(
        m["creationTimestamp"]
            .as_str()
            .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok()),
        "creationTimestamp is set: {m}"
    );
    assert_eq!(
        m["resourceVersion"],
        json!(o.resource_version.to_string()),
        "metadata.resourceVersion is the object's version, as a string"
    );
    assert!(o.resource_version > 0);
    assert_eq!(v["data"], json!({"k": "v"}));
    let got = get(&t, CM, "default", "c1").await;
    assert_eq!(got.resource_version, o.resource_version);
    assert_eq!(json_of(&got), v, "get returns what create stored");
    let got = get(&t, CM, "", "c1").await;
    assert_eq!(
        got.namespace, "default",
        "get without a namespace reads default"
    );
}

pub async fn create_refuses_duplicates_versions_and_nameless_objects(t: Target) {
    create(&t, CM, "default", &configmap("dup", json!({}), json!({}))).await;
    let again = t
        .api
        .create(create_req(
            CM,
            "default",
            &configmap("dup", json!({}), json!({})),
        ))
        .await;
    assert_err(again, is_exists, "a second create of the same name");
    let mut with_rv = configmap("versioned", json!({}), json!({}));
    with_rv["metadata"]["resourceVersion"] = json!("5");
    let r = t.api.create(create_req(CM, "default", &with_rv)).await;
    assert_err(r, is_bad_request, "create with metadata.resourceVersion");
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let r = t.api.create(create_req(CM, "default", &nameless)).await;
    assert_err(r, is_invalid, "create without name or generateName");
    let mut elsewhere = configmap("elsewhere", json!({}), json!({}));
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    let r = t.api.create(create_req(CM, "default", &elsewhere)).await;
    assert_err(
        r,
        is_bad_request,
        "body and request name different namespaces",
    );
}

pub async fn missing_objects_are_not_found(t: Target) {
    assert_err(
        try_get(&t, CM, "default", "ghost").await,
        is_not_found,
        "get of a missing object",
    );
    let body = configmap("ghost", json!({}), json!({"a": "b"}));
    let r = t.api.update(update_req(CM, "default", &body)).await;
    assert_err(r, is_not_found, "update of a missing object");
    let r = t
        .api
        .patch(merge_req(
            CM,
            "default",
            "ghost",
            &json!({"data": {"a": "c"}}),
        ))
        .await;
    assert_err(r, is_not_found, "patch of a missing object");
    let r = t.api.delete(delete_req(CM, "default", "ghost")).await;
    assert_err(r, is_not_found, "delete of a missing object");
}

pub async fn generate_name_gives_distinct_names(t: Target) {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"generateName": "web-"}});
    let a = create(&t, CM, "default", &body).await;
    let b = create(&t, CM, "default", &body).await;
    for o in [&a, &b] {
        assert!(
            o.name.starts_with("web-") && o.name.len() == "web-".len() + 5,
            "generateName adds a five-character suffix: {}",
            o.name
        );
        assert_eq!(json_of(o)["metadata"]["name"], json!(o.name));
    }
    assert_ne!(a.name, b.name, "generated names differ");
    get(&t, CM, "default", &a.name).await;
}

pub async fn list_is_scoped_by_namespace_and_ordered(t: Target) {
    for name in ["b", "a", "c"] {
        create(&t, CM, "default", &configmap(name, json!({}), json!({}))).await;
    }
    let last = create(&t, CM, "kube-system", &configmap("a", json!({}), json!({}))).await;
    let l = list(&t, list_req(CM, "default")).await;
    assert_eq!(names(&l.items), ["a", "b", "c"], "one namespace, by name");
    assert!(l.continue_token.is_empty());
    let all = list(&t, list_req(CM, "")).await;
    let keys: Vec<_> = all
        .items
        .iter()
        .map(|o| (o.namespace.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("default", "a"),
            ("default", "b"),
            ("default", "c"),
            ("kube-system", "a")
        ],
        "every namespace, by namespace then name"
    );
    assert!(
        all.resource_version >= last.resource_version,
        "a list's version covers every item"
    );
}

pub async fn update_with_a_stale_version_conflicts(t: Target) {
    let first = create(
        &t,
        CM,
        "default",
        &configmap("u1", json!({}), json!({"n": "0"})),
    )
    .await;
    let mut body = json_of(&first);
    body["data"]["n"] = json!("1");
    let second = t
        .api
        .update(update_req(CM, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update at the current version: {e}"));
    assert!(second.resource_version > first.resource_version);
    body["data"]["n"] = json!("2");
    let r = t.api.update(update_req(CM, "default", &body)).await;
    assert_err(r, is_conflict, "update carrying a stale resourceVersion");
    assert_eq!(
        json_of(&get(&t, CM, "default", "u1").await)["data"]["n"],
        "1"
    );
    // Without a version the update is unconditional.
    body["metadata"]
        .as_object_mut()
        .map(|m| m.remove("resourceVersion"));
    let third = t
        .api
        .update(update_req(CM, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update without a resourceVersion: {e}"));
    assert!(third.resource_version > second.resource_version);
    body["metadata"]["uid"] = json!("not-the-uid");
    body["data"]["n"] = json!("3");
    let r = t.api.update(update_req(CM, "default", &body)).await;
    assert_err(r, is_conflict, "update carrying another uid");
}

pub async fn patch_with_a_stale_version_conflicts(t: Target) {
    let first = create(
        &t,
        CM,
        "default",
        &configmap("p1", json!({}), json!({"n": "0"})),
    )
    .await;
    let stale = first.resource_version.to_string();
    let second = patch(&t, CM, "default", "p1", json!({"data": {"n": "1"}})).await;
    assert!(second.resource_version > first.resource_version);
    assert_eq!(json_of(&second)["data"], json!({"n": "1"}));
    let r = t
        .api
        .patch(merge_req(
            CM,
            "default",
            "p1",
            &json!({"metadata": {"resourceVersion": stale}, "data": {"n": "2"}}),
        ))
        .await;
    assert_err(
        r,
        is_conflict,
        "merge patch carrying a stale resourceVersion",
    );
    let current = second.resource_version.to_string();
    let third = patch(
        &t,
        CM,
        "default",
        "p1",
        json!({"metadata": {"resourceVersion": current}, "data": {"n": "3"}}),
    )
    .await;
    assert!(third.resource_version > second.resource_version);
    assert_eq!(json_of(&third)["data"]["n"], "3");
    let removed = patch(&t, CM, "default", "p1", json!({"data": {"n": null}})).await;
    assert_eq!(json_of(&removed)["data"], json!({}), "null removes a key");
}

pub async fn delete_preconditions(t: Target) {
    let o = create(&t, CM, "default", &configmap("d1", json!({}), json!({}))).await;
    let uid = json_of(&o)["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut w = watch(&t, watch_req(CM, "default", o.resource_version)).await;
    let mut req = delete_req(CM, "default", "d1");
    req.precondition_resource_version = o.resource_version + 1;
    assert_err(
        t.api.delete(req).await,
        is_conflict,
        "delete at another version",
    );
    let mut req = delete_req(CM, "default", "d1");
    req.precondition_uid = "not-the-uid".into();
    assert_err(
        t.api.delete(req).await,
        is_conflict,
        "delete of another uid",
    );
    let mut req = delete_req(CM, "default", "d1");
    req.precondition_uid = uid;
    req.precondition_resource_version = o.resource_version;
    let res = t
        .api
        .delete(req)
        .await
        .unwrap_or_else(|e| panic!("delete with matching preconditions: {e}"));
    assert!(res.deleted, "an object without finalizers goes at once");
    let last = res
        .object
        .unwrap_or_else(|| panic!("delete returns the object"));
    assert_eq!(last.name, "d1");
    assert!(last.resource_version > o.resource_version);
    assert_err(
        try_get(&t, CM, "default", "d1").await,
        is_not_found,
        "get after delete",
    );
    let ev = next_change(&mut w, "deletion").await;
    assert_eq!(
        summary(&ev),
        ("DELETED", "d1".to_string(), last.resource_version)
    );
}

pub async fn noop_writes_keep_the_version_and_emit_nothing(t: Target) {
    let o = create(
        &t,
        CM,
        "default",
        &configmap("same", json!({"a": "b"}), json!({"k": "v"})),
    )
    .await;
    let mut w = watch(&t, watch_req(CM, "default", o.resource_version)).await;
    let body = json_of(&o);
    let u = t
        .api
        .update(update_req(CM, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("no-op update: {e}"));
    assert_eq!(
        u.resource_version, o.resource_version,
        "a no-op update is not stored"
    );
    let mut unversioned = body.clone();
    unversioned["metadata"]
        .as_object_mut()
        .map(|m| m.remove("resourceVersion"));
    let u = t
        .api
        .update(update_req(CM, "default", &unversioned))
        .await
        .unwrap_or_else(|e| panic!("no-op update without a version: {e}"));
    assert_eq!(u.resource_version, o.resource_version);
    let p = patch(
        &t,
        CM,
        "default",
        "same",
        json!({"data": {"k": "v"}, "metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(
        p.resource_version, o.resource_version,
        "a no-op patch is not stored"
    );
    assert_eq!(
        get(&t, CM, "default", "same").await.resource_version,
        o.resource_version
    );
    // The next event is the marker: the no-op writes produced none.
    let marker = create(
        &t,
        CM,
        "default",
        &configmap("marker", json!({}), json!({})),
    )
    .await;
    let ev = next_change(&mut w, "marker after no-op writes").await;
    assert_eq!(
        summary(&ev),
        ("ADDED", "marker".to_string(), marker.resource_version),
        "no-op writes emit no watch event"
    );
}

pub async fn generation_counts_spec_changes_only(t: Target) {
    let gen_of = |o: &pb::Object| json_of(o)["metadata"]["generation"].as_i64().unwrap_or(0);
    let o = create(&t, DEPLOY, "default", &deployment("web", 1)).await;
    assert_eq!(gen_of(&o), 1);
    let mut body = json_of(&o);
    body["spec"]["replicas"] = json!(2);
    let o = t
        .api
        .update(update_req(DEPLOY, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("spec update: {e}"));
    assert_eq!(gen_of(&o), 2, "a spec change bumps generation");
    let o2 = patch(
        &t,
        DEPLOY,
        "default",
        "web",
        json!({"metadata": {"labels": {"tier": "front"}}}),
    )
    .await;
    assert!(o2.resource_version > o.resource_version);
    assert_eq!(gen_of(&o2), 2, "a metadata change does not");
    let mut st = json_of(&o2);
    st["status"] = json!({"replicas": 2, "observedGeneration": 2});
    let o3 = t
        .api
        .update_status(update_req(DEPLOY, "default", &st))
        .await
        .unwrap_or_else(|e| panic!("status update: {e}"));
    assert!(o3.resource_version > o2.resource_version);
    assert_eq!(gen_of(&o3), 2, "a status change does not");
    let mut body = json_of(&o3);
    body["metadata"]["generation"] = json!(40);
    let o4 = t
        .api
        .update(update_req(DEPLOY, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update carrying a generation: {e}"));
    assert_eq!(gen_of(&o4), 2, "generation is the server's");
    let o5 = patch(
        &t,
        DEPLOY,
        "default",
        "web",
        json!({"spec": {"replicas": 3}}),
    )
    .await;
    assert_eq!(gen_of(&o5), 3, "a spec patch bumps generation");
}

pub async fn status_is_kept_apart(t: Target) {
    let replicas = |o: &pb::Object| {
        let v = json_of(o);
        (
            v["spec"]["replicas"].as_i64(),
            v["status"]["replicas"].as_i64(),
        )
    };
    let mut body = deployment("api", 1);
    body["status"] = json!({"replicas": 5});
    let o = create(&t, DEPLOY, "default", &body).await;
    assert_eq!(replicas(&o), (Some(1), None), "create drops the status");
    let mut body = json_of(&o);
    body["spec"]["replicas"] = json!(2);
    body["status"] = json!({"replicas": 7});
    let o = t
        .api
        .update(update_req(DEPLOY, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(replicas(&o), (Some(2), None), "update ignores the status");
    let mut body = json_of(&o);
    body["spec"]["replicas"] = json!(9);
    body["status"] = json!({"replicas": 3});
    let o = t
        .api
        .update_status(update_req(DEPLOY, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update_status: {e}"));
    assert_eq!(
        replicas(&o),
        (Some(2), Some(3)),
        "update_status changes only status"
    );
    let mut body = json_of(&o);
    body.as_object_mut().map(|m| m.remove("status"));
    body["metadata"]["labels"]["x"] = json!("y");
    let o = t
        .api
        .update(update_req(DEPLOY, "default", &body))
        .await
        .unwrap_or_else(|e| panic!("update without status: {e}"));
    assert_eq!(
        replicas(&o),
        (Some(2), Some(3)),
        "update keeps the stored status"
    );
    let mut req = merge_req(
        DEPLOY,
        "default",
        "api",
        &json!({"spec": {"replicas": 10}, "status": {"replicas": 4}}),
    );
    req.status = true;
    let o = t
        .api
        .patch(req)
        .await
        .unwrap_or_else(|e| panic!("status patch: {e}"));
    assert_eq!(
        replicas(&o),
        (Some(2), Some(4)),
        "a status patch changes only status"
    );
    let same = patch(
        &t,
        DEPLOY,
        "default",
        "api",
        json!({"status": {"replicas": 8}}),
    )
    .await;
    assert_eq!(
        same.resource_version, o.resource_version,
        "a main-resource patch of status alone changes nothing"
    );
    let cm = create(&t, CM, "default", &configmap("plain", json!({}), json!({}))).await;
    let r = t
        .api
        .update_status(update_req(CM, "default", &json_of(&cm)))
        .await;
    assert_err(r, is_not_found, "update_status of a kind without status");
}

pub async fn finalizers_hold_deletion_until_the_last_is_removed(t: Target) {
    let mut body = configmap("held", json!({}), json!({"k": "v"}));
    body["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let o = create(&t, CM, "default", &body).await;
    let mut w = watch(&t, watch_req(CM, "default", o.resource_version)).await;
    let res = delete(&t, CM, "default", "held").await;
    assert!(!res.deleted, "an object with finalizers is not removed");
    let marked = res
        .object
        .unwrap_or_else(|| panic!("delete returns the object"));
    let m = json_of(&marked)["metadata"].clone();
    assert!(
        m["deletionTimestamp"].is_string(),
        "deletionTimestamp is set: {m}"
    );
    assert_eq!(m["deletionGracePeriodSeconds"], 0);
    assert_eq!(m["finalizers"], json!(["example.com/hold"]));
    let ev = next_change(&mut w, "marking for deletion").await;
    assert_eq!(
        summary(&ev),
        ("MODIFIED", "held".into(), marked.resource_version)
    );
    let stored = get(&t, CM, "default", "held").await;
    assert_eq!(stored.resource_version, marked.resource_version, "it stays");
    let again = delete(&t, CM, "default", "held").await;
    assert!(!again.deleted);
    assert_eq!(
        get(&t, CM, "default", "held").await.resource_version,
        marked.resource_version,
        "a second delete changes nothing"
    );
    let mut more = json_of(&stored);
    more["metadata"]["finalizers"] = json!(["example.com/hold", "example.com/more"]);
    let r = t.api.update(update_req(CM, "default", &more)).await;
    assert_err(
        r,
        is_forbidden,
        "adding a finalizer to an object being deleted",
    );
    let changed = patch(&t, CM, "default", "held", json!({"data": {"k": "w"}})).await;
    assert!(
        json_of(&changed)["metadata"]["deletionTimestamp"].is_string(),
        "updates keep deletionTimestamp"
    );
    let ev = next_change(&mut w, "update while deleting").await;
    assert_eq!(summary(&ev).0, "MODIFIED");
    let mut release = json_of(&changed);
    release["metadata"]["finalizers"] = json!([]);
    let gone = t
        .api
        .update(update_req(CM, "default", &release))
        .await
        .unwrap_or_else(|e| panic!("removing the last finalizer: {e}"));
    assert_err(
        try_get(&t, CM, "default", "held").await,
        is_not_found,
        "removing the last finalizer deletes the object",
    );
    let ev = next_change(&mut w, "deletion after the last finalizer").await;
    assert_eq!(
        summary(&ev),
        ("DELETED", "held".into(), gone.resource_version)
    );
}

pub async fn orphan_and_foreground_deletes_add_the_collectors_finalizer(t: Target) {
    for (name, policy, finalizer) in [
        ("orphaned", "Orphan", "orphan"),
        ("foreground", "Foreground", "foregroundDeletion"),
    ] {
        create(
            &t,
            CM,
            "default",
            &configmap(name, json!({}), json!({"k": "v"})),
        )
        .await;
        let mut req = delete_req(CM, "default", name);
        req.propagation_policy = policy.into();
        let res = t
            .api
            .delete(req)
            .await
            .unwrap_or_else(|e| panic!("{policy} delete: {e}"));
        assert!(!res.deleted, "{policy}: held for the garbage collector");
        let m = json_of(&get(&t, CM, "default", name).await)["metadata"].clone();
        assert!(m["deletionTimestamp"].is_string(), "{policy}: {m}");
        assert_eq!(m["finalizers"], json!([finalizer]), "{policy}");
    }
    let mut req = delete_req(CM, "default", "orphaned");
    req.propagation_policy = "Sideways".into();
    assert_err(
        t.api.delete(req).await,
        is_bad_request,
        "an unknown propagation policy",
    );
}
