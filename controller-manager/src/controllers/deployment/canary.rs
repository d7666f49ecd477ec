//! Canary rollouts, beyond Kubernetes: a Deployment annotated with
//! `rudder.io/canary-steps: "10%,pause 60s,50%,pause"` moves to a new template step by step
//! instead of in one rolling update.
//!
//! Steps, separated by commas:
//! - `N%` or `N`: run the new revision with that share of `spec.replicas` (rounded up, at least
//!   one) or that many pods, beside the stable one; once they are available, shrink the stable
//!   ReplicaSets so the total stays `spec.replicas`. The share is also written to the new
//!   ReplicaSet as `rudder.io/canary-weight` (percent), which Rudder's proxy will use to split
//!   traffic by weight; until then traffic splits by pod count.
//! - `pause D` (`30s`, `5m`, `1h`, or plain seconds): wait that long.
//! - `pause`: wait for `rudder rollout promote`.
//!
//! After the last step the rest of the rollout is an ordinary rolling update. Commands reach the
//! controller through the Deployment's annotation `rudder.io/canary-action`, which it removes
//! once acted on: `promote` (past the current step; after an abort, back to the last weight
//! step),
//! `promote-full` (skip the remaining steps) and `abort` (new revision to zero, the stable one
//! back to full size, Progressing=False reason CanaryAborted, until promoted or the template
//! changes). The canary's position lives on the new ReplicaSet (`rudder.io/canary-step`,
//! `rudder.io/canary-step-since`, `rudder.io/canary-aborted`), so a restarted controller carries
//! on where it was, and a new template starts from the first step. A Deployment whose first
//! revision this is, or one with the Recreate strategy, ignores the steps.

use std::time::Duration;

use rudder_client::controller::Action;

use super::rollout::rolling;
use super::sets::{
    View, annotate_rs, annotation, ensure_new, revision, scale_rs, spec_replicas, status_count,
};
use super::status::{self, CANARY_ABORTED, CANARY_PAUSED};
use super::{Ctx, Strategy};
use crate::error::Error;
use crate::util::{merge_patch, parse_time, rfc3339};

pub const STEPS: &str = "rudder.io/canary-steps";
pub const ACTION: &str = "rudder.io/canary-action";
pub const STEP: &str = "rudder.io/canary-step";
pub const STEP_SINCE: &str = "rudder.io/canary-step-since";
pub const ABORTED: &str = "rudder.io/canary-aborted";
pub const WEIGHT: &str = "rudder.io/canary-weight";

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Percent(i64),
    Count(i64),
    Pause(Option<Duration>),
}

fn duration(s: &str) -> Option<Duration> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Parses the steps annotation; the error names the step that is wrong.
pub fn parse(spec: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (i, raw) in spec.split(',').enumerate() {
        let item = raw.trim();
        let bad = |why: &str| {
            format!(
                "metadata.annotations[{STEPS}]: step {} {item:?}: {why}",
                i + 1
            )
        };
        let step = if let Some(rest) = item.strip_prefix("pause") {
            let rest = rest.trim();
            if rest.is_empty() {
                Step::Pause(None)
            } else {
                Step::Pause(Some(
                    duration(rest).ok_or_else(|| bad("a pause lasts e.g. 30s, 5m or 1h"))?,
                ))
            }
        } else if let Some(p) = item.strip_suffix('%') {
            let p: i64 = p
                .trim()
                .parse()
                .map_err(|_| bad("expected a percentage such as 10%"))?;
            if !(1..=100).contains(&p) {
                return Err(bad("a percentage is between 1% and 100%"));
            }
            Step::Percent(p)
        } else {
            let n: i64 = item
                .parse()
                .map_err(|_| bad("expected N%, N (pods), pause or pause DURATION"))?;
            if n < 1 {
                return Err(bad("a pod count is at least 1"));
            }
            Step::Count(n)
        };
        steps.push(step);
    }
    Ok(steps)
}

/// Pods of the new revision a weight step asks for, out of `replicas`.
pub fn canary_pods(step: &Step, replicas: i64) -> i64 {
    match step {
        Step::Percent(p) => ((replicas * p + 99) / 100).clamp(1.min(replicas), replicas),
        Step::Count(n) => (*n).min(replicas),
        Step::Pause(_) => 0,
    }
}

