//! What the server fills in: Kubernetes' defaults, Service cluster IPs and node ports, Secret
//! `stringData`, and validation errors that name the field.

mod common;

use common::*;
use rudder_client::ClientError;
use rudder_client::proto as pb;
use serde_json::json;

fn deployment(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}
        }
    })
}

#[tokio::test]
async fn defaults_are_filled_as_kubernetes_fills_them() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let d = json(&create(c, "apps/v1", "Deployment", "default", deployment("web")).await);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["containers"][0]["imagePullPolicy"], "Always",
        "no tag means :latest"
    );
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");

    let mut p = pod_body("tagged");
    p["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    let p = json(&create(c, "v1", "Pod", "default", p).await);
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
}

fn pod_body(name: &str) -> serde_json::Value {
    pod(name, json!({}))
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let svc = |name: &str, spec: serde_json::Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let a = json(
        &create(
            c,
            "v1",
            "Service",
            "default",
            svc(
                "a",
                json!({"selector": {"app": "a"}, "ports": [{"port": 80}]}),
            ),
        )
        .await,
    );
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10."), "{ip}");
    assert_eq!(a["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(a["spec"]["type"], "ClusterIP");

    // Asking for an address someone holds is refused, naming the field.
    let e = c
        .create(create_req(
            "v1",
            "Service",
            "default",
            svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");
    assert!(
        e.to_string().contains("provided IP is already allocated"),
        "{e}"
    );
    let e = c
        .create(create_req(
            "v1",
            "Service",
            "default",
            svc(
                "b",
                json!({"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}),
            ),
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not in the valid range"), "{e}");

    // Headless keeps None; NodePort gets a port in range.
    let h = json(
        &create(
            c,
            "v1",
            "Service",
            "default",
            svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        )
        .await,
    );
    assert_eq!(h["spec"]["clusterIP"], "None");
    let n = json(
        &create(
            c,
            "v1",
            "Service",
            "default",
            svc("n", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await,
    );
    let np = n["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np), "{np}");

    // An update that leaves the IP out keeps it; deleting frees it for others.
    let mut upd = a.clone();
    upd["spec"].as_object_mut().unwrap().remove("clusterIP");
    upd["spec"].as_object_mut().unwrap().remove("clusterIPs");
    upd["spec"]["ports"][0]["port"] = json!(81);
    let u = json(
        &c.update(update_req("v1", "Service", "default", &upd))
            .await
            .unwrap(),
    );
    assert_eq!(u["spec"]["clusterIP"], ip.as_str());
    c.delete(delete_req("v1", "Service", "default", "a"))
        .await
        .unwrap();
    let b = json(
        &create(
            c,
            "v1",
            "Service",
            "default",
            svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await,
    );
    assert_eq!(b["spec"]["clusterIP"], ip.as_str());

    // Many concurrent creates never share an address.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
            json(&create(&c, "v1", "Service", "default", body).await)["spec"]["clusterIP"].as_str().unwrap().to_string()
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        assert!(ips.insert(t.await.unwrap()), "duplicate cluster IP");
    }
}

#[tokio::test]
async fn secret_string_data_is_stored_encoded() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"user": "YWRtaW4="}, "stringData": {"password": "s3cret"}});
    let v = json(&create(c, "v1", "Secret", "default", body).await);
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["data"]["password"], "czNjcmV0");
    assert_eq!(v["data"]["user"], "YWRtaW4=");
    assert!(v.get("stringData").is_none());
}

#[tokio::test]
async fn validation_errors_name_the_field_path() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let mut d = deployment("bad");
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Sometimes");
    let e = c
        .create(create_req("apps/v1", "Deployment", "default", d))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Invalid(_)), "{e:?}");
    assert!(
        e.to_string().contains(
            "spec.template.spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\""
        ),
        "{e}"
    );

    let mut d = deployment("mismatch");
    d["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let e = c
        .create(create_req("apps/v1", "Deployment", "default", d))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("spec.template.metadata.labels"),
        "{e}"
    );

    // Immutable selector on update.
    let live = json(&create(c, "apps/v1", "Deployment", "default", deployment("imm")).await);
    let mut upd = live.clone();
    upd["spec"]["selector"]["matchLabels"]["extra"] = json!("x");
    upd["spec"]["template"]["metadata"]["labels"]["extra"] = json!("x");
    let e = c
        .update(update_req("apps/v1", "Deployment", "default", &upd))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.selector"), "{e}");
    assert!(e.to_string().contains("immutable"), "{e}");

    // Nothing stored was lost: the live object is unchanged.
    let got = json(
        &c.get(get_req("apps/v1", "Deployment", "default", "imm"))
            .await
            .unwrap(),
    );
    assert_eq!(
        got["metadata"]["resourceVersion"],
        live["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn a_job_gets_a_selector_on_its_uid_unless_it_brings_one() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let job = |name: &str, extra: serde_json::Value| {
        let mut j = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}},
        });
        if let (Some(s), Some(e)) = (j["spec"].as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        j
    };
    let j = json(&create(c, "batch/v1", "Job", "default", job("gen", json!({}))).await);
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &j["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "gen");
    assert_eq!(labels["controller-uid"], uid);
    let manual = job(
        "manual",
        json!({"manualSelector": true, "selector": {"matchLabels": {"app": "m"}},
            "template": {"metadata": {"labels": {"app": "m"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    let m = json(&create(c, "batch/v1", "Job", "default", manual).await);
    assert_eq!(m["spec"]["selector"], json!({"matchLabels": {"app": "m"}}));
    assert!(
        m["spec"]["template"]["metadata"]["labels"]
            .get("job-name")
            .is_none()
    );
}

#[tokio::test]
async fn a_daemon_set_keeps_its_template_generation_annotation() {
    const KEY: &str = "deprecated.daemonset.template.generation";
    let s = TestServer::start(&[]);
    let c = &s.client;
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let d = json(&create(c, "apps/v1", "DaemonSet", "default", ds).await);
    assert_eq!(d["metadata"]["annotations"][KEY], "1");
    let patch = |p: serde_json::Value| pb::PatchRequest {
        kind: kref("apps/v1", "DaemonSet"),
        namespace: "default".into(),
        name: "agent".into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: bytes::Bytes::from(p.to_string()),
        status: false,
        options: None,
    };
    // A spec change outside the template moves the generation, not the annotation.
    let d = json(
        &c.patch(patch(json!({"spec": {"minReadySeconds": 5}})))
            .await
            .expect("patch"),
    );
    assert_eq!(
        (
            d["metadata"]["generation"].as_i64(),
            d["metadata"]["annotations"][KEY].as_str()
        ),
        (Some(2), Some("1"))
    );
    let img = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}});
    let d = json(&c.patch(patch(img)).await.expect("patch"));
    assert_eq!(
        (
            d["metadata"]["generation"].as_i64(),
            d["metadata"]["annotations"][KEY].as_str()
        ),
        (Some(3), Some("3"))
    );
}

/// `--service-cluster-ip-range`: allocations come from it and never take its first or last
/// usable address (the `kubernetes` Service's and the node bridge's); a requested address
/// outside it is refused naming the range; a malformed range stops the server with the reason.
#[tokio::test]
async fn the_service_range_is_the_configured_one() {
    let s = TestServer::start(&["--service-cluster-ip-range", "10.200.7.0/28"]);
    let c = &s.client;
    let svc = |name: &str, spec: serde_json::Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let mut seen = std::collections::BTreeSet::new();
    // A /28 has 16 addresses; 12 are allocatable.
    for i in 0..12 {
        let o = json(
            &create(
                c,
                "v1",
                "Service",
                "default",
                svc(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await,
        );
        let ip: std::net::Ipv4Addr = o["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        let last = ip.octets()[3];
        assert!((2..=13).contains(&last), "{ip} is allocatable");
        seen.insert(ip);
    }
    assert_eq!(seen.len(), 12);
    let full = c
        .create(create_req(
            "v1",
            "Service",
            "default",
            svc("s12", json!({"ports": [{"port": 80}]})),
        ))
        .await
        .expect_err("the range is full");
    assert!(
        full.to_string().contains("10.200.7.0/28 looks full"),
        "{full}"
    );
    let outside = c
        .create(create_req(
            "v1",
            "Service",
            "default",
            svc(
                "x",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            ),
        ))
        .await
        .expect_err("outside the range");
    assert!(
        outside
            .to_string()
            .contains("The range of valid IPs is 10.200.7.0/28"),
        "{outside}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_rudder-apiserver"))
        .arg("--insecure-allow-all")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--service-cluster-ip-range",
            "10.96.0.1/16",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--service-cluster-ip-range") && err.contains("host bits are set"),
        "{err}"
    );
}
