//! The per-pod worker: one task per pod uid, from the moment the pod is bound to this node until
//! its containers are gone and the deletion is confirmed.
//!
//! States, as the design names them: *pending* (admitted, sandbox and volumes being set up),
//! *initialising* (init containers in order; sidecars start and stay up), *running* (regular
//! containers started, restarted under the restart policy with back-off, probed), *terminating*
//! (deletion requested, or the pod vanished from the API), *done* (containers removed, deletion
//! confirmed with grace 0 and the pod's uid as precondition). Each pass is level-triggered: it
//! compares the desired pod with the runtime's containers and takes the next steps.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rudder_api::k8s_openapi::api::core::v1::{Container, Pod};
use rudder_client::cache::CachedObject;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::lifecycle::{self, Counts, InitProgress};
use super::probes::{Kind, Tracker, Verdict};
use super::status::Phase;
use super::{PodContext, images, spec, terminate};

mod probing;
mod report;
use crate::runtime::{ContainerInfo, Role, RuntimeError, State};
use crate::volumes::{PodVolumes, VolumeContext};

/// Upper bound between passes when nothing else wakes the worker.
const IDLE: Duration = Duration::from_secs(60);

/// What the agent hands a worker.
pub struct WorkerInput {
    pub uid: String,
    pub desired: watch::Receiver<Option<Arc<CachedObject>>>,
    /// Poked when the runtime shows a change in this pod's containers.
    pub wake: Arc<Notify>,
    /// Containers of this pod found in the runtime at start-up (adoption).
    pub adopted: Vec<ContainerInfo>,
    /// Set when the node refused the pod: (reason, message); the pod is failed at once.
    pub rejected: Option<(String, String)>,
}

#[derive(Debug, Default)]
struct Track {
    waiting: Option<(String, String)>,
    probes: Vec<Tracker>,
    probe_cid: String,
    /// When this agent saw the current instance exit (for back-off).
    exited_seen: Option<Instant>,
    /// Liveness or startup failure: the instance was killed by us.
    killed: bool,
}

pub struct PodWorker {
    ctx: Arc<PodContext>,
    uid: String,
    desired: watch::Receiver<Option<Arc<CachedObject>>>,
    wake: Arc<Notify>,
    seen: BTreeMap<String, ContainerInfo>,
    pod_ip: Option<Ipv4Addr>,
    tracks: HashMap<String, Track>,
    backoff: Backoff,
    pull_backoff: Backoff,
    /// The last pull failure per image, for the ImagePullBackOff message.
    pull_errors: HashMap<String, String>,
    start_time: Option<jiff::Timestamp>,
    rejected: Option<(String, String)>,
    /// Set once the pod reached Succeeded or Failed: it never runs again.
    terminal: Option<Phase>,
    volumes: Option<PodVolumes>,
    volumes_at: Option<Instant>,
    volume_error: Option<String>,
    sandbox_error: Option<String>,
    last_written: Option<Value>,
    last_pod: Option<Arc<CachedObject>>,
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

impl PodWorker {
    pub fn new(ctx: Arc<PodContext>, input: WorkerInput) -> Self {
        let pod_ip = input
            .adopted
            .iter()
            .find(|c| c.role == Role::Sandbox && c.state == State::Running)
            .and_then(|c| c.ip);
        if let Some(ip) = pod_ip {
            ctx.ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .claim(&input.uid, ip);
        }
        PodWorker {
            ctx,
            uid: input.uid,
            desired: input.desired,
            wake: input.wake,
            seen: input
                .adopted
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect(),
            pod_ip,
            tracks: HashMap::new(),
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            pull_errors: HashMap::new(),
            start_time: None,
            rejected: input.rejected,
            terminal: None,
            volumes: None,
            volumes_at: None,
            volume_error: None,
            sandbox_error: None,
            last_written: None,
            last_pod: None,
        }
    }

