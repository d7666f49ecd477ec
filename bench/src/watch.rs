//! Watch latency: when each watched create was sent, and how late each watcher saw it.
//!
//! The writer stamps the send time of pod `i` before sending its create; a watcher that receives
//! the event for pod `i` records `now - sent[i]`. Stamps live in a vector of atomics indexed by
//! the pod's number (the name → send-instant map, without a lock on the watchers' path).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::measure::{CpuUse, Latency, OP_TIMEOUT, new_hist, record};
use crate::pod;

/// Send instants of the watched creates.
pub struct SendTimes {
    base: Instant,
    // Nanoseconds since `base`, plus one; 0 means not sent yet.
    slots: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(n: u64) -> Arc<SendTimes> {
        Arc::new(SendTimes {
            base: Instant::now(),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn mark(&self, i: u64) {
        if let Some(s) = self.slots.get(i as usize) {
            let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            s.store(ns + 1, Ordering::Release);
        }
    }

    fn sent(&self, i: u64) -> Option<Instant> {
        let v = self.slots.get(i as usize)?.load(Ordering::Acquire);
        (v != 0).then(|| self.base + Duration::from_nanos(v - 1))
    }
}

/// One watcher's tally.
pub struct Tally {
    times: Arc<SendTimes>,
    pub hist: Histogram<u64>,
    seen: Vec<bool>,
    pub got: u64,
}

impl Tally {
    pub fn new(times: Arc<SendTimes>) -> Tally {
        let n = times.len() as usize;
        Tally {
            times,
            hist: new_hist(),
            seen: vec![false; n],
            got: 0,
        }
    }

    /// Records the arrival of the event for pod `name`; other pods are ignored. Duplicates are
    /// counted once.
    pub fn arrived(&mut self, name: &str) {
        let now = Instant::now();
        let Some(i) = pod::index(pod::WATCH_PREFIX, name) else {
            return;
        };
        let Some(seen) = self.seen.get_mut(i as usize) else {
            return;
        };
        if *seen {
            return;
        }
        *seen = true;
        self.got += 1;
        if let Some(sent) = self.times.sent(i) {
            record(&mut self.hist, now.saturating_duration_since(sent));
        }
    }

    pub fn complete(&self) -> bool {
        self.got >= self.times.len()
    }
}

/// Result of the watch phase.
#[derive(Debug, Clone, Default)]
pub struct WatchFigures {
    pub watchers: usize,
    pub events_per_watcher: u64,
    /// Events received over all watchers (expected: watchers × events).
    pub delivered: u64,
    pub latency: Latency,
    /// Rate the writer actually achieved.
    pub write_rate: f64,
    /// Send-to-acknowledgement latency of the writer's creates: the part of the watch latency
    /// that is commit, not fan-out.
    pub ack: Latency,
    pub cpu: CpuUse,
}

/// What the steady writer measured.
pub struct Written {
    pub rate: f64,
    pub ack: Latency,
}

/// Creates `times.len()` pods at `rate` per second, at most `max_inflight` at once, stamping each
/// send time. `create(i)` creates pod `i`.
pub async fn steady_writer<F, Fut>(
    times: Arc<SendTimes>,
    rate: u64,
    max_inflight: usize,
    create: F,
) -> anyhow::Result<Written>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let create = Arc::new(create);
    let permits = Arc::new(Semaphore::new(max_inflight.max(1)));
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    let mut ack = new_hist();
    for i in 0..times.len() {
        tick.tick().await;
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .context("writer semaphore closed")?;
        let (times, create) = (times.clone(), create.clone());
        set.spawn(async move {
            times.mark(i);
            let sent = Instant::now();
            let r = tokio::time::timeout(OP_TIMEOUT, create(i))
                .await
                .with_context(|| format!("watched create {i} timed out"))
                .and_then(|r| r);
            drop(permit);
            r.map(|()| sent.elapsed())
        });
        // Surface failures early rather than after the whole run.
        while let Some(done) = set.try_join_next() {
            record(&mut ack, done.context("writer task panicked")??);
        }
    }
    while let Some(done) = set.join_next().await {
        record(&mut ack, done.context("writer task panicked")??);
    }
    Ok(Written {
        rate: times.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        ack: Latency::of(&ack),
    })
}

/// Merges watcher tallies into the phase's figures.
pub fn summarize(
    tallies: Vec<Tally>,
    events_per_watcher: u64,
    written: Written,
    cpu: CpuUse,
) -> anyhow::Result<WatchFigures> {
    let mut hist = new_hist();
    let mut delivered = 0;
    let watchers = tallies.len();
    for t in tallies {
        delivered += t.got;
        hist.add(&t.hist).context("merging watch histograms")?;
    }
    Ok(WatchFigures {
        watchers,
        events_per_watcher,
        delivered,
        latency: Latency::of(&hist),
        write_rate: written.rate,
        ack: written.ack,
        cpu,
    })
}
