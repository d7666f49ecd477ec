//! Experiment: what the API server's storage costs per create, outside the server. It drives sled
//! the way `SledStorage` does (same config; one `apply_batch` of N puts of ~1.7 KB plus the
//! applied index, then `flush_async`, i.e. one group commit) and reports wall time and process
//! CPU per object for several batch sizes.
//!
//! `cargo run --release -p rudder-bench --example sled_cost`

use std::time::Instant;

use rudder_bench::measure::cpu_seconds;
use rudder_bench::pod::{self, PodTemplate};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let t = PodTemplate::new();
    for batch in [1usize, 16, 64] {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new()
            .path(dir.path().join("store"))
            .flush_every_ms(None)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let total = 10_000usize;
        let cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
        let t0 = Instant::now();
        let mut i = 0u64;
        let mut applied = 0u64;
        while (i as usize) < total {
            let mut b = sled::Batch::default();
            for _ in 0..batch {
                let name = pod::name(pod::BULK_PREFIX, i);
                let key = format!("o/pods\0default\0{name}");
                b.insert(key.as_bytes(), t.json(&name).to_vec());
                i += 1;
            }
            applied += batch as u64;
            b.insert(&b"m/applied"[..], &applied.to_be_bytes()[..]);
            db.apply_batch(b)?;
            db.flush_async().await?;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu0;
        println!(
            "batch {batch:>3}: {:.0} objects/s, {:.1} µs wall and {:.1} µs CPU per object, {:.2} ms per commit",
            total as f64 / wall,
            wall * 1e6 / total as f64,
            cpu * 1e6 / total as f64,
            wall * 1e3 * batch as f64 / total as f64
        );
    }
    Ok(())
}
