//! The Docker Engine implementation of [`ContainerRuntime`], over bollard, speaking API 1.41
//! (Docker 20.10), or an older engine's version as negotiated; never a newer one, even with a
//! newer engine, so that its behaviour is the one tested.
//!
//! A pod's sandbox is a container of the pause image ([`pause_image`], built locally from the
//! binary embedded in the agent) on the pod network with the pod's static IP, its host ports
//! and DNS settings; the pod's containers join its network and IPC namespaces
//! (`container:<sandbox id>`), and so share its hostname. Names follow kubelet's dockershim
//! (`rudder_<ns>_<pod>_<uid8>_<container>_<attempt>`), but ownership is read from labels only.
//!
//! Stopping is done here rather than by the engine's `stop`, whose grace period is whole
//! seconds: SIGTERM, wait up to the grace, SIGKILL.
//!
//! A sandbox given DNS servers gets its `resolv.conf` rewritten with them (the engine puts its
//! embedded resolver there on user-defined networks), which needs the engine's files on this
//! host; with a remote engine the pod keeps the embedded resolver, forwarding to its servers.

mod errors;
mod exec;
mod hairpin;
mod io;
mod pause;
mod spec;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, InspectNetworkOptions,
    KillContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions, StatsOptions,
    WaitContainerOptions,
};
use futures::{StreamExt, TryStreamExt};
use rudder_client::clock::SharedClock;
use tokio::sync::Mutex;

pub use pause::pause_image;

use self::errors::Ctx;
use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ExecOutput, ExecSession, LogOptions, LogStream,
    NetworkSpec, PullAuth, RtFuture, RtResult, RuntimeError, SandboxSpec, State, Stats, labels,
};

/// Label on the networks the agent creates.
pub const NETWORK_LABEL: &str = "io.rudder.network";

/// The newest API version used: what the code was written and tested against. Negotiation
/// only goes down from here, to an older engine's version.
const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// The engine's default socket.
const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Per-request limit of bollard (to the response headers; streams may run longer).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long connecting may take before the engine counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed container may take to be reported stopped.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// Containers inspected at once by [`ContainerRuntime::list`].
const LIST_CONCURRENCY: usize = 8;

