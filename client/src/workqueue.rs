//! A work queue of object keys (`namespace/name`), with client-go's workqueue semantics.
//!
//! Guarantees:
//! - **coalescing**: a key added several times before a worker takes it is handed out once;
//! - **one worker per key**: a key handed out by [`WorkQueue::get`] is not handed out again until
//!   [`WorkQueue::done`]; if it was re-added meanwhile, `done` queues it again, so it runs exactly
//!   once more after the in-flight run;
//! - **rate limiting** ([`WorkQueue::add_rate_limited`]): the delay is the larger of a per-key
//!   exponential back-off (5 ms doubling to 1000 s by default, reset by [`WorkQueue::forget`])
//!   and a global token bucket (10 per second, burst 100 by default) — client-go's
//!   `DefaultControllerRateLimiter`;
//! - **shutdown**: [`WorkQueue::shutdown`] refuses new keys and drops delayed ones; keys already
//!   queued are still handed out, after which `get` returns `None`;
//!   [`WorkQueue::shutdown_with_drain`] additionally waits until no key is in flight.
//!
//! Time is read from the injected [`crate::clock::Clock`] and awaited with `tokio::time`
//! (pausable in tests). Delayed keys are promoted by whoever
//! calls `get`, so no background task is needed; a delayed add of a key already waiting keeps the
//! earlier deadline. Keys, not objects, are queued: the worker reads the current object from the
//! cache (level-triggered), so a coalesced burst of changes costs one reconcile.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::{RealClock, SharedClock};

/// A queued item: an object key.
pub type Key = String;

/// Rate-limit settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// First per-key back-off; doubles with each `add_rate_limited` until `forget`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Global token bucket: sustained rate and burst.
    pub qps: f64,
    pub burst: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100,
        }
    }
}

/// The queue; clones share it.
#[derive(Clone)]
pub struct WorkQueue {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: QueueConfig,
    clock: SharedClock,
    state: Mutex<State>,
    /// Signalled when a key becomes ready, or on shutdown.
    ready: Notify,
    /// Signalled when the last in-flight key is done.
    idle: Notify,
}

struct State {
    queue: VecDeque<Key>,
    /// Keys queued or waiting to be queued again once their in-flight run is done.
    dirty: HashSet<Key>,
    processing: HashSet<Key>,
    delayed: BTreeSet<(Instant, u64, Key)>,
    delayed_at: HashMap<Key, (Instant, u64)>,
    seq: u64,
    failures: HashMap<Key, u32>,
    tokens: f64,
    refilled: Instant,
    shutting_down: bool,
}

impl State {
    /// Queues a key unless already queued; true when a worker should be woken.
    fn add(&mut self, key: Key) -> bool {
        if self.shutting_down || !self.dirty.insert(key.clone()) || self.processing.contains(&key) {
            return false;
        }
        self.queue.push_back(key);
        true
    }

    fn add_after(&mut self, key: Key, at: Instant) {
        if self.shutting_down {
            return;
        }
        if let Some(&(t, seq)) = self.delayed_at.get(&key) {
            if t <= at {
                return;
            }
            self.delayed.remove(&(t, seq, key.clone()));
        }
        self.seq += 1;
        self.delayed.insert((at, self.seq, key.clone()));
        self.delayed_at.insert(key, (at, self.seq));
    }

    /// Moves delayed keys whose time has come to the queue.
    fn promote_due(&mut self, now: Instant) {
        while let Some(first) = self.delayed.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, _, key)) = self.delayed.pop_first() {
                self.delayed_at.remove(&key);
                self.add(key);
            }
        }
    }

    /// Takes a token from the global bucket, returning how long the caller must wait for it.
    fn reserve_token(&mut self, cfg: &QueueConfig, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * cfg.qps).min(f64::from(cfg.burst));
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || cfg.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / cfg.qps)
        }
    }
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new(QueueConfig::default())
    }
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("len", &self.len())
            .finish()
    }
}

impl WorkQueue {
    /// A queue on the real clock.
    pub fn new(cfg: QueueConfig) -> Self {
        Self::with_clock(cfg, RealClock::shared())
    }

    /// A queue reading time from `clock` (deadlines are still awaited with `tokio::time`, which
    /// both clocks follow).
    pub fn with_clock(cfg: QueueConfig, clock: SharedClock) -> Self {
        let tokens = f64::from(cfg.burst);
        let now = clock.instant();
        WorkQueue {
            shared: Arc::new(Shared {
                cfg,
                clock,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    delayed: BTreeSet::new(),
                    delayed_at: HashMap::new(),
                    seq: 0,
                    failures: HashMap::new(),
                    tokens,
                    refilled: now,
                    shutting_down: false,
                }),
                ready: Notify::new(),
                idle: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a key now.
    pub fn add(&self, key: impl Into<Key>) {
        if self.lock().add(key.into()) {
            self.shared.ready.notify_one();
        }
    }

    /// Queues a key after `delay`.
    pub fn add_after(&self, key: impl Into<Key>, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        self.lock()
            .add_after(key.into(), self.shared.clock.instant() + delay);
        // A waiting worker may need to shorten its sleep to the new deadline.
        self.shared.ready.notify_waiters();
    }

    /// Queues a key after its back-off: the larger of the per-key exponential delay and the
    /// global token bucket's.
    pub fn add_rate_limited(&self, key: impl Into<Key>) {
        let key = key.into();
        let delay = {
            let mut st = self.lock();
            let cfg = &self.shared.cfg;
            let n = st.failures.entry(key.clone()).or_default();
            let exp = *n;
            *n = n.saturating_add(1);
            let per_key = 2u32
                .checked_pow(exp)
                .and_then(|m| cfg.base_delay.checked_mul(m))
                .map_or(cfg.max_delay, |d| d.min(cfg.max_delay));
            per_key.max(st.reserve_token(cfg, self.shared.clock.instant()))
        };
        self.add_after(key, delay);
    }

    /// Resets a key's back-off (after a successful run).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How many rate-limited re-adds a key has had since its last `forget`.
    pub fn num_requeues(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for a key; `None` once the queue is shut down and empty. Cancel safe.
    pub async fn get(&self) -> Option<Key> {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let mut st = self.lock();
                st.promote_due(self.shared.clock.instant());
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        self.shared.ready.notify_one();
                    }
                    return Some(key);
                }
                if st.shutting_down {
                    return None;
                }
                st.delayed.first().map(|d| d.0)
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(at.saturating_duration_since(self.shared.clock.instant())) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a key's run finished; if it was re-added meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut st = self.lock();
        if !st.processing.remove(key) {
            return;
        }
        let requeue = st.dirty.contains(key);
        if requeue {
            st.queue.push_back(key.to_string());
        }
        let idle = st.processing.is_empty();
        drop(st);
        if requeue {
            self.shared.ready.notify_one();
        }
        if idle {
            self.shared.idle.notify_waiters();
        }
    }

    /// Keys ready to be handed out (not counting delayed or in-flight ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys currently handed out and not yet `done`.
    pub fn in_flight(&self) -> usize {
        self.lock().processing.len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Stops accepting keys and drops delayed ones; queued keys are still handed out.
    pub fn shutdown(&self) {
        {
            let mut st = self.lock();
            st.shutting_down = true;
            st.delayed.clear();
            st.delayed_at.clear();
        }
        self.shared.ready.notify_waiters();
    }

    /// [`WorkQueue::shutdown`], then waits until every in-flight key is `done`.
    pub async fn shutdown_with_drain(&self) {
        self.shutdown();
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.lock().processing.is_empty() {
                return;
            }
            idle.await;
        }
    }
}
