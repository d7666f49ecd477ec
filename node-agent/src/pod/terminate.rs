//! Stopping a pod, in kubelet's order: every regular container at once (its preStop hook, then
//! SIGTERM, then SIGKILL when the grace period is over), then the sidecars in reverse order
//! with what is left of the grace period, then the sandbox. Lifecycle hooks (postStart too) run
//! here.

use std::time::Duration;

use futures::future::join_all;
use rudder_api::k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::PodContext;
use super::probes::Outcome;
use crate::runtime::{ContainerInfo, Role, State};

/// Runs a lifecycle hook against a running container, bounded by `limit`. `Err` carries the
/// message for the FailedPreStopHook / FailedPostStartHook event.
pub async fn run_hook(
    ctx: &PodContext,
    h: &LifecycleHandler,
    c: &Container,
    id: &str,
    pod_ip: &str,
    limit: Duration,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match ctx.runtime.exec(id, &cmd, limit).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(format!(
                "command {:?} exited with {}: {}",
                cmd.join(" "),
                out.exit_code,
                String::from_utf8_lossy(&out.output).trim()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(g) = &h.http_get {
        let t = super::probes::http_target(g, c, pod_ip)?;
        return match ctx.prober.http_get(&t, limit).await {
            Outcome::Success => Ok(()),
            Outcome::Failure(m) => Err(m),
        };
    }
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0));
        tokio::time::sleep(d.min(limit)).await;
        return Ok(());
    }
    Err("lifecycle hook has no handler".into())
}

/// The grace period a pod's containers get: `metadata.deletionGracePeriodSeconds` when the pod
/// is being deleted, else `spec.terminationGracePeriodSeconds` (30 s by default).
pub fn grace_of(pod: Option<&Pod>) -> Duration {
    let secs = pod
        .and_then(|p| {
            p.metadata
                .deletion_grace_period_seconds
                .or_else(|| p.spec.as_ref()?.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(30))
}

/// Stops every container of the pod and its sandbox, within `grace`; does not remove them.
/// `spec` is the pod as last known (for hooks and sidecar order); without it everything is
/// stopped at once.
pub async fn stop_pod(
    ctx: &PodContext,
    pod: Option<&Pod>,
    seen: &[ContainerInfo],
    pod_ip: &str,
    grace: Duration,
) {
    let started = ctx.clock.instant();
    let spec = pod.and_then(|p| p.spec.as_ref());
    let sidecars: Vec<&Container> = spec
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .collect()
        })
        .unwrap_or_default();
    let is_sidecar = |name: &str| sidecars.iter().any(|c| c.name == name);
    let running = |c: &&ContainerInfo| c.role == Role::Container && c.state == State::Running;
    let regular: Vec<&ContainerInfo> = seen
        .iter()
        .filter(running)
        .filter(|c| !is_sidecar(&c.name))
        .collect();
    join_all(regular.iter().map(|c| stop_one(ctx, pod, c, pod_ip, grace))).await;
    // Sidecars stop last, the latest started first.
    for sc in sidecars.iter().rev() {
        for info in seen.iter().filter(running).filter(|c| c.name == sc.name) {
            let left = grace.saturating_sub(ctx.clock.instant() - started);
            stop_one(ctx, pod, info, pod_ip, left.max(Duration::from_secs(2))).await;
        }
    }
    for sb in seen.iter().filter(|c| c.role == Role::Sandbox) {
        let _ = ctx.runtime.stop_container(&sb.id, Duration::ZERO).await;
    }
}

/// One container: its preStop hook, then SIGTERM, SIGKILL at the end of `budget`.
async fn stop_one(
    ctx: &PodContext,
    pod: Option<&Pod>,
    info: &ContainerInfo,
    pod_ip: &str,
    budget: Duration,
) {
    let spec_c = pod.and_then(|p| p.spec.as_ref()).and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == info.name)
    });
    let pod_json = pod.and_then(|p| rudder_api::typed::Object::to_json(p).ok());
    let t0 = ctx.clock.instant();
    if let Some(c) = spec_c
        && let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        && let Err(m) = run_hook(ctx, h, c, &info.id, pod_ip, budget).await
        && let Some(p) = &pod_json
    {
        ctx.events.warning(
            p,
            "FailedPreStopHook",
            &format!("PreStopHook failed for container {}: {m}", c.name),
        );
    }
    let left = budget.saturating_sub(ctx.clock.instant() - t0);
    if let Some(p) = &pod_json {
        ctx.events
            .normal(p, "Killing", &format!("Stopping container {}", info.name));
    }
    if let Err(e) = ctx.runtime.stop_container(&info.id, left).await {
        tracing::warn!(container = %info.id, error = %e, "stopping a container failed");
    }
}
