//! Leader election against the fake, under paused time.
// Intervals are measured on tokio's paused clock, which the tests drive; the ban on ambient
// clocks is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use rudder_client::api::ApiFuture;
use rudder_client::clock::{Clock, ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::leader::{LeaderConfig, LeaderElector, while_leading};
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError, WatchStream};
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

// === run_while_leading: guarded work, hung and late calls, skew, cut-off holders ===

/// The calls of the elector that a test can hold up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Get,
    Create,
    Update,
}

/// What happens to one scripted call.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Never answers and never reaches the server.
    Hang,
    /// Reaches the server at once; the reply comes back this much later.
    LateReply(Duration),
}

/// One candidate's view of the shared fake, with its own faults: scripted faults for chosen
/// calls, and a cut (while cut, every call waits, then goes through once healed, as a request
/// stuck in a partition would).
struct Faulty {
    inner: Arc<FakeApi>,
    script: Mutex<HashMap<Call, VecDeque<Fault>>>,
    cut: watch::Sender<bool>,
    /// When each create or update reached the server.
    writes: Mutex<Vec<Instant>>,
}

impl Faulty {
    fn new(inner: &Arc<FakeApi>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: inner.clone(),
            script: Mutex::default(),
            cut: watch::channel(false).0,
            writes: Mutex::default(),
        })
    }

    fn script(&self, call: Call, fault: Fault) {
        let mut s = self.script.lock().expect("script");
        s.entry(call).or_default().push_back(fault);
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    fn writes_between(&self, from: Instant, to: Instant) -> usize {
        let w = self.writes.lock().expect("writes");
        w.iter().filter(|at| (from..=to).contains(*at)).count()
    }

    async fn call<T: Send>(
        &self,
        call: Call,
        forward: impl FnOnce() -> ApiFuture<'static, T> + Send,
    ) -> Result<T, ClientError> {
        let fault = {
            let mut s = self.script.lock().expect("script");
            s.get_mut(&call).and_then(VecDeque::pop_front)
        };
        let mut cut = self.cut.subscribe();
        let _ = cut.wait_for(|c| !*c).await;
        if matches!(fault, Some(Fault::Hang)) {
            return std::future::pending().await;
        }
        if call != Call::Get {
            self.writes.lock().expect("writes").push(Instant::now());
        }
        let reply = forward().await;
        if let Some(Fault::LateReply(d)) = fault {
            tokio::time::sleep(d).await;
        }
        reply
    }
}

impl Api for Faulty {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        let inner = self.inner.clone();
        Box::pin(self.call(Call::Get, move || {
            Box::pin(async move { inner.get(req).await })
        }))
    }
    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        self.inner.list(req)
    }
    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        self.inner.watch(req)
    }
    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        let inner = self.inner.clone();
        Box::pin(self.call(Call::Create, move || {
            Box::pin(async move { inner.create(req).await })
        }))
    }
    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        let inner = self.inner.clone();
        Box::pin(self.call(Call::Update, move || {
            Box::pin(async move { inner.update(req).await })
        }))
    }
    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        self.inner.update_status(req)
    }
    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        self.inner.patch(req)
    }
    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.inner.delete(req)
    }
    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        self.inner.bind(req)
    }
    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        self.inner.finalize(req)
    }
    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.inner.evict(req)
    }
    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse> {
        self.inner.api_resources()
    }
}

/// One term of guarded work: when it started and ended (on tokio's paused clock) and the wall
/// time it ended at by its candidate's clock.
#[derive(Debug, Clone)]
struct Term {
    who: String,
    start: Instant,
    end: Option<(Instant, jiff::Timestamp)>,
}

/// Every term of every candidate in a test.
#[derive(Default)]
struct Terms(Mutex<Vec<Term>>);

impl Terms {
    fn all(&self) -> Vec<Term> {
        self.0.lock().expect("terms").clone()
    }

    fn of(&self, who: &str) -> Vec<Term> {
        self.all().into_iter().filter(|t| t.who == who).collect()
    }

    fn running(&self, who: &str) -> bool {
        self.of(who).iter().any(|t| t.end.is_none())
    }

    /// No two terms, of anyone, ever overlapped.
    fn assert_disjoint(&self) {
        let all = self.all();
        let end = |t: &Term| t.end.map_or(Instant::now(), |e| e.0);
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert!(
                    end(x) <= y.start || end(y) <= x.start,
                    "terms overlap: {x:?} and {y:?}"
                );
            }
        }
    }
}