/// Talks to the Docker Engine API through bollard.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    clock: SharedClock,
    /// Serialises building the pause image within this process.
    pause_build: std::sync::Arc<Mutex<()>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the engine at `endpoint` (`unix:///path`, a socket path, or
    /// `http://host:port` / `tcp://host:port`), or the local default (`DOCKER_HOST` if it is a
    /// unix socket, else `/var/run/docker.sock`), and negotiates the API version. Fails with
    /// [`RuntimeError::Unavailable`] naming the endpoint when the engine does not answer.
    pub async fn connect(endpoint: Option<&str>, clock: SharedClock) -> RtResult<Self> {
        let (docker, shown) = match endpoint {
            Some(e) if e.starts_with("http://") || e.starts_with("tcp://") => (
                Docker::connect_with_http(e, REQUEST_TIMEOUT_SECS, &API_VERSION),
                e.to_string(),
            ),
            _ => {
                let shown = match endpoint {
                    Some(e) if e.starts_with("unix://") => e.to_string(),
                    Some(e) => format!("unix://{e}"),
                    None => std::env::var("DOCKER_HOST")
                        .ok()
                        .filter(|h| h.starts_with("unix://"))
                        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
                };
                (
                    Docker::connect_with_unix(&shown, REQUEST_TIMEOUT_SECS, &API_VERSION),
                    shown,
                )
            }
        };
        let unavailable = |why: String| RuntimeError::Unavailable(format!("{shown}: {why}"));
        let docker = docker.map_err(|e| unavailable(e.to_string()))?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => {
                return Err(unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")));
            }
        };
        Ok(DockerRuntime {
            docker,
            endpoint: shown,
            clock,
            pause_build: std::sync::Arc::new(Mutex::new(())),
        })
    }

    /// The endpoint as connected to, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn err(&self, e: bollard::errors::Error, ctx: Ctx<'_>) -> RuntimeError {
        errors::map(e, ctx, &self.endpoint)
    }

    /// Builds the pause image unless it is present. Concurrent builds (other agents, other
    /// processes) are harmless: they produce the same image under the same tag.
    pub async fn ensure_pause_image(&self) -> RtResult<()> {
        let image = pause_image();
        if self.image_id_of(image).await?.is_some() {
            return Ok(());
        }
        let _guard = self.pause_build.lock().await;
        if self.image_id_of(image).await?.is_some() {
            return Ok(());
        }
        let options = BuildImageOptions {
            t: Some(image.to_string()),
            rm: true,
            forcerm: true,
            q: true,
            ..Default::default()
        };
        let context = bytes::Bytes::from(pause::build_context());
        let mut build = self
            .docker
            .build_image(options, None, Some(bollard::body_full(context)));
        while let Some(step) = build.next().await {
            step.map_err(|e| match self.err(e, Ctx::Other) {
                RuntimeError::Unavailable(m) => RuntimeError::Unavailable(m),
                other => RuntimeError::Engine(format!("building {image}: {other}")),
            })?;
        }
        match self.image_id_of(image).await? {
            Some(_) => Ok(()),
            None => Err(RuntimeError::Engine(format!(
                "building {image} finished but the image is not there"
            ))),
        }
    }

    async fn image_id_of(&self, image: &str) -> RtResult<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) if errors::is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err(e, Ctx::Other)),
        }
    }

    async fn inspect_raw(&self, id: &str) -> RtResult<bollard::models::ContainerInspectResponse> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.err(e, Ctx::Container(id)))
    }

    async fn ensure_network_impl(&self, net: &NetworkSpec) -> RtResult<()> {
        if self.check_network(net).await? {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".to_string()),
            ipam: Some(Ipam {
                driver: Some("default".to_string()),
                config: Some(vec![IpamConfig {
                    subnet: Some(net.subnet.clone()),
                    gateway: Some(net.gateway.to_string()),
                    ip_range: net.ip_range.clone(),
                    ..Default::default()
                }]),
                options: None,
            }),
            labels: Some(HashMap::from([(
                NETWORK_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Someone may have created it meanwhile (the subnet then overlaps itself).
                if self.check_network(net).await? {
                    Ok(())
                } else {
                    Err(self.err(e, Ctx::Other))
                }
            }
        }
    }

    /// Whether the network exists with this subnet; an error if it exists with another.
    async fn check_network(&self, net: &NetworkSpec) -> RtResult<bool> {
        let options = InspectNetworkOptions {
            verbose: false,
            scope: Some("local".to_string()),
        };
        let found = match self.docker.inspect_network(&net.name, Some(options)).await {
            Ok(n) => n,
            Err(e) if errors::is_not_found(&e) => return Ok(false),
            Err(e) => return Err(self.err(e, Ctx::Other)),
        };
        let subnets: Vec<String> = found
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.subnet)
            .collect();
        if subnets.iter().any(|s| s == &net.subnet) {
            Ok(true)
        } else {
            Err(RuntimeError::Refused(format!(
                "network {:?} exists with subnet {}, not {}",
                net.name,
                if subnets.is_empty() {
                    "(none)".to_string()
                } else {
                    subnets.join(", ")
                },
                net.subnet
            )))
        }
    }

    async fn pull_impl(&self, image: &str, auth: Option<&PullAuth>) -> RtResult<String> {
        let (from_image, tag) = spec::pull_reference(image);
        let options = CreateImageOptions {
            from_image: Some(from_image.clone()),
            tag: tag.clone(),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            step.map_err(|e| self.err(e, Ctx::Pull { image }))?;
        }
        let local = match tag {
            Some(tag) => format!("{from_image}:{tag}"),
            None => from_image,
        };
        self.image_id_of(&local)
            .await?
            .ok_or_else(|| RuntimeError::PullFailed {
                image: image.to_string(),
                message: "the pull finished but the image is not present".to_string(),
            })
    }

    async fn run_sandbox_impl(&self, spec: &SandboxSpec) -> RtResult<String> {
        self.ensure_pause_image().await?;
        let image = pause_image();
        let options = CreateContainerOptions {
            name: Some(spec::sandbox_name(&spec.owner)),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), spec::sandbox_body(spec, image))
            .await
            .map_err(|e| self.err(e, Ctx::Create { image }))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let err = errors::map_start(e, &created.id, &self.endpoint);
            // A sandbox that did not start holds nothing; leave no trace of it.
            let _ = self.remove_impl(&created.id).await;
            return Err(err);
        }
        if let Some(content) = spec::resolv_conf(spec) {
            self.write_resolv_conf(&created.id, &content).await;
        }
        self.enable_hairpin(&created.id).await;
        Ok(created.id)
    }

    /// Lets the pod reach itself through a Service (see [`hairpin`]); a failure is logged, the
    /// pod runs on.
    async fn enable_hairpin(&self, sandbox_id: &str) {
        let pid = match self.inspect_raw(sandbox_id).await {
            Ok(r) => r.state.and_then(|s| s.pid).unwrap_or(0),
            Err(e) => {
                tracing::warn!(sandbox = sandbox_id, error = %e, "cannot inspect the sandbox for hairpin mode");
                return;
            }
        };
        match hairpin::enable(pid) {
            Ok(port) => tracing::debug!(sandbox = sandbox_id, port, "hairpin mode on"),
            Err(e) => tracing::warn!(
                sandbox = sandbox_id,
                error = %e,
                "cannot turn hairpin mode on; the pod cannot reach itself through a Service"
            ),
        }
    }

    /// Rewrites the sandbox's resolv.conf in place (its containers bind-mount the same file).
    /// Possible only when the engine's files are on this host; otherwise the pod keeps the
    /// engine's embedded resolver, which still forwards to the pod's servers.
    async fn write_resolv_conf(&self, sandbox_id: &str, content: &str) {
        let path = match self.inspect_raw(sandbox_id).await {
            Ok(r) => r.resolv_conf_path.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(sandbox = sandbox_id, error = %e, "cannot find the sandbox's resolv.conf");
                return;
            }
        };
        // Written in place, not replaced: the mounts follow the inode.
        if let Err(e) = tokio::fs::write(&path, content).await {
            tracing::warn!(
                sandbox = sandbox_id,
                path,
                error = %e,
                "cannot rewrite the sandbox's resolv.conf; it keeps the engine's resolver"
            );
        }
    }

    async fn create_container_impl(
        &self,
        sandbox_id: &str,
        spec: &ContainerSpec,
    ) -> RtResult<String> {
        // The engine would accept joining a stopped sandbox and fail only at start.
        match self.inspect_raw(sandbox_id).await {
            Ok(s) if s.state.as_ref().and_then(|s| s.running) == Some(true) => {}
            Ok(_) | Err(RuntimeError::NotFound(_)) => {
                return Err(RuntimeError::Refused(format!(
                    "cannot join network of a non running container: {sandbox_id}"
                )));
            }
            Err(e) => return Err(e),
        }
        let options = CreateContainerOptions {
            name: Some(spec::container_name(&spec.owner, &spec.name, spec.attempt)),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), spec::container_body(sandbox_id, spec))
            .await
            .map_err(|e| self.err(e, Ctx::Create { image: &spec.image }))?;
        Ok(created.id)
    }

    /// Sends a signal; `Ok(false)` when the container is not running.
    async fn kill(&self, id: &str, signal: &str) -> RtResult<bool> {
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if errors::is_not_running(&e) => Ok(false),
            Err(e) => Err(self.err(e, Ctx::Container(id))),
        }
    }

    /// Returns once the container is not running (or gone).
    async fn wait_stopped(&self, id: &str) -> RtResult<()> {
        let options = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut wait = self.docker.wait_container(id, Some(options));
        match wait.next().await {
            None | Some(Ok(_)) => Ok(()),
            // bollard reports a non-zero exit code as an error: it did stop.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(e)) if errors::is_not_found(&e) => Ok(()),
            Some(Err(e)) => Err(self.err(e, Ctx::Container(id))),
        }
    }

    async fn stop_impl(&self, id: &str, grace: Duration) -> RtResult<()> {
        let deadline = self.clock.instant() + grace;
        if !self.kill(id, "SIGTERM").await? {
            return Ok(());
        }
        if let Ok(done) = tokio::time::timeout_at(deadline, self.wait_stopped(id)).await {
            return done;
        }
        if !self.kill(id, "SIGKILL").await? {
            return Ok(());
        }
        match tokio::time::timeout(KILL_WAIT, self.wait_stopped(id)).await {
            Ok(done) => done,
            Err(_) => Err(RuntimeError::Engine(format!(
                "container {id} still running {KILL_WAIT:?} after SIGKILL"
            ))),
        }
    }

    async fn remove_impl(&self, id: &str) -> RtResult<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if errors::is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 409 && message.contains("already in progress") => Ok(()),
            Err(e) => Err(self.err(e, Ctx::Container(id))),
        }
    }

    async fn list_impl(&self, node: &str) -> RtResult<Vec<ContainerInfo>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{}={node}", labels::NODE)],
            )])),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err(e, Ctx::Other))?;
        // The summary has no exit code, error or timestamps: inspect each.
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected: Vec<RtResult<ContainerInfo>> = futures::stream::iter(ids)
            .map(|id| async move { self.inspect_impl(&id).await })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(inspected.len());
        for i in inspected {
            match i {
                Ok(info) => out.push(info),
                // Removed between the listing and the inspection.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn inspect_impl(&self, id: &str) -> RtResult<ContainerInfo> {
        Ok(spec::info_from_inspect(self.inspect_raw(id).await?))
    }

    async fn logs_impl(&self, id: &str, opts: &LogOptions) -> RtResult<LogStream> {
        // The log request itself only fails once streamed; find a missing container now.
        self.inspect_raw(id).await?;
        let filter = io::FrameFilter {
            since: opts.since,
            strip_timestamps: opts.since.is_some() && !opts.timestamps,
        };
        let options = LogsOptions {
            follow: opts.follow,
            stdout: true,
            stderr: true,
            // Whole seconds, rounded down; the filter drops the rest.
            since: opts
                .since
                .map(|t| i32::try_from(t.as_second()).unwrap_or(i32::MAX))
                .unwrap_or(0),
            until: 0,
            timestamps: filter.engine_timestamps(opts.timestamps),
            tail: opts
                .tail
                .map(|n| n.to_string())
                .unwrap_or_else(|| "all".to_string()),
        };
        let endpoint = self.endpoint.clone();
        let owned_id = id.to_string();
        let stream = self
            .docker
            .logs(id, Some(options))
            .map_err(move |e| errors::map(e, Ctx::Container(&owned_id), &endpoint))
            .try_filter_map(move |frame| async move { Ok(filter.apply(io::frame_bytes(frame))) });
        Ok(Box::pin(stream))
    }

    async fn stats_impl(&self, id: &str) -> RtResult<Stats> {
        // A stopped container's stats are zeros, not an error: say so as the fake does.
        let info = self.inspect_impl(id).await?;
        if info.state != State::Running {
            return Err(RuntimeError::Refused(format!(
                "Container {id} is not running"
            )));
        }
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let s = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| RuntimeError::Engine(format!("no stats for container {id}")))?
            .map_err(|e| self.err(e, Ctx::Container(id)))?;
        let cpu_usage_ns = s
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let memory = s.memory_stats.unwrap_or_default();
        let detail = memory.stats.unwrap_or_default();
        // cgroup v1 has both (total_ is hierarchical, what kubelet uses); v2 has inactive_file.
        let inactive = detail
            .get("total_inactive_file")
            .or_else(|| detail.get("inactive_file"))
            .copied()
            .unwrap_or(0);
        Ok(Stats {
            cpu_usage_ns,
            memory_working_set_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
        })
    }
}

