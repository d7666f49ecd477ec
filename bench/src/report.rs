//! The table: one row per figure, Rudder beside etcd, the ratio, and the project's targets.
//!
//! Ratios are oriented so that above 1 always means Rudder is better: Rudder/etcd for rates,
//! etcd/Rudder for latencies and memory.

use std::fmt::Write as _;

use crate::measure::Throughput;
use crate::{Figures, Scale};

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One row of the table.
pub struct Row {
    pub metric: String,
    pub rudder: f64,
    pub etcd: Option<f64>,
    better: Better,
    /// The target's text and whether Rudder meets it (None: no verdict possible).
    pub targets: Vec<(String, Option<bool>)>,
}

/// The rendered comparison.
pub struct Report {
    pub title: String,
    pub rows: Vec<Row>,
    pub details: String,
}

const MIB: f64 = 1024.0 * 1024.0;

fn rate_row(name: String, r: &Throughput, e: Option<&Throughput>) -> Row {
    Row {
        metric: name,
        rudder: r.per_sec(),
        etcd: e.map(Throughput::per_sec),
        better: Better::Higher,
        targets: Vec::new(),
    }
}

fn ms_row(name: String, r: f64, e: Option<f64>) -> Row {
    Row {
        metric: name,
        rudder: r,
        etcd: e,
        better: Better::Lower,
        targets: Vec::new(),
    }
}

impl Row {
    fn target(mut self, text: &str, ok: Option<bool>) -> Row {
        self.targets.push((text.to_string(), ok));
        self
    }

    /// "≥ etcd": Rudder's rate at least etcd's.
    fn at_least_etcd(self) -> Row {
        let ok = self.etcd.map(|e| self.rudder >= e);
        self.target("≥ etcd", ok)
    }

    fn ratio(&self) -> Option<f64> {
        let e = self.etcd?;
        let r = match self.better {
            Better::Higher => self.rudder / e,
            Better::Lower => e / self.rudder,
        };
        r.is_finite().then_some(r)
    }
}

fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    pub fn new(scale: &Scale, r: &Figures, e: Option<&Figures>) -> Report {
        let c = scale.clients;
        let mut rows = vec![
            rate_row(
                "create/s, 1 client".into(),
                &r.create_1,
                e.map(|e| &e.create_1),
            )
            .at_least_etcd(),
            ms_row(
                "create p50 ms, 1 client".into(),
                r.create_1.latency.p50_ms,
                e.map(|e| e.create_1.latency.p50_ms),
            ),
            ms_row(
                "create p99 ms, 1 client".into(),
                r.create_1.latency.p99_ms,
                e.map(|e| e.create_1.latency.p99_ms),
            ),
        ];
        let create_n = rate_row(
            format!("create/s, {c} clients"),
            &r.create_n,
            e.map(|e| &e.create_n),
        );
        let ok = create_n.rudder >= 10_000.0;
        rows.push(create_n.target("≥ 10000/s", Some(ok)).at_least_etcd());
        rows.push(ms_row(
            format!("create p50 ms, {c} clients"),
            r.create_n.latency.p50_ms,
            e.map(|e| e.create_n.latency.p50_ms),
        ));
        rows.push(ms_row(
            format!("create p99 ms, {c} clients"),
            r.create_n.latency.p99_ms,
            e.map(|e| e.create_n.latency.p99_ms),
        ));
        rows.push(
            rate_row(format!("get/s, {c} clients"), &r.get_n, e.map(|e| &e.get_n)).at_least_etcd(),
        );
        rows.push(ms_row(
            format!("get p99 ms, {c} clients"),
            r.get_n.latency.p99_ms,
            e.map(|e| e.get_n.latency.p99_ms),
        ));
        let n = r.list_items;
        for (label, rv, ev) in [
            ("p50", r.list.p50_ms, e.map(|e| e.list.p50_ms)),
            ("p99", r.list.p99_ms, e.map(|e| e.list.p99_ms)),
        ] {
            rows.push(
                ms_row(format!("list {n} pods {label} ms"), rv, ev)
                    .target("< 100 ms", Some(rv < 100.0)),
            );
        }
        let w = r.watch.watchers;
        rows.push(ms_row(
            format!("watch p50 ms, {w} watchers"),
            r.watch.latency.p50_ms,
            e.map(|e| e.watch.latency.p50_ms),
        ));
        let wp99 = r.watch.latency.p99_ms;
        let complete = r.watch.delivered == r.watch.events_per_watcher * w as u64;
        rows.push(
            ms_row(
                format!("watch p99 ms, {w} watchers"),
                wp99,
                e.map(|e| e.watch.latency.p99_ms),
            )
            .target("< 10 ms", Some(wp99 < 10.0 && complete)),
        );
        let rss = r.rss_bytes as f64 / MIB;
        rows.push(
            ms_row(
                format!("RSS MiB at {} pods", scale.pods),
                rss,
                e.map(|e| e.rss_bytes as f64 / MIB),
            )
            .target("< 200 MiB", Some(rss < 200.0)),
        );
        let title = format!(
            "Rudder vs etcd: {} B Pod JSON, {} pods, {} clients over {} connections, {} watchers",
            r.object_bytes, scale.pods, scale.clients, scale.connections, scale.watchers
        );
        let details = details(r, e);
        Report {
            title,
            rows,
            details,
        }
    }

    /// Whether every target with a verdict was met.
    pub fn all_passed(&self) -> bool {
        self.rows
            .iter()
            .flat_map(|r| &r.targets)
            .all(|(_, ok)| *ok != Some(false))
    }

    pub fn render(&self) -> String {
        let header = ["metric", "Rudder", "etcd", "ratio", "target", "result"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|row| {
                let target = row
                    .targets
                    .iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let result = row
                    .targets
                    .iter()
                    .map(|(_, ok)| match ok {
                        Some(true) => "pass",
                        Some(false) => "FAIL",
                        None => "n/a",
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                [
                    row.metric.clone(),
                    num(row.rudder),
                    row.etcd.map(num).unwrap_or_else(|| "-".into()),
                    row.ratio()
                        .map(|x| format!("{x:.2}x"))
                        .unwrap_or_else(|| "-".into()),
                    target,
                    result,
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for c in &cells {
            for (w, s) in widths.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let line = |cols: &[String]| {
            let mut s = String::from("|");
            for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
                let pad = w - c.chars().count();
                // Numbers right-aligned, text left-aligned.
                if (1..=3).contains(&i) {
                    let _ = write!(s, " {}{} |", " ".repeat(pad), c);
                } else {
                    let _ = write!(s, " {}{} |", c, " ".repeat(pad));
                }
            }
            s
        };
        let mut out = String::new();
        let _ = writeln!(out, "\n{}\n", self.title);
        let _ = writeln!(out, "{}", line(&header.map(String::from)));
        let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", line(&sep).replace(' ', "-"));
        for c in &cells {
            let _ = writeln!(out, "{}", line(c));
        }
        let _ = writeln!(
            out,
            "\nratio: Rudder/etcd for rates, etcd/Rudder for latencies and RSS: above 1 means Rudder is better."
        );
        let _ = writeln!(
            out,
            "targets: {}",
            if self.all_passed() {
                "all met"
            } else {
                "NOT all met (FAIL rows above)"
            }
        );
        out.push_str(&self.details);
        out
    }
}

/// Per-phase CPU use and watch delivery: what saturates, and whether every event arrived.
fn details(r: &Figures, e: Option<&Figures>) -> String {
    let mut out = String::from(
        "\nCPU during each phase, in cores of this machine (server / benchmark client):\n",
    );
    let phase = |t: &Throughput| {
        format!(
            "{:.2} / {:.2} over {:.2} s",
            t.cpu.server_cores,
            t.cpu.bench_cores,
            t.elapsed.as_secs_f64()
        )
    };
    for (name, f) in std::iter::once(("Rudder", r)).chain(e.map(|e| ("etcd", e))) {
        let _ = writeln!(
            out,
            "  {name:<6}  create x1: {}; create xN: {}; get xN: {}",
            phase(&f.create_1),
            phase(&f.create_n),
            phase(&f.get_n)
        );
    }
    out.push_str("Watch phase (events received / expected; writer's rate and create acknowledgement latency; CPU server / client):\n");
    for (name, f) in std::iter::once(("Rudder", r)).chain(e.map(|e| ("etcd", e))) {
        let w = &f.watch;
        let _ = writeln!(
            out,
            "  {name:<6}  {} / {}; writer {:.0}/s, create ack p50 {:.2} / p99 {:.2} ms; watch max {:.2} ms; CPU {:.2} / {:.2}",
            w.delivered,
            w.events_per_watcher * w.watchers as u64,
            w.write_rate,
            w.ack.p50_ms,
            w.ack.p99_ms,
            w.latency.max_ms,
            w.cpu.server_cores,
            w.cpu.bench_cores
        );
    }
    out
}
