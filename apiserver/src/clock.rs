//! Injected time and randomness: the API server stamps uids, names and timestamps and allocates
//! Service IPs and node ports through these, so tests can fix them.

use std::sync::Mutex;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Wall-clock time for object timestamps.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that stands still until moved, for tests.
pub struct ManualClock(Mutex<jiff::Timestamp>);

impl ManualClock {
    pub fn new(t: jiff::Timestamp) -> Self {
        ManualClock(Mutex::new(t))
    }

    pub fn advance(&self, d: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(span) = jiff::SignedDuration::try_from(d)
            && let Ok(next) = t.checked_add(span)
        {
            *t = next;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Kubernetes' `Time` format: RFC 3339 with whole seconds, UTC.
pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Random uids and name suffixes, seedable for reproducible tests.
pub struct Ids(Mutex<StdRng>);

/// Characters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Ids {
    pub fn from_entropy() -> Self {
        Ids(Mutex::new(StdRng::from_os_rng()))
    }

    pub fn seeded(seed: u64) -> Self {
        Ids(Mutex::new(StdRng::seed_from_u64(seed)))
    }

    pub fn uid(&self) -> String {
        let bytes: [u8; 16] = self.0.lock().unwrap_or_else(|p| p.into_inner()).random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// A uniform draw from `range`, for allocations (Service IPs, node ports): from the same
    /// seed the same sequence, so a simulated cluster replays.
    pub fn random_in<T, R>(&self, range: R) -> T
    where
        T: rand::distr::uniform::SampleUniform,
        R: rand::distr::uniform::SampleRange<T>,
    {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random_range(range)
    }

    /// Five characters for `generateName`.
    pub fn name_suffix(&self) -> String {
        let mut rng = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (0..5)
            .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
            .collect()
    }
}
