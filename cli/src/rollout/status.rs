//! `rudder rollout status`: kubectl's status viewers for deployments, daemon sets and stateful
//! sets, word for word, over a watch of the one object until the rollout is done.

use std::time::Duration;

use clap::{ArgAction, Args};
use rudder_client::proto as pb;
use serde_json::Value;

use super::target::{self, ObjRef, Selection};
use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// TYPE NAME or TYPE/NAME (deployment, daemonset, statefulset).
    pub args: Vec<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// Watch the status of the rollout until it's done (the default); --watch=false prints once.
    #[arg(short = 'w', long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub watch: bool,
    /// How long to watch before giving up (0, the default: no limit), e.g. 30s, 2m.
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Pin to this revision: fail when the deployment runs another (0: the latest).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub revision: i64,
}

/// The kinds with a status viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Deployment,
    DaemonSet,
    StatefulSet,
}

impl Viewer {
    pub fn for_type(r: &ObjRef) -> Result<Viewer> {
        match (r.t.group.as_str(), r.t.kind.as_str()) {
            ("apps", "Deployment") => Ok(Viewer::Deployment),
            ("apps", "DaemonSet") => Ok(Viewer::DaemonSet),
            ("apps", "StatefulSet") => Ok(Viewer::StatefulSet),
            _ => Err(CliError::msg(format!(
                "no status viewer has been implemented for {}",
                target::group_kind(&r.t)
            ))),
        }
    }

    /// The status line and whether the rollout is done; an error ends the watch.
    pub fn status(self, obj: &Value, revision: i64) -> Result<(String, bool)> {
        match self {
            Viewer::Deployment => deployment(obj, revision),
            Viewer::DaemonSet => daemon_set(obj),
            Viewer::StatefulSet => stateful_set(obj),
        }
    }
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn name(obj: &Value) -> &str {
    rudder_api::meta::name(obj)
}

/// The `deployment.kubernetes.io/revision` annotation of an object; absent is 0, as kubectl.
pub fn revision_of(obj: &Value) -> std::result::Result<i64, String> {
    match obj
        .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(Value::as_str)
    {
        None => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| format!("invalid revision annotation {v:?}: not an integer")),
    }
}

fn deployment(d: &Value, revision: i64) -> Result<(String, bool)> {
    let n = name(d);
    if revision > 0 {
        let running = revision_of(d).map_err(|e| {
            CliError::msg(format!("cannot get the revision of deployment {n:?}: {e}"))
        })?;
        if running != revision {
            return Err(CliError::msg(format!(
                "desired revision ({revision}) is different from the running revision ({running})"
            )));
        }
    }
    if rudder_api::meta::generation(d) > int(d, "/status/observedGeneration") {
        return Ok((
            "Waiting for deployment spec update to be observed...\n".into(),
            false,
        ));
    }
    let deadline_exceeded = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
        .is_some_and(|c| {
            c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
        });
    if deadline_exceeded {
        return Err(CliError::msg(format!(
            "deployment {n:?} exceeded its progress deadline"
        )));
    }
    let updated = int(d, "/status/updatedReplicas");
    let replicas = int(d, "/status/replicas");
    let available = int(d, "/status/availableReplicas");
    if let Some(want) = d.pointer("/spec/replicas").and_then(Value::as_i64)
        && updated < want
    {
        return Ok((
            format!(
                "Waiting for deployment {n:?} rollout to finish: {updated} out of {want} new replicas have been updated...\n"
            ),
            false,
        ));
    }
    if replicas > updated {
        return Ok((
            format!(
                "Waiting for deployment {n:?} rollout to finish: {} old replicas are pending termination...\n",
                replicas - updated
            ),
            false,
        ));
    }
    if available < updated {
        return Ok((
            format!(
                "Waiting for deployment {n:?} rollout to finish: {available} of {updated} updated replicas are available...\n"
            ),
            false,
        ));
    }
    Ok((format!("deployment {n:?} successfully rolled out\n"), true))
}

/// The update strategy type; the API defaults it to RollingUpdate, so absent reads as that.
fn strategy(obj: &Value) -> &str {
    obj.pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate")
}

