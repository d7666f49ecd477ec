//! The workload against Rudder's API server, through the project's own `rudder-client`.
//!
//! Connections: the client multiplexes every call of one `Client` over a single HTTP/2
//! connection, so the concurrent clients are spread round-robin over `Scale::connections`
//! separate `Client`s (8 by default for 64 clients: 8 streams per connection).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rudder_client::Client;
use rudder_client::proto as pb;

use crate::measure::{CpuProbe, closed_loop, repeat, rss_bytes, scatter};
use crate::pod::{self, PodTemplate};
use crate::procs::{self, ServerProc};
use crate::watch::{self, SendTimes, Tally};
use crate::{Figures, Scale};

fn pods_kind() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "Pod".into(),
    })
}

/// Group commits and the writes they carried, from the server's own counters.
async fn commit_counts(c: &Client) -> anyhow::Result<(u64, u64)> {
    let s = c.stats().await.context("stats")?;
    Ok((s.commits, s.committed_writes))
}

/// Prints the mean group-commit size of a phase: how many writes shared each fsync.
fn report_batches(phase: &str, before: (u64, u64), after: (u64, u64)) {
    let commits = after.0.saturating_sub(before.0);
    let writes = after.1.saturating_sub(before.1);
    let mean = if commits == 0 {
        0.0
    } else {
        writes as f64 / commits as f64
    };
    eprintln!(
        "  rudder: {phase}: {writes} writes in {commits} group commits, {mean:.1} writes per fsync"
    );
}

