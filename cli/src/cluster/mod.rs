//! `rudder up`, `down` and `status`: a local cluster as detached processes under a data dir.
//!
//! Components: the API server, the scheduler, the controller-manager, the proxy (one per host: node agents
//! sharing a host share its kernel, so the proxy runs as the first node), then one node agent per node (`--nodes`,
//! named `node-1`, `node-2`, ... (`--node-prefix`), with pod CIDRs `10.88.1.0/24`, `10.88.2.0/24`, ... (`--pod-subnet`) on the one
//! local Docker engine). Layout of the data dir, per component: `<dir>/<component>.pid`,
//! `<dir>/<component>.addr` (where it listens: the API server's gRPC address, the others' health
//! address), `<dir>/logs/<component>.log`, the API server's store in `<dir>/apiserver/` and each
//! node agent's files in `<dir>/node-<i>/`. The processes are started in their own process group
//! so that a Ctrl-C in the terminal that ran `rudder up` does not stop them. `rudder down` stops
//! them, dependents first, removes the containers the node agents ran and the proxy's rules.
//! `status` is in [`status`].

mod status;

pub use status::status;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use rudder_client::Client;

use crate::config;
use crate::error::{CliError, Result};
use crate::util;

#[derive(Debug, Args, Clone)]
pub struct DataDirArgs {
    /// Where the cluster keeps its state, pid files and logs.
    #[arg(long, env = "RUDDER_DATA_DIR", default_value = ".rudder-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// Also delete the data directory: the store, the logs, the node agents' files.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// Address the API server listens on.
    #[arg(long, default_value = config::DEFAULT_SERVER)]
    pub listen: String,
    /// Address the scheduler serves `GET /healthz` on.
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub scheduler_health_addr: String,
    /// Address the controller-manager serves `GET /healthz` on.
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub controller_manager_health_addr: String,
    /// Address the proxy serves `GET /healthz` on.
    #[arg(long, default_value = "127.0.0.1:10256")]
    pub proxy_health_addr: String,
    /// The nftables table the proxy owns (one per cluster on a host).
    #[arg(long, default_value = "rudder-proxy")]
    pub proxy_nft_table: String,
    /// Port the proxy serves Ingress over HTTP on, at the node's address on the pod network
    /// (where pods and this host reach it); 0 for none.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port the proxy serves Ingress over HTTPS on, at the same address; 0 for none.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// API servers to run: 1, or 3 or 5 replicating one store with Raft. Master i serves the
    /// API on --listen's port + i - 1 and Raft on --raft-port + i - 1, on --listen's host.
    #[arg(long, default_value_t = 1, value_parser = parse_masters)]
    pub masters: u8,
    /// The first master's Raft port, with --masters above 1.
    #[arg(long, default_value_t = 7443)]
    pub raft_port: u16,
    /// How many node agents (nodes) to run on this machine's Docker engine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=200))]
    pub nodes: u8,
    /// Health port of the first node agent; node i uses this + i - 1.
    #[arg(long, default_value_t = 10248)]
    pub node_agent_health_port: u16,
    /// Node names are `<prefix>-1`, `<prefix>-2`, ...
    #[arg(long, default_value = "node")]
    pub node_prefix: String,
    /// The Docker network pods join (created if missing).
    #[arg(long, default_value = "rudder")]
    pub pod_network: String,
    /// Its subnet, a /16: node i gets the i-th /24 in it as its pod CIDR.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub pod_subnet: String,
    /// Addresses for Services of type LoadBalancer, a CIDR; default: the last /24 of
    /// --pod-subnet, which no node's pod range uses and which stays on this host's pod network.
    /// `none` for no LoadBalancer addresses.
    #[arg(long)]
    pub load_balancer_pool: Option<String>,
    /// The Docker network that keeps Service addresses on this host (created if missing).
    #[arg(long, default_value = "rudder-services")]
    pub service_network: String,
    /// The Service range: the API server allocates from it, the services network covers it.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
}