fn daemon_set(ds: &Value) -> Result<(String, bool)> {
    if strategy(ds) != "RollingUpdate" {
        return Err(CliError::msg(
            "rollout status is only available for RollingUpdate strategy type",
        ));
    }
    let n = name(ds);
    if rudder_api::meta::generation(ds) > int(ds, "/status/observedGeneration") {
        return Ok((
            "Waiting for daemon set spec update to be observed...\n".into(),
            false,
        ));
    }
    let updated = int(ds, "/status/updatedNumberScheduled");
    let desired = int(ds, "/status/desiredNumberScheduled");
    let available = int(ds, "/status/numberAvailable");
    if updated < desired {
        return Ok((
            format!(
                "Waiting for daemon set {n:?} rollout to finish: {updated} out of {desired} new pods have been updated...\n"
            ),
            false,
        ));
    }
    if available < desired {
        return Ok((
            format!(
                "Waiting for daemon set {n:?} rollout to finish: {available} of {desired} updated pods are available...\n"
            ),
            false,
        ));
    }
    Ok((format!("daemon set {n:?} successfully rolled out\n"), true))
}

fn stateful_set(sts: &Value) -> Result<(String, bool)> {
    if strategy(sts) != "RollingUpdate" {
        return Err(CliError::msg(
            "rollout status is only available for RollingUpdate strategy type",
        ));
    }
    let observed = int(sts, "/status/observedGeneration");
    if observed == 0 || rudder_api::meta::generation(sts) > observed {
        return Ok((
            "Waiting for statefulset spec update to be observed...\n".into(),
            false,
        ));
    }
    let replicas = sts.pointer("/spec/replicas").and_then(Value::as_i64);
    let ready = int(sts, "/status/readyReplicas");
    let updated = int(sts, "/status/updatedReplicas");
    if let Some(want) = replicas
        && ready < want
    {
        return Ok((
            format!("Waiting for {} pods to be ready...\n", want - ready),
            false,
        ));
    }
    if let Some(ru) = sts.pointer("/spec/updateStrategy/rollingUpdate")
        && !ru.is_null()
    {
        if let (Some(want), Some(partition)) =
            (replicas, ru.get("partition").and_then(Value::as_i64))
            && updated < want - partition
        {
            return Ok((
                format!(
                    "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...\n",
                    want - partition
                ),
                false,
            ));
        }
        return Ok((
            format!("partitioned roll out complete: {updated} new pods have been updated...\n"),
            true,
        ));
    }
    let current_rev = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let update_rev = sts
        .pointer("/status/updateRevision")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if update_rev != current_rev {
        return Ok((
            format!(
                "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}...\n"
            ),
            false,
        ));
    }
    Ok((
        format!(
            "statefulset rolling update complete {} pods at revision {current_rev}...\n",
            int(sts, "/status/currentReplicas")
        ),
        true,
    ))
}

