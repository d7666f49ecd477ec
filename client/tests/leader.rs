//! Leader election against the fake, under paused time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use rudder_client::clock::{Clock, ManualClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::leader::{LeaderConfig, LeaderElector, while_leading};
use rudder_client::{Api, ClientError};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Candidate {
    leading: watch::Receiver<bool>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn candidate(fake: &Arc<FakeApi>, clock: &Arc<ManualClock>, id: &str) -> Candidate {
    let api: Arc<dyn Api> = fake.clone();
    let cfg = LeaderConfig::new("kube-system", "rudder-scheduler", id);
    let e = LeaderElector::new(api, cfg, clock.clone()).expect("valid config");
    let leading = e.subscribe();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(e.run(cancel.clone()));
    Candidate {
        leading,
        cancel,
        task,
    }
}

fn lease(fake: &FakeApi) -> Value {
    let kind = kind_ref("coordination.k8s.io/v1", "Lease");
    fake.get_json(&kind, "kube-system", "rudder-scheduler")
        .expect("lease exists")
}

fn holder(fake: &FakeApi) -> String {
    lease(fake)["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn transitions(fake: &FakeApi) -> i64 {
    lease(fake)["spec"]["leaseTransitions"]
        .as_i64()
        .unwrap_or(-1)
}

fn is(c: &Candidate) -> bool {
    *c.leading.borrow()
}

#[tokio::test(start_paused = true)]
async fn exactly_one_of_two_candidates_leads() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    let b = candidate(&fake, &clock, "b");
    eventually("a leader", || is(&a) || is(&b)).await;
    let leader = if is(&a) { "a" } else { "b" };
    assert_eq!(holder(&fake), leader);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(is(&a) != is(&b), "exactly one leader at all times");
    }
    assert_eq!(holder(&fake), leader, "no spurious change of leader");
    assert_eq!(transitions(&fake), 0);
    assert!(fake.calls(Op::Update) >= 25, "the leader keeps renewing");
}

#[tokio::test(start_paused = true)]
async fn another_candidate_takes_over_after_the_lease_expires() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    eventually("a leads", || is(&a)).await;
    let b = candidate(&fake, &clock, "b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!is(&b));
    // `a` dies without releasing.
    a.task.abort();
    let died = Instant::now();
    eventually("b leads", || is(&b)).await;
    let waited = died.elapsed();
    assert!(
        waited >= Duration::from_secs(13) && waited <= Duration::from_secs(18),
        "took over after {waited:?}"
    );
    assert_eq!(holder(&fake), "b");
    assert_eq!(transitions(&fake), 1);
}

#[tokio::test(start_paused = true)]
async fn release_on_shutdown_allows_immediate_takeover() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    eventually("a leads", || is(&a)).await;
    let b = candidate(&fake, &clock, "b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.cancel.cancel();
    assert!(is(&a));
    a.task.await.expect("a exits");
    assert!(!*a.leading.borrow());
    assert_eq!(holder(&fake), "", "released");
    let released = Instant::now();
    eventually("b leads", || is(&b)).await;
    assert!(
        released.elapsed() <= Duration::from_millis(2500),
        "within one retry period, not a lease duration: {:?}",
        released.elapsed()
    );
    assert_eq!(transitions(&fake), 1);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    eventually("a leads", || is(&a)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    fake.fail_times(
        Op::Get,
        ClientError::Unavailable("partition".into()),
        10_000,
    );
    let mut leading = a.leading.clone();
    leading.wait_for(|l| !*l).await.expect("elector alive");
    let renewed: jiff::Timestamp = lease(&fake)["spec"]["renewTime"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("renewTime");
    let since = clock.now().duration_since(renewed);
    assert!(
        since <= jiff::SignedDuration::from_secs(10) && since > jiff::SignedDuration::from_secs(8),
        "stepped down {since:?} after the last renewal, lease lasts 15 s"
    );
}

#[tokio::test(start_paused = true)]
async fn wall_clock_jumps_do_not_affect_leadership() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    eventually("a leads", || is(&a)).await;
    let b = candidate(&fake, &clock, "b");
    clock.jump_wall(jiff::SignedDuration::from_hours(2));
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(is(&a) && !is(&b));
    }
}

#[tokio::test(start_paused = true)]
async fn while_leading_runs_work_only_while_leading() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let a = candidate(&fake, &clock, "a");
    let work = tokio::spawn(while_leading(a.leading.clone(), async {
        std::future::pending::<()>().await
    }));
    eventually("a leads", || is(&a)).await;
    assert!(!work.is_finished());
    fake.fail_times(
        Op::Get,
        ClientError::Unavailable("partition".into()),
        10_000,
    );
    assert_eq!(
        work.await.expect("joined"),
        None,
        "work stopped on losing leadership"
    );
}
