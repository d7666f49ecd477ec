//! The CronJob controller on the client's fake with a `ManualClock` under paused time: runs at
//! the scheduled minute under each concurrency policy, only the most recent of missed runs,
//! too many missed runs, the starting deadline, history limits, time zones, suspension, and a
//! Job made before a lost status write adopted instead of duplicated. The test plays the Job
//! controller (it writes Job statuses itself).

#[path = "job/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Env, NS, env};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

fn cronjob(name: &str, schedule: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["schedule"] = json!(schedule);
    spec["jobTemplate"] = json!({"metadata": {"labels": {"cron": name}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i"}]}}}});
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// Minutes since the epoch of `2025-01-01T<hh:mm>:00Z`, the suffix of that run's Job.
fn minutes(hh_mm: &str) -> i64 {
    let t: Timestamp = format!("2025-01-01T{hh_mm}:00Z").parse().unwrap();
    t.as_second() / 60
}

async fn jobs(e: &Env) -> Vec<String> {
    e.list("batch/v1", "Job")
        .await
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn cj(e: &Env, name: &str) -> Value {
    e.list("batch/v1", "CronJob")
        .await
        .into_iter()
        .find(|c| c["metadata"]["name"] == name)
        .expect("cronjob")
}

fn active(c: &Value) -> Vec<String> {
    c.pointer("/status/active")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Lets paused time run up to `hh:mm:ss` of 2025-01-01 (UTC), in one-second steps.
async fn until(e: &Env, hh_mm_ss: &str) {
    let target: Timestamp = format!("2025-01-01T{hh_mm_ss}Z").parse().unwrap();
    while e.clock.now() < target {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Plays the Job controller: the Job ends as Complete (or Failed), now.
async fn finish(e: &Env, job: &str, ok: bool) {
    let now = format!("{:.0}", e.clock.now());
    let ty = if ok { "Complete" } else { "Failed" };
    let mut status = json!({"startTime": now, "conditions": [
        {"type": ty, "status": "True", "lastTransitionTime": now}]});
    if ok {
        status["completionTime"] = json!(now);
    }
    e.patch("batch/v1", "Job", job, json!({ "status": status }), true)
        .await;
}

fn name(cron: &str, hh_mm: &str) -> String {
    format!("{cron}-{}", minutes(hh_mm))
}

#[tokio::test(start_paused = true)]
async fn allow_starts_each_run_on_time_alongside_running_ones() {
    let e = env();
    e.start(&["cronjob"]);
    let c = e
        .create(
            "batch/v1",
            "CronJob",
            cronjob("tick", "*/5 * * * *", json!({"concurrencyPolicy": "Allow"})),
        )
        .await;
    until(&e, "00:04:59").await;
    assert!(jobs(&e).await.is_empty(), "nothing before 00:05");
    until(&e, "00:05:02").await;
    let all = e.list("batch/v1", "Job").await;
    assert_eq!(all.len(), 1);
    let j = &all[0];
    assert_eq!(j["metadata"]["name"], name("tick", "00:05"));
    assert_eq!(
        j["metadata"]["annotations"][SCHEDULED],
        "2025-01-01T00:05:00Z"
    );
    assert_eq!(j["metadata"]["labels"]["cron"], "tick");
    assert_eq!(
        j["metadata"]["ownerReferences"][0]["uid"],
        c["metadata"]["uid"]
    );
    assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let created: Timestamp = j["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        created >= "2025-01-01T00:05:00Z".parse().unwrap(),
        "not early: {created}"
    );
    let s = cj(&e, "tick").await;
    assert_eq!(active(&s), [name("tick", "00:05")]);
    assert_eq!(s["status"]["lastScheduleTime"], "2025-01-01T00:05:00Z");

    until(&e, "00:10:02").await;
    assert_eq!(
        active(&cj(&e, "tick").await),
        [name("tick", "00:05"), name("tick", "00:10")]
    );
    finish(&e, &name("tick", "00:05"), true).await;
    e.settle(1).await;
    let s = cj(&e, "tick").await;
    assert_eq!(active(&s), [name("tick", "00:10")]);
    assert_eq!(s["status"]["lastSuccessfulTime"], "2025-01-01T00:10:02Z");
    let events = e.events().await;
    assert_eq!(
        events.iter().filter(|r| *r == "SuccessfulCreate").count(),
        2,
        "{events:?}"
    );
    assert!(events.contains(&"SawCompletedJob".into()), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn forbid_waits_for_the_running_job() {
    let e = env();
    e.start(&["cronjob"]);
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("one", "*/5 * * * *", json!({"concurrencyPolicy": "Forbid"})),
    )
    .await;
    until(&e, "00:10:05").await;
    assert_eq!(
        jobs(&e).await,
        [name("one", "00:05")],
        "00:10 is skipped while 00:05 runs"
    );
    assert!(e.events().await.contains(&"JobAlreadyActive".into()));
    // Once it finishes, the missed 00:10 run starts at once (no starting deadline).
    until(&e, "00:12:00").await;
    finish(&e, &name("one", "00:05"), true).await;
    e.settle(1).await;
    assert_eq!(jobs(&e).await, [name("one", "00:05"), name("one", "00:10")]);
    assert_eq!(active(&cj(&e, "one").await), [name("one", "00:10")]);
}

#[tokio::test(start_paused = true)]
async fn replace_deletes_the_running_job_first() {
    let e = env();
    e.start(&["cronjob"]);
    e.create(
        "batch/v1",
        "CronJob",
        cronjob(
            "swap",
            "*/5 * * * *",
            json!({"concurrencyPolicy": "Replace"}),
        ),
    )
    .await;
    until(&e, "00:05:02").await;
    assert_eq!(jobs(&e).await, [name("swap", "00:05")]);
    until(&e, "00:10:02").await;
    assert_eq!(jobs(&e).await, [name("swap", "00:10")]);
    assert_eq!(active(&cj(&e, "swap").await), [name("swap", "00:10")]);
    assert!(e.events().await.contains(&"SuccessfulDelete".into()));
}

#[tokio::test(start_paused = true)]
async fn after_downtime_only_the_most_recent_missed_run_starts() {
    let e = env();
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("late", "*/5 * * * *", json!({})),
    )
    .await;
    // The controller-manager was down for 62 minutes: twelve runs were missed.
    e.manual.jump_wall(SignedDuration::from_mins(62));
    e.start(&["cronjob"]);
    e.settle(2).await;
    assert_eq!(jobs(&e).await, [name("late", "01:00")]);
    assert_eq!(
        cj(&e, "late").await["status"]["lastScheduleTime"],
        "2025-01-01T01:00:00Z"
    );
}

#[tokio::test(start_paused = true)]
async fn over_a_hundred_missed_runs_are_reported_and_only_the_most_recent_starts() {
    let e = env();
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("busy", "* * * * *", json!({})),
    )
    .await;
    e.manual.jump_wall(SignedDuration::from_mins(180));
    e.start(&["cronjob"]);
    e.settle(5).await;
    assert!(
        e.events().await.contains(&"TooManyMissedTimes".into()),
        "{:?}",
        e.events().await
    );
    // As Kubernetes since 1.27: one catch-up run, the most recent missed minute (and, if the
    // settle crossed a minute, that minute's own run), never the 180 missed ones.
    let minute = e.clock.now().as_second() / 60;
    let started = jobs(&e).await;
    assert!(!started.is_empty() && started.len() <= 2, "{started:?}");
    assert!(
        started.contains(&format!("busy-{minute}"))
            || started.contains(&format!("busy-{}", minute - 1)),
        "{started:?} at minute {minute}"
    );
}

#[tokio::test(start_paused = true)]
async fn finished_jobs_beyond_the_history_limits_are_deleted() {
    let e = env();
    e.start(&["cronjob"]);
    e.create(
        "batch/v1",
        "CronJob",
        cronjob(
            "keep",
            "* * * * *",
            json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
        ),
    )
    .await;
    // Minutes 1 to 6: odd ones fail, even ones succeed.
    for m in 1..=6 {
        until(&e, &format!("00:{m:02}:05")).await;
        finish(&e, &name("keep", &format!("00:{m:02}")), m % 2 == 0).await;
    }
    e.settle(2).await;
    assert_eq!(
        jobs(&e).await,
        [
            name("keep", "00:04"),
            name("keep", "00:05"),
            name("keep", "00:06")
        ],
        "the two newest successes and the newest failure"
    );
}

#[tokio::test(start_paused = true)]
async fn schedules_follow_the_time_zone_and_suspension_stops_runs() {
    let e = env();
    // 13:58 UTC is 08:58 in New York.
    e.manual.jump_wall(SignedDuration::from_mins(13 * 60 + 58));
    e.start(&["cronjob"]);
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("ny", "0 9 * * *", json!({"timeZone": "America/New_York"})),
    )
    .await;
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("off", "* * * * *", json!({"suspend": true})),
    )
    .await;
    e.create(
        "batch/v1",
        "CronJob",
        cronjob("nowhere", "* * * * *", json!({"timeZone": "Mars/Olympus"})),
    )
    .await;
    until(&e, "14:00:02").await;
    let all = e.list("batch/v1", "Job").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["metadata"]["name"], name("ny", "14:00"));
    assert_eq!(
        all[0]["metadata"]["annotations"][SCHEDULED],
        "2025-01-01T09:00:00-05:00"
    );
    assert!(e.events().await.contains(&"UnknownTimeZone".into()));
    e.patch(
        "batch/v1",
        "CronJob",
        "off",
        json!({"spec": {"suspend": false}}),
        false,
    )
    .await;
    until(&e, "14:01:02").await;
    assert!(jobs(&e).await.contains(&name("off", "14:01")));
}

#[tokio::test(start_paused = true)]
async fn a_job_created_before_a_lost_status_write_is_adopted_not_duplicated() {
    let e = env();
    let c = e
        .create(
            "batch/v1",
            "CronJob",
            cronjob("crash", "*/5 * * * *", json!({})),
        )
        .await;
    // As if an earlier controller created the 00:05 Job and died before writing the status.
    e.manual.jump_wall(SignedDuration::from_secs(5 * 60 + 1));
    let mut early = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name("crash", "00:05"), "namespace": NS,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "crash",
                "uid": c["metadata"]["uid"], "controller": true}]},
        "spec": {"template": {"spec": {"containers": []}}}});
    early = e.create("batch/v1", "Job", early).await;
    e.start(&["cronjob"]);
    e.settle(2).await;
    assert_eq!(jobs(&e).await, [name("crash", "00:05")]);
    let s = cj(&e, "crash").await;
    assert_eq!(active(&s), [name("crash", "00:05")]);
    assert_eq!(s["status"]["active"][0]["uid"], early["metadata"]["uid"]);
    assert_eq!(s["status"]["lastScheduleTime"], "2025-01-01T00:05:00Z");
}

