//! Cases on reads that span versions: watch replay, selectors entering and leaving, bookmarks,
//! expiry, and paginated lists consistent at one version.

use rudder_client::WatchEvent;
use serde_json::json;

use super::*;

pub async fn watch_from_a_version_replays_without_gap_or_duplicate(t: Target) {
    let a = create(&t, CM, "default", &configmap("w1", json!({}), json!({}))).await;
    let b = create(&t, CM, "default", &configmap("w2", json!({}), json!({}))).await;
    create(&t, POD, "default", &pod("other-kind", "")).await;
    create(
        &t,
        CM,
        "kube-system",
        &configmap("other-ns", json!({}), json!({})),
    )
    .await;
    let c = patch(&t, CM, "default", "w1", json!({"data": {"k": "v"}})).await;
    let mut w = watch(&t, watch_req(CM, "default", a.resource_version)).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(summary(&next_change(&mut w, "replay").await));
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w2".to_string(), b.resource_version),
            ("MODIFIED", "w1".to_string(), c.resource_version)
        ],
        "exactly the changes after the version, in order"
    );
    // Then live, continuing in order.
    let d = delete(&t, CM, "default", "w2").await;
    let d_rv = d.object.map_or(0, |o| o.resource_version);
    let mut last = c.resource_version;
    for i in 0..20 {
        create(
            &t,
            CM,
            "default",
            &configmap(&format!("live-{i}"), json!({}), json!({})),
        )
        .await;
    }
    let ev = next_change(&mut w, "live deletion").await;
    assert_eq!(summary(&ev), ("DELETED", "w2".to_string(), d_rv));
    if let WatchEvent::Deleted(o) = &ev {
        assert_eq!(
            json_of(o)["metadata"]["resourceVersion"],
            json!(d_rv.to_string()),
            "a deleted object carries the deletion's version"
        );
    }
    assert!(d_rv > last);
    last = d_rv;
    for i in 0..20 {
        let (ty, name, rv) = summary(&next_change(&mut w, "live creates").await);
        assert_eq!((ty, name.as_str()), ("ADDED", format!("live-{i}").as_str()));
        assert!(rv > last, "versions strictly increase");
        last = rv;
    }
}

pub async fn watch_from_zero_starts_with_the_current_objects(t: Target) {
    create(&t, CM, "default", &configmap("z2", json!({}), json!({}))).await;
    create(&t, CM, "default", &configmap("z1", json!({}), json!({}))).await;
    let l = list(&t, list_req(CM, "default")).await;
    let mut w = watch(&t, watch_req(CM, "default", 0)).await;
    let mut first: Vec<_> = Vec::new();
    for _ in 0..2 {
        let ev = next_change(&mut w, "initial objects").await;
        let (ty, name, _) = summary(&ev);
        assert_eq!(ty, "ADDED", "a watch from 0 starts with ADDED per object");
        first.push(name);
    }
    first.sort();
    assert_eq!(first, names(&l.items));
    let n = create(&t, CM, "default", &configmap("z3", json!({}), json!({}))).await;
    let ev = next_change(&mut w, "live after the initial objects").await;
    assert_eq!(summary(&ev), ("ADDED", "z3".into(), n.resource_version));
}