const APISERVER: &str = "apiserver";
const APISERVER_BIN: &str = "rudder-apiserver";
const SCHEDULER: &str = "scheduler";
const SCHEDULER_BIN: &str = "rudder-scheduler";
const NODE_AGENT_BIN: &str = "rudder-node-agent";
/// The fixed components, in start order (stopped in reverse), with their binaries; node agents
/// come after them.
const CONTROLLER_MANAGER: &str = "controller-manager";
const CONTROLLER_MANAGER_BIN: &str = "rudder-controller-manager";
const PROXY: &str = "proxy";
const PROXY_BIN: &str = "rudder-proxy";
const COMPONENTS: [(&str, &str); 4] = [
    (APISERVER, APISERVER_BIN),
    (SCHEDULER, SCHEDULER_BIN),
    (CONTROLLER_MANAGER, CONTROLLER_MANAGER_BIN),
    (PROXY, PROXY_BIN),
];

/// Where `up` records the proxy's nftables table (for `down` to remove it).
fn table_file(dir: &Path) -> PathBuf {
    dir.join("proxy.table")
}

/// Writes `text` and a newline to `file` in the data dir `dir`, for `down` and `status`.
fn record(dir: &Path, file: &Path, text: &str) -> Result<()> {
    std::fs::write(file, format!("{text}\n"))
        .map_err(|e| CliError::io(format!("writing in {}", dir.display()), e))
}

/// Where `up` records the Docker networks the node agents create (for `down` to remove them).
fn networks_file(dir: &Path) -> PathBuf {
    dir.join("docker.networks")
}

/// Where `up` records node agent i's node name (for `down` to find its containers).
fn node_file(dir: &Path, i: u8) -> PathBuf {
    dir.join(format!("node-agent-{i}.node"))
}

/// The first two octets of a `/16` subnet, e.g. `10.88.` for `10.88.0.0/16`.
fn subnet_prefix(subnet: &str) -> Result<String> {
    let bad = || CliError::msg(format!("--pod-subnet {subnet:?}: expected a.b.0.0/16"));
    let (ip, len) = subnet.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    if len != "16" {
        return Err(bad());
    }
    let [a, b, _, _] = ip.octets();
    Ok(format!("{a}.{b}."))
}

/// Whether component `c` is an API server.
fn is_master(c: &str) -> bool {
    c == APISERVER || c.starts_with("apiserver-")
}

fn parse_masters(s: &str) -> std::result::Result<u8, String> {
    match s.parse() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err(format!(
            "{s:?}: 1, 3 or 5 masters (a majority must survive a loss)"
        )),
    }
}

/// Master i's component name: `apiserver` for the first (as with one), `apiserver-<i>` after.
fn master_component(i: u8) -> String {
    if i == 1 {
        APISERVER.to_string()
    } else {
        format!("{APISERVER}-{i}")
    }
}