/// Whether this reconcile runs a canary: steps given, a rolling update, and a stable revision
/// still running (or a canary already under way on the new ReplicaSet).
pub fn applies(view: &View) -> bool {
    if annotation(&view.d.obj, STEPS).is_empty()
        || !matches!(view.d.strategy, Strategy::RollingUpdate { .. })
    {
        return false;
    }
    let stable_running = view
        .old()
        .into_iter()
        .any(|i| spec_replicas(&view.all[i]) > 0);
    let under_way = view
        .new_rs()
        .is_some_and(|r| !annotation(r, STEP).is_empty());
    stable_running || under_way
}

/// One canary reconcile; see the module doc.
pub async fn run(ctx: &Ctx, view: &mut View) -> Result<Action, Error> {
    let steps = match parse(annotation(&view.d.obj, STEPS)) {
        Ok(s) => s,
        Err(e) => {
            ctx.events
                .warning(&view.d.obj.value, "InvalidCanarySteps", &e);
            return Err(Error::Invalid(e));
        }
    };
    ensure_new(ctx, view, true, |_| 0).await?;
    let Some(ni) = view.new else {
        return rolling(ctx, view).await;
    };
    let now = ctx.clock.now();
    let rs = &view.all[ni];
    let mut step: usize = annotation(rs, STEP).parse().unwrap_or(0);
    let mut since = parse_time(Some(&serde_json::json!(annotation(rs, STEP_SINCE)))).unwrap_or(now);
    let mut aborted = annotation(rs, ABORTED) == "true";
    let d_value = view.d.obj.value.clone();
    match annotation(&view.d.obj, ACTION) {
        "" => {}
        "abort" => {
            aborted = true;
            ctx.events.warning(
                &d_value,
                "CanaryAborted",
                &format!("Canary of revision {} aborted", revision(rs)),
            );
        }
        "promote" if aborted => {
            // Back to the last weight step: the abort took the canary's pods away.
            aborted = false;
            since = now;
            step = steps[..=step.min(steps.len().saturating_sub(1))]
                .iter()
                .rposition(|s| !matches!(s, Step::Pause(_)))
                .unwrap_or(0);
            ctx.events.normal(
                &d_value,
                "CanaryPromoted",
                &format!("Canary resumed at step {}", step + 1),
            );
        }
        "promote" => {
            step += 1;
            since = now;
            ctx.events.normal(
                &d_value,
                "CanaryPromoted",
                &format!("Canary promoted to step {}", step + 1),
            );
        }
        "promote-full" => {
            step = steps.len();
            aborted = false;
            ctx.events.normal(
                &d_value,
                "CanaryPromoted",
                "Canary promoted fully: rolling out the rest",
            );
        }
        other => ctx.events.warning(
            &d_value,
            "InvalidCanaryAction",
            &format!("{ACTION}: unknown action {other:?} (promote, promote-full, abort)"),
        ),
    }
    if !annotation(&view.d.obj, ACTION).is_empty() {
        let patch = serde_json::json!({"metadata": {"annotations": {ACTION: null}}});
        ctx.api.patch(merge_patch(&view.d.obj, &patch)).await?;
    }
    let replicas = view.d.replicas;
    loop {
        save(ctx, view, ni, step, since, aborted).await?;
        if aborted {
            return abort(ctx, view, ni).await;
        }
        let Some(current) = steps.get(step) else {
            // Every step done: an ordinary rolling update finishes the job.
            return rolling(ctx, view).await;
        };
        let label = format!("step {} of {}", step + 1, steps.len());
        match current {
            Step::Pause(None) => {
                view.progressing = Some((
                    "Unknown",
                    CANARY_PAUSED,
                    format!("Canary paused at {label}; resume with `rudder rollout promote`"),
                ));
                return status::sync(ctx, view).await;
            }
            Step::Pause(Some(d)) => {
                let left = since.as_second() + d.as_secs() as i64 - now.as_second();
                if left > 0 {
                    view.progressing = Some((
                        "Unknown",
                        CANARY_PAUSED,
                        format!("Canary paused at {label} for {left}s more"),
                    ));
                    status::sync(ctx, view).await?;
                    return Ok(Action::Requeue(Duration::from_secs(left as u64)));
                }
            }
            weight => {
                let want = canary_pods(weight, replicas);
                let pct = if replicas > 0 {
                    want * 100 / replicas
                } else {
                    0
                };
                annotate_rs(ctx, view, ni, &[(WEIGHT, Some(pct.to_string()))]).await?;
                if spec_replicas(&view.all[ni]) < want {
                    scale_rs(ctx, view, ni, want).await?;
                    ctx.events.normal(
                        &d_value,
                        "CanaryStep",
                        &format!("Canary at {label}: {want} of {replicas} pods"),
                    );
                }
                if status_count(&view.all[ni], "availableReplicas") < want {
                    return status::sync(ctx, view).await;
                }
                // The canary serves: shrink the stable revision, oldest first.
                let mut excess: i64 = view
                    .old()
                    .into_iter()
                    .map(|i| spec_replicas(&view.all[i]))
                    .sum::<i64>()
                    - (replicas - want);
                for i in view.old() {
                    if excess <= 0 {
                        break;
                    }
                    let have = spec_replicas(&view.all[i]);
                    let down = have.min(excess);
                    if down > 0 {
                        scale_rs(ctx, view, i, have - down).await?;
                        excess -= down;
                    }
                }
                let settled = view
                    .old()
                    .into_iter()
                    .map(|i| status_count(&view.all[i], "replicas"))
                    .sum::<i64>()
                    <= replicas - want;
                if !settled {
                    return status::sync(ctx, view).await;
                }
            }
        }
        step += 1;
        since = now;
    }
}

