//! The Job controller: paused-time tests on the client's fake (`job/fake.rs`), and tests on the
//! in-process cluster (real API server, scheduler and simulated nodes, whose `succeed` and
//! `fail` images end pods with exit code 0 or 1). Cluster waits poll up to 30 s; no assertion
//! depends on how fast anything is.

#[path = "job/fake.rs"]
mod fake;
#[path = "job/harness.rs"]
mod harness;

mod common;

use std::sync::{Arc, Mutex};

use common::{Cluster, condition, int};
use rudder_client::clock::RealClock;
use rudder_client::informer::InformerFactory;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";
const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

fn job(name: &str, image: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": image}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// The pods of Job `name` (by its `job-name` label).
async fn pods_of(c: &Cluster, name: &str) -> Vec<Value> {
    c.list("v1", "Pod", NS)
        .await
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/labels/batch.kubernetes.io~1job-name") == Some(&json!(name))
        })
        .collect()
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Waits until Job `name` has a True condition of type `ty`.
async fn wait_condition(c: &Cluster, name: &str, ty: &str) -> Value {
    c.wait_for(&format!("job {name} {ty}"), || async {
        let j = c.get("batch/v1", "Job", NS, name).await.ok_or("no job")?;
        match condition(&j, ty) {
            Some(cd) if cd["status"] == "True" => Ok(j),
            _ => Err(format!("status {}", j["status"])),
        }
    })
    .await
}

/// Follows the pods of `app` through an informer and records the most that were unfinished
/// (not Succeeded or Failed, not being deleted) at any moment.
struct MostActive {
    most: Arc<Mutex<usize>>,
    cancel: CancellationToken,
}

