//! The worker's probe pass: runs the probes that are due, kills a container whose liveness or
//! startup probe failed.

use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::{Container, Pod};
use rudder_client::cache::CachedObject;
use tokio::time::Instant;

use super::{PodWorker, is_sidecar};
use crate::pod::probes::{self, Kind, Outcome, Tracker, Verdict};
use crate::pod::terminate;
use crate::runtime::State;

impl PodWorker {
    /// Runs the probes that are due; kills containers whose liveness or startup probe failed.
    pub(super) async fn run_probes(
        &mut self,
        obj: &Arc<CachedObject>,
        pod: &Pod,
    ) -> Option<Instant> {
        let spec = pod.spec.clone().unwrap_or_default();
        let ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        let mut next: Option<Instant> = None;
        let all: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
            .chain(spec.containers.iter())
            .cloned()
            .collect();
        for c in all {
            let Some(cur) = self
                .instances(&c.name)
                .0
                .filter(|i| i.state == State::Running)
                .cloned()
            else {
                continue;
            };
            let started_at = self.ctx.clock.instant();
            let track = self.tracks.entry(c.name.clone()).or_default();
            if track.probe_cid != cur.id {
                track.probe_cid = cur.id.clone();
                track.probes = [
                    (Kind::Startup, &c.startup_probe),
                    (Kind::Liveness, &c.liveness_probe),
                    (Kind::Readiness, &c.readiness_probe),
                ]
                .into_iter()
                .filter_map(|(k, p)| p.as_ref().map(|p| Tracker::new(k, p, started_at)))
                .collect();
            }
            let startup_pending = track
                .probes
                .iter()
                .any(|p| p.kind == Kind::Startup && p.verdict != Verdict::Pass);
            let mut kill: Option<String> = None;
            let n = track.probes.len();
            for i in 0..n {
                let now = self.ctx.clock.instant();
                let (kind, due_at, timeout) = {
                    let t = &self.tracks[&c.name].probes[i];
                    (t.kind, t.next, t.timeout)
                };
                if startup_pending && kind != Kind::Startup {
                    continue;
                }
                if due_at > now {
                    next = Some(next.map_or(due_at, |x: Instant| x.min(due_at)));
                    continue;
                }
                let p = match kind {
                    Kind::Startup => c.startup_probe.as_ref(),
                    Kind::Liveness => c.liveness_probe.as_ref(),
                    Kind::Readiness => c.readiness_probe.as_ref(),
                };
                let Some(p) = p else { continue };
                let outcome = match probes::action(p, &c, &ip) {
                    Err(m) => Outcome::Failure(m),
                    Ok(probes::Action::Exec(cmd)) => {
                        match self.ctx.runtime.exec(&cur.id, &cmd, timeout).await {
                            Ok(o) if o.exit_code == 0 => Outcome::Success,
                            Ok(o) => Outcome::Failure(
                                String::from_utf8_lossy(&o.output).trim().to_string(),
                            ),
                            Err(e) => Outcome::Failure(e.to_string()),
                        }
                    }
                    Ok(probes::Action::Http(t)) => self.ctx.prober.http_get(&t, timeout).await,
                    Ok(probes::Action::Tcp { host, port }) => {
                        self.ctx.prober.tcp(&host, port, timeout).await
                    }
                    Ok(probes::Action::Grpc {
                        host,
                        port,
                        service,
                    }) => self.ctx.prober.grpc(&host, port, &service, timeout).await,
                };
                let now = self.ctx.clock.instant();
                let t = &mut self.tracks.get_mut(&c.name).expect("track exists").probes[i];
                if let Outcome::Failure(m) = &outcome {
                    self.ctx.events.warning(
                        &obj.value,
                        "Unhealthy",
                        &format!("{} probe failed: {m}", kind.as_str()),
                    );
                }
                t.observe(&outcome, now);
                next = Some(next.map_or(t.next, |x: Instant| x.min(t.next)));
                if t.verdict == Verdict::Fail && matches!(kind, Kind::Liveness | Kind::Startup) {
                    kill = Some(format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        kind.as_str().to_lowercase()
                    ));
                    break;
                }
            }
            if let Some(msg) = kill {
                self.ctx.events.normal(&obj.value, "Killing", &msg);
                let grace = terminate::grace_of(Some(pod));
                let _ = self.ctx.runtime.stop_container(&cur.id, grace).await;
                let track = self.tracks.get_mut(&c.name).expect("track exists");
                track.killed = true;
                track.probe_cid.clear();
                if let Ok(info) = self.ctx.runtime.inspect(&cur.id).await {
                    self.seen.insert(cur.id.clone(), info);
                }
                next = Some(self.ctx.clock.instant());
            }
        }
        next
    }
}
