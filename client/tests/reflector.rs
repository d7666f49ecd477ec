//! Reflector and cache against the fake, under paused time.
// Tests measure elapsed time on the paused tokio clock they drive; the ban on ambient clocks
// is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rudder_api::selector::LabelSelector;
use rudder_client::cache::Reader;
use rudder_client::clock::{Backoff, ManualClock};
use rudder_client::fake::{FakeApi, Op};
use rudder_client::informer::Subscription;
use rudder_client::reflector::{Reflector, ReflectorConfig, ReflectorEvent};
use rudder_client::{Api, ClientError};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Running {
    reader: Reader,
    events: Subscription,
    cancel: CancellationToken,
}

fn start(fake: &Arc<FakeApi>, page_size: u32) -> Running {
    let mut cfg = ReflectorConfig::new("v1", "Pod");
    cfg.page_size = page_size;
    cfg.backoff = Backoff::new(
        Duration::from_millis(800),
        Duration::from_secs(30),
        2.0,
        0.0,
    );
    let api: Arc<dyn Api> = fake.clone();
    let (r, reader) = Reflector::new(api, cfg, ManualClock::shared(1));
    let events = r.subscribe();
    let cancel = CancellationToken::new();
    tokio::spawn(r.run(cancel.clone()));
    Running {
        reader,
        events,
        cancel,
    }
}

/// Every event received so far, as (type, key) pairs.
fn drain(rx: &mut Subscription) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(ev) = rx.try_recv() {
        let ty = match &ev {
            ReflectorEvent::Added(_) | ReflectorEvent::Updated { .. } => "applied",
            ReflectorEvent::Deleted(_) => "deleted",
            ReflectorEvent::Restarted(_) => "restarted",
        };
        let objects = match &ev {
            ReflectorEvent::Updated { new, .. } => vec![new],
            _ => ev.objects(),
        };
        for o in objects {
            out.push((ty.to_string(), o.key()));
        }
        if matches!(ev, ReflectorEvent::Restarted(ref v) if v.is_empty()) {
            out.push((ty.to_string(), String::new()));
        }
    }
    out
}

fn pair(ty: &str, key: &str) -> (String, String) {
    (ty.to_string(), key.to_string())
}

