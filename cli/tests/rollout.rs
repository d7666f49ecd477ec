//! End-to-end tests of the workload commands against a real API server, with no controller:
//! the tests create the replica sets and write the statuses a controller would (replica sets
//! owned by the deployment's uid, revision annotations, `pod-template-hash` labels, statuses
//! through the status subresource), then check `rollout`, `scale` and `set` as kubectl has them.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: {image}
        ports: [{{containerPort: 80}}]
"
    )
}

const DAEMON_SET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox
";

const STATEFUL_SET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  labels: {app: db}
spec:
  replicas: 2
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres
";

fn words(cmd: &str) -> Vec<&str> {
    cmd.split_whitespace().collect()
}

/// Runs a command line (split on spaces) and asserts success with exactly this output.
#[track_caller]
fn ok(s: &Server, cmd: &str, out: &str) {
    assert_eq!(s.run(&words(cmd)).ok(), out, "{cmd}");
}

/// Runs a command line and asserts it fails (exit 1) with exactly this one stderr line.
#[track_caller]
fn fails(s: &Server, cmd: &str, line: &str) {
    assert_eq!(s.run(&words(cmd)).err_line(), line, "{cmd}");
}

/// Runs each `COMMAND => ERROR LINE` line of the table (commands split on spaces) and checks
/// that it fails with exactly that line.
#[track_caller]
fn fails_all(s: &Server, table: &str) {
    for case in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (cmd, err) = case.split_once(" => ").expect("a COMMAND => ERROR line");
        fails(s, cmd, err);
    }
}

/// `get ... -o json` of a command line.
fn json(s: &Server, cmd: &str) -> Value {
    let mut a = words(cmd);
    a.extend(["-o", "json"]);
    let out = s.run(&a);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout))
}

fn apply(s: &Server, file: &str, text: &str) {
    let f = s.file(file, text);
    s.run(&["apply", "-f", &f]).ok();
}

/// Writes a status the way a controller does: through the status subresource.
fn set_status(s: &Server, target: &str, status: &str) {
    let patch = format!("{{\"status\": {status}}}");
    s.run(&["patch", target, "--subresource", "status", "-p", &patch])
        .ok();
}

fn resource_version(s: &Server, target: &str) -> String {
    let o = json(s, &format!("get {target}"));
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A replica set as the deployment controller makes one for `revision`.
fn replica_set(s: &Server, deploy: &str, rs: &str, revision: &str, image: &str, extra: &str) {
    let uid = json(s, &format!("get deploy {deploy}"))["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = format!("h{revision}");
    let text = format!(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {rs}
  labels: {{app: {deploy}, pod-template-hash: {hash}}}
  annotations: {{deployment.kubernetes.io/revision: '{revision}'{extra}}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: Deployment, name: {deploy}, uid: {uid}, controller: true}}
spec:
  replicas: 0
  selector:
    matchLabels: {{app: {deploy}, pod-template-hash: {hash}}}
  template:
    metadata:
      labels: {{app: {deploy}, pod-template-hash: {hash}}}
    spec:
      containers:
      - name: c
        image: {image}
        ports: [{{containerPort: 80}}]
"
    );
    s.run_stdin(&["create", "-f", "-"], &text).ok();
}

/// A ControllerRevision of a daemon set or stateful set, as its controller records one: the
/// object's current pod template with `image` for its first container.
fn revision(s: &Server, kind: &str, name: &str, n: i64, image: &str, cause: &str) {
    let obj = json(s, &format!("get {kind} {name}"));
    let mut tpl = obj["spec"]["template"].clone();
    tpl["spec"]["containers"][0]["image"] = image.into();
    tpl["$patch"] = "replace".into();
    let cr = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{name}-{n}"),
            "labels": obj["spec"]["selector"]["matchLabels"],
            "annotations": {"kubernetes.io/change-cause": cause},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": obj["kind"], "name": name,
                "uid": obj["metadata"]["uid"], "controller": true}]
        },
        "data": {"spec": {"template": tpl}},
        "revision": n
    });
    s.run_stdin(&["create", "-f", "-"], &cr.to_string()).ok();
}

