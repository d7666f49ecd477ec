//! The Job controller on the client's in-memory fake under paused time, the test playing the
//! node agent (it writes pod statuses itself): the back-off between failed pods, back-off
//! limits, pod failure policies, per-index limits, success policies, suspension and the
//! deadline, all on the injected clock.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Env, condition, env, job};

fn created_at(p: &Value) -> jiff::Timestamp {
    p["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn failed_pods_are_replaced_after_a_doubling_back_off_until_the_limit() {
    let e = env();
    e.start(&["job"]);
    e.create("batch/v1", "Job", job("b", json!({"backoffLimit": 3})))
        .await;
    e.settle(1).await;
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let running = e.running().await;
        assert_eq!(running.len(), 1, "one pod at a time: {running:?}");
        let pod = running[0].clone();
        assert_eq!(
            pod["metadata"]["finalizers"],
            json!(["batch.kubernetes.io/job-tracking"])
        );
        e.finish(&pod, 1).await;
        let failed_at = e.clock.now();
        // Wait for the replacement, at most the longest back-off asked for here.
        for _ in 0..500 {
            e.settle(1).await;
            if !e.running().await.is_empty() || condition(&e.job("b").await, "Failed").is_some() {
                break;
            }
        }
        if let Some(next) = e.running().await.first() {
            gaps.push(created_at(next).duration_since(failed_at).as_secs());
        }
    }
    // 10 s, 20 s, 40 s after each failure (times are whole seconds, and polled each second).
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    for (gap, want) in gaps.iter().zip([10, 20, 40]) {
        assert!((want - 1..=want + 1).contains(gap), "gaps {gaps:?}");
    }
    let j = e.job("b").await;
    let failed = condition(&j, "Failed").unwrap_or_else(|| panic!("not failed: {j}"));
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    let target = condition(&j, "FailureTarget").expect("interim condition");
    assert_eq!(target["reason"], "BackoffLimitExceeded");
    assert_eq!(j["status"]["failed"], 4, "{j}");
    assert_eq!(j["status"]["active"], 0);
    assert!(
        j["status"]
            .get("uncountedTerminatedPods")
            .is_none_or(|u| u == &json!({})),
        "{j}"
    );
    // Every pod's end was counted, then its finalizer removed.
    let pods = e.pods().await;
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| {
        p["metadata"]
            .get("finalizers")
            .is_none_or(|f| f == &json!([]))
    }));
    e.settle(1).await;
    let events = e.events().await;
    assert_eq!(
        events.iter().filter(|r| *r == "SuccessfulCreate").count(),
        4
    );
    assert!(
        events.contains(&"BackoffLimitExceeded".to_string()),
        "{events:?}"
    );
}

/// Settles until `check` holds on the Job, at most `secs` of paused time.
async fn until(e: &Env, name: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..secs * 2 {
        let j = e.job(name).await;
        if check(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("job {name} never got there: {}", e.job(name).await);
}

fn index_of(p: &Value) -> i64 {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn running_index(e: &Env, i: i64) -> Value {
    for _ in 0..100 {
        if let Some(p) = e.running().await.into_iter().find(|p| index_of(p) == i) {
            return p;
        }
        e.settle(1).await;
    }
    panic!("no running pod for index {i}: {:?}", e.pods().await);
}

#[tokio::test(start_paused = true)]
async fn a_fail_job_rule_fails_at_once_and_ignored_failures_do_not_count() {
    let e = env();
    e.start(&["job"]);
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]});
    e.create(
        "batch/v1",
        "Job",
        job("p", json!({"backoffLimit": 0, "podFailurePolicy": policy})),
    )
    .await;
    e.settle(1).await;
    // A disrupted pod is ignored: replaced at once, not counted, no back-off.
    let first = e.running().await.remove(0);
    e.finish_with(
        &first,
        137,
        json!([{"type": "DisruptionTarget", "status": "True"}]),
    )
    .await;
    e.settle(1).await;
    let j = e.job("p").await;
    assert!(condition(&j, "FailureTarget").is_none(), "{j}");
    assert_eq!(j["status"]["failed"], 0, "{j}");
    let second = e.running().await.remove(0);
    assert_ne!(second["metadata"]["name"], first["metadata"]["name"]);
    // Exit code 42 matches FailJob.
    e.finish(&second, 42).await;
    let j = until(&e, "p", 5, |j| condition(j, "Failed").is_some()).await;
    let msg = format!(
        "Container c for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
        second["metadata"]["name"].as_str().unwrap()
    );
    for ty in ["FailureTarget", "Failed"] {
        let c = condition(&j, ty).unwrap();
        assert_eq!(
            (c["reason"].as_str(), c["message"].as_str()),
            (Some("PodFailurePolicy"), Some(msg.as_str()))
        );
    }
    assert_eq!(j["status"]["failed"], 1, "{j}");
    assert!(j["status"].get("completionTime").is_none());
}

