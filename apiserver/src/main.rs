//! `rudder-apiserver`: parses flags, sets up logging, runs the server until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rudder_apiserver::{Server, ServerConfig};

// The request path allocates many small, short-lived buffers (JSON values, protobuf messages);
// glibc's malloc took about a fifth of the server's CPU under load. jemalloc is faster here
// without the memory growth mimalloc showed (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "rudder-apiserver", version, about = "Rudder's API server")]
struct Args {
    /// Directory holding the store.
    #[arg(long, default_value = "./rudder-data")]
    data_dir: PathBuf,
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Events kept for watches to resume from.
    #[arg(long, default_value_t = 100_000)]
    history_window: usize,
    /// Bytes of events kept for watches to resume from (whichever of this and the count binds
    /// first).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    history_bytes: usize,
    /// Bytes of write proposals that may wait for the writer; more wait to be queued.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    proposal_queue_bytes: usize,
    /// Bytes of committed writes that may wait to be checkpointed into sled; the writer waits
    /// beyond.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    checkpoint_queue_bytes: usize,
    /// Events a watcher may fall behind before it is cut off.
    #[arg(long, default_value_t = 8192)]
    watch_buffer: usize,
    /// Refuse writes while the data directory's filesystem has fewer free bytes than this.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    min_free_bytes: u64,
    /// Default interval between watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    bookmark_interval_ms: u64,
    /// Events last seen longer ago than this many seconds are deleted.
    #[arg(long, default_value_t = 3600)]
    event_ttl_seconds: u64,
    /// How long a watch or list from a version above the store's waits for it, in milliseconds,
    /// before it is refused as too large.
    #[arg(long, default_value_t = 3000)]
    resource_version_wait_ms: u64,
    /// tolerationSeconds of the not-ready:NoExecute toleration added to every pod without one.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the unreachable:NoExecute toleration added to every pod without one.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Where Service cluster IPs come from: an IPv4 CIDR, /8 to /28. Each node keeps the range
    /// on a local bridge (the node agent's `--service-cidr`, which must be the same).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: rudder_apiserver::service::allocate::ServiceRange,
    /// This master's id in a replicated cluster (a positive number, never reused). Without it
    /// the server is a single master.
    #[arg(long, requires_all = ["raft_listen", "raft_members"])]
    raft_id: Option<u64>,
    /// Address to serve master-to-master Raft traffic on.
    #[arg(long)]
    raft_listen: Option<String>,
    /// The initial masters, `ID=HOST:PORT` (their Raft ports) separated by commas, this one
    /// included; used to bootstrap a new cluster, ignored once a member has joined.
    #[arg(long)]
    raft_members: Option<String>,
    /// Cut a snapshot after this many Raft log entries, and purge the log before it.
    #[arg(long, default_value_t = 20_000)]
    raft_snapshot_every: u64,
    /// Log entries kept after a snapshot, for followers slightly behind (further behind, they
    /// get the snapshot).
    #[arg(long, default_value_t = 5_000)]
    raft_keep_after_snapshot: u64,
    /// Interval between the leader's heartbeats, in milliseconds.
    #[arg(long, default_value_t = 100)]
    raft_heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between these two (milliseconds,
    /// `MIN,MAX`) stands for election. A follower also refuses votes for MAX after its last
    /// heartbeat (openraft's leader lease), so a leader's loss takes one to two timeouts.
    #[arg(long, default_value = "400,800", value_parser = parse_timeouts)]
    raft_election_timeout_ms: (u64, u64),
    /// This master joins a running cluster: it does not bootstrap one, and waits until a member
    /// adds it (`rudder admin members add ID ADDR`).
    #[arg(long)]
    raft_join: bool,
    /// Restore this backup (from `rudder admin snapshot save`) into the data directory, which
    /// must be empty, before starting. A replicated master restoring must be the only one in
    /// `--raft-members`: it starts a new cluster that others then join.
    #[arg(long)]
    restore_from: Option<PathBuf>,
    /// With --restore-from: restore, then exit instead of serving.
    #[arg(long, requires = "restore_from")]
    restore_only: bool,
    /// Take a backup into this directory every --backup-interval-seconds, keeping the newest
    /// --backup-keep (the files `rudder admin snapshot restore` takes).
    #[arg(long)]
    backup_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3600)]
    backup_interval_seconds: u64,
    #[arg(long, default_value_t = 24)]
    backup_keep: usize,
    /// Raise the store alarm (an Event, `rudder status`) below this many free bytes under the
    /// data directory; keep it well above --min-free-bytes, where writes stop.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    disk_alarm_bytes: u64,
    /// Raise the store alarm above this store size in bytes (0: never).
    #[arg(long, default_value_t = 8 * 1024 * 1024 * 1024)]
    store_size_alarm_bytes: u64,
    /// The cluster CA and the built-in credentials (made on first start when missing); masters
    /// of one cluster share it. Default: `<data-dir>/pki`.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// More names and addresses for the serving certificate (comma separated), besides
    /// localhost, the loopback addresses, the listen address and the host name.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Kubernetes' static token file: `token,user,uid[,"group1,group2"]` per line.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve callers without credentials, as `system:anonymous` (RBAC still applies).
    #[arg(long)]
    anonymous_auth: bool,
    /// How requests are authorized: RBAC (the Node authorizer, then RBAC) or AlwaysAllow.
    #[arg(long, default_value = "RBAC", value_parser = ["RBAC", "AlwaysAllow"])]
    authorization_mode: String,
    /// Lifetime of the serving certificate and of the certificates this master signs, in
    /// hours; each is renewed after two thirds of it.
    #[arg(long, default_value_t = 365 * 24)]
    cert_lifetime_hours: u64,
    /// Lifetime as above, in seconds (overrides the hours; for tests of renewal).
    #[arg(long, hide = true)]
    cert_lifetime_seconds: Option<u64>,
    /// Plaintext, no authentication, and every caller may do anything. Only for tests and
    /// throwaway experiments on loopback; never on a cluster anyone shares.
    #[arg(long, conflicts_with_all = ["pki_dir", "token_auth_file", "anonymous_auth"])]
    insecure_allow_all: bool,
}

