//! Watch semantics against a real server: from a version with no gap or duplicate, selectors,
//! expiry, bookmarks, and a slow watcher beside fast ones.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rudder_client::proto as pb;
use serde_json::json;

fn watch_req(kind: &str, ns: &str, rv: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        kind: kref("v1", kind),
        namespace: ns.into(),
        resource_version: rv,
        ..Default::default()
    }
}

fn ev_type(e: &pb::WatchEvent) -> pb::EventType {
    pb::EventType::try_from(e.r#type).unwrap_or(pb::EventType::Unspecified)
}

#[tokio::test]
async fn watch_from_a_version_has_no_gap_and_no_duplicate() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let first = create(c, "v1", "ConfigMap", "default", configmap("a", json!({}))).await;
    let from = first.resource_version;
    create(c, "v1", "ConfigMap", "default", configmap("b", json!({}))).await;
    create(c, "v1", "Pod", "default", pod("other-kind", json!({}))).await;
    c.delete(delete_req("v1", "ConfigMap", "default", "a"))
        .await
        .unwrap();
    let mut w = c
        .watch(watch_req("ConfigMap", "default", from))
        .await
        .unwrap();
    // History first...
    let e1 = next_event(&mut w).await;
    assert_eq!(
        (ev_type(&e1), e1.object.as_ref().unwrap().name.as_str()),
        (pb::EventType::Added, "b")
    );
    let e2 = next_event(&mut w).await;
    assert_eq!(
        (ev_type(&e2), e2.object.as_ref().unwrap().name.as_str()),
        (pb::EventType::Deleted, "a")
    );
    assert!(e2.resource_version > e1.resource_version);
    // ...then live events, continuing in order.
    for i in 0..50 {
        create(
            c,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("live-{i}"), json!({})),
        )
        .await;
    }
    let mut last = e2.resource_version;
    for i in 0..50 {
        let e = next_event(&mut w).await;
        assert_eq!(ev_type(&e), pb::EventType::Added);
        assert_eq!(e.object.as_ref().unwrap().name, format!("live-{i}"));
        assert!(e.resource_version > last, "versions strictly increase");
        last = e.resource_version;
    }
}

#[tokio::test]
async fn watch_from_zero_lists_first_and_selectors_turn_changes_into_add_and_delete() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    create(c, "v1", "Pod", "default", pod("p1", json!({"app": "web"}))).await;
    create(c, "v1", "Pod", "default", pod("p2", json!({"app": "db"}))).await;
    let mut req = watch_req("Pod", "", 0);
    req.label_selector = "app=web".into();
    let mut w = c.watch(req).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (ev_type(&e), e.object.unwrap().name),
        (pb::EventType::Added, "p1".to_string())
    );
    // p2 enters the selection: ADDED; p1 leaves it: DELETED.
    let patch = |name: &str, app: &str| pb::PatchRequest {
        kind: kref("v1", "Pod"),
        namespace: "default".into(),
        name: name.into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: json!({"metadata": {"labels": {"app": app}}})
            .to_string()
            .into(),
        ..Default::default()
    };
    c.patch(patch("p2", "web")).await.unwrap();
    let left = c.patch(patch("p1", "db")).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (ev_type(&e), e.object.unwrap().name),
        (pb::EventType::Added, "p2".to_string())
    );
    let e = next_event(&mut w).await;
    let o = e.object.clone().unwrap();
    assert_eq!(
        (ev_type(&e), o.name.as_str()),
        (pb::EventType::Deleted, "p1")
    );
    // As Kubernetes' watch cache: the last version that matched, at the change's version.
    let body = json(&o);
    assert_eq!(body["metadata"]["labels"]["app"], "web", "{body}");
    assert_eq!(e.resource_version, left.resource_version);
    assert_eq!(o.resource_version, left.resource_version);
    assert_eq!(
        body["metadata"]["resourceVersion"],
        left.resource_version.to_string()
    );
}

#[tokio::test]
async fn a_version_older_than_the_window_is_expired() {
    let s = TestServer::start(&["--history-window", "10"]);
    let c = &s.client;
    let first = create(c, "v1", "ConfigMap", "default", configmap("x0", json!({}))).await;
    for i in 1..40 {
        create(
            c,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("x{i}"), json!({})),
        )
        .await;
    }
    let mut w = c
        .watch(watch_req("ConfigMap", "default", first.resource_version))
        .await
        .unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(ev_type(&e), pb::EventType::Error);
    let err = e.error.unwrap();
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    assert!(
        err.message.contains("too old resource version"),
        "{}",
        err.message
    );
    // A recent version still works.
    let st = c.stats().await.unwrap();
    let mut w = c
        .watch(watch_req("ConfigMap", "default", st.resource_version - 2))
        .await
        .unwrap();
    assert_eq!(ev_type(&next_event(&mut w).await), pb::EventType::Added);
    // A continue token older than the window is expired too.
    let mut req = list_req("v1", "ConfigMap", "default");
    req.limit = 5;
    let page = c.list(req.clone()).await.unwrap();
    for i in 0..20 {
        create(
            c,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("y{i}"), json!({})),
        )
        .await;
    }
    req.continue_token = page.continue_token;
    let e = c.list(req).await.unwrap_err();
    assert!(matches!(e, rudder_client::ClientError::Expired(_)), "{e:?}");
}

