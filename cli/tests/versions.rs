//! `rudder` with more than one served version per kind, against a real `rudder-apiserver`: an
//! `autoscaling/v1` HPA from the Kubernetes docs applies and reads back as the preferred v2, and
//! a manifest in a removed version is refused as kubectl refuses it.

mod common;

use common::Server;
use serde_json::Value;

/// The Kubernetes documentation's HPA walkthrough manifest.
const HPA_V1: &str = "apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: php-apache
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: php-apache
  minReplicas: 1
  maxReplicas: 10
  targetCPUUtilizationPercentage: 50
";

/// The CronJob of the Kubernetes docs, as written before batch/v1beta1 was removed (1.25).
const CRONJOB_V1BETA1: &str = "apiVersion: batch/v1beta1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: \"* * * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: hello
            image: busybox:1.28
            command: [/bin/sh, -c, date; echo Hello from the Kubernetes cluster]
          restartPolicy: OnFailure
";

#[test]
fn an_autoscaling_v1_hpa_applies_and_reads_back_as_v2() {
    let s = Server::start();
    let f = s.file("hpa.yaml", HPA_V1);
    assert_eq!(
        s.run(&["apply", "-f", &f]).ok(),
        "horizontalpodautoscaler.autoscaling/php-apache created\n"
    );
    assert_eq!(
        s.run(&["apply", "-f", &f]).ok(),
        "horizontalpodautoscaler.autoscaling/php-apache unchanged\n"
    );
    let out = s.run(&["get", "hpa", "php-apache", "-o", "json"]);
    let v: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(v["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    let table = s.run(&["get", "hpa"]);
    assert!(table.ok().contains("php-apache"), "{}", table.stdout);
    let resources = s.run(&["api-resources"]);
    let hpas: Vec<&str> = resources
        .ok()
        .lines()
        .filter(|l| l.starts_with("horizontalpodautoscalers"))
        .collect();
    assert_eq!(hpas.len(), 1, "{}", resources.stdout);
    assert!(hpas[0].contains("autoscaling/v2"), "{}", hpas[0]);
}

#[test]
fn a_removed_version_is_refused_as_kubectl_refuses_it() {
    let s = Server::start();
    let f = s.file("cronjob.yaml", CRONJOB_V1BETA1);
    // kubectl's line; its hint ("ensure CRDs are installed first") is left out, errors being
    // one line.
    assert_eq!(
        s.run(&["apply", "-f", &f]).err_line(),
        format!(
            "error: resource mapping not found for name: \"hello\" namespace: \"\" from \"{f}\": \
             no matches for kind \"CronJob\" in version \"batch/v1beta1\""
        )
    );
    assert_eq!(s.run(&["get", "cronjobs"]).ok(), "");
}
