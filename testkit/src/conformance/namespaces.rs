//! Cases on namespaces: existence, the `kubernetes` finalizer, termination without a cascade by
//! the server, and `finalize`.

use serde_json::{Value, json};

use super::*;

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn spec_finalizers(ns: &Value) -> Value {
    ns.pointer("/spec/finalizers").cloned().unwrap_or(json!([]))
}

/// The `namespaces/finalize` subresource with these `spec.finalizers`.
async fn finalize(t: &Target, name: &str, finalizers: Value) -> Result<pb::Object, ClientError> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
        "spec": {"finalizers": finalizers}});
    t.api.finalize(update_req(NS, "", &body)).await
}

pub async fn namespaces_must_exist(t: Target) {
    let r = t
        .api
        .create(create_req(
            CM,
            "nope",
            &configmap("c", json!({}), json!({})),
        ))
        .await;
    assert_err(r, is_not_found, "create into a missing namespace");
    let ns = create(&t, NS, "", &namespace("team-a")).await;
    assert_eq!(ns.namespace, "", "namespaces are cluster-scoped");
    let o = create(&t, CM, "team-a", &configmap("c", json!({}), json!({}))).await;
    assert_eq!(o.namespace, "team-a");
    get(&t, CM, "team-a", "c").await;
    for system in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        get(&t, NS, "", system).await;
        create(
            &t,
            CM,
            system,
            &configmap("in-system", json!({}), json!({})),
        )
        .await;
    }
}

pub async fn namespaces_carry_the_kubernetes_finalizer(t: Target) {
    let ns = json_of(&create(&t, NS, "", &namespace("plain")).await);
    assert_eq!(
        spec_finalizers(&ns),
        json!(["kubernetes"]),
        "added at create"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    let mut own = namespace("own");
    own["spec"] = json!({"finalizers": ["example.com/x"]});
    let own = json_of(&create(&t, NS, "", &own).await);
    assert_eq!(
        spec_finalizers(&own),
        json!(["example.com/x", "kubernetes"]),
        "appended to the client's"
    );
    // An update or a patch cannot change spec.finalizers; finalize can.
    let mut edited = ns.clone();
    edited["spec"] = json!({"finalizers": []});
    edited["metadata"]["labels"] = json!({"team": "a"});
    let after = json_of(
        &t.api
            .update(update_req(NS, "", &edited))
            .await
            .unwrap_or_else(|e| panic!("update a namespace: {e}")),
    );
    assert_eq!(after["metadata"]["labels"]["team"], "a");
    assert_eq!(
        spec_finalizers(&after),
        json!(["kubernetes"]),
        "an update keeps spec.finalizers"
    );
    let patched = json_of(&patch(&t, NS, "", "plain", json!({"spec": {"finalizers": null}})).await);
    assert_eq!(
        spec_finalizers(&patched),
        json!(["kubernetes"]),
        "a patch keeps spec.finalizers"
    );
    let fin = json_of(
        &finalize(&t, "plain", json!([]))
            .await
            .unwrap_or_else(|e| panic!("finalize an active namespace: {e}")),
    );
    assert_eq!(spec_finalizers(&fin), json!([]), "finalize sets them");
    assert_eq!(fin["metadata"]["labels"]["team"], "a", "and nothing else");
    assert_eq!(
        fin["status"]["phase"], "Active",
        "an active namespace stays"
    );
    assert_err(
        finalize(&t, "missing", json!([])).await,
        is_not_found,
        "finalize of a missing namespace",
    );
    let stale = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "plain", "resourceVersion": "1"},
        "spec": {"finalizers": ["kubernetes"]}});
    assert_err(
        t.api.finalize(update_req(NS, "", &stale)).await,
        is_conflict,
        "finalize with a stale resourceVersion",
    );
}

