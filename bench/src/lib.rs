//! Rudder's API server beside a single-member etcd: the same objects, the same concurrency, one
//! table of figures with the project's targets.
//!
//! Layout:
//! - [`pod`]: the ~1.5 KB Pod both systems store, byte for byte.
//! - [`measure`]: closed-loop load, latency histograms, CPU and RSS from `/proc`.
//! - [`watch`]: watch-latency bookkeeping and the steady-rate writer.
//! - [`procs`]: the servers as child processes that die with their guard.
//! - [`rudder`], [`etcd`]: the workload against each system.
//! - [`report`]: the table.
//! - [`rewrite`]: a separate scenario, RSS while one ~1 MiB ConfigMap is rewritten.
//! - [`sched`]: the `scheduler` subcommand, pods bound per second by the real scheduler.
//! - [`pods`]: the `pods` subcommand, pod start latency through the node agent beside the
//!   engine alone.
//! - [`nodeloss`]: the `node-loss` subcommand, a lost node's replicas available elsewhere
//!   beside the configured grace period + tolerationSeconds.
//! - [`endpoints`]: the `endpoints` subcommand, a pod's readiness change to its EndpointSlice
//!   beside the change reaching a pod watcher.
//! - [`http`]: the `http` subcommand, HTTP load through Rudder's Ingress beside the backend
//!   direct and HAProxy.
//! - [`replicated`]: the `replicated` subcommand, writes with one and three masters beside a
//!   three-member etcd, and leader failover time.

pub mod deploy;
pub mod endpoints;
pub mod etcd;
pub mod http;
pub mod measure;
pub mod nodeloss;
pub mod pod;
pub mod pods;
pub mod procs;
pub mod replicated;
pub mod report;
pub mod rewrite;
pub mod rudder;
pub mod sched;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use report::Report;

/// Command-line flags of `rudder-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rudder-bench",
    about = "Benchmarks Rudder's API server beside a single-member etcd"
)]
pub struct Args {
    /// Small counts for a smoke run (seconds, not minutes); figures are not comparable to a full run.
    #[arg(long)]
    pub quick: bool,
    /// Measure Rudder only (no etcd column).
    #[arg(long)]
    pub skip_etcd: bool,
    /// The rudder-apiserver binary (default: next to this binary).
    #[arg(long)]
    pub rudder_bin: Option<PathBuf>,
    /// The etcd binary (Debian's etcd-server installs /usr/bin/etcd).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// Creates with a single client.
    #[arg(long)]
    pub seq_creates: Option<u64>,
    /// Pods in the store after the create phases (listed, read, and the RSS point).
    #[arg(long)]
    pub pods: Option<u64>,
    /// Concurrent clients for the parallel phases.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Connections (HTTP/2) the concurrent clients are spread over.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Gets in the read phase.
    #[arg(long)]
    pub gets: Option<u64>,
    /// Full lists timed.
    #[arg(long)]
    pub lists: Option<usize>,
    /// Concurrent watch streams.
    #[arg(long)]
    pub watchers: Option<usize>,
    /// Creates made while the watchers listen.
    #[arg(long)]
    pub watch_events: Option<u64>,
    /// Rate of those creates, per second.
    #[arg(long)]
    pub watch_rate: Option<u64>,
    /// Instead of the comparison, rewrite one large ConfigMap for this many seconds and report
    /// the server's RSS (Rudder only).
    #[arg(long)]
    pub rewrite_seconds: Option<u64>,
    /// Size of that ConfigMap's data, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub rewrite_bytes: usize,
    /// Concurrent writers rewriting it.
    #[arg(long, default_value_t = 4)]
    pub rewrite_writers: usize,
    /// A scenario other than the API server comparison.
    #[command(subcommand)]
    pub command: Option<Scenario>,
}

/// Scenarios run instead of the comparison.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// N nodes, M pods, the real rudder-scheduler: pods bound per second and creation → bound
    /// latency.
    Scheduler(sched::SchedArgs),
    /// N pods on one real node agent and Docker, one after another: bound → Running and →
    /// Ready latency beside the engine's own create + start, and the agent's RSS.
    Pods(pods::PodsArgs),
    /// One Deployment of N replicas on simulated nodes with the real controller-manager: time to
    /// all created and all available, pod creations per second, beside N pods created directly.
    Deployment(deploy::DeployArgs),
    /// A Deployment over simulated nodes, one node stops heartbeating: time until every replica
    /// is available elsewhere, beside the configured floor (grace period + tolerationSeconds).
    NodeLoss(nodeloss::NodeLossArgs),
    /// S Services on simulated nodes with the real controller-manager: a pod's readiness change
    /// to its EndpointSlice, p50/p99, beside the change reaching a pod watcher.
    Endpoints(endpoints::EndpointsArgs),
    /// wrk (Debian's) against one nginx backend: direct, through Rudder's Ingress and through
    /// HAProxy, requests/s and p50/p99 of each.
    Http(http::HttpArgs),
    /// Creates with one master, one replicated member and three replicated masters, beside a
    /// three-member etcd, and the time from a leader kill to the first new write acknowledged.
    Replicated(replicated::ReplArgs),
}

/// How much work each phase does.
#[derive(Debug, Clone)]
pub struct Scale {
    pub seq_creates: u64,
    pub pods: u64,
    pub clients: usize,
    pub connections: usize,
    pub gets: u64,
    pub lists: usize,
    pub watchers: usize,
    pub watch_events: u64,
    pub watch_rate: u64,
}