    /// Runs until the pod is gone from the node.
    pub async fn run(mut self) {
        loop {
            let obj = self.desired.borrow_and_update().clone();
            let Some(obj) = obj else {
                // Gone from the API (deleted with grace 0, or no longer bound here): stop
                // what runs, with the grace period the pod had.
                let pod = self.last_pod.as_ref().and_then(|o| o.typed::<Pod>().ok());
                self.shutdown(pod.as_deref()).await;
                return;
            };
            let pod = match obj.typed::<Pod>() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(uid = %self.uid, error = %e, "undecodable pod");
                    return;
                }
            };
            self.last_pod = Some(Arc::clone(&obj));
            if pod.metadata.deletion_timestamp.is_some() {
                self.shutdown(Some(&pod)).await;
                if self.confirm_deletion(&obj).await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let next = self.sync(&obj, &pod).await;
            let now = self.ctx.clock.instant();
            let until = next.unwrap_or(now + IDLE).min(now + IDLE);
            tokio::select! {
                r = self.desired.changed() => {
                    if r.is_err() {
                        // The agent dropped the sender: it is shutting down; containers stay.
                        return;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Refreshes what the runtime shows for this pod's containers.
    async fn observe(&mut self) {
        let ids: Vec<String> = self.seen.keys().cloned().collect();
        for id in ids {
            match self.ctx.runtime.inspect(&id).await {
                Ok(info) => {
                    self.seen.insert(id, info);
                }
                Err(RuntimeError::NotFound(_)) => {
                    self.seen.remove(&id);
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "inspect failed"),
            }
        }
    }

    fn sandbox(&self) -> Option<&ContainerInfo> {
        self.seen
            .values()
            .filter(|c| c.role == Role::Sandbox && c.state == State::Running)
            .max_by_key(|c| c.created_at)
    }

    /// The newest instance of container `name`, and the one before it.
    fn instances(&self, name: &str) -> (Option<&ContainerInfo>, Option<&ContainerInfo>) {
        let mut all: Vec<&ContainerInfo> = self
            .seen
            .values()
            .filter(|c| c.role == Role::Container && c.name == name)
            .collect();
        all.sort_by_key(|c| (c.attempt, c.created_at));
        let cur = all.pop();
        (cur, all.pop())
    }

    /// One level-triggered pass; returns when the next timer is due.
    async fn sync(&mut self, obj: &Arc<CachedObject>, pod: &Pod) -> Option<Instant> {
        let now = self.ctx.clock.instant();
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
                .or_else(|| Some(self.ctx.clock.now()));
        }
        if let Some(r) = self.rejected.clone() {
            self.terminal = Some(Phase::Failed);
            self.write_status(obj, pod, Phase::Failed, Some(r), InitProgress::Pending)
                .await;
            return None;
        }
        self.observe().await;
        if let Some(phase) = self.terminal {
            // Finished pods keep their containers (for logs) but nothing runs.
            self.stop_running(pod).await;
            self.write_status(obj, pod, phase, None, InitProgress::Done)
                .await;
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut due = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));

        if !self.ensure_sandbox(obj, pod).await {
            due(now + Duration::from_secs(5));
            self.write_status(obj, pod, Phase::Pending, None, InitProgress::Pending)
                .await;
            return next;
        }
        if !self.ensure_volumes(obj, pod, now).await {
            due(now + Duration::from_secs(5));
            self.write_status(obj, pod, Phase::Pending, None, InitProgress::Pending)
                .await;
            return next;
        }
        if let Some(at) = self.volumes_at {
            due(at + self.ctx.volume_refresh);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());

        // Init containers, in order.
        let mut init = InitProgress::Done;
        for c in spec.init_containers.iter().flatten() {
            let (cur, _) = self.instances(&c.name);
            let cur = cur.cloned();
            if is_sidecar(c) {
                if let Some(t) = self.keep_running(obj, pod, c, cur.as_ref(), "Always").await {
                    due(t);
                }
                let started = self.started(c, self.instances(&c.name).0);
                if !started {
                    init = InitProgress::Pending;
                    break;
                }
                continue;
            }
            match cur.as_ref().map(|i| (i.state, i.exit_code.unwrap_or(0))) {
                Some((State::Exited, 0)) => continue,
                Some((State::Exited, _)) if !lifecycle::should_restart(&policy, 1) => {
                    init = InitProgress::Failed;
                    break;
                }
                Some((State::Running | State::Created, _)) => {
                    init = InitProgress::Pending;
                    break;
                }
                _ => {
                    if let Some(t) = self
                        .keep_running(obj, pod, c, cur.as_ref(), "OnFailure")
                        .await
                    {
                        due(t);
                    }
                    init = InitProgress::Pending;
                    break;
                }
            }
        }
        if init == InitProgress::Done {
            for c in &spec.containers {
                let (cur, _) = self.instances(&c.name);
                let cur = cur.cloned();
                if let Some(t) = self.keep_running(obj, pod, c, cur.as_ref(), &policy).await {
                    due(t);
                }
            }
        }
        if let Some(t) = self.run_probes(obj, pod).await {
            due(t);
        }
        let counts = self.counts(&spec.containers);
        let phase = lifecycle::phase(&policy, init, counts);
        if phase.is_terminal() {
            self.terminal = Some(phase);
            self.stop_running(pod).await;
            self.observe().await;
        }
        self.write_status(obj, pod, phase, None, init).await;
        next
    }

    fn counts(&self, containers: &[Container]) -> Counts {
        let mut n = Counts::default();
        for c in containers {
            match self.instances(&c.name).0 {
                Some(i) if i.state == State::Running => n.running += 1,
                Some(i) if i.state == State::Exited => {
                    n.stopped += 1;
                    if i.exit_code == Some(0) {
                        n.succeeded += 1;
                    }
                }
                _ => n.waiting += 1,
            }
        }
        n
    }

    fn started(&self, c: &Container, cur: Option<&ContainerInfo>) -> bool {
        let Some(cur) = cur.filter(|i| i.state == State::Running) else {
            return false;
        };
        match self.tracks.get(&c.name) {
            Some(t) if t.probe_cid == cur.id => t
                .probes
                .iter()
                .filter(|p| p.kind == Kind::Startup)
                .all(|p| p.verdict == Verdict::Pass),
            _ => c.startup_probe.is_none(),
        }
    }

    /// Makes sure the sandbox runs; recreates it (and so every container) when it died.
    async fn ensure_sandbox(&mut self, obj: &Arc<CachedObject>, pod: &Pod) -> bool {
        if let Some(sb) = self.sandbox() {
            self.pod_ip = sb.ip.or(self.pod_ip);
            return true;
        }
        // A sandbox that stopped takes the containers' network with it: start over.
        let dead: Vec<String> = self.seen.keys().cloned().collect();
        if !dead.is_empty() {
            self.ctx.events.normal(
                &obj.value,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            );
            for id in dead {
                let _ = self.ctx.runtime.remove_container(&id).await;
                self.seen.remove(&id);
            }
        }
        let ip = {
            let mut ipam = self.ctx.ipam.lock().unwrap_or_else(|e| e.into_inner());
            ipam.allocate(&self.uid)
        };
        let ip = match ip {
            Ok(ip) => ip,
            Err(e) => {
                self.sandbox_failed(obj, e.to_string());
                return false;
            }
        };
        let sb = spec::sandbox_spec(&self.ctx, pod, &self.uid, ip);
        match self.ctx.runtime.run_sandbox(&sb).await {
            Ok(id) => {
                self.sandbox_error = None;
                self.pod_ip = Some(ip);
                match self.ctx.runtime.inspect(&id).await {
                    Ok(info) => {
                        self.seen.insert(id, info);
                    }
                    Err(e) => tracing::warn!(error = %e, "inspecting a new sandbox failed"),
                }
                true
            }
            Err(e) => {
                self.sandbox_failed(obj, e.to_string());
                false
            }
        }
    }

    fn sandbox_failed(&mut self, obj: &Arc<CachedObject>, msg: String) {
        if self.sandbox_error.as_deref() != Some(msg.as_str()) {
            self.ctx.events.warning(
                &obj.value,
                "FailedCreatePodSandBox",
                &format!("Failed to create pod sandbox: {msg}"),
            );
        }
        self.sandbox_error = Some(msg);
    }

    async fn ensure_volumes(&mut self, obj: &Arc<CachedObject>, pod: &Pod, now: Instant) -> bool {
        let fresh = self.volumes.is_some()
            && self
                .volumes_at
                .is_some_and(|at| now < at + self.ctx.volume_refresh);
        if fresh {
            return true;
        }
        let ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        let vctx = VolumeContext {
            node_name: &self.ctx.node_name,
            pod_ip: &ip,
            host_ip: &self.ctx.host_ip,
        };
        match self.ctx.volumes.setup(pod, &vctx, &*self.ctx.objects).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.volumes_at = Some(now);
                self.volume_error = None;
                true
            }
            Err(e) => {
                let msg = e.to_string();
                if self.volume_error.as_deref() != Some(msg.as_str()) {
                    self.ctx.events.warning(&obj.value, "FailedMount", &msg);
                }
                self.volume_error = Some(msg);
                // A running pod keeps its last good volumes.
                self.volumes.is_some()
            }
        }
    }