impl ContainerRuntime for DockerRuntime {
    fn ping(&self) -> RtFuture<'_, String> {
        Box::pin(async move {
            let v = self
                .docker
                .version()
                .await
                .map_err(|e| self.err(e, Ctx::Other))?;
            Ok(v.version.unwrap_or_default())
        })
    }

    fn ensure_network<'a>(&'a self, net: &'a NetworkSpec) -> RtFuture<'a, ()> {
        Box::pin(self.ensure_network_impl(net))
    }

    fn image_id<'a>(&'a self, image: &'a str) -> RtFuture<'a, Option<String>> {
        Box::pin(self.image_id_of(image))
    }

    fn pull<'a>(&'a self, image: &'a str, auth: Option<&'a PullAuth>) -> RtFuture<'a, String> {
        Box::pin(self.pull_impl(image, auth))
    }

    fn run_sandbox<'a>(&'a self, spec: &'a SandboxSpec) -> RtFuture<'a, String> {
        Box::pin(self.run_sandbox_impl(spec))
    }

    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        spec: &'a ContainerSpec,
    ) -> RtFuture<'a, String> {
        Box::pin(self.create_container_impl(sandbox_id, spec))
    }

    fn start_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()> {
        Box::pin(async move {
            self.docker
                .start_container(id, None)
                .await
                .map_err(|e| errors::map_start(e, id, &self.endpoint))
        })
    }

    fn stop_container<'a>(&'a self, id: &'a str, grace: Duration) -> RtFuture<'a, ()> {
        Box::pin(self.stop_impl(id, grace))
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()> {
        Box::pin(self.remove_impl(id))
    }

    fn list<'a>(&'a self, node: &'a str) -> RtFuture<'a, Vec<ContainerInfo>> {
        Box::pin(self.list_impl(node))
    }

    fn inspect<'a>(&'a self, id: &'a str) -> RtFuture<'a, ContainerInfo> {
        Box::pin(self.inspect_impl(id))
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        timeout: Duration,
    ) -> RtFuture<'a, ExecOutput> {
        Box::pin(self.exec_impl(id, cmd, timeout))
    }

    fn logs<'a>(&'a self, id: &'a str, opts: &'a LogOptions) -> RtFuture<'a, LogStream> {
        Box::pin(self.logs_impl(id, opts))
    }

    fn stats<'a>(&'a self, id: &'a str) -> RtFuture<'a, Stats> {
        Box::pin(self.stats_impl(id))
    }

    fn exec_start<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        tty: bool,
        stdin: bool,
    ) -> RtFuture<'a, ExecSession> {
        Box::pin(self.exec_start_impl(id, cmd, tty, stdin))
    }

    fn exec_resize<'a>(&'a self, exec_id: &'a str, width: u32, height: u32) -> RtFuture<'a, ()> {
        Box::pin(self.exec_resize_impl(exec_id, width, height))
    }

    fn exec_exit_code<'a>(&'a self, exec_id: &'a str) -> RtFuture<'a, Option<i64>> {
        Box::pin(self.exec_exit_code_impl(exec_id))
    }
}
