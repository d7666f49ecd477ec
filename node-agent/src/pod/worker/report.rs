//! The worker's status report: what each container shows, and the status written when it
//! changed.

use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::Pod;
use rudder_client::cache::CachedObject;
use serde_json::Value;

use super::PodWorker;
use crate::pod::lifecycle::InitProgress;
use crate::pod::probes::{Kind, Verdict};
use crate::pod::spec;
use crate::pod::status::{self, ContainerView, Phase, PodView};
use crate::runtime::{ContainerInfo, State};

impl PodWorker {
    pub(super) fn view(&self, name: &str, image: &str) -> ContainerView {
        let (cur, prev) = self.instances(name);
        let track = self.tracks.get(name);
        let running = cur.filter(|c| c.state == State::Running);
        let probes_ok = |kind: Kind| {
            track.is_none_or(|t| {
                running.is_some_and(|r| r.id == t.probe_cid || t.probes.is_empty())
                    && t.probes
                        .iter()
                        .filter(|p| p.kind == kind)
                        .all(|p| p.verdict == Verdict::Pass)
            })
        };
        let started = running.is_some() && probes_ok(Kind::Startup);
        let ready = started && probes_ok(Kind::Readiness);
        let read_msg = |c: Option<&ContainerInfo>| {
            c.filter(|c| c.state == State::Exited).and_then(|c| {
                let p = spec::termination_log(&self.ctx, &self.uid, name, c.attempt);
                std::fs::read(p)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
            })
        };
        ContainerView {
            name: name.to_string(),
            image: image.to_string(),
            current: cur.cloned(),
            previous: prev.cloned(),
            restart_count: cur.map(|c| c.attempt).unwrap_or(0),
            waiting: if running.is_some() {
                None
            } else {
                track.and_then(|t| t.waiting.clone())
            },
            ready,
            started,
            message: read_msg(cur),
            previous_message: read_msg(prev),
        }
    }

    pub(super) async fn write_status(
        &mut self,
        obj: &Arc<CachedObject>,
        pod: &Pod,
        phase: Phase,
        reason: Option<(String, String)>,
        init: InitProgress,
    ) {
        let spec = pod.spec.clone().unwrap_or_default();
        let pending_init = init != InitProgress::Done;
        let init_views: Vec<ContainerView> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.view(&c.name, c.image.as_deref().unwrap_or("")))
            .collect();
        let mut containers: Vec<ContainerView> = spec
            .containers
            .iter()
            .map(|c| self.view(&c.name, c.image.as_deref().unwrap_or("")))
            .collect();
        if pending_init {
            for v in containers
                .iter_mut()
                .filter(|v| v.current.is_none() && v.waiting.is_none())
            {
                v.waiting = Some(("PodInitializing".into(), String::new()));
            }
        }
        let view = PodView {
            pod,
            phase,
            reason,
            sandbox_ready: self.sandbox().is_some(),
            pod_ip: self.pod_ip,
            host_ip: &self.ctx.host_ip,
            start_time: self.start_time,
            initialized: init == InitProgress::Done,
            init: init_views,
            containers,
            now: self.ctx.clock.now(),
        };
        let stored = obj.value.get("status").cloned().unwrap_or(Value::Null);
        let new = status::compute(&view, &stored);
        if self.last_written.as_ref() == Some(&new) {
            return;
        }
        let Some(patch) = status::merge_diff(&stored, &new) else {
            self.last_written = Some(new);
            return;
        };
        match rudder_client::write::patch_status(&*self.ctx.api, obj, patch).await {
            Ok(_) => self.last_written = Some(new),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pod = %obj.key(), error = %e, "writing pod status failed"),
        }
    }
}
