//! Work queue behaviour under paused tokio time.
// Tests measure elapsed time on the clock they drive themselves (paused tokio time, or real
// sockets with real deadlines); the ban on ambient clocks is for the library.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use rudder_client::workqueue::{QueueConfig, WorkQueue};
use tokio::time::{Instant, timeout};

/// Whether `get` yields a key within `d` of (paused) time.
async fn try_get(q: &WorkQueue, d: Duration) -> Option<String> {
    timeout(d, q.get()).await.ok().flatten()
}

#[tokio::test(start_paused = true)]
async fn duplicates_coalesce() {
    let q = WorkQueue::default();
    for _ in 0..3 {
        q.add("ns/a");
    }
    q.add("ns/b");
    assert_eq!(q.len(), 2);
    assert_eq!(q.get().await.as_deref(), Some("ns/a"));
    assert_eq!(q.get().await.as_deref(), Some("ns/b"));
    assert_eq!(try_get(&q, Duration::from_secs(1)).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_flight_is_not_handed_out_again_and_reruns_once_after_done() {
    let q = WorkQueue::default();
    q.add("ns/a");
    let k = q.get().await.expect("key");
    q.add("ns/a");
    q.add("ns/a");
    assert_eq!(
        try_get(&q, Duration::from_secs(5)).await,
        None,
        "no second worker on ns/a"
    );
    q.done(&k);
    assert_eq!(
        try_get(&q, Duration::from_secs(1)).await.as_deref(),
        Some("ns/a")
    );
    q.done("ns/a");
    assert_eq!(
        try_get(&q, Duration::from_secs(5)).await,
        None,
        "re-run exactly once"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_workers_never_share_a_key() {
    let q = WorkQueue::default();
    let running = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (q, running) = (q.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            let mut runs = 0;
            while let Some(k) = q.get().await {
                assert!(
                    running.lock().unwrap().insert(k.clone()),
                    "{k} run twice at once"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.lock().unwrap().remove(&k);
                q.done(&k);
                runs += 1;
            }
            runs
        }));
    }
    for i in 0..50 {
        q.add(format!("ns/k{}", i % 3));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    q.shutdown_with_drain().await;
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!((3..50).contains(&total), "coalesced runs: {total}");
}

#[tokio::test(start_paused = true)]
async fn add_after_delays_and_keeps_the_earlier_deadline() {
    let q = WorkQueue::default();
    let start = Instant::now();
    q.add_after("ns/a", Duration::from_secs(10));
    q.add_after("ns/a", Duration::from_secs(30));
    assert_eq!(q.get().await.as_deref(), Some("ns/a"));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn per_key_backoff_grows_and_forget_resets_it() {
    let q = WorkQueue::default();
    let mut waits = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        q.add_rate_limited("ns/a");
        let k = q.get().await.expect("key");
        waits.push(start.elapsed().as_millis());
        q.done(&k);
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 80]);
    assert_eq!(q.num_requeues("ns/a"), 5);
    q.forget("ns/a");
    let start = Instant::now();
    q.add_rate_limited("ns/a");
    q.get().await.expect("key");
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped() {
    let q = WorkQueue::new(QueueConfig {
        max_delay: Duration::from_secs(1),
        ..QueueConfig::default()
    });
    for _ in 0..40 {
        q.add_rate_limited("ns/a");
        let k = q.get().await.expect("key");
        q.done(&k);
    }
    let start = Instant::now();
    q.add_rate_limited("ns/a");
    q.get().await.expect("key");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn global_token_bucket_limits_distinct_keys() {
    let q = WorkQueue::new(QueueConfig {
        burst: 5,
        qps: 10.0,
        base_delay: Duration::from_millis(1),
        ..QueueConfig::default()
    });
    let start = Instant::now();
    for i in 0..15 {
        q.add_rate_limited(format!("ns/k{i}"));
    }
    for _ in 0..15 {
        let k = q.get().await.expect("key");
        q.done(&k);
    }
    // 5 from the burst, the other 10 at 10 per second.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_millis(1100),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_out_queued_keys_then_none_and_refuses_new_ones() {
    let q = WorkQueue::default();
    q.add("ns/a");
    q.add_after("ns/later", Duration::from_secs(1));
    q.shutdown();
    q.add("ns/b");
    assert_eq!(q.get().await.as_deref(), Some("ns/a"));
    assert_eq!(q.get().await, None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_wakes_idle_workers() {
    let q = WorkQueue::default();
    let w = tokio::spawn({
        let q = q.clone();
        async move { q.get().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.shutdown();
    assert_eq!(w.await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_drain_waits_for_in_flight_keys() {
    let q = WorkQueue::default();
    q.add("ns/a");
    let k = q.get().await.expect("key");
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = tokio::spawn({
        let (q, finished) = (q.clone(), finished.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            q.done(&k);
        }
    });
    let start = Instant::now();
    q.shutdown_with_drain().await;
    assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    worker.await.unwrap();
}