/// Closes a term when the guarded future ends or is dropped (an aborted elector).
struct TermGuard {
    terms: Arc<Terms>,
    index: usize,
    clock: SharedClock,
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        let mut terms = self.terms.0.lock().unwrap_or_else(|e| e.into_inner());
        terms[self.index].end = Some((Instant::now(), self.clock.now()));
    }
}

/// A candidate running `run_while_leading`; its guarded work runs until cancelled and then
/// takes `stop_time` to wind down (in-flight writes).
fn guarded(
    api: Arc<dyn Api>,
    clock: SharedClock,
    id: &str,
    terms: &Arc<Terms>,
    stop_time: Duration,
) -> Candidate {
    let cfg = LeaderConfig::new("kube-system", "rudder-scheduler", id);
    let e = LeaderElector::new(api, cfg, clock.clone()).expect("valid config");
    let leading = e.subscribe();
    let cancel = CancellationToken::new();
    let (terms, id) = (terms.clone(), id.to_string());
    let task = tokio::spawn(e.run_while_leading(cancel.clone(), move |token| {
        let mut all = terms.0.lock().expect("terms");
        all.push(Term {
            who: id.clone(),
            start: Instant::now(),
            end: None,
        });
        let guard = TermGuard {
            terms: terms.clone(),
            index: all.len() - 1,
            clock: clock.clone(),
        };
        async move {
            token.cancelled().await;
            tokio::time::sleep(stop_time).await;
            drop(guard);
        }
    }));
    Candidate {
        leading,
        cancel,
        task,
    }
}

fn acquire_time(fake: &FakeApi) -> jiff::Timestamp {
    lease(fake)["spec"]["acquireTime"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("acquireTime")
}

#[tokio::test(start_paused = true)]
async fn a_hung_acquire_call_is_abandoned_and_retried() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    api.script(Call::Get, Fault::Hang);
    let terms = Arc::new(Terms::default());
    let started = Instant::now();
    let a = guarded(api.clone(), clock.clone(), "a", &terms, Duration::ZERO);
    eventually("a leads despite its first call hanging", || is(&a)).await;
    // Abandoned after one retry period (2 s), retried after another (up to 2.4 s).
    assert!(
        started.elapsed() <= Duration::from_millis(4500),
        "led after {:?}",
        started.elapsed()
    );
    assert_eq!(terms.of("a").len(), 1);
    assert_eq!(holder(&fake), "a");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_not_held_up_by_hung_calls() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    api.set_cut(true);
    let terms = Arc::new(Terms::default());
    let a = guarded(api.clone(), clock.clone(), "a", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.cancel.cancel();
    tokio::time::timeout(Duration::from_millis(100), a.task)
        .await
        .expect("returns at once on shutdown")
        .expect("joined");
    assert!(terms.all().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_late_successful_reply_does_not_make_a_candidate_lead() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    // a's create lands at once but its reply takes 20 s: longer than the renew deadline, and
    // long enough for b to see the Lease unchanged for its whole duration.
    api.script(Call::Create, Fault::LateReply(Duration::from_secs(20)));
    let terms = Arc::new(Terms::default());
    let a = guarded(api.clone(), clock.clone(), "a", &terms, Duration::ZERO);
    tokio::task::yield_now().await;
    assert_eq!(holder(&fake), "a", "a's create landed first");
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        terms.assert_disjoint();
    }
    // a gave up on the create, re-read the Lease it holds and renewed it: one term, never
    // interrupted by the reply that came (or would have come) 20 s late.
    let a_terms = terms.of("a");
    assert_eq!(a_terms.len(), 1, "no flip: {a_terms:?}");
    assert!(a_terms[0].end.is_none() && is(&a));
    assert!(terms.of("b").is_empty() && !is(&b));
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("a", 0));
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_released_only_after_the_guarded_work_has_stopped() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let terms = Arc::new(Terms::default());
    let a = guarded(
        fake.clone(),
        clock.clone(),
        "a",
        &terms,
        Duration::from_secs(3),
    );
    eventually("a leads", || is(&a)).await;
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stop = Instant::now();
    a.cancel.cancel();
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert!(terms.running("a"), "a's work is still winding down");
    assert_eq!(holder(&fake), "a", "so the Lease is still a's");
    assert!(is(&a) && !is(&b));
    a.task
        .await
        .expect("a returns after its work and the release");
    let (a_end, a_end_wall) = terms.of("a")[0].end.expect("a's work ended");
    assert!(a_end >= stop + Duration::from_secs(3));
    eventually("b leads", || is(&b)).await;
    assert!(
        a_end.elapsed() <= Duration::from_millis(2500),
        "released, so b took over at its next retry: {:?}",
        a_end.elapsed()
    );
    assert!(
        acquire_time(&fake) >= a_end_wall,
        "b acquired after a's work ended"
    );
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("b", 1));
    terms.assert_disjoint();
}