mod common;

/// End to end on the in-process cluster, with the CronJob and Job controllers on a
/// `ManualClock` whose wall time the test moves a minute at a time: each minute's Job runs its
/// pod to completion, is seen completed, and only the newest successful Job is kept, its pods
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_runs_complete_and_history_is_trimmed() {
    use std::sync::Arc;

    use rudder_client::clock::{Clock, ManualClock, RealClock, SharedClock};
    use tokio_util::sync::CancellationToken;

    let c = common::Cluster::without_controllers(1).await;
    let manual = ManualClock::shared(9);
    // Start level with the server's clock, which stamps creation times.
    let lag = RealClock.now().duration_since(manual.now());
    manual.jump_wall(lag);
    let clock: SharedClock = manual.clone();
    let stop = CancellationToken::new();
    let cfg = rudder_controller_manager::Config {
        controllers: vec!["cronjob".into(), "job".into()],
        ..Default::default()
    };
    let run = tokio::spawn(rudder_controller_manager::run(
        Arc::clone(&c.api),
        clock,
        cfg,
        stop.clone(),
    ));
    let _stop = stop.clone().drop_guard();

    let mut body = cronjob(
        "beat",
        "* * * * *",
        json!({"successfulJobsHistoryLimit": 1}),
    );
    body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("tick-succeed");
    c.create("batch/v1", "CronJob", NS, body).await;
    for minute in 1..=3 {
        manual.jump_wall(SignedDuration::from_secs(60));
        // The controller waits on a timer for the next minute: wake it as that timer would.
        c.patch(
            "batch/v1",
            "CronJob",
            NS,
            "beat",
            json!({"metadata": {"annotations": {"poke": minute.to_string()}}}),
        )
        .await;
        c.wait_for(&format!("run {minute} completed"), || async {
            let events = c.list("v1", "Event", NS).await;
            let created = events
                .iter()
                .filter(|e| {
                    e["reason"] == "SuccessfulCreate" && e["involvedObject"]["kind"] == "CronJob"
                })
                .count();
            let cj = c
                .get("batch/v1", "CronJob", NS, "beat")
                .await
                .ok_or("no cronjob")?;
            let idle = cj["status"].get("active").is_none_or(Value::is_null);
            if created >= minute && idle {
                Ok(())
            } else {
                Err(format!("{created} created; {}", cj["status"]))
            }
        })
        .await;
    }
    c.wait_for("one job kept and no pod of a deleted one", || async {
        let jobs = c.list("batch/v1", "Job", NS).await;
        let uids: Vec<&str> = jobs
            .iter()
            .map(|j| j["metadata"]["uid"].as_str().unwrap_or(""))
            .collect();
        let stray = c
            .list("v1", "Pod", NS)
            .await
            .into_iter()
            .filter(|p| {
                !uids.contains(
                    &p["metadata"]["ownerReferences"][0]["uid"]
                        .as_str()
                        .unwrap_or(""),
                )
            })
            .count();
        if jobs.len() == 1 && stray == 0 {
            Ok(())
        } else {
            Err(format!("{} jobs, {stray} stray pods", jobs.len()))
        }
    })
    .await;
    let cj = c.get("batch/v1", "CronJob", NS, "beat").await.unwrap();
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    let events = c.list("v1", "Event", NS).await;
    for reason in ["SawCompletedJob", "SuccessfulDelete"] {
        assert!(events.iter().any(|e| e["reason"] == reason), "no {reason}");
    }
    stop.cancel();
    let _ = run.await;
}
