//! The same workload against a single-member etcd over its v3 gRPC API (the hand-written subset
//! in `proto/etcd.proto`): the same Pod bytes under kube-apiserver's key layout
//! (`/registry/pods/default/<name>`), the same concurrency and connection count.
//!
//! Reads use etcd's defaults, as kube-apiserver's quorum reads do: `Range` is linearizable (a
//! ReadIndex round before answering), and a list is one `Range` over the namespace's prefix.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};

use crate::measure::{CpuProbe, closed_loop, repeat, rss_bytes, scatter};
use crate::pod::{self, PodTemplate};
use crate::procs::{self, ServerProc};
use crate::watch::{self, SendTimes, Tally};
use crate::{Figures, Scale};

/// Generated from `proto/etcd.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;

/// Lists of 10,000 pods are ~15 MB; tonic's default 4 MiB limit would refuse them.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

fn kv(ch: &Channel) -> KvClient<Channel> {
    KvClient::new(ch.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// The exclusive end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // An all-0xff prefix: "\0" means "to the end of the keyspace" in etcd.
    Bytes::from_static(b"\0")
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Starts etcd (`bin`), waits until it answers, and runs every phase at `scale`. etcd is killed
/// on return. A failure to start is an error, never a silent skip.
pub async fn run(bin: &str, scale: &Scale) -> anyhow::Result<Figures> {
    let mut server = procs::start_etcd(bin)?;
    let addr = server.addr.clone();
    procs::wait_ready(&mut server, Duration::from_secs(30), move || {
        let addr = addr.clone();
        async move {
            let ch = connect(&addr).await?;
            kv(&ch)
                .range(pb::RangeRequest {
                    key: Bytes::from_static(b"/health"),
                    ..Default::default()
                })
                .await?;
            Ok(())
        }
    })
    .await
    .context("etcd did not start")?;
    let result = phases(&mut server, scale).await;
    result.with_context(|| {
        format!(
            "etcd benchmark failed; etcd log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn phases(server: &mut ServerProc, scale: &Scale) -> anyhow::Result<Figures> {
    let pid = server.pid();
    let mut pool = Vec::new();
    for _ in 0..scale.connections.max(1) {
        pool.push(connect(&server.addr).await.context("connecting to etcd")?);
    }
    let pool = Arc::new(pool);
    let template = PodTemplate::new();
    let object_bytes = template.json(&pod::name(pod::BULK_PREFIX, 0)).len();

    let put = {
        let (pool, template) = (pool.clone(), template.clone());
        move |client: usize, i: u64| {
            let mut c = kv(&pool[client % pool.len()]);
            let name = pod::name(pod::BULK_PREFIX, i);
            let req = pb::PutRequest {
                key: pod::etcd_key(&name),
                value: template.json(&name),
                ..Default::default()
            };
            async move {
                c.put(req).await.context("put")?;
                Ok(())
            }
        }
    };
    let seq = scale.seq_creates.min(scale.pods);
    eprintln!("  etcd: {seq} puts, 1 client");
    let create_1 = closed_loop(pid, 1, 0, seq, put.clone()).await?;
    eprintln!(
        "  etcd: {} puts, {} clients over {} connections",
        scale.pods - seq,
        scale.clients,
        pool.len()
    );
    let create_n = closed_loop(pid, scale.clients, seq, scale.pods, put).await?;

    eprintln!("  etcd: {} gets, {} clients", scale.gets, scale.clients);
    let get = {
        let pool = pool.clone();
        let pods = scale.pods;
        move |client: usize, i: u64| {
            let mut c = kv(&pool[client % pool.len()]);
            let req = pb::RangeRequest {
                key: pod::etcd_key(&pod::name(pod::BULK_PREFIX, scatter(i, pods))),
                ..Default::default()
            };
            async move {
                let r = c.range(req).await.context("range (get)")?.into_inner();
                if r.kvs.len() != 1 {
                    bail!("get returned {} keys, expected 1", r.kvs.len());
                }
                Ok(())
            }
        }
    };
    let get_n = closed_loop(pid, scale.clients, 0, scale.gets, get).await?;

    eprintln!("  etcd: {} lists of {} pods", scale.lists, scale.pods);
    let lister = pool[0].clone();
    let want = scale.pods as usize;
    let prefix = pod::etcd_prefix();
    let list = repeat(scale.lists, || {
        let mut c = kv(&lister);
        let req = pb::RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            ..Default::default()
        };
        async move {
            let r = c.range(req).await.context("range (list)")?.into_inner();
            if r.kvs.len() != want {
                bail!("list returned {} pods, expected {want}", r.kvs.len());
            }
            Ok(())
        }
    })
    .await?;
    let rss = rss_bytes(pid).context("reading etcd's VmRSS")?;

    eprintln!(
        "  etcd: {} watchers, {} puts at {}/s",
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
    pool: &Arc<Vec<Channel>>,
    template: &PodTemplate,
    scale: &Scale,
) -> anyhow::Result<watch::WatchFigures> {
    let times = SendTimes::new(scale.watch_events);
    let deadline = tokio::time::Instant::now() + scale.watch_deadline();
    let prefix = pod::etcd_prefix();
    let mut watchers = tokio::task::JoinSet::new();
    for w in 0..scale.watchers {
        let mut c =
            WatchClient::new(pool[w % pool.len()].clone()).max_decoding_message_size(MAX_MESSAGE);
        // One Watch stream per watcher (as the Rudder side has), each with one watch on the
        // prefix from the current revision (start_revision 0). The request side stays open:
        // closing it could end the stream.
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(&prefix),
                    ..Default::default()
                },
            )),
        };
        let requests =
            futures::StreamExt::chain(futures::stream::iter([create]), futures::stream::pending());
        let mut stream = c
            .watch(requests)
            .await
            .with_context(|| format!("opening watch {w}"))?
            .into_inner();
        // Wait for the "created" answer: only then does etcd deliver every later change.
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(r))) if r.created => {}
            Ok(Ok(Some(r))) => bail!("watch {w}: expected a created response, got {r:?}"),
            Ok(Ok(None)) => bail!("watch {w} closed before it was created"),
            Ok(Err(status)) => bail!("watch {w} failed: {status}"),
            Err(_) => bail!("watch {w} was not created within 10 s"),
        }
        let mut tally = Tally::new(times.clone());
        watchers.spawn(async move {
            while !tally.complete() {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => break,
                    Ok(Err(status)) => bail!("watch {w} failed: {status}"),
                    Ok(Ok(None)) => bail!("watch {w} closed by etcd"),
                    Ok(Ok(Some(r))) => {
                        if r.canceled {
                            bail!("watch {w} canceled by etcd: {}", r.cancel_reason);
                        }
                        for ev in r.events {
                            if let Some(kv) = ev.kv {
                                let key = String::from_utf8_lossy(&kv.key);
                                let name = key.rsplit('/').next().unwrap_or_default();
                                tally.arrived(name);
                            }
                        }
                    }
                }
            }
            Ok(tally)
        });
    }
    let put = {
        let (pool, template) = (pool.clone(), template.clone());
        move |i: u64| {
            let mut c = kv(&pool[(i as usize) % pool.len()]);
            let name = pod::name(pod::WATCH_PREFIX, i);
            let req = pb::PutRequest {
                key: pod::etcd_key(&name),
                value: template.json(&name),
                ..Default::default()
            };
            async move {
                c.put(req).await.context("watched put")?;
                Ok(())
            }
        }
    };
    let probe = CpuProbe::start(pid);
    let written = watch::steady_writer(times, scale.watch_rate, scale.clients, put).await?;
    let mut tallies = Vec::new();
    while let Some(t) = watchers.join_next().await {
        tallies.push(t.context("watcher task panicked")??);
    }
    watch::summarize(tallies, scale.watch_events, written, probe.stop())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            &prefix_end(b"/registry/pods/default/")[..],
            b"/registry/pods/default0"
        );
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
    }
}