#[tokio::test(start_paused = true)]
async fn work_that_finishes_while_leading_ends_the_run_and_releases() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let cfg = LeaderConfig::new("kube-system", "rudder-scheduler", "a");
    let e = LeaderElector::new(fake.clone(), cfg, clock).expect("valid config");
    let leading = e.subscribe();
    let run = e.run_while_leading(CancellationToken::new(), |_token| {
        tokio::time::sleep(Duration::from_secs(5))
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("returns when the work is done");
    assert!(!*leading.borrow());
    assert_eq!(holder(&fake), "", "released");
}

#[tokio::test(start_paused = true)]
async fn after_losing_the_lease_the_elector_does_not_act_for_work_still_running() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    let terms = Arc::new(Terms::default());
    // a's work ignores cancellation for 30 s, much longer than the Lease.
    let stop_time = Duration::from_secs(30);
    let a = guarded(api.clone(), clock.clone(), "a", &terms, stop_time);
    eventually("a leads", || is(&a)).await;
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.set_cut(true);
    let mut leading = a.leading.clone();
    leading.wait_for(|l| !*l).await.expect("a alive");
    let lost = Instant::now();
    // a can reach the server again; it must not renew or release for its stale work.
    api.set_cut(false);
    eventually("b leads once the Lease expired", || is(&b)).await;
    assert!(
        terms.running("a"),
        "the documented overlap: a's work outlived its Lease"
    );
    // b dies without releasing: a may lead again, but not before its old work has returned.
    b.task.abort();
    eventually("a leads again", || is(&a)).await;
    let a_terms = terms.of("a");
    let old_end = a_terms[0].end.expect("a's first work ended").0;
    assert_eq!(a_terms.len(), 2);
    assert!(old_end >= lost + stop_time && a_terms[1].start > old_end);
    assert_eq!(
        api.writes_between(lost, old_end),
        0,
        "no renew or release while the lost term's work ran"
    );
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("a", 2));
}

#[tokio::test(start_paused = true)]
async fn a_leader_keeps_its_lease_while_its_work_winds_down_however_long() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let terms = Arc::new(Terms::default());
    let stop_time = Duration::from_secs(40);
    let a = guarded(fake.clone(), clock.clone(), "a", &terms, stop_time);
    eventually("a leads", || is(&a)).await;
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stop = Instant::now();
    a.cancel.cancel();
    // Well past the lease duration: a still renews, so b does not take over.
    tokio::time::sleep(stop_time - Duration::from_millis(100)).await;
    assert!(terms.running("a") && is(&a) && !is(&b));
    assert_eq!(holder(&fake), "a");
    a.task.await.expect("joined");
    eventually("b leads", || is(&b)).await;
    assert!(stop.elapsed() <= stop_time + Duration::from_millis(2500));
    terms.assert_disjoint();
}

#[tokio::test(start_paused = true)]
async fn a_holder_cut_off_stops_its_work_before_a_healthy_challenger_starts() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    let terms = Arc::new(Terms::default());
    let a = guarded(
        api.clone(),
        clock.clone(),
        "a",
        &terms,
        Duration::from_secs(2),
    );
    eventually("a leads", || is(&a)).await;
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.set_cut(true);
    let cut = Instant::now();
    eventually("b leads", || is(&b)).await;
    let a_end = terms.of("a")[0].end.expect("a's work stopped").0;
    let b_start = terms.of("b")[0].start;
    assert!(
        a_end <= cut + Duration::from_secs(12),
        "a stepped down within its renew deadline, then wound down for 2 s"
    );
    assert!(a_end < b_start, "a's work ended before b's began");
    terms.assert_disjoint();
    // Still cut off: shutdown does not wait on a's hung calls.
    a.cancel.cancel();
    tokio::time::timeout(Duration::from_millis(100), a.task)
        .await
        .expect("a returns at once")
        .expect("joined");
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("b", 1));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_lost_the_lease_lets_the_challenger_take_over_though_it_recovers() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    let terms = Arc::new(Terms::default());
    let a = guarded(
        api.clone(),
        clock.clone(),
        "a",
        &terms,
        Duration::from_secs(2),
    );
    eventually("a leads", || is(&a)).await;
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.set_cut(true);
    let mut leading = a.leading.clone();
    leading.wait_for(|l| !*l).await.expect("a alive");
    // a recovers before the Lease expires: it must not bounce back into leading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.set_cut(false);
    eventually("b leads", || is(&b)).await;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(is(&b) && !is(&a));
    }
    assert_eq!(terms.of("a").len(), 1, "a never led again");
    terms.assert_disjoint();
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("b", 1));
}