#[tokio::test(start_paused = true)]
async fn indexes_fail_after_their_own_limit_and_too_many_fail_the_job() {
    let e = env();
    e.start(&["job"]);
    let spec = json!({"completionMode": "Indexed", "completions": 5, "parallelism": 5,
        "backoffLimitPerIndex": 1, "maxFailedIndexes": 1});
    e.create("batch/v1", "Job", job("ix", spec)).await;
    e.settle(1).await;
    let pods = e.running().await;
    let mut indexes: Vec<i64> = pods.iter().map(index_of).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("ix-{}-", index_of(p))), "{name}");
        assert_eq!(p["spec"]["hostname"], format!("ix-{}", index_of(p)));
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
            "0"
        );
    }
    for p in pods.iter().filter(|p| [0, 2, 3].contains(&index_of(p))) {
        e.finish(p, 0).await;
    }
    let j = until(&e, "ix", 5, |j| j["status"]["completedIndexes"] == "0,2-3").await;
    assert_eq!(j["status"]["succeeded"], 3);
    assert_eq!(j["status"]["failedIndexes"], "");

    // Index 1 fails: replaced after 10 s, inheriting the count; fails again: index 1 failed.
    let one = running_index(&e, 1).await;
    e.finish(&one, 1).await;
    let failed_at = e.clock.now();
    let again = running_index(&e, 1).await;
    let waited = created_at(&again).duration_since(failed_at).as_secs();
    assert!((9..=11).contains(&waited), "replaced after {waited} s");
    assert_eq!(
        again["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "1"
    );
    e.finish(&again, 1).await;
    let j = until(&e, "ix", 5, |j| j["status"]["failedIndexes"] == "1").await;
    assert!(
        condition(&j, "FailureTarget").is_none(),
        "one failed index is allowed: {j}"
    );

    // Index 4 fails twice too: two failed indexes are more than maxFailedIndexes.
    let four = running_index(&e, 4).await;
    e.finish(&four, 1).await;
    let four = running_index(&e, 4).await;
    e.finish(&four, 1).await;
    let j = until(&e, "ix", 5, |j| condition(j, "Failed").is_some()).await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "MaxFailedIndexesExceeded"
    );
    assert_eq!(j["status"]["failedIndexes"], "1,4");
    assert_eq!(j["status"]["failed"], 4);
    assert_eq!(j["status"]["completedIndexes"], "0,2-3");
}

#[tokio::test(start_paused = true)]
async fn a_success_policy_completes_early_and_removes_the_rest() {
    let e = env();
    e.start(&["job"]);
    let spec = json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3,
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]}});
    e.create("batch/v1", "Job", job("lead", spec)).await;
    e.settle(1).await;
    let leader = running_index(&e, 0).await;
    e.finish(&leader, 0).await;
    let j = until(&e, "lead", 5, |j| condition(j, "Complete").is_some()).await;
    for ty in ["SuccessCriteriaMet", "Complete"] {
        let c = condition(&j, ty).unwrap();
        assert_eq!(
            (c["reason"].as_str(), c["message"].as_str()),
            (Some("SuccessPolicy"), Some("Matched rules at index 0"))
        );
    }
    assert_eq!(j["status"]["succeeded"], 1);
    assert_eq!(j["status"]["completedIndexes"], "0");
    // The two workers were deleted and counted as failed.
    assert_eq!(j["status"]["failed"], 2, "{j}");
    assert!(j["status"]["completionTime"].is_string());
    assert_eq!(e.pods().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn suspension_removes_pods_uncounted_and_resuming_restarts_the_clock() {
    let e = env();
    e.start(&["job"]);
    e.create(
        "batch/v1",
        "Job",
        job("s", json!({"completions": 4, "parallelism": 2})),
    )
    .await;
    e.settle(1).await;
    e.run_all().await;
    let started = e.job("s").await["status"]["startTime"].clone();
    assert!(started.is_string());
    e.patch(
        "batch/v1",
        "Job",
        "s",
        json!({"spec": {"suspend": true}}),
        false,
    )
    .await;
    let j = until(&e, "s", 5, |j| {
        condition(j, "Suspended").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let c = condition(&j, "Suspended").unwrap();
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (Some("JobSuspended"), Some("Job suspended"))
    );
    e.settle(2).await;
    assert!(e.pods().await.is_empty(), "{:?}", e.pods().await);
    let j = e.job("s").await;
    assert_eq!(
        (
            j["status"]["active"].as_i64(),
            j["status"]["failed"].as_i64()
        ),
        (Some(0), Some(0)),
        "{j}"
    );

    e.settle(60).await;
    e.patch(
        "batch/v1",
        "Job",
        "s",
        json!({"spec": {"suspend": false}}),
        false,
    )
    .await;
    let j = until(&e, "s", 5, |j| {
        condition(j, "Suspended").is_some_and(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(condition(&j, "Suspended").unwrap()["reason"], "JobResumed");
    assert_ne!(
        j["status"]["startTime"], started,
        "startTime restarts on resume"
    );
    e.settle(1).await;
    assert_eq!(e.running().await.len(), 2);
    let events = e.events().await;
    assert!(
        events.contains(&"Suspended".into()) && events.contains(&"Resumed".into()),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_active_deadline_fails_a_running_job_on_time() {
    let e = env();
    e.start(&["job"]);
    e.create(
        "batch/v1",
        "Job",
        job(
            "d",
            json!({"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 2}),
        ),
    )
    .await;
    e.settle(1).await;
    e.run_all().await;
    e.settle(25).await;
    assert!(condition(&e.job("d").await, "FailureTarget").is_none());
    let j = until(&e, "d", 10, |j| condition(j, "Failed").is_some()).await;
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (
            Some("DeadlineExceeded"),
            Some("Job was active longer than specified deadline")
        )
    );
    let start: jiff::Timestamp = j["status"]["startTime"].as_str().unwrap().parse().unwrap();
    let at: jiff::Timestamp = condition(&j, "FailureTarget").unwrap()["lastTransitionTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let took = at.duration_since(start).as_secs();
    assert!((30..=31).contains(&took), "failed after {took} s");
    assert_eq!(
        j["status"]["failed"], 2,
        "the running pods were deleted and count as failed"
    );
    assert!(e.pods().await.is_empty());
}
