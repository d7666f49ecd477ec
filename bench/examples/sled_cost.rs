//! Experiment: what the API server's storage costs per create, outside the server. It drives the
//! server's own `SledStorage` as the store's writer does (one atomic batch of N puts of ~1.5 KB
//! plus the applied index, then one durable flush: sled's flush and the fdatasync after it, i.e.
//! one group commit) and reports wall time and process CPU per object for several batch sizes.
//!
//! `cargo run --release -p rudder-bench --example sled_cost`

use std::time::Instant;

use rudder_apiserver::storage::{Op, SledStorage, Storage};

use rudder_bench::measure::cpu_seconds;
use rudder_bench::pod::{self, PodTemplate};

fn main() -> anyhow::Result<()> {
    let t = PodTemplate::new();
    for batch in [1usize, 16, 64] {
        let dir = tempfile::tempdir()?;
        let store = SledStorage::open(dir.path())?;
        let total = 10_000usize;
        let cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
        let t0 = Instant::now();
        let mut i = 0u64;
        let mut applied = 0u64;
        while (i as usize) < total {
            let mut ops = Vec::with_capacity(batch + 1);
            for _ in 0..batch {
                let name = pod::name(pod::BULK_PREFIX, i);
                let key = format!("o//Pod\0default\0{name}");
                ops.push(Op::Put(key.into_bytes(), t.json(&name).to_vec()));
                i += 1;
            }
            applied += batch as u64;
            ops.push(Op::Put(
                b"m/applied".to_vec(),
                applied.to_be_bytes().to_vec(),
            ));
            store.apply(ops)?;
            store.flush()?;
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
