//! The fake's fault injection: per-caller handles share one store but fail, stall and hang on
//! their own; the fake's own faults hit every caller. All under paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError, WatchEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn cm_kind() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    })
}

fn create_req(name: &str) -> pb::CreateRequest {
    let body = json!({"metadata": {"name": name}, "data": {"n": "0"}});
    pb::CreateRequest {
        kind: cm_kind(),
        namespace: "default".into(),
        json: body.to_string().into(),
        options: None,
    }
}

fn get_req(name: &str) -> pb::GetRequest {
    pb::GetRequest {
        kind: cm_kind(),
        namespace: "default".into(),
        name: name.into(),
        allow_stale: false,
    }
}

fn patch_req(name: &str, n: &str) -> pb::PatchRequest {
    pb::PatchRequest {
        kind: cm_kind(),
        namespace: "default".into(),
        name: name.into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: json!({"data": {"n": n}}).to_string().into(),
        ..Default::default()
    }
}

fn down() -> ClientError {
    ClientError::Unavailable("cut off".into())
}

#[tokio::test(start_paused = true)]
async fn a_callers_errors_hit_only_that_caller_and_the_store_is_shared() {
    let fake = FakeApi::new();
    let (a, b) = (fake.client("a"), fake.client("b"));
    a.create(create_req("shared")).await.expect("create via a");
    b.get(get_req("shared")).await.expect("b sees a's write");
    a.fail_times(Op::Get, down(), 2);
    for _ in 0..2 {
        assert!(matches!(
            a.get(get_req("shared")).await,
            Err(ClientError::Unavailable(_))
        ));
        b.get(get_req("shared")).await.expect("b is unaffected");
    }
    a.get(get_req("shared"))
        .await
        .expect("a's faults are used up");
    assert_eq!((a.calls(Op::Get), b.calls(Op::Get)), (3, 3), "per caller");
    assert_eq!(fake.calls(Op::Get), 6, "the fake counts every caller");
    // The fake's own faults hit whoever calls next, through any handle.
    fake.fail_next(Op::Get, down());
    assert!(b.get(get_req("shared")).await.is_err());
    a.get(get_req("shared")).await.expect("one fault, one call");
}

#[tokio::test(start_paused = true)]
async fn a_hung_caller_stalls_until_released_while_others_proceed() {
    let fake = FakeApi::new();
    let (a, b) = (fake.client("a"), fake.client("b"));
    fake.create(create_req("c")).await.expect("create");
    a.hang(Op::Patch);
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.patch(patch_req("c", "from-a")).await })
    };
    let r = tokio::time::timeout(Duration::from_secs(60), a.patch(patch_req("c", "x"))).await;
    assert!(r.is_err(), "a hung call does not return");
    let by_b = b.patch(patch_req("c", "from-b")).await.expect("b writes");
    let stored = fake.get(get_req("c")).await.expect("get");
    assert_eq!(
        stored.resource_version, by_b.resource_version,
        "a's call never reached the store"
    );
    a.release(Op::Patch);
    let landed = waiting
        .await
        .expect("task")
        .expect("released call succeeds");
    assert!(
        landed.resource_version > by_b.resource_version,
        "the call proceeds after release"
    );
    a.get(get_req("c"))
        .await
        .expect("other ops were never hung");
}

#[tokio::test(start_paused = true)]
async fn hang_all_cuts_a_caller_off_and_clear_faults_heals_it() {
    let fake = FakeApi::new();
    let a = fake.client("a");
    a.hang_all();
    let get = tokio::time::timeout(Duration::from_secs(5), a.get(get_req("x"))).await;
    assert!(get.is_err(), "reads hang");
    let create = tokio::time::timeout(Duration::from_secs(5), a.create(create_req("x"))).await;
    assert!(create.is_err(), "writes hang");
    assert!(
        fake.get(get_req("x")).await.is_err(),
        "the timed-out create never landed"
    );
    a.clear_faults();
    a.create(create_req("x")).await.expect("healed");
}