/// `host:port` with the port moved up by `by`.
fn port_plus(addr: &str, by: u8, flag: &str) -> Result<String> {
    let bad = || CliError::msg(format!("{flag} {addr:?}: expected HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let port = port
        .checked_add(u16::from(by))
        .ok_or_else(|| CliError::msg(format!("{flag} {addr:?}: port too high for --masters")))?;
    Ok(format!("{host}:{port}"))
}

/// The API servers' arguments and listen addresses, one per master.
fn masters(args: &UpArgs, dir: &Path) -> Result<Vec<(String, Vec<String>, String)>> {
    let host = args.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    let raft_of = |i: u8| port_plus(&format!("{host}:{}", args.raft_port), i - 1, "--raft-port");
    let members = (1..=args.masters)
        .map(|i| Ok(format!("{i}={}", dial_addr(&raft_of(i)?))))
        .collect::<Result<Vec<_>>>()?
        .join(",");
    let mut out = Vec::new();
    for i in 1..=args.masters {
        let c = master_component(i);
        let listen = port_plus(&args.listen, i - 1, "--listen")?;
        let mut a = vec![
            "--data-dir".into(),
            dir.join(&c).display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--service-cluster-ip-range".into(),
            args.service_cidr.clone(),
            "--pki-dir".into(),
            pki_dir(dir).display().to_string(),
        ];
        if args.masters > 1 {
            a.extend([
                "--raft-id".into(),
                i.to_string(),
                "--raft-listen".into(),
                raft_of(i)?,
                "--raft-members".into(),
                members.clone(),
            ]);
        }
        out.push((c, a, listen));
    }
    Ok(out)
}

fn node_component(i: u8) -> String {
    format!("node-agent-{i}")
}

/// The numbers `i` of the `<prefix>-<i>.pid` files in `dir`, in order.
fn numbered(dir: &Path, prefix: &str) -> Vec<u8> {
    let mut found: Vec<u8> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)?
                .strip_prefix('-')?
                .strip_suffix(".pid")?
                .parse()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// Every component with a pid file in `dir`, in start order: the masters, the other fixed
/// ones, then the node agents by number.
fn components(dir: &Path) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = vec![(APISERVER.to_string(), APISERVER_BIN)];
    out.extend(
        numbered(dir, APISERVER)
            .into_iter()
            .map(|i| (master_component(i), APISERVER_BIN)),
    );
    out.extend(
        COMPONENTS
            .iter()
            .filter(|(c, _)| *c != APISERVER)
            .map(|(c, b)| (c.to_string(), *b)),
    );
    out.extend(
        numbered(dir, "node-agent")
            .into_iter()
            .map(|i| (node_component(i), NODE_AGENT_BIN)),
    );
    out
}
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn pid_file(dir: &Path, c: &str) -> PathBuf {
    dir.join(format!("{c}.pid"))
}
fn addr_file(dir: &Path, c: &str) -> PathBuf {
    dir.join(format!("{c}.addr"))
}
fn log_file(dir: &Path, c: &str) -> PathBuf {
    dir.join("logs").join(format!("{c}.log"))
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_pid(dir: &Path, c: &str) -> Option<i32> {
    read_trimmed(&pid_file(dir, c)).and_then(|s| s.parse().ok())
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    // A zombie still answers kill(0) but has exited; /proc tells (state field after the name).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether `pid` runs `bin`: a pid file can outlive its process and the pid be reused, and
/// signalling a stranger's process must not happen.
fn is_ours(pid: i32, bin: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => String::from_utf8_lossy(&c).contains(bin),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// A listen address made dialable: a wildcard host becomes loopback.
pub fn dial_addr(listen: &str) -> String {
    for wild in ["0.0.0.0:", "[::]:", ":"] {
        if let Some(port) = listen.strip_prefix(wild) {
            return format!("127.0.0.1:{port}");
        }
    }
    listen.to_string()
}

/// The server binary: next to this executable, else on PATH.
pub(crate) fn find_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().ok();
    if let Some(dir) = exe.as_ref().and_then(|e| e.parent()) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(CliError::msg(format!(
        "cannot find the {name} binary next to {} or on PATH (build it with `cargo build -p {name}`)",
        exe.map(|e| e.display().to_string())
            .unwrap_or_else(|| "rudder".into())
    )))
}

fn log_tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cluster's PKI directory: the CA every master shares, and the built-in credentials.
pub fn pki_dir(dir: &Path) -> PathBuf {
    dir.join("pki")
}

/// A built-in identity's credentials (`admin`, `scheduler`, `controller-manager`, `proxy`).
pub fn credentials_file(dir: &Path, stem: &str) -> PathBuf {
    pki_dir(dir)
        .join("credentials")
        .join(format!("{stem}.yaml"))
}

/// A client of the local cluster as its admin; plaintext until the first master made the CA.
pub fn admin_client(dir: &Path, addrs: &[&str]) -> std::result::Result<Client, String> {
    let creds = credentials_file(dir, "admin");
    Client::from_credentials_file(addrs, creds.exists().then_some(creds.as_path()))
        .map_err(|e| e.to_string())
}

/// A component's health at `addr`: the API server's gRPC health call, the others' `/healthz`.
async fn component_healthy(dir: &Path, c: &str, addr: &str) -> std::result::Result<(), String> {
    if is_master(c) {
        healthy(dir, addr).await
    } else {
        http_healthy(addr).await
    }
}

/// `GET /healthz` answering 200 with body `ok`, as kube-scheduler's health port. A plain HTTP
/// request over TCP: this is the operator reading a local process's health port.
async fn http_healthy(addr: &str) -> std::result::Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.take(64 * 1024)
            .read_to_end(&mut resp)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("200") && body.trim() == "ok" {
            Ok(())
        } else {
            Err(format!("unhealthy: {status} {}", body.trim()))
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(r) => r,
        Err(_) => Err("no answer within 5s".into()),
    }
}

async fn healthy(dir: &Path, addr: &str) -> std::result::Result<(), String> {
    let c = admin_client(dir, &[addr])?;
    match c.health().await {
        Ok(h) if h.status == "ok" => Ok(()),
        Ok(h) => Err(h.status),
        Err(e) => Err(e.to_string()),
    }
}

fn print_hints(addr: &str, creds: &Path, cfg: Option<&Path>) -> Result<()> {
    if let Some(p) = cfg {
        util::outln(&format!(
            "Wrote server {addr} and the admin credentials {} to {}.",
            creds.display(),
            p.display()
        ))?;
    }
    util::outln(&format!(
        "To reach it:\n  export RUDDER_SERVER={addr} RUDDER_CREDENTIALS={}\n  rudder get ns",
        creds.display()
    ))
}

fn write_config(cfg: Option<&Path>, addr: &str, creds: &Path) -> Result<Option<PathBuf>> {
    match cfg {
        Some(p) => {
            config::write_server(p, addr)?;
            config::write_key(p, "credentials", &creds.display().to_string())?;
            Ok(Some(p.to_path_buf()))
        }
        None => Ok(None),
    }
}

pub async fn up(args: UpArgs, cfg: Option<&Path>) -> Result<()> {
    let dir = &args.dir.data_dir;
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::io(format!("resolving {}", dir.display()), e))?;
    // Masters start together: a new replicated cluster's members bootstrap it once each has
    // found no leader among the others.
    let starts = masters(&args, &dir)?;
    let started = starts.into_iter().map(|(c, a, listen)| {
        let dir = dir.clone();
        async move { ensure(&dir, &c, APISERVER_BIN, a, dial_addr(&listen)).await }
    });
    let addr = futures::future::try_join_all(started).await?.join(",");
    let creds = |stem: &str| credentials_file(&dir, stem).display().to_string();
    let sched_args = vec![
        "--credentials".into(),
        creds("scheduler"),
        "--server".into(),
        addr.clone(),
        "--health-addr".into(),
        args.scheduler_health_addr.clone(),
    ];
    ensure(
        &dir,
        SCHEDULER,
        SCHEDULER_BIN,
        sched_args,
        dial_addr(&args.scheduler_health_addr),
    )
    .await?;
    let net = subnet_prefix(&args.pod_subnet)?;
    let mut cm_args = vec![
        "--credentials".into(),
        creds("controller-manager"),
        "--server".into(),
        addr.clone(),
        "--health-addr".into(),
        args.controller_manager_health_addr.clone(),
    ];
    let pool = args
        .load_balancer_pool
        .clone()
        .unwrap_or_else(|| format!("{net}255.0/24"));
    if pool != "none" {
        cm_args.extend(["--load-balancer-pool".into(), pool]);
    }
    ensure(
        &dir,
        CONTROLLER_MANAGER,
        CONTROLLER_MANAGER_BIN,
        cm_args,
        dial_addr(&args.controller_manager_health_addr),
    )
    .await?;
    // Cluster DNS on the node's address on the pod network (its gateway), which is also the
    // node agents' default --cluster-dns for their pods.
    let mut proxy_args = vec![
        "--credentials".into(),
        creds("proxy"),
        "--dns-addr".into(),
        format!("{net}0.1:53"),
        "--server".into(),
        addr.clone(),
        "--node-name".into(),
        format!("{}-1", args.node_prefix),
        "--cluster-cidr".into(),
        args.pod_subnet.clone(),
        "--health-addr".into(),
        args.proxy_health_addr.clone(),
        "--nft-table".into(),
        args.proxy_nft_table.clone(),
    ];
    // Ingress beside DNS, on the node's pod-network address, which served Ingresses' status
    // names.
    for (flag, port) in [
        ("--ingress-http-addr", args.ingress_http_port),
        ("--ingress-https-addr", args.ingress_https_port),
    ] {
        if port != 0 {
            proxy_args.extend([flag.to_string(), format!("{net}0.1:{port}")]);
        }
    }
    if args.ingress_http_port != 0 || args.ingress_https_port != 0 {
        proxy_args.extend(["--ingress-status-address".into(), format!("{net}0.1")]);
    }
    record(&dir, &table_file(&dir), &args.proxy_nft_table)?;
    ensure(
        &dir,
        PROXY,
        PROXY_BIN,
        proxy_args,
        dial_addr(&args.proxy_health_addr),
    )
    .await?;
    let networks = format!("{}\n{}", args.pod_network, args.service_network);
    record(&dir, &networks_file(&dir), &networks)?;
    for i in 1..=args.nodes {
        let node = format!("{}-{i}", args.node_prefix);
        record(&dir, &node_file(&dir, i), &node)?;
        let port = u32::from(args.node_agent_health_port) + u32::from(i) - 1;
        let port = u16::try_from(port)
            .map_err(|_| CliError::msg("--node-agent-health-port: too high for --nodes"))?;
        let health = format!("127.0.0.1:{port}");
        let node_creds = node_credentials(&dir, &addr, &node).await?;
        let agent_args = vec![
            "--credentials".into(),
            node_creds.display().to_string(),
            "--server".into(),
            addr.clone(),
            "--node-name".into(),
            node.clone(),
            "--data-dir".into(),
            dir.join(&node).display().to_string(),
            "--pod-cidr".into(),
            format!("{net}{i}.0/24"),
            "--network".into(),
            args.pod_network.clone(),
            "--network-subnet".into(),
            args.pod_subnet.clone(),
            "--service-network".into(),
            args.service_network.clone(),
            "--service-cidr".into(),
            args.service_cidr.clone(),
            "--health-addr".into(),
            health.clone(),
        ];
        ensure(&dir, &node_component(i), NODE_AGENT_BIN, agent_args, health).await?;
    }
    let admin = credentials_file(&dir, "admin");
    let written = write_config(cfg, &addr, &admin)?;
    print_hints(&addr, &admin, written.as_deref())
}

/// A node agent's credentials (`system:node:<node>` in `system:nodes`), signed by the cluster
/// CA through the admin's client the first time the node starts, kept in its data directory.
async fn node_credentials(dir: &Path, addr: &str, node: &str) -> Result<PathBuf> {
    let path = dir.join(node).join("credentials.yaml");
    if path.exists() {
        return Ok(path);
    }
    let addrs: Vec<&str> = addr.split(',').collect();
    let client = admin_client(dir, &addrs).map_err(CliError::msg)?;
    let signed = client
        .sign_certificate(rudder_client::proto::SignCertificateRequest {
            user: format!("system:node:{node}"),
            groups: vec!["system:nodes".into()],
            ..Default::default()
        })
        .await?;
    let creds = rudder_client::tls::Credentials {
        servers: addrs.iter().map(|a| a.to_string()).collect(),
        certificate_authority: signed.certificate_authority,
        client_certificate: Some(signed.certificate),
        client_key: Some(signed.private_key),
        token: None,
    };
    creds
        .save(&path)
        .map_err(|e| CliError::msg(format!("writing the credentials of {node}: {e}")))?;
    Ok(path)
}

/// Starts component `c` unless it already runs healthy, and waits until it answers at `addr`
/// (the address recorded for a running one wins). Returns the address.
async fn ensure(
    dir: &Path,
    c: &str,
    bin_name: &str,
    args: Vec<String>,
    addr: String,
) -> Result<String> {
    let log = log_file(dir, c);
    if let Some(pid) = read_pid(dir, c).filter(|&p| alive(p) && is_ours(p, bin_name)) {
        let addr = read_trimmed(&addr_file(dir, c)).unwrap_or(addr);
        return match component_healthy(dir, c, &addr).await {
            Ok(()) => {
                util::outln(&format!("{c} is already running (pid {pid}) at {addr}"))?;
                Ok(addr)
            }
            Err(why) => Err(CliError::msg(format!(
                "{c} (pid {pid}) is running but not healthy at {addr} ({why}); see {} or run `rudder down`",
                log.display()
            ))),
        };
    }
    let bin = find_binary(bin_name)?;
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CliError::io(format!("opening {}", log.display()), e))?;
    let logf2 = logf
        .try_clone()
        .map_err(|e| CliError::io("duplicating the log file", e))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::io(format!("starting {}", bin.display()), e))?;
    let pid = child.id();
    std::fs::write(pid_file(dir, c), format!("{pid}\n"))
        .and_then(|_| std::fs::write(addr_file(dir, c), format!("{addr}\n")))
        .map_err(|e| CliError::io(format!("writing pid file in {}", dir.display()), e))?;
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(pid_file(dir, c));
            eprintln!("{}", log_tail(&log, 20));
            return Err(CliError::msg(format!(
                "{c} exited ({status}) before becoming healthy; log above, full log in {}",
                log.display()
            )));
        }
        let last = match component_healthy(dir, c, &addr).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            eprintln!("{}", log_tail(&log, 20));
            return Err(CliError::msg(format!(
                "{c} (pid {pid}) not healthy at {addr} after {}s ({last}); log above, full log in {}; it is still running, stop it with `rudder down`",
                HEALTH_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let what = if is_master(c) { "listening" } else { "health" };
    util::outln(&format!(
        "{c} started (pid {pid}), {what} on {addr}; logs in {}",
        log.display()
    ))?;
    Ok(addr)
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        // It may have exited in the meantime: nothing to do then.
        let _ = rustix::process::kill_process(p, sig);
    }
}

async fn wait_exit(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    !alive(pid)
}

pub async fn down(args: DownArgs) -> Result<()> {
    let dir = &args.dir.data_dir;
    let mut any = false;
    let mut had_proxy = false;
    // Dependents first: the others would only log errors once the API server is gone.
    let all = components(dir);
    for (c, bin) in all.iter().rev() {
        let (c, bin) = (c.as_str(), *bin);
        let Some(pid) = read_pid(dir, c) else {
            continue;
        };
        any = true;
        had_proxy |= c == PROXY;
        if !alive(pid) || !is_ours(pid, bin) {
            let _ = std::fs::remove_file(pid_file(dir, c));
            util::outln(&format!("{c} was not running (removed stale pid file)"))?;
            continue;
        }
        signal(pid, rustix::process::Signal::TERM);
        if !wait_exit(pid, STOP_TIMEOUT).await {
            eprintln!(
                "{c} (pid {pid}) did not stop within {}s; killing it",
                STOP_TIMEOUT.as_secs()
            );
            signal(pid, rustix::process::Signal::KILL);
            if !wait_exit(pid, Duration::from_secs(5)).await {
                return Err(CliError::msg(format!(
                    "{c} (pid {pid}) is still running after SIGKILL"
                )));
            }
        }
        let _ = std::fs::remove_file(pid_file(dir, c));
        util::outln(&format!("{c} (pid {pid}) stopped"))?;
    }
    remove_node_containers(dir, &all)?;
    if had_proxy {
        remove_proxy_rules(dir);
    }
    remove_networks(dir)?;
    if !any {
        util::outln(&format!("nothing is running from {}", dir.display()))?;
    }
    if args.purge && dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| CliError::io(format!("deleting {}", dir.display()), e))?;
        util::outln(&format!("deleted {}", dir.display()))?;
    }
    Ok(())
}

