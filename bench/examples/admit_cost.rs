//! Experiment: CPU the API server's create path spends on JSON for the benchmark's Pod, outside
//! the server. It repeats the passes `Api::create` makes (`parse_body` → clone → the kind's
//! `admit`: strict typed decode, defaults, validation, back to a `Value` → `put_command`'s
//! `to_vec`), so their cost can be compared with the server CPU per create the benchmark reports.
//!
//! `cargo run --release -p rudder-bench --example admit_cost`

use std::time::Instant;

use rudder_api::Registry;
use rudder_bench::pod::{self, PodTemplate};

fn main() -> anyhow::Result<()> {
    let info = Registry::builtin().resolve("v1", "Pod")?.clone();
    let t = PodTemplate::new();
    let n = 20_000u64;
    let bodies: Vec<_> = (0..n)
        .map(|i| t.json(&pod::name(pod::BULK_PREFIX, i)))
        .collect();
    let (mut parse, mut clone, mut admit, mut ser) = (0.0, 0.0, 0.0, 0.0);
    let mut out = 0usize;
    for b in &bodies {
        let t0 = Instant::now();
        let v = rudder_api::decode::parse_json(b)?;
        let t1 = Instant::now();
        let c = v.clone();
        let t2 = Instant::now();
        let a = info
            .ops
            .admit(&info, c, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t3 = Instant::now();
        let bytes = serde_json::to_vec(&a)?;
        let t4 = Instant::now();
        out += bytes.len();
        parse += (t1 - t0).as_secs_f64();
        clone += (t2 - t1).as_secs_f64();
        admit += (t3 - t2).as_secs_f64();
        ser += (t4 - t3).as_secs_f64();
    }
    let us = |s: f64| s * 1e6 / n as f64;
    println!(
        "per create (µs): parse {:.1}, clone {:.1}, admit (typed decode+defaults+validate+to_value) {:.1}, to_vec {:.1}; total {:.1}; stored {} B",
        us(parse),
        us(clone),
        us(admit),
        us(ser),
        us(parse + clone + admit + ser),
        out / n as usize
    );
    Ok(())
}