#[tokio::test(start_paused = true)]
async fn delay_next_holds_one_call_for_that_long_in_tokio_time() {
    let fake = FakeApi::new();
    let a = fake.client("a");
    fake.create(create_req("c")).await.expect("create");
    a.delay_next(Op::Get, Duration::from_secs(7));
    let start = tokio::time::Instant::now();
    a.get(get_req("c")).await.expect("delayed get");
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    let start = tokio::time::Instant::now();
    a.get(get_req("c")).await.expect("next get");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "only the next call is delayed"
    );
    // The fake's own delay applies to every caller.
    fake.delay_next(Op::Get, Duration::from_secs(2));
    let start = tokio::time::Instant::now();
    fake.client("b").get(get_req("c")).await.expect("b's get");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_callers_watches_can_be_dropped_alone() {
    let fake = FakeApi::new();
    let (a, b) = (fake.client("a"), fake.client("b"));
    let req = pb::WatchRequest {
        kind: cm_kind(),
        namespace: "default".into(),
        ..Default::default()
    };
    let mut wa = a.watch(req.clone()).await.expect("watch a");
    let mut wb = b.watch(req).await.expect("watch b");
    assert_eq!((a.watcher_count(), b.watcher_count()), (1, 1));
    a.drop_watches();
    fake.create(create_req("after")).await.expect("create");
    assert!(wa.next().await.is_none(), "a's watch ended");
    assert!(matches!(wb.next().await, Some(Ok(WatchEvent::Added(o))) if o.name == "after"));
    assert_eq!(fake.watcher_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn handles_are_apis_for_components() {
    let fake = FakeApi::new();
    let api: Arc<dyn Api> = fake.client("scheduler");
    api.create(create_req("via-dyn"))
        .await
        .expect("create through Arc<dyn Api>");
    assert!(
        fake.get_json(
            &pb::KindRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into()
            },
            "default",
            "via-dyn"
        )
        .is_some()
    );
}

/// The case per-caller faults exist for: one leader candidate is cut off from the server while
/// the other stays healthy, and leadership moves.
#[tokio::test(start_paused = true)]
async fn cutting_off_the_leader_hands_over_to_the_healthy_candidate() {
    use rudder_client::clock::ManualClock;
    use rudder_client::leader::{LeaderConfig, LeaderElector};

    let fake = FakeApi::new();
    let clock = ManualClock::shared(7);
    let cancel = CancellationToken::new();
    let elect = |handle: &Arc<rudder_client::fake::FakeClient>| {
        let api: Arc<dyn Api> = handle.clone();
        let cfg = LeaderConfig::new("kube-system", "scheduler", handle.name());
        let e = LeaderElector::new(api, cfg, clock.clone()).expect("config");
        let leading = e.subscribe();
        tokio::spawn(e.run(cancel.clone()));
        leading
    };
    let (a, b) = (fake.client("a"), fake.client("b"));
    let mut a_leads = elect(&a);
    let within = |s| Duration::from_secs(s);
    tokio::time::timeout(within(30), a_leads.wait_for(|l| *l))
        .await
        .expect("a leads")
        .expect("elector alive");
    let mut b_leads = elect(&b);
    tokio::time::sleep(within(60)).await;
    assert!(
        *a_leads.borrow() && !*b_leads.borrow(),
        "a healthy holder keeps the lease"
    );
    a.hang_all();
    tokio::time::timeout(within(60), b_leads.wait_for(|l| *l))
        .await
        .expect("b takes over once a's lease lapses")
        .expect("elector alive");
    assert!(!*a_leads.borrow(), "the cut-off holder stepped down");
    let lease = fake
        .get_json(
            &pb::KindRef {
                api_version: "coordination.k8s.io/v1".into(),
                kind: "Lease".into(),
            },
            "kube-system",
            "scheduler",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    cancel.cancel();
}