#[tokio::test]
async fn idle_watchers_get_bookmarks_with_the_latest_version() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut req = watch_req("Pod", "default", 0);
    req.allow_bookmarks = true;
    req.bookmark_interval_ms = 100;
    let mut w = c.watch(req).await.unwrap();
    // Writes to another kind advance the version this watcher may resume from.
    let cm = create(c, "v1", "ConfigMap", "default", configmap("z", json!({}))).await;
    let e = next_event(&mut w).await;
    assert_eq!(ev_type(&e), pb::EventType::Bookmark);
    assert!(e.object.is_none());
    let e = next_event(&mut w).await;
    assert_eq!(ev_type(&e), pb::EventType::Bookmark);
    assert!(
        e.resource_version >= cm.resource_version,
        "{} < {}",
        e.resource_version,
        cm.resource_version
    );
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_without_stalling_writers_or_fast_watchers() {
    let s = TestServer::start(&["--watch-buffer", "64"]);
    let c = s.client.clone();
    let start = c.stats().await.unwrap().resource_version;
    let mut slow = c
        .watch(watch_req("ConfigMap", "default", start))
        .await
        .unwrap();
    let mut fast = c
        .watch(watch_req("ConfigMap", "default", start))
        .await
        .unwrap();
    const N: usize = 1500;
    let big = "v".repeat(8 * 1024);
    let fast_reader = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            let e = next_event(&mut fast).await;
            assert_eq!(ev_type(&e), pb::EventType::Added);
            n += 1;
        }
        n
    });
    let t = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let c = c.clone();
            let big = big.clone();
            tokio::spawn(async move {
                for i in (w..N).step_by(8) {
                    create(
                        &c,
                        "v1",
                        "ConfigMap",
                        "default",
                        configmap(&format!("cm-{i:05}"), json!({"big": big})),
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let write_time = t.elapsed();
    assert_eq!(
        fast_reader.await.unwrap(),
        N,
        "the fast watcher saw every event"
    );
    assert!(
        write_time < Duration::from_secs(60),
        "writers were not stalled: {write_time:?}"
    );
    // The slow watcher, finally reading, finds some events then a cut-off with a resume point.
    let mut got = Vec::new();
    let resume = loop {
        let e = next_event(&mut slow).await;
        match ev_type(&e) {
            pb::EventType::Added => got.push(e.resource_version),
            pb::EventType::Error => {
                let err = e.error.unwrap();
                assert_eq!(err.reason, "TooSlow");
                break err.resume_resource_version;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        got.len() < N,
        "the slow watcher was cut off early ({} events)",
        got.len()
    );
    assert!(resume >= got.last().copied().unwrap_or(start));
    // Resuming from that point delivers the rest: no gap, no duplicate.
    let mut again = c
        .watch(watch_req("ConfigMap", "default", resume))
        .await
        .unwrap();
    let mut total = got.len();
    let mut last = resume;
    while total < N {
        let e = next_event(&mut again).await;
        assert_eq!(ev_type(&e), pb::EventType::Added);
        assert!(e.resource_version > last);
        last = e.resource_version;
        total += 1;
    }
    let server_rss_ok = c.stats().await.unwrap();
    // N ConfigMaps and the four system namespaces.
    assert_eq!(server_rss_ok.object_count as usize, N + 4);
}

#[tokio::test]
async fn a_watch_or_continue_token_from_a_version_the_store_has_not_reached_is_refused() {
    let s = TestServer::start(&["--resource-version-wait-ms", "300"]);
    let c = &s.client;
    let current = c.stats().await.unwrap().resource_version;
    let ahead = current + 1000;
    let mut w = c
        .watch(watch_req("ConfigMap", "default", ahead))
        .await
        .unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(ev_type(&e), pb::EventType::Error, "{e:?}");
    let err = e.error.unwrap();
    assert_eq!(
        (err.code, err.reason.as_str()),
        (
            pb::watch_error::CODE_TOO_LARGE_RESOURCE_VERSION,
            pb::watch_error::REASON_TOO_LARGE_RESOURCE_VERSION
        )
    );
    assert_eq!(
        err.message,
        format!("Too large resource version: {ahead}, current: {current}")
    );
    // A continue token from that version (as another server could have issued) is refused too.
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": ahead, "ns": "default", "name": "a"}).to_string());
    let mut req = list_req("v1", "ConfigMap", "default");
    req.continue_token = token;
    let e = c.list(req).await.unwrap_err();
    assert!(
        e.to_string().contains("Too large resource version"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_watch_slightly_ahead_waits_for_the_store_to_catch_up() {
    let s = TestServer::start(&[]);
    let c = s.client.clone();
    let current = c.stats().await.unwrap().resource_version;
    let mut w = c
        .watch(watch_req("ConfigMap", "default", current + 1))
        .await
        .unwrap();
    create(
        &c,
        "v1",
        "ConfigMap",
        "default",
        configmap("seen", json!({})),
    )
    .await;
    let later = create(
        &c,
        "v1",
        "ConfigMap",
        "default",
        configmap("new", json!({})),
    )
    .await;
    // The first write is at the version asked for, so only the second is after it.
    let e = next_event(&mut w).await;
    assert_eq!(ev_type(&e), pb::EventType::Added, "{e:?}");
    assert_eq!(e.object.unwrap().name, "new");
    assert_eq!(e.resource_version, later.resource_version);
}