/// Writes the canary's position on the new ReplicaSet.
async fn save(
    ctx: &Ctx,
    view: &mut View,
    ni: usize,
    step: usize,
    since: jiff::Timestamp,
    aborted: bool,
) -> Result<(), Error> {
    annotate_rs(
        ctx,
        view,
        ni,
        &[
            (STEP, Some(step.to_string())),
            (STEP_SINCE, Some(rfc3339(since))),
            (ABORTED, aborted.then(|| "true".to_string())),
        ],
    )
    .await
}

/// The new revision to zero, everything back on the latest stable ReplicaSet.
async fn abort(ctx: &Ctx, view: &mut View, ni: usize) -> Result<Action, Error> {
    scale_rs(ctx, view, ni, 0).await?;
    let old = view.old();
    if let Some(&stable) = old.iter().max_by_key(|&&i| revision(&view.all[i])) {
        let replicas = view.d.replicas;
        scale_rs(ctx, view, stable, replicas).await?;
        for i in old.into_iter().filter(|&i| i != stable) {
            scale_rs(ctx, view, i, 0).await?;
        }
    }
    view.progressing = Some((
        "False",
        CANARY_ABORTED,
        "Canary aborted: the stable revision serves; `rudder rollout promote` retries it".into(),
    ));
    status::sync(ctx, view).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_errors_name_the_step() {
        assert_eq!(
            parse("10%, pause 60s ,2,pause,pause 5m").unwrap(),
            vec![
                Step::Percent(10),
                Step::Pause(Some(Duration::from_secs(60))),
                Step::Count(2),
                Step::Pause(None),
                Step::Pause(Some(Duration::from_secs(300))),
            ]
        );
        let e = parse("10%,pause 1x").unwrap_err();
        assert!(e.contains("step 2") && e.contains("pause 1x"), "{e}");
        assert!(parse("0%").unwrap_err().contains("between 1% and 100%"));
        assert!(parse("fast").unwrap_err().contains("expected N%"));
    }

    #[test]
    fn weights_round_up_to_at_least_one_pod() {
        assert_eq!(canary_pods(&Step::Percent(10), 4), 1);
        assert_eq!(canary_pods(&Step::Percent(50), 5), 3);
        assert_eq!(canary_pods(&Step::Percent(100), 5), 5);
        assert_eq!(canary_pods(&Step::Count(9), 5), 5);
    }
}