    /// Keeps container `c` running under `policy`: starts it when it never ran, restarts it
    /// (after the back-off) when it stopped and the policy says so. Returns when to look again.
    async fn keep_running(
        &mut self,
        obj: &Arc<CachedObject>,
        pod: &Pod,
        c: &Container,
        cur: Option<&ContainerInfo>,
        policy: &str,
    ) -> Option<Instant> {
        let now = self.ctx.clock.instant();
        let attempt = match cur {
            None => 0,
            Some(i) if i.state == State::Running => {
                self.tracks.entry(c.name.clone()).or_default().waiting = None;
                return None;
            }
            Some(i) if i.state == State::Created => {
                // Created but never started (the agent stopped in between): start it.
                let id = i.id.clone();
                return self.start(obj, c, &id).await;
            }
            Some(i) => {
                let code = i.exit_code.unwrap_or(0);
                let killed = self.tracks.get(&c.name).is_some_and(|t| t.killed);
                // A container killed by its liveness probe restarts unless the policy is Never.
                if !(lifecycle::should_restart(policy, code) || killed && policy != "Never") {
                    return None;
                }
                let track = self.tracks.entry(c.name.clone()).or_default();
                let failed_at = *track.exited_seen.get_or_insert(now);
                if let Some(until) = self.backoff.blocked(&c.name, failed_at, now) {
                    let delay = self.backoff.current(&c.name).unwrap_or(backoff::INITIAL);
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    let msg = format!(
                        "back-off {} restarting failed container={} pod={pod_name}_{}({})",
                        backoff::human(delay),
                        c.name,
                        pod.metadata.namespace.clone().unwrap_or_default(),
                        self.uid
                    );
                    if track.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        self.ctx.events.warning(
                            &obj.value,
                            "BackOff",
                            &format!(
                                "Back-off restarting failed container {} in pod {pod_name}",
                                c.name
                            ),
                        );
                    }
                    track.waiting = Some(("CrashLoopBackOff".into(), msg));
                    return Some(until);
                }
                let ran = match (i.started_at, i.finished_at) {
                    (Some(s), Some(f)) => f.duration_since(s).unsigned_abs(),
                    _ => Duration::ZERO,
                };
                self.backoff.record(&c.name, failed_at, ran);
                i.attempt + 1
            }
        };
        self.create_and_start(obj, pod, c, attempt).await
    }

