//! The large-object scenario: one ConfigMap of about 1 MiB rewritten in a closed loop for a
//! while, with the server's RSS sampled every second. It shows whether memory follows bytes
//! (history, queues) or event counts: each rewrite makes a new 1 MiB version that the watch
//! history, the proposal queue and the checkpoint hand-over could each keep.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rudder_client::Client;
use rudder_client::proto as pb;

use crate::measure::rss_bytes;
use crate::procs;

/// What the scenario measured.
#[derive(Debug, Clone, Default)]
pub struct RewriteFigures {
    pub object_bytes: usize,
    pub seconds: u64,
    pub writers: usize,
    pub writes: u64,
    /// RSS after the first write, the highest sample, and the last one, in bytes.
    pub rss_start: u64,
    pub rss_max: u64,
    pub rss_end: u64,
    /// The server's history at the end: events and oldest version.
    pub history_events: u64,
}

impl RewriteFigures {
    pub fn render(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        format!(
            "Rewrite of one {:.2} MiB ConfigMap for {} s by {} writers: {} writes ({:.1}/s)\n  \
             RSS MiB: {:.1} after the first write, {:.1} at most, {:.1} at the end; \
             history holds {} events at the end",
            mib(self.object_bytes as u64),
            self.seconds,
            self.writers,
            self.writes,
            self.writes as f64 / self.seconds.max(1) as f64,
            mib(self.rss_start),
            mib(self.rss_max),
            mib(self.rss_end),
            self.history_events,
        )
    }
}

/// A ConfigMap whose data totals `bytes` (Kubernetes' limit for data is 1 MiB, keys included).
fn configmap(bytes: usize, round: u64) -> bytes::Bytes {
    let pad = "x".repeat(bytes.saturating_sub(64));
    bytes::Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "default"},
            "data": {"round": round.to_string(), "pad": pad},
        })
        .to_string(),
    )
}

/// Starts the server at `bin`, creates the ConfigMap, and rewrites it for `seconds` with
/// `writers` concurrent clients. The server is killed on return.
pub async fn run(
    bin: &Path,
    seconds: u64,
    object_bytes: usize,
    writers: usize,
) -> anyhow::Result<RewriteFigures> {
    let mut server = procs::start_rudder(bin, &[])?;
    let pid = server.pid();
    let client = Client::new(std::slice::from_ref(&server.addr))?;
    {
        let c = client.clone();
        procs::wait_ready(&mut server, Duration::from_secs(20), move || {
            let c = c.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    let kind = Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    });
    let body = configmap(object_bytes, 0);
    let sent_bytes = body.len();
    client
        .create(pb::CreateRequest {
            kind: kind.clone(),
            namespace: "default".into(),
            json: body,
            options: None,
        })
        .await
        .context("creating the ConfigMap")?;
    let rss_start = rss_bytes(pid).context("reading the server's VmRSS")?;
    let writes = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers.max(1) {
        let (client, kind, writes) = (client.clone(), kind.clone(), writes.clone());
        tasks.spawn(async move {
            let mut round = w as u64;
            while tokio::time::Instant::now() < deadline {
                round += writers as u64;
                // No resourceVersion: each write replaces whatever is stored. Writers racing for
                // the one object may exhaust the server's retries; that write is just lost.
                match client
                    .update(pb::UpdateRequest {
                        kind: kind.clone(),
                        namespace: "default".into(),
                        json: configmap(object_bytes, round),
                        options: None,
                    })
                    .await
                {
                    Ok(_) => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e).context("rewriting the ConfigMap"),
                }
            }
            anyhow::Ok(())
        });
    }
    let mut rss_max = rss_start;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        if let Some(r) = rss_bytes(pid) {
            rss_max = rss_max.max(r);
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("writer task panicked")??;
    }
    let rss_end = rss_bytes(pid).context("reading the server's VmRSS")?;
    let stats = client.stats().await.context("stats")?;
    Ok(RewriteFigures {
        object_bytes: sent_bytes,
        seconds,
        writers: writers.max(1),
        writes: writes.load(Ordering::Relaxed),
        rss_start,
        rss_max: rss_max.max(rss_end),
        rss_end,
        history_events: stats.history_events,
    })
}