impl Scale {
    /// The full run: 10,000 pods, 64 clients, 100 watchers.
    pub fn full() -> Scale {
        Scale {
            seq_creates: 1_000,
            pods: 10_000,
            clients: 64,
            connections: 8,
            gets: 50_000,
            lists: 20,
            watchers: 100,
            watch_events: 2_000,
            watch_rate: 1_000,
        }
    }

    /// A smoke run: every phase, small counts.
    pub fn quick() -> Scale {
        Scale {
            seq_creates: 200,
            pods: 1_000,
            clients: 64,
            connections: 8,
            gets: 5_000,
            lists: 5,
            watchers: 20,
            watch_events: 200,
            watch_rate: 500,
        }
    }

    /// Applies the flags that override single counts.
    pub fn from_args(a: &Args) -> Scale {
        let mut s = if a.quick {
            Scale::quick()
        } else {
            Scale::full()
        };
        s.seq_creates = a.seq_creates.unwrap_or(s.seq_creates);
        s.pods = a.pods.unwrap_or(s.pods);
        s.clients = a.clients.unwrap_or(s.clients).max(1);
        s.connections = a.connections.unwrap_or(s.connections).max(1);
        s.gets = a.gets.unwrap_or(s.gets);
        s.lists = a.lists.unwrap_or(s.lists);
        s.watchers = a.watchers.unwrap_or(s.watchers);
        s.watch_events = a.watch_events.unwrap_or(s.watch_events);
        s.watch_rate = a.watch_rate.unwrap_or(s.watch_rate).max(1);
        s.pods = s.pods.max(1);
        s
    }

    /// How long watchers wait for the writer's events before giving up: three times the
    /// writer's nominal duration plus slack, so a slow server shows as missing events rather than
    /// a hang.
    pub fn watch_deadline(&self) -> Duration {
        Duration::from_secs_f64(3.0 * self.watch_events as f64 / self.watch_rate.max(1) as f64)
            + Duration::from_secs(20)
    }
}

/// Everything measured on one system.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub create_1: measure::Throughput,
    pub create_n: measure::Throughput,
    pub get_n: measure::Throughput,
    pub list: measure::Latency,
    pub list_items: usize,
    pub watch: watch::WatchFigures,
    /// Server RSS after the create phases, with `Scale::pods` pods stored.
    pub rss_bytes: u64,
    /// Size of the Pod JSON sent.
    pub object_bytes: usize,
}

/// The rudder-apiserver next to the running binary (`target/release/rudder-apiserver` when run
/// from `target/release/rudder-bench`).
fn default_rudder_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating rudder-bench")?;
    let dir = exe
        .parent()
        .context("rudder-bench has no parent directory")?;
    Ok(dir.join("rudder-apiserver"))
}

/// Runs the whole benchmark and prints the table.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let scale = Scale::from_args(&args);
    let bin = match &args.rudder_bin {
        Some(b) => b.clone(),
        None => default_rudder_bin()?,
    };
    if let Some(Scenario::Scheduler(a)) = &args.command {
        eprintln!("rudder-bench: scheduler scenario ({})", bin.display());
        let f = sched::run(&bin, a).await?;
        let variant = if a.anti_affinity {
            ", required pod anti-affinity"
        } else if a.spread {
            ", topology spread"
        } else {
            ""
        };
        println!("{}", f.render(variant));
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::Deployment(a)) = &args.command {
        eprintln!("rudder-bench: deployment scenario ({})", bin.display());
        let f = deploy::run(&bin, a).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::Endpoints(a)) = &args.command {
        eprintln!("rudder-bench: endpoints scenario ({})", bin.display());
        let f = endpoints::run(&bin, a).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::Http(a)) = &args.command {
        eprintln!("rudder-bench: http scenario ({})", bin.display());
        let f = http::run(&bin, a).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::Replicated(a)) = &args.command {
        eprintln!("rudder-bench: replicated scenario ({})", bin.display());
        let f = replicated::run(&bin, a).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::NodeLoss(a)) = &args.command {
        eprintln!("rudder-bench: node-loss scenario ({})", bin.display());
        let f = nodeloss::run(&bin, a).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(Scenario::Pods(a)) = &args.command {
        let image = match &a.image {
            Some(i) => i.clone(),
            None => rudder_testkit::images::busybox().to_string(),
        };
        eprintln!(
            "rudder-bench: pods scenario ({}, image {image})",
            bin.display()
        );
        let f = pods::run(&bin, a, &image).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    if let Some(seconds) = args.rewrite_seconds {
        eprintln!("rudder-bench: rewrite scenario ({})", bin.display());
        let f = rewrite::run(&bin, seconds, args.rewrite_bytes, args.rewrite_writers).await?;
        println!("{}", f.render());
        return Ok(Report::new(&scale, &Figures::default(), None));
    }
    eprintln!("rudder-bench: scale {scale:?}");
    eprintln!("rudder-bench: Rudder ({})", bin.display());
    let rudder = rudder::run(&bin, &scale).await?;
    let etcd = if args.skip_etcd {
        eprintln!("rudder-bench: etcd not measured (--skip-etcd): no comparison column");
        None
    } else {
        eprintln!("rudder-bench: etcd ({})", args.etcd_bin);
        let figures = etcd::run(&args.etcd_bin, &scale).await.map_err(|e| {
            anyhow::anyhow!(
                "\n\n*** etcd could not be benchmarked: no comparison is printed. ***\n\
                 *** Install it (apt-get update && apt-get install -y etcd-server) or pass --etcd-bin; ***\n\
                 *** use --skip-etcd only for a deliberately Rudder-only run. ***\n\n{e:#}"
            )
        })?;
        Some(figures)
    };
    let report = Report::new(&scale, &rudder, etcd.as_ref());
    println!("{}", report.render());
    Ok(report)
}