pub async fn watch_selector_turns_entering_and_leaving_into_added_and_deleted(t: Target) {
    let start = list(&t, list_req(CM, "default")).await.resource_version;
    let mut req = watch_req(CM, "default", start);
    req.label_selector = "app=web".into();
    let mut w = watch(&t, req).await;
    let created = create(
        &t,
        CM,
        "default",
        &configmap("s1", json!({"app": "web"}), json!({})),
    )
    .await;
    create(
        &t,
        CM,
        "default",
        &configmap("never", json!({"app": "db"}), json!({})),
    )
    .await;
    let changed = patch(&t, CM, "default", "s1", json!({"data": {"k": "1"}})).await;
    let left = patch(
        &t,
        CM,
        "default",
        "s1",
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await;
    patch(&t, CM, "default", "s1", json!({"data": {"k": "2"}})).await;
    let back = patch(
        &t,
        CM,
        "default",
        "s1",
        json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await;
    let gone = delete(&t, CM, "default", "s1").await;
    let marker = create(
        &t,
        CM,
        "default",
        &configmap("marker", json!({"app": "web"}), json!({})),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(summary(&next_change(&mut w, "selector events").await));
    }
    let s1 = |ty: &'static str, rv: u64| (ty, "s1".to_string(), rv);
    assert_eq!(
        seen,
        [
            s1("ADDED", created.resource_version),
            s1("MODIFIED", changed.resource_version),
            s1("DELETED", left.resource_version),
            s1("ADDED", back.resource_version),
            s1("DELETED", gone.object.map_or(0, |o| o.resource_version)),
            ("ADDED", "marker".to_string(), marker.resource_version),
        ],
        "entering is ADDED, leaving is DELETED, changes outside are not sent"
    );
}

pub async fn watch_selector_leaving_sends_the_last_matching_version(t: Target) {
    let o = create(
        &t,
        CM,
        "default",
        &configmap("s2", json!({"app": "web"}), json!({"k": "1"})),
    )
    .await;
    let mut req = watch_req(CM, "default", o.resource_version);
    req.label_selector = "app=web".into();
    let mut w = watch(&t, req).await;
    let left = patch(
        &t,
        CM,
        "default",
        "s2",
        json!({"metadata": {"labels": {"app": "db"}}, "data": {"k": "2"}}),
    )
    .await;
    let ev = next_change(&mut w, "leaving the selection").await;
    let WatchEvent::Deleted(obj) = ev else {
        panic!("leaving the selection is DELETED: {:?}", summary(&ev));
    };
    let v = json_of(&obj);
    assert_eq!(
        (v["metadata"]["labels"].clone(), v["data"].clone()),
        (json!({"app": "web"}), json!({"k": "1"})),
        "the DELETED object is the last version that matched (as Kubernetes' watch cache sends)"
    );
    assert_eq!(
        obj.resource_version, left.resource_version,
        "at the event's version"
    );
    assert_eq!(
        v["metadata"]["resourceVersion"],
        json!(left.resource_version.to_string())
    );
}

pub async fn watch_bookmarks_carry_the_latest_version(t: Target) {
    let start = list(&t, list_req(CM, "default")).await.resource_version;
    let mut req = watch_req(CM, "default", start);
    req.allow_bookmarks = true;
    req.bookmark_interval_ms = 100;
    let mut w = watch(&t, req).await;
    let o = create(&t, CM, "default", &configmap("b1", json!({}), json!({}))).await;
    // Changes elsewhere advance the store; a bookmark tells the watcher it has seen them.
    let other = create(
        &t,
        CM,
        "kube-system",
        &configmap("b2", json!({}), json!({})),
    )
    .await;
    let ev = next_change(&mut w, "the create").await;
    assert_eq!(summary(&ev), ("ADDED", "b1".into(), o.resource_version));
    loop {
        match next_any(&mut w, "a bookmark").await {
            WatchEvent::Bookmark(rv) if rv >= other.resource_version => break,
            WatchEvent::Bookmark(rv) => {
                assert!(rv >= o.resource_version, "bookmarks never go back")
            }
            ev => panic!("only bookmarks were due: {:?}", summary(&ev)),
        }
    }
}

pub async fn watch_from_an_expired_version_ends_with_expired(t: Target) {
    let first = create(&t, CM, "default", &configmap("e0", json!({}), json!({}))).await;
    let mut page = list_req(CM, "default");
    create(&t, CM, "default", &configmap("e1", json!({}), json!({}))).await;
    page.limit = 1;
    let p1 = list(&t, page.clone()).await;
    assert!(
        !p1.continue_token.is_empty(),
        "two objects, limit 1: a second page"
    );
    for i in 0..t.history_window + 10 {
        patch(
            &t,
            CM,
            "default",
            "e0",
            json!({"data": {"n": i.to_string()}}),
        )
        .await;
    }
    let mut w = watch(&t, watch_req(CM, "default", first.resource_version)).await;
    let ev = next_any(&mut w, "expiry").await;
    assert!(
        ev.is_expired(),
        "a version older than the history expires: {:?}",
        summary(&ev)
    );
    match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        Ok(None) => {}
        Ok(Some(other)) => panic!("the watch ends after ERROR Expired, not {other:?}"),
        Err(_) => panic!("the watch ends after ERROR Expired"),
    }
    page.continue_token = p1.continue_token;
    assert_err(
        t.api.list(page).await,
        is_expired,
        "a continue token older than the history",
    );
}

pub async fn list_pages_are_consistent_at_the_first_page_version(t: Target) {
    for name in ["p-a", "p-b", "p-c", "p-d", "p-e"] {
        create(
            &t,
            CM,
            "default",
            &configmap(name, json!({"page": "yes"}), json!({"v": "old"})),
        )
        .await;
    }
    create(
        &t,
        CM,
        "default",
        &configmap("p-x", json!({"page": "no"}), json!({})),
    )
    .await;
    let mut req = list_req(CM, "default");
    req.label_selector = "page=yes".into();
    req.limit = 2;
    let p1 = list(&t, req.clone()).await;
    assert_eq!(names(&p1.items), ["p-a", "p-b"]);
    assert_eq!(p1.remaining_item_count, 3, "three more match");
    assert!(!p1.continue_token.is_empty());
    // Changes after the first page are not seen by the later ones.
    create(
        &t,
        CM,
        "default",
        &configmap("p-bb", json!({"page": "yes"}), json!({})),
    )
    .await;
    delete(&t, CM, "default", "p-d").await;
    patch(&t, CM, "default", "p-e", json!({"data": {"v": "new"}})).await;
    req.continue_token = p1.continue_token.clone();
    let p2 = list(&t, req.clone()).await;
    assert_eq!(
        names(&p2.items),
        ["p-c", "p-d"],
        "the second page, as of the first"
    );
    assert_eq!(p2.resource_version, p1.resource_version);
    assert_eq!(p2.remaining_item_count, 1);
    req.continue_token = p2.continue_token.clone();
    let p3 = list(&t, req.clone()).await;
    assert_eq!(names(&p3.items), ["p-e"]);
    assert_eq!(json_of(&p3.items[0])["data"]["v"], "old", "p-e as it was");
    assert_eq!(p3.resource_version, p1.resource_version);
    assert!(
        p3.continue_token.is_empty(),
        "the last page has no continue token"
    );
    // A token can be used again (a retried page sees the same items).
    req.continue_token = p1.continue_token;
    let again = list(&t, req).await;
    assert_eq!(names(&again.items), ["p-c", "p-d"]);
}
