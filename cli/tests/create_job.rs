//! `rudder create job` against a real `rudder-apiserver`, as kubectl's: from a cron job's
//! template (`--from=cronjob/NAME`: annotation `cronjob.kubernetes.io/instantiate: manual`, the
//! template's labels and spec, a controller reference to the cron job) or from an image and
//! command, with `-o` and `--dry-run` as the other create subcommands, and one-line errors.

mod common;

use common::Server;
use serde_json::{Value, json};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

const CRONJOB: &str = "apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: \"0 3 * * *\"
  jobTemplate:
    metadata:
      labels: {team: data}
      annotations: {owner: alice}
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: busybox
            command: [sh, -c, echo report]
";

#[test]
fn a_job_from_a_cronjob_and_from_an_image() {
    let s = Server::start();
    let f = s.file("cronjob.yaml", CRONJOB);
    s.run(&["create", "-f", &f]).ok();
    let cj = json(s.run(&["get", "cronjob", "nightly", "-o", "json"]).ok());

    assert_eq!(
        s.run(&["create", "job", "by-hand", "--from=cronjob/nightly"])
            .ok(),
        "job.batch/by-hand created\n"
    );
    let j = json(s.run(&["get", "job", "by-hand", "-o", "json"]).ok());
    let meta = &j["metadata"];
    assert_eq!(
        meta["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        meta["annotations"]["owner"], "alice",
        "the template's annotations too"
    );
    assert_eq!(meta["labels"]["team"], "data");
    let owner = &meta["ownerReferences"][0];
    assert_eq!(
        (
            owner["apiVersion"].as_str(),
            owner["kind"].as_str(),
            owner["name"].as_str()
        ),
        (Some("batch/v1"), Some("CronJob"), Some("nightly"))
    );
    assert_eq!(owner["uid"], cj["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert!(
        owner.get("blockOwnerDeletion").is_none(),
        "as kubectl: {owner}"
    );
    assert_eq!(j["spec"]["backoffLimit"], 2);
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["image"].as_str()),
        (Some("report"), Some("busybox"))
    );

    // The qualified type, -o name, and a client dry run that creates nothing.
    assert_eq!(
        s.run(&[
            "create",
            "job",
            "again",
            "--from=cronjob.batch/nightly",
            "-o",
            "name"
        ])
        .ok(),
        "job.batch/again\n"
    );
    let dry = json(
        s.run(&[
            "create",
            "job",
            "dry",
            "--from=cj/nightly",
            "--dry-run=client",
            "-o",
            "json",
        ])
        .ok(),
    );
    assert_eq!(
        dry["metadata"]["ownerReferences"][0]["uid"],
        cj["metadata"]["uid"]
    );
    let names = s.run(&["get", "jobs", "-o", "name"]).ok().to_string();
    assert_eq!(names, "job.batch/again\njob.batch/by-hand\n");

    // From an image: one container named after the job, the command after `--`, run once.
    assert_eq!(
        s.run(&[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi"
        ])
        .ok(),
        "job.batch/once created\n"
    );
    let j = json(s.run(&["get", "job", "once", "-o", "json"]).ok());
    let spec = &j["spec"]["template"]["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    let c = &spec["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["image"].as_str(), &c["command"]),
        (Some("once"), Some("busybox"), &json!(["echo", "hi"]))
    );
}

#[test]
fn create_job_errors() {
    let s = Server::start();
    let f = s.file("cronjob.yaml", CRONJOB);
    s.run(&["create", "-f", &f]).ok();
    for case in [
        "create job j => error: either --image or --from must be specified",
        "create job j --image=busybox --from=cronjob/nightly => error: either --image or --from must be specified",
        "create job j --from=cronjob/nightly -- echo => error: cannot specify --from and command",
        "create job j --from=deployment/x => error: --from must name a cronjob, not a deployment",
        "create job j --from=nightly => error: --from must be cronjob/NAME, not \"nightly\"",
        "create job j --from=cronjob/nope => Error from server (NotFound): cronjobs.batch \"nope\" not found",
    ] {
        let (cmd, want) = case.split_once(" => ").unwrap();
        let args: Vec<&str> = cmd.split(' ').collect();
        assert_eq!(s.run(&args).err_line(), want, "{cmd}");
    }
    assert_eq!(
        s.run(&["get", "jobs", "-o", "name"]).ok(),
        "",
        "nothing was created"
    );
}