/// Prints the status of the object now and, when watching, at each change until done.
async fn watch(ctx: &Ctx, r: &ObjRef, viewer: Viewer, args: &StatusArgs) -> Result<()> {
    let client = ctx.client()?;
    let mut rv = 0;
    loop {
        if rv == 0 {
            // First, and after the watch lost its place: read the object as it is now.
            let obj = target::get(ctx, r).await?;
            let (line, done) = viewer.status(&obj, args.revision)?;
            util::out(&line)?;
            if done || !args.watch {
                return Ok(());
            }
            rv = rudder_api::meta::resource_version(&obj);
        }
        let mut stream = client
            .watch(pb::WatchRequest {
                kind: Some(r.t.kind_ref()),
                namespace: r.t.scope(&r.namespace).to_string(),
                label_selector: String::new(),
                field_selector: format!("metadata.name={}", r.name),
                resource_version: rv,
                allow_bookmarks: true,
                bookmark_interval_ms: 0,
            })
            .await?;
        while let Ok(Some(ev)) = stream.message().await {
            match pb::EventType::try_from(ev.r#type).unwrap_or(pb::EventType::Unspecified) {
                pb::EventType::Bookmark => rv = rv.max(ev.resource_version),
                pb::EventType::Error => {
                    // Too slow: resume where told; expired (no resume point): read again.
                    rv = ev.error.unwrap_or_default().resume_resource_version;
                    break;
                }
                pb::EventType::Deleted => {
                    return Err(CliError::msg("object has been deleted"));
                }
                _ => {
                    let Some(o) = ev.object else { continue };
                    rv = rv.max(o.resource_version);
                    let (line, done) = viewer.status(&util::decode(&o)?, args.revision)?;
                    util::out(&line)?;
                    if done {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    if args.revision < 0 {
        return Err(CliError::msg(format!(
            "revision must be a positive integer: {}",
            args.revision
        )));
    }
    let timeout = util::parse_duration(&args.timeout)?;
    let refs = target::resolve(
        ctx,
        &args.args,
        &args.sel,
        "required resource not specified",
        "rollout status",
    )
    .await?;
    let [r] = refs.as_slice() else {
        return Err(CliError::msg(format!(
            "rollout status is only supported on individual resources and resource collections - {} resources were found",
            refs.len()
        )));
    };
    let viewer = Viewer::for_type(r)?;
    let w = watch(ctx, r, viewer, &args);
    if timeout.is_zero() {
        return w.await;
    }
    match tokio::time::timeout(timeout, w).await {
        Ok(r) => r,
        Err(_) => Err(CliError::msg("timed out waiting for the condition")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 3}, "status": status})
    }

    fn line(v: Viewer, o: &Value) -> (String, bool) {
        v.status(o, 0).unwrap()
    }

    #[test]
    fn deployment_messages() {
        let d = Viewer::Deployment;
        let w = "Waiting for deployment \"web\" rollout to finish: ";
        assert_eq!(
            line(d, &deploy(json!({"observedGeneration": 1}))).0,
            "Waiting for deployment spec update to be observed...\n"
        );
        let s = |st| line(d, &deploy(st));
        assert_eq!(
            s(json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3})),
            (
                format!("{w}1 out of 3 new replicas have been updated...\n"),
                false
            )
        );
        assert_eq!(
            s(json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4})),
            (
                format!("{w}1 old replicas are pending termination...\n"),
                false
            )
        );
        assert_eq!(
            s(
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})
            ),
            (
                format!("{w}2 of 3 updated replicas are available...\n"),
                false
            )
        );
        assert_eq!(
            s(
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            ),
            (
                "deployment \"web\" successfully rolled out\n".to_string(),
                true
            )
        );
        let stuck = deploy(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]}));
        assert_eq!(
            d.status(&stuck, 0).unwrap_err().to_string(),
            "error: deployment \"web\" exceeded its progress deadline"
        );
        let mut pinned = deploy(json!({"observedGeneration": 2}));
        pinned["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "2"});
        assert_eq!(
            d.status(&pinned, 3).unwrap_err().to_string(),
            "error: desired revision (3) is different from the running revision (2)"
        );
        assert!(d.status(&pinned, 2).is_ok());
    }

    #[test]
    fn daemon_set_and_stateful_set_messages() {
        let ds = |st: Value| json!({"metadata": {"name": "agent", "generation": 1}, "spec": {}, "status": st});
        let v = Viewer::DaemonSet;
        assert_eq!(
            line(v, &ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 1}))).0,
            "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...\n"
        );
        assert_eq!(
            line(v, &ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}))).0,
            "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available...\n"
        );
        let onde = json!({"metadata": {"name": "agent"}, "spec": {"updateStrategy": {"type": "OnDelete"}}});
        assert_eq!(
            v.status(&onde, 0).unwrap_err().to_string(),
            "error: rollout status is only available for RollingUpdate strategy type"
        );
        let sts = |spec: Value, st: Value| json!({"metadata": {"name": "db", "generation": 1}, "spec": spec, "status": st});
        let v = Viewer::StatefulSet;
        assert_eq!(
            line(v, &sts(json!({"replicas": 3}), json!({}))).0,
            "Waiting for statefulset spec update to be observed...\n"
        );
        assert_eq!(
            line(
                v,
                &sts(
                    json!({"replicas": 3}),
                    json!({"observedGeneration": 1, "readyReplicas": 1})
                )
            )
            .0,
            "Waiting for 2 pods to be ready...\n"
        );
        let part = json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
        assert_eq!(
            line(v, &sts(part.clone(), json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1}))),
            ("Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...\n".to_string(), false)
        );
        assert_eq!(
            line(
                v,
                &sts(
                    part,
                    json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 2})
                )
            ),
            (
                "partitioned roll out complete: 2 new pods have been updated...\n".to_string(),
                true
            )
        );
        let plain = json!({"replicas": 2});
        assert_eq!(
            line(
                v,
                &sts(
                    plain.clone(),
                    json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1,
                "currentRevision": "db-1", "updateRevision": "db-2"})
                )
            )
            .0,
            "waiting for statefulset rolling update to complete 1 pods at revision db-2...\n"
        );
        assert_eq!(
            line(
                v,
                &sts(
                    plain,
                    json!({"observedGeneration": 1, "readyReplicas": 2, "currentReplicas": 2,
                "currentRevision": "db-2", "updateRevision": "db-2"})
                )
            ),
            (
                "statefulset rolling update complete 2 pods at revision db-2...\n".to_string(),
                true
            )
        );
    }
}