    async fn create_and_start(
        &mut self,
        obj: &Arc<CachedObject>,
        pod: &Pod,
        c: &Container,
        attempt: u32,
    ) -> Option<Instant> {
        let now = self.ctx.clock.instant();
        let image = c.image.clone().unwrap_or_default();
        let pull_key = format!("image:{image}");
        if let Some(until) = self.pull_backoff.blocked_after_last(&pull_key, now) {
            let last = self.pull_errors.get(&pull_key).cloned().unwrap_or_default();
            if self.waiting_reason(&c.name) != Some("ImagePullBackOff") {
                self.ctx.events.normal(
                    &obj.value,
                    "BackOff",
                    &format!("Back-off pulling image \"{image}\""),
                );
            }
            self.set_waiting(
                &c.name,
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\": ErrImagePull: {last}"),
            );
            return Some(until);
        }
        let note = |reason: &str, msg: String| self.ctx.events.normal(&obj.value, reason, &msg);
        let ensured = images::ensure(
            &*self.ctx.runtime,
            &*self.ctx.objects,
            pod,
            c,
            &*self.ctx.clock,
            &note,
        )
        .await;
        if let Err(e) = ensured {
            self.ctx.events.warning(&obj.value, "Failed", &e.message);
            self.set_waiting(&c.name, e.reason, e.message.clone());
            if e.pull_failed {
                self.pull_backoff.record(&pull_key, now, Duration::ZERO);
                self.pull_errors.insert(pull_key.clone(), e.message.clone());
                return self.pull_backoff.blocked_after_last(&pull_key, now);
            }
            return Some(now + Duration::from_secs(10));
        }
        self.pull_backoff.forget(&pull_key);
        self.pull_errors.remove(&pull_key);
        let Some(sandbox_id) = self.sandbox().map(|s| s.id.clone()) else {
            return Some(now + Duration::from_secs(1));
        };
        let cspec = match spec::container_spec(
            &self.ctx,
            pod,
            c,
            &self.uid,
            attempt,
            self.pod_ip,
            self.volumes.as_ref(),
        )
        .await
        {
            Ok(s) => s,
            Err(msg) => {
                if self.waiting_reason(&c.name) != Some("CreateContainerConfigError") {
                    self.ctx
                        .events
                        .warning(&obj.value, "Failed", &format!("Error: {msg}"));
                }
                self.set_waiting(&c.name, "CreateContainerConfigError", msg);
                return Some(now + Duration::from_secs(10));
            }
        };
        let id = match self.ctx.runtime.create_container(&sandbox_id, &cspec).await {
            Ok(id) => id,
            Err(e) => {
                self.ctx
                    .events
                    .warning(&obj.value, "Failed", &format!("Error: {e}"));
                self.set_waiting(&c.name, "CreateContainerError", e.to_string());
                return Some(now + Duration::from_secs(10));
            }
        };
        self.ctx.events.normal(
            &obj.value,
            "Created",
            &format!("Created container {}", c.name),
        );
        self.remove_old_instances(&c.name).await;
        if let Ok(info) = self.ctx.runtime.inspect(&id).await {
            self.seen.insert(id.clone(), info);
        }
        self.start(obj, c, &id).await
    }

    async fn start(&mut self, obj: &Arc<CachedObject>, c: &Container, id: &str) -> Option<Instant> {
        let now = self.ctx.clock.instant();
        let result = self.ctx.runtime.start_container(id).await;
        if let Ok(info) = self.ctx.runtime.inspect(id).await {
            self.seen.insert(id.to_string(), info);
        }
        let track = self.tracks.entry(c.name.clone()).or_default();
        track.exited_seen = None;
        track.killed = false;
        track.waiting = None;
        match result {
            Ok(()) => {
                self.ctx.events.normal(
                    &obj.value,
                    "Started",
                    &format!("Started container {}", c.name),
                );
                if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                    let ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
                    let grace = terminate::grace_of(None);
                    if let Err(m) = terminate::run_hook(&self.ctx, h, c, id, &ip, grace).await {
                        self.ctx.events.warning(
                            &obj.value,
                            "FailedPostStartHook",
                            &format!("PostStartHook failed for container {}: {m}", c.name),
                        );
                        let _ = self
                            .ctx
                            .runtime
                            .stop_container(id, Duration::from_secs(2))
                            .await;
                        if let Some(t) = self.tracks.get_mut(&c.name) {
                            t.killed = true;
                        }
                    }
                }
                Some(now)
            }
            Err(e) => {
                self.ctx
                    .events
                    .warning(&obj.value, "Failed", &format!("Error: {e}"));
                Some(now)
            }
        }
    }

    fn waiting_reason(&self, name: &str) -> Option<&str> {
        self.tracks
            .get(name)?
            .waiting
            .as_ref()
            .map(|w| w.0.as_str())
    }

    fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        self.tracks.entry(name.to_string()).or_default().waiting =
            Some((reason.to_string(), message));
    }

    /// Keeps the newest dead instance of a container (for `lastState` and `logs --previous`)
    /// and removes older ones.
    async fn remove_old_instances(&mut self, name: &str) {
        let mut dead: Vec<ContainerInfo> = self
            .seen
            .values()
            .filter(|c| c.role == Role::Container && c.name == name && c.state == State::Exited)
            .cloned()
            .collect();
        dead.sort_by_key(|c| c.attempt);
        dead.pop();
        for c in dead {
            if self.ctx.runtime.remove_container(&c.id).await.is_ok() {
                self.seen.remove(&c.id);
            }
        }
    }

    /// Stops whatever still runs in a finished pod (sidecars, mostly), keeping the sandbox's
    /// record for the status.
    async fn stop_running(&mut self, pod: &Pod) {
        let running: Vec<ContainerInfo> = self
            .seen
            .values()
            .filter(|c| c.role == Role::Container && c.state == State::Running)
            .cloned()
            .collect();
        if running.is_empty() {
            return;
        }
        let ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        terminate::stop_pod(
            &self.ctx,
            Some(pod),
            &running,
            &ip,
            terminate::grace_of(Some(pod)),
        )
        .await;
        self.observe().await;
    }

    /// Stops and removes everything of the pod, and its volumes.
    async fn shutdown(&mut self, pod: Option<&Pod>) {
        self.observe().await;
        let seen: Vec<ContainerInfo> = self.seen.values().cloned().collect();
        let ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        terminate::stop_pod(&self.ctx, pod, &seen, &ip, terminate::grace_of(pod)).await;
        if let (Some(obj), Some(pod)) = (self.last_pod.clone(), pod) {
            // The final status shows every container terminated.
            self.observe().await;
            // As kubelet since 1.27: a deleted pod ends in a terminal phase.
            let all_ok = self
                .seen
                .values()
                .filter(|c| c.role == Role::Container)
                .all(|c| c.exit_code == Some(0));
            let phase = self.terminal.unwrap_or(if all_ok {
                Phase::Succeeded
            } else {
                Phase::Failed
            });
            self.write_status(&obj, pod, phase, None, InitProgress::Done)
                .await;
        }
        for id in seen.iter().map(|c| c.id.clone()) {
            if let Err(e) = self.ctx.runtime.remove_container(&id).await {
                tracing::warn!(container = %id, error = %e, "removing a container failed");
            }
            self.seen.remove(&id);
        }
        if let Err(e) = self.ctx.volumes.teardown(&self.uid).await {
            tracing::warn!(uid = %self.uid, error = %e, "removing the pod's volumes failed");
        }
        let _ = std::fs::remove_dir_all(self.ctx.pods_dir.join(&self.uid).join("containers"));
        self.ctx
            .ipam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(&self.uid);
    }

    /// Deletes the pod object now that nothing of it runs (grace 0, this uid only).
    async fn confirm_deletion(&self, obj: &Arc<CachedObject>) -> bool {
        let req = rudder_proto::DeleteRequest {
            kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
            namespace: obj.namespace.clone(),
            name: obj.name.clone(),
            grace_period_seconds: Some(0),
            precondition_uid: self.uid.clone(),
            ..Default::default()
        };
        match self.ctx.api.delete(req).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() || e.is_conflict() => true,
            Err(e) => {
                tracing::warn!(pod = %obj.key(), error = %e, "confirming the deletion failed");
                false
            }
        }
    }
}
