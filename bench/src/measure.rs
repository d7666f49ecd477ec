//! Load generation and latency bookkeeping shared by both systems.
//!
//! A closed loop: `clients` tasks, each issuing one request at a time, take operation indices from
//! a shared counter until the range is used up. Latency is measured per request on the client,
//! into an HDR histogram per task (no shared lock on the hot path), merged at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// Longest any single request may take before the run is abandoned: keeps a stuck server from
/// hanging the benchmark.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid constant histogram bounds")
}

/// Records a duration (saturating at the histogram's bound).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub count: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
            count: h.len(),
        }
    }
}

/// CPU seconds a process has used (user + system), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 / ticks)
}

/// Resident set size of a process in bytes, from `VmRSS` in `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU used by the server and by this benchmark process during a phase, in cores (1.0 = one core
/// busy the whole time): shows who saturates the 2-core machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub server_cores: f64,
    pub bench_cores: f64,
}

/// Samples CPU before and after a phase.
pub struct CpuProbe {
    pid: u32,
    start: Instant,
    server: f64,
    bench: f64,
}

impl CpuProbe {
    pub fn start(pid: u32) -> CpuProbe {
        CpuProbe {
            pid,
            start: Instant::now(),
            server: cpu_seconds(pid).unwrap_or(0.0),
            bench: cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }

    pub fn stop(self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        CpuUse {
            server_cores: (cpu_seconds(self.pid).unwrap_or(self.server) - self.server) / wall,
            bench_cores: (cpu_seconds(std::process::id()).unwrap_or(self.bench) - self.bench)
                / wall,
        }
    }
}

/// Outcome of a throughput phase.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    pub ops: u64,
    pub elapsed: Duration,
    pub latency: Latency,
    pub cpu: CpuUse,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs operations `start..end` with `clients` concurrent closed-loop clients. `op(client, i)`
/// performs operation `i` on behalf of client number `client`.
pub async fn closed_loop<F, Fut>(
    server_pid: u32,
    clients: usize,
    start: u64,
    end: u64,
    op: F,
) -> anyhow::Result<Throughput>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(start));
    let probe = CpuProbe::start(server_pid);
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for c in 0..clients.max(1) {
        let op = op.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut h = new_hist();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t = Instant::now();
                tokio::time::timeout(OP_TIMEOUT, op(c, i))
                    .await
                    .with_context(|| format!("operation {i} took longer than {OP_TIMEOUT:?}"))??;
                record(&mut h, t.elapsed());
            }
            Ok::<_, anyhow::Error>(h)
        });
    }
    let mut hist = new_hist();
    while let Some(joined) = set.join_next().await {
        let h = joined.context("a client task panicked")??;
        hist.add(&h).context("merging histograms")?;
    }
    let elapsed = t0.elapsed();
    let cpu = probe.stop();
    Ok(Throughput {
        ops: end.saturating_sub(start),
        elapsed,
        latency: Latency::of(&hist),
        cpu,
    })
}

/// Sequential repetitions of one operation (for lists): latency only.
pub async fn repeat<F, Fut>(times: usize, mut op: F) -> anyhow::Result<Latency>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut h = new_hist();
    for i in 0..times {
        let t = Instant::now();
        tokio::time::timeout(OP_TIMEOUT, op())
            .await
            .with_context(|| format!("repetition {i} took longer than {OP_TIMEOUT:?}"))??;
        record(&mut h, t.elapsed());
    }
    Ok(Latency::of(&h))
}

/// A pseudo-random but reproducible index in `0..n` for operation `i` (SplitMix64): spreads gets
/// over all pods without a shared RNG.
pub fn scatter(i: u64, n: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % n.max(1)
}
