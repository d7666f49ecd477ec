//! Restart and pull back-off, as kubelet's: the first retry is immediate; each later one waits
//! 10 s, doubling to 5 minutes, counted from when the last attempt ended. A container that ran
//! for 10 minutes before it stopped starts over with no back-off.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A run at least this long forgets earlier failures.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    /// When the failure that set `delay` happened.
    since: Instant,
}

/// Back-off entries by key (a container name, or an image).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// Until when `key` must wait after a failure at `failed_at`, or `None` if it may go now.
    /// Does not record anything: call [`Backoff::record`] when the retry happens.
    pub fn wait_until(&self, key: &str, failed_at: Instant) -> Option<Instant> {
        let e = self.entries.get(key)?;
        // An entry set for an earlier failure still governs this one: the delay runs from
        // this failure.
        Some(failed_at.max(e.since) + e.delay)
    }

    /// Whether `key` is held back at `now`, and until when.
    pub fn blocked(&self, key: &str, failed_at: Instant, now: Instant) -> Option<Instant> {
        self.wait_until(key, failed_at).filter(|&until| until > now)
    }

    /// Until when `key` waits after its last recorded failure, if that is still ahead of `now`
    /// (for pulls, whose failures are recorded as they happen).
    pub fn blocked_after_last(&self, key: &str, now: Instant) -> Option<Instant> {
        let e = self.entries.get(key)?;
        Some(e.since + e.delay).filter(|&until| until > now)
    }

    /// Records a retry after a failure at `failed_at`: the next failure waits longer. `ran` is
    /// how long the failed attempt ran; a long run resets the back-off first.
    pub fn record(&mut self, key: &str, failed_at: Instant, ran: Duration) {
        if ran >= RESET_AFTER {
            self.entries.remove(key);
        }
        let delay = match self.entries.get(key) {
            None => INITIAL,
            Some(e) => (e.delay * 2).min(MAX),
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                since: failed_at,
            },
        );
    }

    /// The delay the next failure of `key` will wait (for messages).
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// Kubernetes' rendering of a back-off in messages: `10s`, `1m20s`, `5m0s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_to_five_minutes_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.wait_until("c", t0), None, "first retry is immediate");
        b.record("c", t0, Duration::from_secs(1));
        let mut expect = vec![];
        let mut t = t0;
        for _ in 0..7 {
            t += Duration::from_secs(1);
            let until = b.wait_until("c", t).expect("held back");
            expect.push((until - t).as_secs());
            b.record("c", t, Duration::from_secs(1));
        }
        assert_eq!(expect, vec![10, 20, 40, 80, 160, 300, 300]);
        assert!(b.blocked("c", t, t + Duration::from_secs(299)).is_some());
        assert!(b.blocked("c", t, t + Duration::from_secs(300)).is_none());
        assert_eq!(b.blocked_after_last("c", t), Some(t + MAX));
        assert_eq!(b.blocked_after_last("c", t + MAX), None);
        b.record("c", t, RESET_AFTER);
        assert_eq!(b.current("c"), Some(INITIAL), "a 10-minute run starts over");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_secs(80)), "1m20s");
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
    }
}