/// Removes the Docker networks `up` had the node agents create, once their containers are
/// gone. A network something else still uses stays, and `down` says so.
fn remove_networks(dir: &Path) -> Result<()> {
    let Some(names) = read_trimmed(&networks_file(dir)) else {
        return Ok(());
    };
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let out = std::process::Command::new("docker")
            .args(["network", "rm", name])
            .output();
        match out {
            Ok(o) if o.status.success() => util::outln(&format!("removed network {name}"))?,
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                if !why.contains("not found") {
                    eprintln!("network {name} stays: {why}");
                }
            }
            Err(e) => eprintln!("cannot run docker to remove network {name}: {e}"),
        }
    }
    let _ = std::fs::remove_file(networks_file(dir));
    Ok(())
}

/// Removes the stopped proxy's nftables table, so no Service address stays NATed to pods that
/// are gone. A failure is reported, not fatal: the rest of `down` has happened.
fn remove_proxy_rules(dir: &Path) {
    let bin = match find_binary(PROXY_BIN) {
        Ok(b) => b,
        Err(e) => return eprintln!("cannot remove the proxy's rules: {e}"),
    };
    let table = read_trimmed(&table_file(dir)).unwrap_or_else(|| "rudder-proxy".into());
    let out = std::process::Command::new(bin)
        .args(["--cleanup", "--nft-table", &table])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let _ = std::fs::remove_file(table_file(dir));
        }
        Ok(o) => eprintln!(
            "removing the proxy's rules failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("cannot run {PROXY_BIN} --cleanup: {e}"),
    }
}

