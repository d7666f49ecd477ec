//! The TTL-after-finished controller, as Kubernetes' `ttlafterfinished`: deletes a finished Job
//! (condition Complete or Failed) `spec.ttlSecondsAfterFinished` seconds after it finished (the
//! condition's lastTransitionTime), on the injected clock. The Job is read afresh from the
//! server before deleting, and the delete is guarded by that version, so a Job whose TTL was
//! just raised, or that was replaced, stays. Its pods go with it (see
//! [`super::job::delete_with_pods`]).

use std::sync::Arc;
use std::time::Duration;

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, self_mapper};
use rudder_client::proto as pb;
use rudder_client::workqueue::Key;
use tokio_util::sync::CancellationToken;

use super::job::spec::ttl_seconds;
use super::job::status::finish_time;
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "ttl-after-finished",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    jobs: Reader,
    pods: Reader,
}

async fn run(env: Env, cancel: CancellationToken) {
    let jobs = env.informers.for_kind("batch/v1", "Job");
    let pods = env.informers.for_kind("v1", "Pod");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        jobs: jobs.reader(),
        pods: pods.reader(),
    });
    Controller::new(ctx)
        .named("ttl-after-finished")
        .workers(env.workers)
        .watches(jobs.subscribe(), self_mapper())
        .reads(pods.reader())
        .run(reconcile, policy, cancel)
        .await;
}

/// How long until `job` expires at `now` (zero: expired); `None` if it never does.
pub fn time_left(job: &serde_json::Value, now: jiff::Timestamp) -> Option<Duration> {
    let ttl = ttl_seconds(job)?;
    if rudder_api::meta::is_deleting(job) {
        return None;
    }
    let finished = finish_time(job)?;
    let left = finished.as_second() + ttl - now.as_second();
    Some(Duration::from_secs(left.max(0) as u64))
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(job) = ctx.jobs.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    let now = ctx.clock.now();
    match time_left(&job.value, now) {
        None => return Ok(Action::AwaitChange),
        Some(left) if !left.is_zero() => return Ok(Action::Requeue(left)),
        Some(_) => {}
    }
    // The cache may be behind: the TTL could have been changed since.
    let fresh = match ctx
        .api
        .get(pb::GetRequest {
            kind: Some(kind_ref("batch/v1", "Job")),
            namespace: job.namespace.clone(),
            name: job.name.clone(),
            allow_stale: false,
        })
        .await
    {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(Action::AwaitChange),
        Err(e) => return Err(e.into()),
    };
    let Some(fresh) = CachedObject::from_wire(&fresh) else {
        return Ok(Action::AwaitChange);
    };
    if fresh.uid() != job.uid() {
        return Ok(Action::AwaitChange);
    }
    match time_left(&fresh.value, now) {
        None => return Ok(Action::AwaitChange),
        Some(left) if !left.is_zero() => return Ok(Action::Requeue(left)),
        Some(_) => {}
    }
    tracing::info!(job = %key, "deleting a finished Job whose TTL expired");
    super::job::delete_with_pods(
        ctx.api.as_ref(),
        &ctx.pods,
        &fresh,
        Some(fresh.resource_version),
    )
    .await?;
    Ok(Action::AwaitChange)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expires_ttl_seconds_after_the_finished_condition() {
        let job = |ttl: Option<i64>, cond: &str| {
            json!({"spec": {"ttlSecondsAfterFinished": ttl}, "status": {"conditions": [
                {"type": cond, "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})
        };
        let at = |s: i64| jiff::Timestamp::from_second(1_735_689_600 + s).unwrap();
        assert_eq!(
            time_left(&job(Some(100), "Complete"), at(30)),
            Some(Duration::from_secs(70))
        );
        assert_eq!(
            time_left(&job(Some(100), "Failed"), at(130)),
            Some(Duration::ZERO)
        );
        assert_eq!(time_left(&job(None, "Complete"), at(130)), None);
        assert_eq!(
            time_left(&job(Some(0), "SuccessCriteriaMet"), at(130)),
            None,
            "not finished yet"
        );
    }
}