#[test]
fn rollout_status_follows_a_deployment() {
    let s = Server::start();
    apply(&s, "web.yaml", &deployment("web", 3, "nginx:1"));
    let observing = "Waiting for deployment spec update to be observed...\n";
    let waiting = "Waiting for deployment \"web\" rollout to finish: ";
    ok(&s, "rollout status deployment/web --watch=false", observing);
    set_status(
        &s,
        "deploy/web",
        r#"{"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1}"#,
    );
    let updated = format!("{waiting}1 out of 3 new replicas have been updated...\n");
    ok(&s, "rollout status deploy web --watch=false", &updated);
    set_status(&s, "deploy/web", r#"{"replicas": 4, "updatedReplicas": 3}"#);
    let old = format!("{waiting}1 old replicas are pending termination...\n");
    ok(
        &s,
        "rollout status deployments.apps/web --watch=false",
        &old,
    );
    set_status(
        &s,
        "deploy/web",
        r#"{"replicas": 3, "availableReplicas": 2}"#,
    );
    let available = |n| format!("{waiting}{n} of 3 updated replicas are available...\n");
    ok(&s, "rollout status deploy/web --watch=false", &available(2));

    // Watching: one line per change until the rollout is done.
    let mut w = s.spawn(&words("rollout status deploy/web --timeout=30s"));
    assert_eq!(w.read_line(), available(2));
    set_status(&s, "deploy/web", r#"{"availableReplicas": 3}"#);
    let done = w.finish();
    let rolled_out = "deployment \"web\" successfully rolled out\n";
    assert_eq!(done.ok(), rolled_out, "{}", done.stderr);

    // A spec change is not observed until the controller says so.
    let spec = r#"{"spec":{"minReadySeconds":1}}"#;
    s.run(&["patch", "deploy", "web", "-p", spec]).ok();
    ok(&s, "rollout status deploy/web --watch=false", observing);
    set_status(
        &s,
        "deploy/web",
        r#"{"observedGeneration": 2, "availableReplicas": 1}"#,
    );
    let start = Instant::now();
    let o = s.run(&words("rollout status deploy/web --timeout=1s"));
    assert_eq!(o.stdout, available(1));
    assert_eq!(o.err_line(), "error: timed out waiting for the condition");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );

    let stuck = r#"{"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}"#;
    set_status(&s, "deploy/web", stuck);
    let exceeded = "error: deployment \"web\" exceeded its progress deadline";
    fails(&s, "rollout status deploy/web", exceeded);

    s.run(&words(
        "annotate deploy web deployment.kubernetes.io/revision=2",
    ))
    .ok();
    fails_all(
        &s,
        r#"
        rollout status deploy/web --revision=3 => error: desired revision (3) is different from the running revision (2)
        rollout status deploy/web --revision=-1 => error: revision must be a positive integer: -1
        rollout status deploy/nope => Error from server (NotFound): deployments.apps "nope" not found
        rollout status configmap/x => error: no status viewer has been implemented for ConfigMap
        rollout status deploy/web deploy/nope => error: rollout status is only supported on individual resources and resource collections - 2 resources were found
        rollout status => error: required resource not specified
        "#,
    );

    // Deleted while watched: kubectl gives up rather than watch a namesake.
    set_status(&s, "deploy/web", r#"{"conditions": null}"#);
    let mut w = s.spawn(&words("rollout status deploy/web --timeout=30s"));
    assert_eq!(w.read_line(), available(1));
    s.run(&words("delete deploy web")).ok();
    assert_eq!(w.finish().err_line(), "error: object has been deleted");
}

#[test]
fn rollout_status_history_and_undo_of_daemon_sets_and_stateful_sets() {
    let s = Server::start();
    apply(&s, "ds.yaml", DAEMON_SET);
    apply(&s, "sts.yaml", STATEFUL_SET);
    let once = |t: &str, out: &str| ok(&s, &format!("rollout status {t} --watch=false"), out);
    once(
        "ds/agent",
        "Waiting for daemon set spec update to be observed...\n",
    );
    set_status(
        &s,
        "ds/agent",
        r#"{"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1,
            "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 0}"#,
    );
    let waiting = "Waiting for daemon set \"agent\" rollout to finish: ";
    once(
        "daemonset/agent",
        &format!("{waiting}1 out of 2 new pods have been updated...\n"),
    );
    set_status(
        &s,
        "ds/agent",
        r#"{"updatedNumberScheduled": 2, "numberAvailable": 1}"#,
    );
    once(
        "daemonsets.apps/agent",
        &format!("{waiting}1 of 2 updated pods are available...\n"),
    );
    set_status(&s, "ds/agent", r#"{"numberAvailable": 2}"#);
    let rolled_out = "daemon set \"agent\" successfully rolled out\n";
    ok(&s, "rollout status ds/agent", rolled_out);

    once(
        "sts/db",
        "Waiting for statefulset spec update to be observed...\n",
    );
    set_status(
        &s,
        "sts/db",
        r#"{"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 1}"#,
    );
    once("statefulset/db", "Waiting for 1 pods to be ready...\n");
    // The API defaults a rolling update's partition to 0, so kubectl's partitioned messages.
    set_status(&s, "sts/db", r#"{"readyReplicas": 2}"#);
    let partitioned =
        "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...\n";
    once("sts/db", partitioned);
    set_status(&s, "sts/db", r#"{"updatedReplicas": 2}"#);
    let complete = "partitioned roll out complete: 2 new pods have been updated...\n";
    ok(&s, "rollout status sts/db", complete);

    // History and undo from ControllerRevisions, recorded as the controllers record them.
    revision(&s, "ds", "agent", 1, "busybox:old", "first");
    revision(&s, "ds", "agent", 2, "busybox", "");
    revision(&s, "sts", "db", 1, "postgres", "");
    let table =
        "daemonset.apps/agent \nREVISION  CHANGE-CAUSE\n1         first\n2         <none>\n\n";
    ok(&s, "rollout history ds/agent", table);
    let one = s.run(&words("rollout history ds/agent --revision=1"));
    assert!(
        one.ok().contains("    Image:\tbusybox:old\n"),
        "{}",
        one.stdout
    );
    ok(
        &s,
        "rollout history sts/db",
        "statefulset.apps/db \nREVISION\n1\n\n",
    );
    let same =
        "daemonset.apps/agent skipped rollback (current template already matches revision 2)\n";
    ok(&s, "rollout undo ds/agent --to-revision=2", same);
    ok(
        &s,
        "rollout undo ds/agent",
        "daemonset.apps/agent rolled back\n",
    );
    let ds = json(&s, "get ds agent");
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:old"
    );
    fails(
        &s,
        "rollout undo ds/agent --to-revision=5",
        "error: unable to find specified revision 5 in history",
    );
    fails(
        &s,
        "rollout undo sts/db",
        "error: no last revision to roll back to",
    );

    let on_delete = r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#;
    s.run(&["patch", "sts", "db", "-p", on_delete]).ok();
    let only = "error: rollout status is only available for RollingUpdate strategy type";
    fails(&s, "rollout status sts/db", only);
}

#[test]
fn rollout_history_and_undo_from_replica_sets() {
    let s = Server::start();
    apply(&s, "web.yaml", &deployment("web", 2, "nginx:3"));
    let none = "deployment.apps/web \nNo rollout history found.\n";
    ok(&s, "rollout history deploy/web", none);
    let cause = ", kubernetes.io/change-cause: rudder set image nginx:1";
    replica_set(&s, "web", "web-h1", "1", "nginx:1", cause);
    replica_set(&s, "web", "web-h2", "2", "nginx:2", "");
    replica_set(&s, "web", "web-h3", "3", "nginx:3", "");
    // Matching labels but another controller: not this deployment's history.
    apply(&s, "other.yaml", &deployment("other", 1, "nginx:1"));
    let other_uid = json(&s, "get deploy other")["metadata"]["uid"].clone();
    let stray = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: stray\n  labels: {{app: web}}\n  \
         annotations: {{deployment.kubernetes.io/revision: '9'}}\n  ownerReferences:\n  - {{apiVersion: apps/v1, \
         kind: Deployment, name: other, uid: {other_uid}, controller: true}}\nspec:\n  selector:\n    matchLabels: \
         {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: \
         [{{name: c, image: x}}]\n"
    );
    s.run_stdin(&["create", "-f", "-"], &stray).ok();
    s.run(&words(
        "annotate deploy web deployment.kubernetes.io/revision=3 team=a",
    ))
    .ok();

    ok(
        &s,
        "rollout history deployment/web",
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         rudder set image nginx:1\n2         <none>\n\
         3         <none>\n\n",
    );
    ok(
        &s,
        "rollout history deploy web --revision=1",
        "deployment.apps/web with revision #1\nPod Template:\n  Labels:\tapp=web\n\tpod-template-hash=h1\n  \
         Annotations:\tkubernetes.io/change-cause: rudder set image nginx:1\n  Containers:\n   c:\n    Image:\tnginx:1\n    \
         Port:\t80/TCP\n    Host Port:\t0/TCP\n    Environment:\t<none>\n    Mounts:\t<none>\n  Volumes:\t<none>\n  \
         Node-Selectors:\t<none>\n  Tolerations:\t<none>\n\n",
    );
    let missing = "error: unable to find the specified revision";
    fails(&s, "rollout history deploy/web --revision=7", missing);
    let no_viewer = "error: no history viewer has been implemented for \"ConfigMap\"";
    fails(&s, "rollout history cm/web", no_viewer);

    // Refusals change nothing.
    let rv = resource_version(&s, "deploy/web");
    let missing = "error: unable to find specified revision 7 in history";
    fails(&s, "rollout undo deploy/web --to-revision=7", missing);
    let same =
        "deployment.apps/web skipped rollback (current template already matches revision 3)\n";
    ok(&s, "rollout undo deploy/web --to-revision=3", same);
    assert_eq!(resource_version(&s, "deploy/web"), rv);
    s.run(&words("rollout pause deploy/web")).ok();
    let rv = resource_version(&s, "deploy/web");
    let paused = "error: you cannot rollback a paused deployment; resume it first with \
                  'rudder rollout resume deployment/web' and try again";
    fails(&s, "rollout undo deploy/web", paused);
    assert_eq!(resource_version(&s, "deploy/web"), rv);
    s.run(&words("rollout resume deploy/web")).ok();

    // The default is the revision before the current one.
    ok(
        &s,
        "rollout undo deploy/web",
        "deployment.apps/web rolled back\n",
    );
    let d = json(&s, "get deploy web");
    let tpl = &d["spec"]["template"];
    assert_eq!(tpl["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(tpl["metadata"]["labels"], serde_json::json!({"app": "web"}));
    let ann = &d["metadata"]["annotations"];
    // The deployment's bookkeeping stays; its other annotations give way to the replica set's.
    assert_eq!(ann["deployment.kubernetes.io/revision"], "3");
    assert!(ann["kubectl.kubernetes.io/last-applied-configuration"].is_string());
    assert!(ann.get("team").is_none(), "{ann}");

    let back = "deployment.apps/web rolled back\n";
    ok(
        &s,
        "rollout undo deployments.apps/web --to-revision=1",
        back,
    );
    let d = json(&s, "get deploy web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    let ann = &d["metadata"]["annotations"];
    assert_eq!(
        ann["kubernetes.io/change-cause"],
        "rudder set image nginx:1"
    );
    let rv = resource_version(&s, "deploy/web");
    let dry = "deployment.apps/web rolled back (server dry run)\n";
    ok(
        &s,
        "rollout undo deploy/web --to-revision=3 --dry-run=server",
        dry,
    );
    let o = s.run(&words(
        "rollout undo deploy/web --to-revision=3 --dry-run=client",
    ));
    let shown = o.ok();
    assert!(
        shown.starts_with("deployment.apps/web Pod Template:\n"),
        "{shown}"
    );
    assert!(
        shown.ends_with("\n (dry run)\n") && shown.contains("    Image:\tnginx:3\n"),
        "{shown}"
    );
    assert_eq!(resource_version(&s, "deploy/web"), rv);

    // Only one revision: nothing to go back to.
    apply(&s, "solo.yaml", &deployment("solo", 1, "nginx:1"));
    replica_set(&s, "solo", "solo-h1", "1", "nginx:1", "");
    let alone = "error: no rollout history found for deployment \"solo\"";
    fails(&s, "rollout undo deploy/solo", alone);
}

#[test]
fn rollout_pause_resume_and_restart() {
    let s = Server::start();
    apply(&s, "web.yaml", &deployment("web", 1, "nginx:1"));
    apply(&s, "other.yaml", &deployment("other", 1, "nginx:1"));
    apply(&s, "ds.yaml", DAEMON_SET);
    apply(&s, "sts.yaml", STATEFUL_SET);
    let paused = |name: &str| json(&s, &format!("get deploy {name}"))["spec"]["paused"] == true;

    ok(
        &s,
        "rollout pause deployment/web",
        "deployment.apps/web paused\n",
    );
    assert!(paused("web"));
    let already = "error: deployments.apps \"web\" is already paused";
    fails(&s, "rollout pause deploy web", already);
    let no_restart = "error: deployments.apps \"web\" can't restart paused deployment (run rollout resume first)";
    fails(&s, "rollout restart deploy/web", no_restart);
    // Several objects: the others are still done, each failure is reported, exit 1.
    let o = s.run(&words("rollout pause deploy/web deploy/other ds/agent"));
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (1, "deployment.apps/other paused\n")
    );
    assert_eq!(
        o.stderr,
        format!("{already}\nerror: daemonsets.apps \"agent\" pausing is not supported\n")
    );
    assert!(paused("other"));

    ok(
        &s,
        "rollout resume deploy/web",
        "deployment.apps/web resumed\n",
    );
    assert!(!paused("web"));
    let not_paused = "error: deployments.apps \"web\" is not paused";
    fails(&s, "rollout resume deploy/web", not_paused);
    ok(
        &s,
        "rollout resume deploy -l app=other",
        "deployment.apps/other resumed\n",
    );

    let before = jiff::Timestamp::now().as_second();
    ok(
        &s,
        "rollout restart deploy/web ds/agent statefulset/db",
        "deployment.apps/web restarted\ndaemonset.apps/agent restarted\nstatefulset.apps/db restarted\n",
    );
    for target in ["deploy web", "ds agent", "sts db"] {
        let o = json(&s, &format!("get {target}"));
        let ann = &o["spec"]["template"]["metadata"]["annotations"];
        let at = ann["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap_or_default();
        let t: jiff::Timestamp = at
            .parse()
            .unwrap_or_else(|e| panic!("{target}: restartedAt {at:?}: {e}"));
        assert!(
            (before - 1..=before + 60).contains(&t.as_second()),
            "{target}: {at}"
        );
    }
    s.run(&words("create configmap cfg")).ok();
    fails_all(
        &s,
        r#"
        rollout restart rs/nope => Error from server (NotFound): replicasets.apps "nope" not found
        rollout restart cm/cfg => error: configmaps "cfg" restarting is not supported
        rollout pause deploy => error: resource(s) were provided, but no name was specified
        "#,
    );
}

#[test]
fn scale_sets_replicas_with_preconditions() {
    let s = Server::start();
    let f = s.file("web.yaml", &deployment("web", 3, "nginx:1"));
    s.run(&["apply", "-f", &f]).ok();
    apply(&s, "sts.yaml", STATEFUL_SET);
    replica_set(&s, "web", "web-h1", "1", "nginx:1", "");
    let replicas = |target: &str| json(&s, &format!("get {target}"))["spec"]["replicas"].clone();
    let scaled = "deployment.apps/web scaled\n";

    ok(&s, "scale deployment/web --replicas=5", scaled);
    assert_eq!(replicas("deploy web"), 5);
    let rv = resource_version(&s, "deploy/web");
    let wrong_rv = format!("error: Expected resource version to be 1, was {rv}");
    fails(
        &s,
        "scale deploy/web --replicas=2 --resource-version=1",
        &wrong_rv,
    );
    fails_all(
        &s,
        r#"
        scale deploy web --replicas=2 --current-replicas=3 => error: Expected replicas to be 3, was 5
        scale deploy/web --replicas=-1 => error: The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0
        scale deploy/web --replicas=1 --current-replicas=-2 => error: The --current-replicas must specify an integer of -1 or greater
        "#,
    );
    let dry = "deployment.apps/web scaled (server dry run)\n";
    ok(&s, "scale deploy/web --replicas=1 --dry-run=server", dry);
    assert_eq!(resource_version(&s, "deploy/web"), rv);
    assert_eq!(replicas("deploy web"), 5);

    let guarded =
        format!("scale deploy/web --replicas=2 --current-replicas=5 --resource-version={rv}");
    ok(&s, &guarded, scaled);
    assert_eq!(replicas("deploy web"), 2);
    s.run(&["scale", "-f", &f, "--replicas=4"]).ok();
    assert_eq!(replicas("deploy web"), 4);
    let two = "replicaset.apps/web-h1 scaled\nstatefulset.apps/db scaled\n";
    ok(&s, "scale rs/web-h1 sts/db --replicas=3", two);
    assert_eq!(
        (replicas("rs web-h1"), replicas("sts db")),
        (3.into(), 3.into())
    );
    ok(
        &s,
        "scale statefulset -l app=db --replicas=1",
        "statefulset.apps/db scaled\n",
    );
    assert_eq!(replicas("sts db"), 1);

    // One bad object: none is scaled.
    s.run(&words("create configmap cfg")).ok();
    fails_all(
        &s,
        r#"
        scale deploy/web cm/cfg --replicas=1 => error: cannot scale configmaps "cfg": only deployments, replicasets, statefulsets and replicationcontrollers have spec.replicas to scale
        scale deploy/web sts/db --replicas=7 --current-replicas=4 => error: Expected replicas to be 4, was 1
        scale deploy/web deploy/x --replicas=1 --resource-version=1 => error: cannot use --resource-version with multiple resources
        scale deploy/nope --replicas=1 => Error from server (NotFound): deployments.apps "nope" not found
        "#,
    );
    assert_eq!(replicas("deploy web"), 4);
    let o = s.run(&words("scale deploy/web"));
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("--replicas"), "{}", o.stderr);
}

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      initContainers:
      - {name: init, image: busybox}
      containers:
      - {name: c, image: nginx:1, env: [{name: A, value: '0'}]}
      - {name: sidecar, image: busybox}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - {name: job, image: busybox:1}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - {name: c, image: busybox:1}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data: {db.host: db, port: '5432'}
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData: {token: t, user: u}
";

#[test]
fn set_image_env_and_resources() {
    let s = Server::start();
    apply(&s, "app.yaml", APP);
    let container = |name: &str| -> Value {
        let d = json(&s, "get deploy app");
        let spec = &d["spec"]["template"]["spec"];
        let all = spec["containers"].as_array().into_iter().flatten();
        all.chain(spec["initContainers"].as_array().into_iter().flatten())
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let rv = || resource_version(&s, "deploy/app");
    let image_updated = "deployment.apps/app image updated\n";

    // set image
    ok(&s, "set image deployment/app c=nginx:2", image_updated);
    assert_eq!(container("c")["image"], "nginx:2");
    assert_eq!(container("sidecar")["image"], "busybox");
    ok(&s, "set image deploy/app c=nginx:2", "");
    ok(
        &s,
        "set image deploy app init=busybox:2 sidecar=busybox:2",
        image_updated,
    );
    assert_eq!(container("init")["image"], "busybox:2");
    assert_eq!(container("sidecar")["image"], "busybox:2");
    ok(
        &s,
        "set image cronjob/nightly *=busybox:3",
        "cronjob.batch/nightly image updated\n",
    );
    let cj = json(&s, "get cj nightly");
    let job = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(job["containers"][0]["image"], "busybox:3");
    ok(&s, "set image pod/p c=busybox:2", "pod/p image updated\n");
    let dry = "deployment.apps/app image updated (dry run)\n";
    ok(&s, "set image deploy/app *=x:1 --dry-run=client", dry);
    let before = rv();
    fails_all(
        &s,
        r#"
        set image deploy/app c=nginx:3 nope=x => error: unable to find container named "nope"
        set image deploy/app c= => error: invalid image update "c=": the image for container "c" must not be empty
        set image deploy/app => error: at least one image update is required
        set image deploy/app *=a c=b => error: all containers are already specified by *, but saw more than one container_name=container_image pairs
        set image cm/cfg c=x => error: configmap/cfg is not a pod and has no pod template
        set image c=x => error: one or more resources must be specified as <resource> <name> or <resource>/<name>
        "#,
    );
    assert_eq!(rv(), before, "a refused change wrote the deployment");

    // set env
    let env_updated = "deployment.apps/app env updated\n";
    ok(&s, "set env deploy/app -c c A=1 B=2", env_updated);
    ok(&s, "set env deploy/app -c c B- C=3 -e D=4", env_updated);
    ok(
        &s,
        "set env deploy/app -c c --from=configmap/cfg --prefix=CFG_",
        env_updated,
    );
    ok(
        &s,
        "set env deploy/app -c c --from=secret/creds --keys=token",
        env_updated,
    );
    // As kubectl: `-e` variables come before the positional ones.
    assert_eq!(
        container("c")["env"],
        serde_json::json!([
            {"name": "A", "value": "1"},
            {"name": "D", "value": "4"},
            {"name": "C", "value": "3"},
            {"name": "CFG_DB_HOST", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "db.host"}}},
            {"name": "CFG_PORT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "port"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
        ])
    );
    assert!(container("sidecar").get("env").is_none());
    let before = rv();
    ok(
        &s,
        "set env deploy/app -c c --list A- E=5",
        "# Deployment app, container c\nD=4\nC=3\n# CFG_DB_HOST from configmap cfg, key db.host\n\
         # CFG_PORT from configmap cfg, key port\n# TOKEN from secret creds, key token\nE=5\n",
    );
    let sidecar = "# Deployment app, container sidecar\n";
    ok(&s, "set env deploy/app -c s* --list", sidecar);
    fails_all(
        &s,
        r#"
        set env deploy/app 1X=1 => error: "1X" is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name', or 'MY_ENV.NAME', or 'MyEnv1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')
        set env deploy/app -c c A=9 --overwrite=false => error: 'A' already has a value (1), and --overwrite is false
        set env deploy/app -c nope A=1 => error: deployment.apps/app does not have any containers matching "nope"
        set env deploy/app => error: at least one environment variable must be provided
        set env deploy/app A=1 A- => error: can not both modify and remove the same environment variable in the same command
        set env deploy/app A=1 deploy/other => error: all resources must be specified before environment changes: deploy/app A=1 deploy/other
        set env deploy/app --from=deploy/app => error: unsupported resource specified in --from
        set env deploy/app --keys=a => error: when specifying --keys, a configmap or secret must be provided with --from
        "#,
    );
    assert_eq!(
        rv(),
        before,
        "a refused or listed change wrote the deployment"
    );

    // set resources
    ok(
        &s,
        "set resources deploy/app -c c --limits=cpu=0.5,memory=512Mi --requests=cpu=100m",
        "deployment.apps/app resource requirements updated\n",
    );
    let r = &container("c")["resources"];
    assert_eq!(
        r["limits"],
        serde_json::json!({"cpu": "500m", "memory": "512Mi"})
    );
    assert_eq!(r["requests"]["cpu"], "100m");
    assert!(container("sidecar")["resources"].get("limits").is_none());
    let before = rv();
    fails_all(
        &s,
        r#"
        set resources deploy/app -c c --limits=cpu=500m => info: deployments.apps/app was not changed
        set resources deploy/app -c c --requests=cpu=1 => error: container "c" of deployment.apps/app: requests.cpu (1) must be less than or equal to limits.cpu (500m)
        set resources deploy/app --limits=cpu=lots => error: invalid --limits value for cpu: quantity "lots" is invalid: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'
        set resources deploy/app --requests=cpu => error: invalid --requests "cpu": expected <resource>=<value>
        set resources deploy/app => error: you must specify an update to requests or limits (in the form of --requests/--limits)
        set resources deploy/app -c nope --limits=cpu=1 => error: unable to find container named nope
        "#,
    );
    assert_eq!(rv(), before, "a refused change wrote the deployment");
    let dry = "deployment.apps/app resource requirements updated (server dry run)\n";
    ok(
        &s,
        "set resources deploy/app --requests=memory=64Mi --dry-run=server",
        dry,
    );
    assert_eq!(rv(), before);
}