/// Removes the containers the node agents of this cluster ran (they keep running when an agent
/// stops, so that a restarted agent adopts them), through the `docker` command.
fn remove_node_containers(dir: &Path, all: &[(String, &str)]) -> Result<()> {
    for (c, _) in all {
        let Some(i) = c
            .strip_prefix("node-agent-")
            .and_then(|i| i.parse::<u8>().ok())
        else {
            continue;
        };
        let Some(node) = read_trimmed(&node_file(dir, i)) else {
            continue;
        };
        let label = format!("label=io.rudder.node={node}");
        let ids = match std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => {
                eprintln!(
                    "cannot list {node}'s containers: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                continue;
            }
            Err(e) => {
                eprintln!("cannot run docker to remove {node}'s containers: {e}");
                continue;
            }
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            continue;
        }
        let out = std::process::Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output()
            .map_err(|e| CliError::io("running docker rm", e))?;
        if !out.status.success() {
            return Err(CliError::msg(format!(
                "removing {node}'s containers failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        util::outln(&format!("removed {} containers of {node}", ids.len()))?;
        let _ = std::fs::remove_file(node_file(dir, i));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialable_addresses() {
        assert_eq!(dial_addr("0.0.0.0:6443"), "127.0.0.1:6443");
        assert_eq!(dial_addr("[::]:7"), "127.0.0.1:7");
        assert_eq!(dial_addr("127.0.0.1:9"), "127.0.0.1:9");
    }

    #[test]
    fn liveness_of_this_process_and_a_dead_one() {
        assert!(alive(std::process::id() as i32));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        assert!(!alive(pid));
        assert!(!alive(0) || cfg!(not(target_os = "linux")));
    }
}