/// Starts the server at `bin` and runs every phase at `scale`. The server is killed on return.
pub async fn run(bin: &Path, scale: &Scale) -> anyhow::Result<Figures> {
    let mut server = procs::start_rudder(bin, &[])?;
    let result = phases(&mut server, scale).await;
    result.with_context(|| {
        format!(
            "Rudder benchmark failed; server log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn phases(server: &mut ServerProc, scale: &Scale) -> anyhow::Result<Figures> {
    let pid = server.pid();
    let pool: Vec<Client> = (0..scale.connections.max(1))
        .map(|_| Client::new(std::slice::from_ref(&server.addr)))
        .collect::<Result<_, _>>()?;
    let pool = Arc::new(pool);
    {
        let first = pool[0].clone();
        procs::wait_ready(server, Duration::from_secs(20), move || {
            let c = first.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    // Open every connection before timing anything.
    for c in pool.iter() {
        c.health().await.context("warming up a connection")?;
    }
    let template = PodTemplate::new();
    let object_bytes = template.json(&pod::name(pod::BULK_PREFIX, 0)).len();

    let create = {
        let (pool, template) = (pool.clone(), template.clone());
        move |client: usize, i: u64| {
            let c = pool[client % pool.len()].clone();
            let req = pb::CreateRequest {
                kind: pods_kind(),
                namespace: pod::NAMESPACE.into(),
                json: template.json(&pod::name(pod::BULK_PREFIX, i)),
                options: None,
            };
            async move {
                c.create(req).await.context("create")?;
                Ok(())
            }
        }
    };
    let seq = scale.seq_creates.min(scale.pods);
    eprintln!("  rudder: {seq} creates, 1 client");
    let before = commit_counts(&pool[0]).await?;
    let create_1 = closed_loop(pid, 1, 0, seq, create.clone()).await?;
    let after_1 = commit_counts(&pool[0]).await?;
    report_batches("1 client", before, after_1);
    eprintln!(
        "  rudder: {} creates, {} clients over {} connections",
        scale.pods - seq,
        scale.clients,
        pool.len()
    );
    let create_n = closed_loop(pid, scale.clients, seq, scale.pods, create).await?;
    report_batches(
        &format!("{} clients", scale.clients),
        after_1,
        commit_counts(&pool[0]).await?,
    );

    eprintln!("  rudder: {} gets, {} clients", scale.gets, scale.clients);
    let get = {
        let pool = pool.clone();
        let pods = scale.pods;
        move |client: usize, i: u64| {
            let c = pool[client % pool.len()].clone();
            let req = pb::GetRequest {
                kind: pods_kind(),
                namespace: pod::NAMESPACE.into(),
                name: pod::name(pod::BULK_PREFIX, scatter(i, pods)),
                allow_stale: false,
            };
            async move {
                let o = c.get(req).await.context("get")?;
                if o.json.is_empty() {
                    bail!("get returned an empty object");
                }
                Ok(())
            }
        }
    };
    let get_n = closed_loop(pid, scale.clients, 0, scale.gets, get).await?;

    eprintln!("  rudder: {} lists of {} pods", scale.lists, scale.pods);
    let lister = pool[0].clone();
    let want = scale.pods as usize;
    let list = repeat(scale.lists, || {
        let c = lister.clone();
        async move {
            let r = c
                .list(pb::ListRequest {
                    kind: pods_kind(),
                    namespace: pod::NAMESPACE.into(),
                    ..Default::default()
                })
                .await
                .context("list")?;
            if r.items.len() != want {
                bail!("list returned {} pods, expected {want}", r.items.len());
            }
            Ok(())
        }
    })
    .await?;
    let rss = rss_bytes(pid).context("reading the server's VmRSS")?;

    eprintln!(
        "  rudder: {} watchers, {} creates at {}/s",
        scale.watchers, scale.watch_events, scale.watch_rate
    );
    let watch = watch_phase(pid, &pool, &template, scale).await?;
    Ok(Figures {
        create_1,
        create_n,
        get_n,
        list,
        list_items: want,
        watch,
        rss_bytes: rss,
        object_bytes,
    })
}

async fn watch_phase(
    pid: u32,
    pool: &Arc<Vec<Client>>,
    template: &PodTemplate,
    scale: &Scale,
) -> anyhow::Result<watch::WatchFigures> {
    // Watch from the current version: only the events the writer is about to cause.
    let rv = pool[0].stats().await.context("stats")?.resource_version;
    let times = SendTimes::new(scale.watch_events);
    let deadline = tokio::time::Instant::now() + scale.watch_deadline();
    let mut watchers = tokio::task::JoinSet::new();
    for w in 0..scale.watchers {
        let c = &pool[w % pool.len()];
        // The server subscribes before answering, so events after this call are not missed.
        let mut stream = c
            .watch(pb::WatchRequest {
                kind: pods_kind(),
                namespace: pod::NAMESPACE.into(),
                resource_version: rv,
                ..Default::default()
            })
            .await
            .with_context(|| format!("opening watch {w}"))?;
        let mut tally = Tally::new(times.clone());
        watchers.spawn(async move {
            while !tally.complete() {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => break,
                    Ok(Err(status)) => bail!("watch {w} failed: {status}"),
                    Ok(Ok(None)) => bail!("watch {w} closed by the server"),
                    Ok(Ok(Some(ev))) => {
                        if ev.r#type == pb::EventType::Error as i32 {
                            bail!("watch {w} ended with an error event: {:?}", ev.error);
                        }
                        if let Some(o) = ev.object {
                            tally.arrived(&o.name);
                        }
                    }
                }
            }
            Ok(tally)
        });
    }
    let create = {
        let (pool, template) = (pool.clone(), template.clone());
        move |i: u64| {
            let c = pool[(i as usize) % pool.len()].clone();
            let req = pb::CreateRequest {
                kind: pods_kind(),
                namespace: pod::NAMESPACE.into(),
                json: template.json(&pod::name(pod::WATCH_PREFIX, i)),
                options: None,
            };
            async move {
                c.create(req).await.context("watched create")?;
                Ok(())
            }
        }
    };
    let probe = CpuProbe::start(pid);
    let written = watch::steady_writer(times, scale.watch_rate, scale.clients, create).await?;
    let mut tallies = Vec::new();
    while let Some(t) = watchers.join_next().await {
        tallies.push(t.context("watcher task panicked")??);
    }
    watch::summarize(tallies, scale.watch_events, written, probe.stop())
}