impl Drop for MostActive {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn watch_active(c: &Cluster, job_name: &str) -> MostActive {
    let cancel = CancellationToken::new();
    let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
    let pods = factory.for_kind("v1", "Pod");
    let mut events = pods.subscribe();
    factory.start(&cancel);
    let most = Arc::new(Mutex::new(0));
    let (m, name, stop) = (Arc::clone(&most), job_name.to_string(), cancel.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => if e.is_none() { return },
            }
            let n = pods
                .reader()
                .list()
                .iter()
                .filter(|p| p.value.pointer("/metadata/labels/job-name") == Some(&json!(name)))
                .filter(|p| !matches!(phase(&p.value), "Succeeded" | "Failed") && !p.is_deleting())
                .count();
            let mut m = m.lock().unwrap();
            *m = (*m).max(n);
        }
    });
    MostActive { most, cancel }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_parallelism_indexes_and_ttl() {
    let c = Cluster::start(2).await;
    let most = watch_active(&c, "pi");
    let created = c
        .create(
            "batch/v1",
            "Job",
            NS,
            job(
                "pi",
                "calc-succeed",
                json!({"completions": 3, "parallelism": 2}),
            ),
        )
        .await;
    let j = wait_condition(&c, "pi", "Complete").await;
    assert_eq!(int(&j, "/status/succeeded"), 3, "{j}");
    assert_eq!(int(&j, "/status/failed"), 0);
    assert_eq!(int(&j, "/status/active"), 0);
    assert!(j["status"]["completionTime"].is_string() && j["status"]["startTime"].is_string());
    let reached = condition(&j, "SuccessCriteriaMet").unwrap();
    assert_eq!(reached["reason"], "CompletionsReached");
    let pods = pods_of(&c, "pi").await;
    assert_eq!(pods.len(), 3, "exactly completions pods, none extra");
    let uid = &created["metadata"]["uid"];
    for p in &pods {
        assert_eq!(phase(p), "Succeeded");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            *uid
        );
        assert_eq!(p["metadata"]["labels"]["controller-uid"], *uid);
        assert_eq!(p["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert!(
            !p["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.contains(&json!(FINALIZER))),
            "{p}"
        );
    }
    assert!(*most.most.lock().unwrap() <= 2, "parallelism 2 exceeded");

    // Indexed: each pod carries its index.
    c.create(
        "batch/v1",
        "Job",
        NS,
        job(
            "ix",
            "work-succeed",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await;
    let j = wait_condition(&c, "ix", "Complete").await;
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    assert_eq!(int(&j, "/status/succeeded"), 3);
    let mut seen: Vec<String> = Vec::new();
    for p in pods_of(&c, "ix").await {
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("ix-{ix}"));
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("ix-{ix}-"))
        );
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        seen.push(ix);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // A finished Job with ttlSecondsAfterFinished goes, its pods with it.
    c.create(
        "batch/v1",
        "Job",
        NS,
        job("brief", "x-succeed", json!({"ttlSecondsAfterFinished": 1})),
    )
    .await;
    wait_condition(&c, "brief", "Complete").await;
    c.wait_for("job brief deleted", || async {
        let gone = c.get("batch/v1", "Job", NS, "brief").await.is_none();
        let pods = pods_of(&c, "brief").await.len();
        if gone && pods == 0 {
            Ok(())
        } else {
            Err(format!("job gone {gone}, {pods} pods"))
        }
    })
    .await;
    assert!(
        c.get("batch/v1", "Job", NS, "pi").await.is_some(),
        "no TTL, no deletion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_limit_failure_policy_and_deadline_fail_jobs() {
    let c = Cluster::start(2).await;
    c.create(
        "batch/v1",
        "Job",
        NS,
        job("flaky", "x-fail", json!({"backoffLimit": 1})),
    )
    .await;
    let policy = json!({"rules": [{"action": "FailJob",
        "onExitCodes": {"containerName": "main", "operator": "In", "values": [1]}}]});
    c.create(
        "batch/v1",
        "Job",
        NS,
        job(
            "strict",
            "x-fail",
            json!({"backoffLimit": 6, "podFailurePolicy": policy}),
        ),
    )
    .await;
    c.create(
        "batch/v1",
        "Job",
        NS,
        job("slow", "sleeper", json!({"activeDeadlineSeconds": 2})),
    )
    .await;

    let j = wait_condition(&c, "strict", "Failed").await;
    let f = condition(&j, "Failed").unwrap();
    assert_eq!(f["reason"], "PodFailurePolicy");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("failed with exit code 1 matching FailJob rule at index 0"),
        "{f}"
    );
    assert_eq!(
        int(&j, "/status/failed"),
        1,
        "failed at the first pod, not after 7"
    );
    assert_eq!(pods_of(&c, "strict").await.len(), 1);

    let j = wait_condition(&c, "slow", "Failed").await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    c.wait_for("slow's pod gone", || async {
        let n = pods_of(&c, "slow").await.len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;

    // Two failures (the second after a 10 s back-off) exceed backoffLimit 1.
    let j = wait_condition(&c, "flaky", "Failed").await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(int(&j, "/status/failed"), 2, "{j}");
    let pods = pods_of(&c, "flaky").await;
    assert_eq!(pods.len(), 2);
    let finished: Vec<jiff::Timestamp> = pods
        .iter()
        .map(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let gap = finished[0].duration_since(finished[1]).as_secs().abs();
    assert!(gap >= 9, "replaced after {gap} s, not after the back-off");
    // Events are sent after the status write, asynchronously: wait for it.
    c.wait_for("the BackoffLimitExceeded event", || async {
        let events: Vec<Value> = c.list("v1", "Event", NS).await;
        if events.iter().any(|e| {
            e["reason"] == "BackoffLimitExceeded" && e["involvedObject"]["name"] == "flaky"
        }) {
            Ok(())
        } else {
            Err(format!(
                "{} events, none BackoffLimitExceeded",
                events.len()
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume() {
    let c = Cluster::start(2).await;
    c.create(
        "batch/v1",
        "Job",
        NS,
        job(
            "later",
            "sleeper",
            json!({"suspend": true, "parallelism": 2, "completions": 2}),
        ),
    )
    .await;
    let j = wait_condition(&c, "later", "Suspended").await;
    assert!(
        j["status"].get("startTime").is_none_or(Value::is_null),
        "{j}"
    );
    assert!(pods_of(&c, "later").await.is_empty());

    c.patch(
        "batch/v1",
        "Job",
        NS,
        "later",
        json!({"spec": {"suspend": false}}),
    )
    .await;
    let j = c
        .wait_for("two running pods", || async {
            let running = pods_of(&c, "later")
                .await
                .iter()
                .filter(|p| phase(p) == "Running")
                .count();
            let j = c
                .get("batch/v1", "Job", NS, "later")
                .await
                .ok_or("no job")?;
            if running == 2 && int(&j, "/status/ready") == 2 {
                Ok(j)
            } else {
                Err(format!("{running} running; {}", j["status"]))
            }
        })
        .await;
    assert_eq!(condition(&j, "Suspended").unwrap()["status"], "False");
    assert_eq!(condition(&j, "Suspended").unwrap()["reason"], "JobResumed");
    assert!(j["status"]["startTime"].is_string());

    c.patch(
        "batch/v1",
        "Job",
        NS,
        "later",
        json!({"spec": {"suspend": true}}),
    )
    .await;
    wait_condition(&c, "later", "Suspended").await;
    let j = c
        .wait_for("pods gone", || async {
            let n = pods_of(&c, "later").await.len();
            let j = c
                .get("batch/v1", "Job", NS, "later")
                .await
                .ok_or("no job")?;
            if n == 0 && int(&j, "/status/active") == 0 {
                Ok(j)
            } else {
                Err(format!("{n} pods; {}", j["status"]))
            }
        })
        .await;
    assert_eq!(
        int(&j, "/status/failed"),
        0,
        "pods removed by suspension are not failures"
    );
}

/// Kills the controllers five times while pods are being made. What a restart guarantees, as in
/// Kubernetes: every finished pod is counted exactly once (the tracking finalizer), the Job
/// completes, and no pod is made knowingly beyond completions. What it cannot rule out: a create
/// the killed controller had already sent lands after its successor listed the pods, so the
/// successor makes one pod too many. Then the count says so truthfully and the Job carries the
/// `TooManySucceededPods` warning, which this test asks for whenever it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_mid_job_counts_every_pod_once() {
    const KILLS: usize = 5;
    const PARALLELISM: usize = 3;
    let mut c = Cluster::start(3).await;
    c.create(
        "batch/v1",
        "Job",
        NS,
        job(
            "many",
            "w-succeed",
            json!({"completions": 12, "parallelism": PARALLELISM}),
        ),
    )
    .await;
    for at_least in [2, 4, 6, 8, 10] {
        c.wait_for(&format!("{at_least} pods"), || async {
            let n = pods_of(&c, "many").await.len();
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            }
        })
        .await;
        c.kill_controllers().await;
        c.start_controllers();
    }
    let j = wait_condition(&c, "many", "Complete").await;
    let pods = pods_of(&c, "many").await;
    let succeeded_pods = pods.iter().filter(|p| phase(p) == "Succeeded").count();
    assert_eq!(
        int(&j, "/status/succeeded") as usize,
        succeeded_pods,
        "each succeeded pod counted once: {j}"
    );
    assert_eq!(int(&j, "/status/failed"), 0);
    assert!(succeeded_pods >= 12, "{succeeded_pods} succeeded");
    assert!(
        pods.iter().all(|p| phase(p) == "Succeeded"),
        "no pod left running"
    );
    // At most the creates in flight at each kill: a whole batch, never a re-run of the Job.
    assert!(
        pods.len() <= 12 + KILLS * PARALLELISM,
        "{} pods for 12 completions",
        pods.len()
    );
    assert!(
        j["status"]
            .get("uncountedTerminatedPods")
            .is_none_or(|u| u == &json!({})),
        "{j}"
    );
    if succeeded_pods > 12 {
        c.wait_for("the TooManySucceededPods event", || async {
            let events: Vec<Value> = c.list("v1", "Event", NS).await;
            if events.iter().any(|e| {
                e["reason"] == "TooManySucceededPods" && e["involvedObject"]["name"] == "many"
            }) {
                Ok(())
            } else {
                Err(format!("{succeeded_pods} succeeded and no warning"))
            }
        })
        .await;
    }
}