/// The listen address as clients dial it (an unspecified address becomes loopback).
fn dialable(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "", port)) => format!("127.0.0.1:{port}"),
        _ => listen.to_string(),
    }
}

fn parse_timeouts(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?}: expected MIN,MAX in milliseconds, MIN below MAX");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a >= b {
        return Err(bad());
    }
    Ok((a, b))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ServerConfig::new(&args.data_dir);
    config.store.history_window = args.history_window;
    config.store.watch_buffer = args.watch_buffer;
    config.store.history_bytes = args.history_bytes;
    config.store.proposal_queue_bytes = args.proposal_queue_bytes;
    config.store.checkpoint_queue_bytes = args.checkpoint_queue_bytes;
    config.store.min_free_bytes = args.min_free_bytes;
    config.api.bookmark_interval = Duration::from_millis(args.bookmark_interval_ms.max(1));
    config.api.event_ttl = Duration::from_secs(args.event_ttl_seconds.max(1));
    config.api.resource_version_wait = Duration::from_millis(args.resource_version_wait_ms);
    config.api.default_not_ready_toleration_seconds = args.default_not_ready_toleration_seconds;
    config.api.default_unreachable_toleration_seconds = args.default_unreachable_toleration_seconds;
    config.api.service_range = args.service_cluster_ip_range;
    config.api.maintenance = rudder_apiserver::maintenance::MaintenanceConfig {
        backup_dir: args.backup_dir.clone(),
        backup_every: Duration::from_secs(args.backup_interval_seconds.max(1)),
        backup_keep: args.backup_keep.max(1),
        disk_alarm_bytes: args.disk_alarm_bytes,
        size_alarm_bytes: args.store_size_alarm_bytes,
    };
    if !args.insecure_allow_all {
        use rudder_apiserver::auth::secure::{AuthorizationMode, Security};
        let mut s = Security::new(
            args.pki_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("pki")),
        );
        s.sans = args.tls_san.clone();
        s.servers = vec![dialable(&args.listen)];
        s.anonymous = args.anonymous_auth;
        s.token_file = args.token_auth_file.clone();
        s.authorization = if args.authorization_mode == "AlwaysAllow" {
            AuthorizationMode::AlwaysAllow
        } else {
            AuthorizationMode::Rbac
        };
        s.cert_lifetime = Duration::from_secs(
            args.cert_lifetime_seconds
                .unwrap_or(args.cert_lifetime_hours.saturating_mul(3600))
                .max(1),
        );
        config.security = Some(s);
    }
    if let (Some(id), Some(listen), Some(members)) =
        (args.raft_id, &args.raft_listen, &args.raft_members)
    {
        let members =
            rudder_apiserver::replica::parse_members(members).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            members.contains_key(&id),
            "--raft-members does not list this master's id {id}"
        );
        let raft_listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for raft on {listen}"))?;
        let mut replica = rudder_apiserver::replica::ReplicaConfig::new(id, members);
        replica.snapshot_every = args.raft_snapshot_every.max(1);
        replica.keep_after_snapshot = args.raft_keep_after_snapshot;
        replica.join = args.raft_join;
        replica.heartbeat_ms = args.raft_heartbeat_ms.max(1);
        replica.election_timeout_ms = args.raft_election_timeout_ms;
        config.replica = Some((
            replica,
            std::sync::Arc::new(std::sync::Mutex::new(Some(raft_listener))),
        ));
    }
    if let Some(file) = &args.restore_from {
        if let Some((r, _)) = &config.replica
            && (r.members.len() != 1 || r.join)
        {
            anyhow::bail!(
                "--restore-from starts a new cluster from the backup: list only this master in --raft-members (and no --raft-join), then add the others with `rudder admin members add`"
            );
        }
        let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let backup = rudder_apiserver::store::backup::decode(&data)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let storage = rudder_apiserver::storage::SledStorage::open(&args.data_dir)
            .with_context(|| format!("opening {}", args.data_dir.display()))?;
        rudder_apiserver::store::backup::restore(&storage, &backup)
            .with_context(|| format!("restoring into {}", args.data_dir.display()))?;
        drop(storage);
        tracing::info!(
            objects = backup.objects.len(),
            resource_version = backup.resource_version,
            "restored the backup"
        );
        if args.restore_only {
            println!(
                "restored {} objects at resourceVersion {} into {}",
                backup.objects.len(),
                backup.resource_version,
                args.data_dir.display()
            );
            return Ok(());
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = Server::start(config, listener).await.with_context(|| {
        format!(
            "cannot start with data directory {}",
            args.data_dir.display()
        )
    })?;
    tracing::info!(addr = %server.addr, data_dir = %args.data_dir.display(), "rudder-apiserver serving");
    // One machine-readable line, so callers that passed port 0 learn the port.
    println!("listening on {}", server.addr);
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
