//! `rudder`: kubectl's habits over Rudder's gRPC API.
//!
//! `main.rs` only parses arguments and turns an error into one line and an exit code; every
//! command lives here, one module per family:
//! - [`config`]: where the server is (flag, env, config file, default).
//! - [`kinds`]: resource type names resolved through the server's discovery.
//! - [`apply`] and [`merge`]: `apply` and its three-way merge; [`diff`] for `diff`.
//! - [`get`], [`printers`] and [`output`]: `get` with kubectl's tables, `-o` formats and
//!   `--sort-by`; [`jsonpath`] evaluates kubectl's JSONPath templates for them.
//! - [`describe`], [`delete`], [`create`], [`modify`] (label/annotate/patch), [`edit`],
//!   [`wait`], [`info`] (api-resources/version), [`cluster`] (up/down/status),
//!   [`streams`] (logs/exec/port-forward through the API server), [`top`].
//! - [`admin`]: `admin members list|add|remove` for a replicated control plane.
//! - [`cordon`]: cordon and uncordon nodes; [`drain`]: cordon and evict a node's pods.
//! - [`rollout`], [`scale`] and [`set`]: the workload commands (rollout status/history/undo/
//!   pause/resume/restart, scale, set image/env/resources).

pub mod admin;
pub mod apply;
pub mod cluster;
pub mod config;
pub mod cordon;
pub mod create;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod drain;
pub mod edit;
pub mod error;
pub mod get;
pub mod info;
pub mod jsonpath;
pub mod kinds;
pub mod merge;
pub mod modify;
pub mod output;
pub mod printers;
pub mod rollout;
pub mod scale;
pub mod set;
pub mod streams;
pub mod top;
pub mod util;
pub mod wait;

use clap::{Parser, Subcommand};
use rudder_client::Client;
use tokio::sync::OnceCell;

pub use error::{CliError, Result};
use kinds::Kinds;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rudder",
    version,
    about = "rudder controls a Rudder cluster, the kubectl way",
    propagate_version = true
)]
pub struct Cli {
    /// API server address(es), comma-separated for failover.
    #[arg(
        long,
        global = true,
        env = "RUDDER_SERVER",
        value_name = "ADDR[,ADDR...]"
    )]
    pub server: Option<String>,
    /// Namespace for this request (default: the config file's `namespace:`, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// List or act across all namespaces.
    #[arg(short = 'A', long = "all-namespaces", global = true)]
    pub all_namespaces: bool,
    /// Credentials file (the cluster CA and a client certificate or token; `rudder up` writes
    /// the admin's). Default: the config file's `credentials:`.
    #[arg(long, global = true, env = "RUDDER_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<std::path::PathBuf>,
    /// Bearer token for the API servers (a ServiceAccount's or the static token file's),
    /// instead of the credentials' certificate.
    #[arg(long, global = true, env = "RUDDER_TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from files so that they match the files.
    Apply(apply::ApplyArgs),
    /// List objects or show some of them.
    Get(get::GetArgs),
    /// Show a readable summary of objects and their events.
    Describe(describe::DescribeArgs),
    /// Delete objects by name, file, selector or all.
    Delete(delete::DeleteArgs),
    /// Create a namespace, config map, secret or objects from files.
    Create(create::CreateArgs),
    /// Add, change or remove labels.
    Label(modify::LabelArgs),
    /// Add, change or remove annotations.
    Annotate(modify::LabelArgs),
    /// Patch an object with a merge or JSON patch.
    Patch(modify::PatchArgs),
    /// Edit an object in $EDITOR and update it.
    Edit(edit::EditArgs),
    /// Wait for a condition on objects, or for their deletion.
    Wait(wait::WaitArgs),
    /// Show what `apply` would change, as a unified diff (exit 1 when there are differences).
    Diff(diff::DiffArgs),
    /// List the resource types the server serves.
    ApiResources(info::ApiResourcesArgs),
    /// Print the client and server versions.
    Version(info::VersionArgs),
    /// Print a container's log.
    Logs(streams::LogsArgs),
    /// Run a command in a container.
    Exec(streams::ExecArgs),
    /// Forward local ports to a pod.
    PortForward(streams::PortForwardArgs),
    /// CPU and memory use of nodes or pods.
    Top(top::TopArgs),
    /// Manage the rollout of deployments, daemon sets and stateful sets.
    Rollout(rollout::RolloutArgs),
    /// Mark nodes unschedulable.
    Cordon(cordon::CordonArgs),
    /// Mark nodes schedulable again.
    Uncordon(cordon::CordonArgs),
    /// Cordon a node and evict its pods, honouring their disruption budgets.
    Drain(drain::DrainArgs),
    /// Set a new size for a deployment, replica set, stateful set or replication controller.
    Scale(scale::ScaleArgs),
    /// Set images, environment variables or resources of pod templates.
    Set(set::SetArgs),
    /// Start a local cluster (the API server) in the background.
    Up(cluster::UpArgs),
    /// Stop the local cluster started by `up`.
    Down(cluster::DownArgs),
    /// Show the local cluster's processes, health and store statistics.
    Status(cluster::DataDirArgs),
    /// Administer the control plane: the masters of a replicated cluster.
    Admin(admin::AdminArgs),
}

/// What every command shares: the connection, the namespace, the discovered kinds.
pub struct Ctx {
    pub servers: Vec<String>,
    /// The credentials file, when the cluster is secured (it always is, but for
    /// `--insecure-allow-all` servers).
    pub credentials: Option<std::path::PathBuf>,
    pub token: Option<String>,
    pub namespace: String,
    pub all_namespaces: bool,
    // Made on first use: building a client needs the async runtime, and `up`/`down` need none.
    client: std::sync::OnceLock<std::result::Result<Client, rudder_client::ClientError>>,
    kinds: OnceCell<Kinds>,
}