#[tokio::test(start_paused = true)]
async fn lists_in_pages_then_follows_the_watch() {
    let fake = FakeApi::new();
    for n in ["a", "b", "c"] {
        create(&fake, &pods(), &pod("ns", n, json!({"app": n}))).await;
    }
    let mut r = start(&fake, 2);
    assert!(r.reader.wait_until_synced().await);
    assert_eq!(r.reader.len(), 3);
    assert_eq!(fake.calls(Op::List), 2, "two pages of two");
    create(&fake, &pods(), &pod("ns", "d", json!({"app": "d"}))).await;
    delete(&fake, &pods(), "ns", "a").await;
    eventually("d cached, a gone", || {
        r.reader.get("ns", "d").is_some() && r.reader.get("ns", "a").is_none()
    })
    .await;
    let sel = LabelSelector::parse("app in (b,d)").expect("selector");
    let mut matched: Vec<_> = r
        .reader
        .list_by("ns", &sel)
        .iter()
        .map(|o| o.key())
        .collect();
    matched.sort();
    assert_eq!(matched, vec!["ns/b", "ns/d"]);
    let evs = drain(&mut r.events);
    assert_eq!(
        &evs[3..],
        &[pair("applied", "ns/d"), pair("deleted", "ns/a")]
    );
    assert_eq!(evs[0].0, "restarted");
    assert_eq!(
        fake.watch_versions(),
        vec![3],
        "watch starts at the list's version"
    );
    r.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn relists_on_expired_and_reports_objects_deleted_meanwhile() {
    let fake = FakeApi::new();
    create(&fake, &pods(), &pod("ns", "gone", json!({}))).await;
    create(&fake, &pods(), &pod("ns", "stays", json!({}))).await;
    let mut r = start(&fake, 0);
    assert!(r.reader.wait_until_synced().await);
    drain(&mut r.events);
    // Disconnect, keep the reflector away long enough to miss changes and the history.
    fake.fail_next(Op::Watch, ClientError::Unavailable("down".into()));
    fake.drop_watches();
    tokio::time::sleep(Duration::from_millis(1)).await;
    delete(&fake, &pods(), "ns", "gone").await;
    create(&fake, &pods(), &pod("ns", "new", json!({}))).await;
    fake.compact();
    eventually("relisted", || r.reader.get("ns", "new").is_some()).await;
    assert!(r.reader.get("ns", "gone").is_none());
    assert_eq!(fake.calls(Op::List), 2, "one relist");
    let evs = drain(&mut r.events);
    assert_eq!(evs[0], pair("deleted", "ns/gone"));
    assert!(evs.contains(&pair("restarted", "ns/new")));
    r.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn resumes_after_too_slow_without_relisting() {
    let fake = FakeApi::new();
    let mut r = start(&fake, 0);
    assert!(r.reader.wait_until_synced().await);
    create(&fake, &pods(), &pod("ns", "a", json!({}))).await;
    eventually("a cached", || r.reader.get("ns", "a").is_some()).await;
    let seen = fake.resource_version();
    fake.cut_watches_too_slow();
    create(&fake, &pods(), &pod("ns", "b", json!({}))).await;
    eventually("b cached", || r.reader.get("ns", "b").is_some()).await;
    assert_eq!(fake.calls(Op::List), 1, "no relist after TooSlow");
    assert_eq!(fake.watch_versions(), vec![0, seen]);
    let evs = drain(&mut r.events);
    assert_eq!(evs.iter().filter(|e| e.0 == "restarted").count(), 1);
    assert_eq!(
        evs.iter().filter(|e| e.1 == "ns/b").count(),
        1,
        "b seen exactly once"
    );
    r.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn backs_off_exponentially_after_errors() {
    let fake = FakeApi::new();
    fake.fail_times(Op::List, ClientError::Unavailable("down".into()), 3);
    let t0 = Instant::now();
    let r = start(&fake, 0);
    assert!(r.reader.wait_until_synced().await);
    // 0.8 + 1.6 + 3.2 s of back-off, no jitter configured.
    assert_eq!(t0.elapsed(), Duration::from_millis(5600));
    assert_eq!(fake.calls(Op::List), 4);
    // A watch failing the same way backs off too, but does not relist.
    fake.fail_times(Op::Watch, ClientError::Unavailable("down".into()), 2);
    fake.drop_watches();
    eventually("watch reopened", || fake.calls(Op::Watch) == 4).await;
    assert!(t0.elapsed() >= Duration::from_millis(5600 + 800 + 800 + 1600));
    assert_eq!(fake.calls(Op::List), 4);
    r.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn bookmarks_advance_the_resume_version() {
    let fake = FakeApi::new();
    let r = start(&fake, 0);
    assert!(r.reader.wait_until_synced().await);
    eventually("watching", || fake.watcher_count() == 1).await;
    // Changes to another kind move the store version without events for pods.
    let cms = rudder_client::conn::kind_ref("v1", "ConfigMap");
    for n in ["x", "y"] {
        create(
            &fake,
            &cms,
            &json!({"metadata": {"name": n, "namespace": "ns"}}),
        )
        .await;
    }
    fake.send_bookmarks();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Let the watch fail once after progress so the next version asked for is visible.
    fake.drop_watches();
    eventually("re-watched", || fake.watch_versions().len() == 2).await;
    assert_eq!(fake.watch_versions()[1], 2);
    assert!(r.reader.is_empty());
    r.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn reader_is_not_synced_before_the_first_list() {
    let fake = FakeApi::new();
    fake.fail_next(Op::List, ClientError::Unavailable("down".into()));
    let r = start(&fake, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!r.reader.has_synced());
    assert!(r.reader.wait_until_synced().await);
    assert!(r.reader.has_synced());
    r.cancel.cancel();
}
