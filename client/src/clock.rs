//! Injected time and randomness.
//!
//! Everything time-dependent in this crate reads time through a [`Clock`]: wall time
//! ([`Clock::now`]) only for timestamps written into objects (Lease `renewTime`, Event
//! `lastTimestamp`), and the monotonic [`tokio::time::Instant`] ([`Clock::instant`]) for every
//! decision (lease validity, back-off). Both implementations take their monotonic time from
//! `tokio::time`, so tests under `tokio::time::pause()` control it by advancing tokio's clock.
//!
//! [`Backoff`] is the capped, jittered exponential back-off shared by the reflector and others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// A source of wall time, monotonic time and jitter.
pub trait Clock: Send + Sync + 'static {
    /// Wall time, for timestamps stored in objects. Never use it to decide anything.
    fn now(&self) -> jiff::Timestamp;
    /// Monotonic time (tokio's, so pausable in tests).
    fn instant(&self) -> Instant;
    /// A uniformly random number in `[0, 1)`, for jitter.
    fn random(&self) -> f64;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock, tokio's monotonic clock and a thread-local RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealClock;

impl RealClock {
    pub fn shared() -> SharedClock {
        Arc::new(RealClock)
    }
}

// The one place in this crate allowed to read ambient time (see `client/clippy.toml`).
#[allow(clippy::disallowed_methods)]
impl Clock for RealClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn random(&self) -> f64 {
        rand::rng().random()
    }
}

/// A deterministic clock for tests: wall time starts at a fixed timestamp and moves with tokio's
/// (paused) clock, plus an offset tests may set to simulate a wall-clock jump; randomness is a
/// seeded generator.
#[derive(Debug)]
pub struct ManualClock {
    wall_start: jiff::Timestamp,
    mono_start: Instant,
    state: Mutex<ManualState>,
}

#[derive(Debug)]
struct ManualState {
    wall_offset: jiff::SignedDuration,
    rng: rand::rngs::StdRng,
}

// Tokio's (pausable) clock is this clock's monotonic source by design.
#[allow(clippy::disallowed_methods)]
impl ManualClock {
    /// Wall time starting at 2025-01-01T00:00:00Z now; jitter from `seed`.
    pub fn new(seed: u64) -> Self {
        ManualClock {
            wall_start: jiff::Timestamp::from_second(1_735_689_600).unwrap_or_default(),
            mono_start: Instant::now(),
            state: Mutex::new(ManualState {
                wall_offset: jiff::SignedDuration::ZERO,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            }),
        }
    }

    pub fn shared(seed: u64) -> Arc<ManualClock> {
        Arc::new(Self::new(seed))
    }

    /// Moves wall time (only) by `by`, as an NTP step would; monotonic time is unaffected.
    pub fn jump_wall(&self, by: jiff::SignedDuration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.wall_offset += by;
    }
}

#[allow(clippy::disallowed_methods)]
impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(Instant::now() - self.mono_start)
            .unwrap_or(jiff::SignedDuration::MAX);
        let offset = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wall_offset;
        self.wall_start
            .saturating_add(elapsed)
            .and_then(|t| t.saturating_add(offset))
            .unwrap_or(self.wall_start)
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn random(&self) -> f64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rng
            .random()
    }
}

/// Capped exponential back-off with proportional jitter.
///
/// Delays go `initial`, `initial*factor`, ... up to `max`; each is then stretched by a random
/// fraction up to `jitter` (0.2: up to 20% longer), so that many clients failing together do not
/// retry in lock step. [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, factor: f64, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            factor,
            jitter,
            next: initial,
        }
    }

    /// The next delay, advancing the sequence.
    pub fn next_delay(&mut self, clock: &dyn Clock) -> Duration {
        let base = self.next.min(self.max);
        self.next = base.mul_f64(self.factor.max(1.0)).min(self.max);
        base.mul_f64(1.0 + self.jitter.max(0.0) * clock.random())
    }

    /// Back to `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 800 ms doubling to 30 s, up to 20% jitter (close to kube-runtime's watcher default).
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(800),
            Duration::from_secs(30),
            2.0,
            0.2,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let clock = ManualClock::new(1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5), 2.0, 0.0);
        let seq: Vec<u64> = (0..5).map(|_| b.next_delay(&clock).as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(&clock), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let clock = ManualClock::new(7);
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 2.0, 0.5);
        for _ in 0..100 {
            let d = b.next_delay(&clock);
            assert!(
                d >= Duration::from_secs(10) && d < Duration::from_secs(15),
                "{d:?}"
            );
        }
    }
}