impl Ctx {
    pub fn new(servers: Vec<String>, namespace: String, all_namespaces: bool) -> Self {
        Ctx {
            servers,
            credentials: None,
            token: None,
            namespace,
            all_namespaces,
            client: std::sync::OnceLock::new(),
            kinds: OnceCell::new(),
        }
    }

    pub fn client(&self) -> Result<&Client> {
        self.client
            .get_or_init(|| self.connect())
            .as_ref()
            .map_err(|e| CliError::msg(e.to_string()))
    }

    fn connect(&self) -> std::result::Result<Client, rudder_client::ClientError> {
        use rudder_client::ClientError;
        use rudder_client::tls::Credentials;
        let Some(path) = &self.credentials else {
            if self.token.is_some() {
                return Err(ClientError::Invalid(
                    "--token needs the cluster CA to check the server: give --credentials (a file with certificate-authority) too".into(),
                ));
            }
            return Client::new(&self.servers);
        };
        let mut c = Credentials::load(path).map_err(|e| ClientError::Invalid(e.to_string()))?;
        if let Some(t) = &self.token {
            // A token replaces the file's certificate: the caller is the token's user.
            c.client_certificate = None;
            c.client_key = None;
            c.token = Some(t.clone());
        }
        Client::with_credentials(&self.servers, Default::default(), &c)
    }

    /// The server's resource types, asked once per run.
    pub async fn kinds(&self) -> Result<&Kinds> {
        let client = self.client()?;
        self.kinds.get_or_try_init(|| Kinds::discover(client)).await
    }
}

/// Prints a command-line parsing outcome (help, version or a usage error) and returns the
/// exit code: 0 for help and version, 1 for usage errors as kubectl (clap's own is 2). `bare`:
/// no arguments were given, which prints help and succeeds, as bare `kubectl` does.
pub fn usage_exit(e: &clap::Error, bare: bool) -> i32 {
    use clap::CommandFactory;
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
            if bare =>
        {
            print!("{}", Cli::command().render_help());
            0
        }
        _ => {
            // Failing to print (a closed pipe) changes nothing about the outcome.
            let _ = e.print();
            if e.use_stderr() { 1 } else { 0 }
        }
    }
}

/// Runs a parsed command line. Returns the exit code for successes that still signal something
/// (`diff` finding differences); errors carry their own line and exit 1.
pub async fn run(cli: Cli) -> Result<i32> {
    let cfg_path = config::config_path();
    let cfg_text = match &cfg_path {
        Some(p) => config::read_config(p)?,
        None => None,
    };
    let cfg = cfg_path.as_deref().zip(cfg_text.as_deref());
    let (servers, _source) = config::resolve_servers(cli.server.as_deref(), cfg);
    let namespace = cli
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            cfg_text
                .as_deref()
                .and_then(|t| config::lookup(t, "namespace"))
        })
        .unwrap_or_else(|| "default".to_string());
    let mut ctx = Ctx::new(servers, namespace, cli.all_namespaces);
    ctx.credentials = cli.credentials.clone().or_else(|| {
        cfg_text
            .as_deref()
            .and_then(|t| config::lookup(t, "credentials"))
            .map(std::path::PathBuf::from)
    });
    ctx.token = cli.token.clone().filter(|t| !t.is_empty());
    match cli.command {
        Command::Apply(a) => apply::run(&ctx, a).await.map(|_| 0),
        Command::Get(a) => get::run(&ctx, a).await.map(|_| 0),
        Command::Describe(a) => describe::run(&ctx, a).await.map(|_| 0),
        Command::Delete(a) => delete::run(&ctx, a).await.map(|_| 0),
        Command::Create(c) => create::run(&ctx, c).await.map(|_| 0),
        Command::Label(a) => modify::label(&ctx, a, modify::Field::Labels)
            .await
            .map(|_| 0),
        Command::Annotate(a) => modify::label(&ctx, a, modify::Field::Annotations)
            .await
            .map(|_| 0),
        Command::Patch(a) => modify::patch(&ctx, a).await.map(|_| 0),
        Command::Edit(a) => edit::run(&ctx, a).await.map(|_| 0),
        Command::Wait(a) => wait::run(&ctx, a).await.map(|_| 0),
        Command::Diff(a) => diff::run(&ctx, a).await,
        Command::ApiResources(a) => info::api_resources(&ctx, a).await.map(|_| 0),
        Command::Version(a) => info::version(&ctx, a).await.map(|_| 0),
        Command::Logs(a) => streams::logs(&ctx, a).await.map(|_| 0),
        Command::Exec(a) => streams::exec(&ctx, a).await,
        Command::PortForward(a) => streams::port_forward(&ctx, a).await.map(|_| 0),
        Command::Top(a) => top::run(&ctx, a).await.map(|_| 0),
        Command::Rollout(a) => rollout::run(&ctx, a).await.map(|_| 0),
        Command::Cordon(a) => cordon::run(&ctx, a, true).await.map(|_| 0),
        Command::Uncordon(a) => cordon::run(&ctx, a, false).await.map(|_| 0),
        Command::Drain(a) => drain::run(&ctx, a).await.map(|_| 0),
        Command::Scale(a) => scale::run(&ctx, a).await.map(|_| 0),
        Command::Set(a) => set::run(&ctx, a).await.map(|_| 0),
        Command::Up(a) => cluster::up(a, cfg_path.as_deref()).await.map(|_| 0),
        Command::Down(a) => cluster::down(a).await.map(|_| 0),
        Command::Status(a) => cluster::status(a).await,
        Command::Admin(a) => admin::run(&ctx, &a).await.map(|_| 0),
    }
}