pub async fn deleting_a_namespace_marks_it_terminating_and_nothing_else(t: Target) {
    let r = t.api.delete(delete_req(NS, "", "default")).await;
    assert_err(r, is_forbidden, "deleting a system namespace");
    create(&t, NS, "", &namespace("doomed")).await;
    create(&t, CM, "doomed", &configmap("plain", json!({}), json!({}))).await;
    let res = delete(&t, NS, "", "doomed").await;
    assert!(!res.deleted, "the kubernetes finalizer holds the namespace");
    let ns = json_of(&get(&t, NS, "", "doomed").await);
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(spec_finalizers(&ns), json!(["kubernetes"]));
    let plain = json_of(&get(&t, CM, "doomed", "plain").await);
    assert!(
        plain["metadata"]["deletionTimestamp"].is_null(),
        "the server deletes nothing in a terminating namespace: {plain}"
    );
    let r = t
        .api
        .create(create_req(
            CM,
            "doomed",
            &configmap("late", json!({}), json!({})),
        ))
        .await;
    match r {
        Err(ClientError::Forbidden(m)) => assert!(
            m.contains(
                "unable to create new content in namespace doomed because it is being terminated"
            ),
            "{m}"
        ),
        other => panic!("create into a terminating namespace: {other:?}"),
    }
    let again = delete(&t, NS, "", "doomed").await;
    assert!(!again.deleted, "a second delete only reports");
    // Emptying it does not remove it while the finalizer is there.
    delete(&t, CM, "doomed", "plain").await;
    get(&t, NS, "", "doomed").await;
    assert_eq!(
        json_of(&get(&t, NS, "", "doomed").await)["status"]["phase"],
        "Terminating"
    );
}

pub async fn a_namespace_goes_once_both_finalizer_lists_and_its_content_are_empty(t: Target) {
    // Emptied, then finalized: the finalize removes it.
    create(&t, NS, "", &namespace("one")).await;
    delete(&t, NS, "", "one").await;
    finalize(&t, "one", json!([]))
        .await
        .unwrap_or_else(|e| panic!("finalize: {e}"));
    assert_err(
        try_get(&t, NS, "", "one").await,
        is_not_found,
        "an empty namespace goes with its last finalizer",
    );

    // A metadata finalizer holds it after finalize; removing it removes the namespace.
    let mut held = namespace("two");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&t, NS, "", &held).await;
    delete(&t, NS, "", "two").await;
    finalize(&t, "two", json!([]))
        .await
        .unwrap_or_else(|e| panic!("finalize: {e}"));
    let ns = json_of(&get(&t, NS, "", "two").await);
    assert_eq!(
        ns["status"]["phase"], "Terminating",
        "metadata finalizers hold it"
    );
    patch(&t, NS, "", "two", json!({"metadata": {"finalizers": null}})).await;
    assert_err(
        try_get(&t, NS, "", "two").await,
        is_not_found,
        "both lists empty: gone",
    );

    // Finalized with content left: it stays until the last object goes.
    create(&t, NS, "", &namespace("three")).await;
    let mut cm = configmap("held", json!({}), json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/x"]);
    create(&t, CM, "three", &cm).await;
    delete(&t, NS, "", "three").await;
    finalize(&t, "three", json!([]))
        .await
        .unwrap_or_else(|e| panic!("finalize: {e}"));
    get(&t, NS, "", "three").await;
    delete(&t, CM, "three", "held").await;
    get(&t, NS, "", "three").await;
    let left = json_of(&get(&t, CM, "three", "held").await);
    let mut release = left.clone();
    release["metadata"]["finalizers"] = json!([]);
    t.api
        .update(update_req(CM, "three", &release))
        .await
        .unwrap_or_else(|e| panic!("releasing the last object: {e}"));
    assert_err(
        try_get(&t, NS, "", "three").await,
        is_not_found,
        "the last object's removal takes the finalized namespace",
    );

    // Without spec.finalizers and content, a delete removes it at once.
    create(&t, NS, "", &namespace("four")).await;
    finalize(&t, "four", json!([]))
        .await
        .unwrap_or_else(|e| panic!("finalize: {e}"));
    assert!(
        delete(&t, NS, "", "four").await.deleted,
        "nothing holds it: deleted at once"
    );
}