#[tokio::test(start_paused = true)]
async fn after_a_loss_the_old_holder_times_its_own_record_from_a_fresh_look() {
    let fake = FakeApi::new();
    let clock = ManualClock::shared(3);
    let api = Faulty::new(&fake);
    let terms = Arc::new(Terms::default());
    let a = guarded(
        api.clone(),
        clock.clone(),
        "a",
        &terms,
        Duration::from_secs(4),
    );
    eventually("a leads", || is(&a)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.set_cut(true);
    let mut leading = a.leading.clone();
    leading.wait_for(|l| !*l).await.expect("a alive");
    // b first sees the Lease now, 10 s after a's last renewal; a is back at once but winds
    // down for 4 s. Timing its record from its own last write, a would retake it ~5 s from
    // now; timed from its fresh look after the wind-down, not before b's ~15 s.
    let b = guarded(fake.clone(), clock.clone(), "b", &terms, Duration::ZERO);
    api.set_cut(false);
    eventually("b leads", || is(&b)).await;
    assert_eq!(terms.of("a").len(), 1, "a never led again");
    terms.assert_disjoint();
    assert_eq!((holder(&fake).as_str(), transitions(&fake)), ("b", 1));
}

#[tokio::test(start_paused = true)]
async fn candidates_with_skewed_wall_clocks_elect_one_leader_and_hand_over() {
    let fake = FakeApi::new();
    let terms = Arc::new(Terms::default());
    let ids = ["a", "b", "c"];
    // b's wall clock runs 7 minutes ahead, c's 7 minutes behind: judged by wall time, b would
    // think every Lease long expired and c would never see one expire.
    let clocks: Vec<Arc<ManualClock>> = [0, 7, -7]
        .into_iter()
        .enumerate()
        .map(|(seed, mins)| {
            let c = ManualClock::shared(seed as u64 + 3);
            c.jump_wall(jiff::SignedDuration::from_mins(mins));
            c
        })
        .collect();
    let mut cands: Vec<Option<Candidate>> = ids
        .iter()
        .zip(&clocks)
        .map(|(id, c)| Some(guarded(fake.clone(), c.clone(), id, &terms, Duration::ZERO)))
        .collect();
    let leaders = |cands: &[Option<Candidate>]| -> Vec<usize> {
        (0..cands.len())
            .filter(|i| cands[*i].as_ref().is_some_and(is))
            .collect()
    };
    eventually("a leader", || !leaders(&cands).is_empty()).await;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaders(&cands).len(), 1, "exactly one leader");
    }
    let first = leaders(&cands)[0];
    let renewed: jiff::Timestamp = lease(&fake)["spec"]["renewTime"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("renewTime");
    let lag = clocks[first].now().duration_since(renewed);
    assert!(
        lag.abs() <= jiff::SignedDuration::from_secs(3),
        "leader's own wall time"
    );

    // The leader dies without releasing: another takes over after the lease duration as it
    // measured it, whatever the timestamps say.
    if let Some(c) = cands[first].take() {
        c.task.abort();
    }
    let died = Instant::now();
    eventually("a second leader", || !leaders(&cands).is_empty()).await;
    let waited = died.elapsed();
    assert!(
        waited >= Duration::from_secs(13) && waited <= Duration::from_secs(18),
        "took over after {waited:?}"
    );
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaders(&cands).len(), 1, "exactly one leader");
    }

    // The second leader shuts down and releases: the last candidate takes over at once.
    let second = leaders(&cands)[0];
    if let Some(c) = cands[second].take() {
        c.cancel.cancel();
        c.task.await.expect("joined");
    }
    let released = Instant::now();
    eventually("a third leader", || leaders(&cands).len() == 1).await;
    assert!(released.elapsed() <= Duration::from_millis(2500));
    assert_eq!(transitions(&fake), 2);
    terms.assert_disjoint();
    assert_eq!(terms.all().len(), 3);
}
