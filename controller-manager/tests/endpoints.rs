//! The EndpointSlice and Endpoints controllers on the in-process cluster (real API server,
//! scheduler, simulated nodes, every controller): endpoints follow readiness and termination,
//! a named targetPort resolves per pod, many pods are cut into slices and updated in place,
//! headless Services publish hostnames, publishNotReadyAddresses, nodes' zones, selector-less
//! Services are left alone, and deleting a Service takes its slices and Endpoints. Waits poll up
//! to 30 s.

mod common;

use common::Cluster;
use common::deploy::NS;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Value, json};

const SLICES: (&str, &str) = ("discovery.k8s.io/v1", "EndpointSlice");

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "blue"}}, "spec": spec})
}

fn pod(name: &str, app: &str, image: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": image,
        "ports": [{"name": "http", "containerPort": 8080}]}]});
    if let (Value::Object(s), Value::Object(x)) = (&mut spec, extra_spec) {
        s.extend(x);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}}, "spec": spec})
}

/// Selects `app=<app>` with port 80 to the pods' port named `http`.
fn named_port_spec(app: &str) -> Value {
    json!({"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]})
}

async fn create_service(c: &Cluster, name: &str, spec: Value) {
    c.create("v1", "Service", NS, service(name, spec)).await;
}

async fn create_pod(c: &Cluster, name: &str, app: &str, image: &str, extra_spec: Value) {
    c.create("v1", "Pod", NS, pod(name, app, image, extra_spec))
        .await;
}

async fn delete(c: &Cluster, api_version: &str, kind: &str, name: &str) {
    let req = pb::DeleteRequest {
        kind: Some(kind_ref(api_version, kind)),
        namespace: NS.into(),
        name: name.into(),
        ..Default::default()
    };
    c.api.delete(req).await.expect("delete");
}

/// The slices labelled for Service `svc`.
async fn slices_of(c: &Cluster, svc: &str) -> Vec<Value> {
    c.list(SLICES.0, SLICES.1, NS)
        .await
        .into_iter()
        .filter(|s| s.pointer("/metadata/labels/kubernetes.io~1service-name") == Some(&json!(svc)))
        .collect()
}

/// Every endpoint of `svc`'s slices: target pod name → endpoint.
async fn endpoints_by_pod(c: &Cluster, svc: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = slices_of(c, svc)
        .await
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["targetRef"]["name"].as_str().unwrap_or("").to_string(), e))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn conditions(e: &Value) -> (bool, bool, bool) {
    let b = |k: &str| e["conditions"][k].as_bool().unwrap_or(false);
    (b("ready"), b("serving"), b("terminating"))
}

/// Waits until `svc`'s slices show exactly these pods with these (ready, serving, terminating).
async fn wait_slice_state(c: &Cluster, svc: &str, want: &[(&str, (bool, bool, bool))]) {
    c.wait_for(&format!("slices of {svc}: {want:?}"), || async {
        let got: Vec<(String, (bool, bool, bool))> = endpoints_by_pod(c, svc)
            .await
            .iter()
            .map(|(n, e)| (n.clone(), conditions(e)))
            .collect();
        let want: Vec<(String, (bool, bool, bool))> =
            want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

/// The Endpoints of `svc` as (ready pod names, not-ready pod names), all subsets together.
async fn endpoints_object(c: &Cluster, svc: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ep = c.get("v1", "Endpoints", NS, svc).await?;
    let names = |field: &str| {
        let mut v: Vec<String> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .map(|a| a["targetRef"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Some((names("addresses"), names("notReadyAddresses")))
}

async fn wait_endpoints(c: &Cluster, svc: &str, ready: &[&str], not_ready: &[&str]) {
    let want = (
        ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    c.wait_for(&format!("Endpoints {svc}: {want:?}"), || async {
        match endpoints_object(c, svc).await {
            Some(got) if got == want => Ok(()),
            got => Err(format!("{got:?}")),
        }
    })
    .await;
}

async fn wait_running(c: &Cluster, names: &[&str]) {
    c.wait_for(&format!("pods {names:?} running"), || async {
        for n in names {
            let p = c.get("v1", "Pod", NS, n).await;
            if p.as_ref()
                .and_then(|p| p.pointer("/status/podIP"))
                .is_none()
            {
                return Err(format!("{n} has no IP yet"));
            }
        }
        Ok(())
    })
    .await;
}

const READY: (bool, bool, bool) = (true, true, false);
const NOT_READY: (bool, bool, bool) = (false, false, false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_readiness_termination_and_zones() {
    let c = Cluster::start(2).await;
    create_service(&c, "web", named_port_spec("web")).await;
    for n in ["web-a", "web-b", "web-c"] {
        create_pod(&c, n, "web", "app:1", json!({})).await;
    }
    wait_slice_state(
        &c,
        "web",
        &[("web-a", READY), ("web-b", READY), ("web-c", READY)],
    )
    .await;
    wait_endpoints(&c, "web", &["web-a", "web-b", "web-c"], &[]).await;

    let slices = slices_of(&c, "web").await;
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(
        s["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(s["metadata"]["generateName"], "web-");
    assert_eq!(
        s["metadata"]["labels"]["team"], "blue",
        "the Service's labels are copied"
    );
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    let owner = &s["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&json!("Service"), &json!("web"))
    );
    assert_eq!(
        (&owner["controller"], &owner["blockOwnerDeletion"]),
        (&json!(true), &json!(true))
    );
    let slice_name = s["metadata"]["name"].clone();
    let ep = endpoints_by_pod(&c, "web").await;
    let a = &ep[0].1;
    let pod_a = c.get("v1", "Pod", NS, "web-a").await.expect("pod");
    assert_eq!(a["addresses"], json!([pod_a["status"]["podIP"]]));
    assert_eq!(a["nodeName"], pod_a["spec"]["nodeName"]);
    assert_eq!(a["targetRef"]["uid"], pod_a["metadata"]["uid"]);
    assert!(a.get("zone").is_none(), "nodes without a zone label");
    let ep_obj = c
        .get("v1", "Endpoints", NS, "web")
        .await
        .expect("Endpoints");
    assert_eq!(
        ep_obj["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    assert_eq!(
        ep_obj["subsets"][0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );

    // A pod turning not ready, then ready again.
    c.sim.set_ready(NS, "web-b", false).await.expect("unready");
    wait_slice_state(
        &c,
        "web",
        &[("web-a", READY), ("web-b", NOT_READY), ("web-c", READY)],
    )
    .await;
    wait_endpoints(&c, "web", &["web-a", "web-c"], &["web-b"]).await;
    c.sim.set_ready(NS, "web-b", true).await.expect("ready");
    wait_slice_state(
        &c,
        "web",
        &[("web-a", READY), ("web-b", READY), ("web-c", READY)],
    )
    .await;
    wait_endpoints(&c, "web", &["web-a", "web-b", "web-c"], &[]).await;

    // A node gaining a zone: its pods' endpoints carry it.
    let node_a = pod_a["spec"]["nodeName"]
        .as_str()
        .expect("bound")
        .to_string();
    c.patch(
        "v1",
        "Node",
        "",
        &node_a,
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "zone-1"}}}),
    )
    .await;
    c.wait_for("zone on web-a's endpoint", || async {
        let ep = endpoints_by_pod(&c, "web").await;
        match ep.iter().find(|(n, _)| n == "web-a") {
            Some((_, e)) if e["zone"] == "zone-1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Deleting a pod that a finalizer holds: terminating (still serving) until it goes.
    c.patch(
        "v1",
        "Pod",
        NS,
        "web-c",
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    )
    .await;
    delete(&c, "v1", "Pod", "web-c").await;
    wait_slice_state(
        &c,
        "web",
        &[
            ("web-a", READY),
            ("web-b", READY),
            ("web-c", (false, true, true)),
        ],
    )
    .await;
    // The Endpoints object drops terminating pods.
    wait_endpoints(&c, "web", &["web-a", "web-b"], &[]).await;
    c.patch(
        "v1",
        "Pod",
        NS,
        "web-c",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    wait_slice_state(&c, "web", &[("web-a", READY), ("web-b", READY)]).await;
    let slices = slices_of(&c, "web").await;
    assert_eq!(slices.len(), 1);
    assert_eq!(
        slices[0]["metadata"]["name"], slice_name,
        "updated in place all along"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_target_port_resolves_per_pod() {
    let c = Cluster::start(2).await;
    create_service(&c, "api", named_port_spec("api")).await;
    create_pod(&c, "api-a", "api", "app:1", json!({})).await;
    create_pod(&c, "api-b", "api", "app:1", json!({})).await;
    let mut other = pod("api-c", "api", "app:1", json!({}));
    other["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9090);
    c.create("v1", "Pod", NS, other).await;
    // A pod without the named port serves none of the Service's ports.
    let mut none = pod("api-d", "api", "app:1", json!({}));
    none["spec"]["containers"][0]["ports"] = json!([]);
    c.create("v1", "Pod", NS, none).await;
    c.wait_for("one slice per port number", || async {
        let mut got: Vec<(Value, Vec<String>)> = slices_of(&c, "api")
            .await
            .iter()
            .map(|s| {
                let mut names: Vec<String> = s["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["targetRef"]["name"].as_str().unwrap_or("").to_string())
                    .collect();
                names.sort();
                (
                    s["ports"]
                        .pointer("/0/port")
                        .cloned()
                        .unwrap_or(Value::Null),
                    names,
                )
            })
            .collect();
        got.sort_by_key(|(p, _)| p.to_string());
        let want = vec![
            (json!(8080), vec!["api-a".to_string(), "api-b".to_string()]),
            (json!(9090), vec!["api-c".to_string()]),
            (Value::Null, vec!["api-d".to_string()]),
        ];
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    c.wait_for("Endpoints subsets per port", || async {
        let ep = c
            .get("v1", "Endpoints", NS, "api")
            .await
            .ok_or("no Endpoints")?;
        let mut got: Vec<(Value, usize)> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["ports"][0]["port"].clone(),
                    s["addresses"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        got.sort_by_key(|(p, _)| p.to_string());
        if got == vec![(json!(8080), 2), (json!(9090), 1)] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pods_are_cut_into_slices_and_updated_in_place() {
    let c = Cluster::start(2).await;
    create_service(
        &c,
        "big",
        json!({"selector": {"app": "big"}, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    let names: Vec<String> = (0..150).map(|i| format!("big-{i:03}")).collect();
    for chunk in names.chunks(25) {
        futures::future::join_all(
            chunk
                .iter()
                .map(|n| create_pod(&c, n, "big", "app:1", json!({}))),
        )
        .await;
    }
    let sizes = |slices: &[Value]| {
        let mut s: Vec<usize> = slices
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .collect();
        s.sort();
        s
    };
    c.wait_for("150 ready endpoints in slices of at most 100", || async {
        let slices = slices_of(&c, "big").await;
        let ready = endpoints_by_pod(&c, "big")
            .await
            .iter()
            .filter(|(_, e)| conditions(e) == READY)
            .count();
        if ready == 150 && sizes(&slices) == vec![50, 100] {
            Ok(())
        } else {
            Err(format!("{ready} ready, sizes {:?}", sizes(&slices)))
        }
    })
    .await;
    let before: Vec<Value> = slices_of(&c, "big")
        .await
        .iter()
        .map(|s| s["metadata"]["name"].clone())
        .collect();
    let all = endpoints_by_pod(&c, "big").await;
    let mut unique: Vec<&String> = all.iter().map(|(n, _)| n).collect();
    unique.dedup();
    assert_eq!(unique.len(), 150, "each pod once");
    // Ten pods go: the slices shrink in place; none is made or deleted.
    for n in names.iter().take(10) {
        delete(&c, "v1", "Pod", n).await;
    }
    c.wait_for("140 endpoints", || async {
        let n = endpoints_by_pod(&c, "big").await.len();
        if n == 140 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    let mut after: Vec<Value> = slices_of(&c, "big")
        .await
        .iter()
        .map(|s| s["metadata"]["name"].clone())
        .collect();
    let mut b = before.clone();
    b.sort_by_key(Value::to_string);
    after.sort_by_key(Value::to_string);
    assert_eq!(after, b, "the same slices, updated in place");
    // The Endpoints object holds them all (under its capacity of 1000).
    let ready: Vec<&str> = names.iter().skip(10).map(String::as_str).collect();
    wait_endpoints(&c, "big", &ready, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_services_publish_hostnames_and_not_ready_addresses() {
    let c = Cluster::start(2).await;
    create_service(
        &c,
        "db",
        json!({"clusterIP": "None", "selector": {"app": "db"},
            "publishNotReadyAddresses": true, "ports": [{"port": 5432, "targetPort": 8080}]}),
    )
    .await;
    create_pod(
        &c,
        "db-0",
        "db",
        "db:1",
        json!({"hostname": "db-0", "subdomain": "db"}),
    )
    .await;
    // Never ready, yet published; and under another subdomain: no hostname.
    create_pod(
        &c,
        "db-1",
        "db",
        "db-notready",
        json!({"hostname": "db-1", "subdomain": "elsewhere"}),
    )
    .await;
    wait_running(&c, &["db-0", "db-1"]).await;
    wait_slice_state(&c, "db", &[("db-0", READY), ("db-1", (true, false, false))]).await;
    let ep = endpoints_by_pod(&c, "db").await;
    assert_eq!(ep[0].1["hostname"], "db-0");
    assert!(ep[1].1.get("hostname").is_none(), "{:?}", ep[1].1);
    let slices = slices_of(&c, "db").await;
    assert_eq!(
        slices[0]["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    // The Endpoints object lists both as ready addresses, db-0 with its hostname.
    wait_endpoints(&c, "db", &["db-0", "db-1"], &[]).await;
    let obj = c.get("v1", "Endpoints", NS, "db").await.expect("Endpoints");
    let addrs = obj["subsets"][0]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let db0 = addrs
        .iter()
        .find(|a| a["targetRef"]["name"] == "db-0")
        .expect("db-0");
    assert_eq!(db0["hostname"], "db-0");
    assert_eq!(
        obj["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectorless_services_are_left_alone_and_deleted_services_take_their_endpoints() {
    let c = Cluster::start(1).await;
    // A Service without a selector, with endpoints written by hand.
    create_service(&c, "ext", json!({"ports": [{"port": 443}]})).await;
    let by_hand = c
        .create(
            SLICES.0,
            SLICES.1,
            NS,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "ext-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "ext"}},
                "addressType": "IPv4", "ports": [{"name": "", "port": 443, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["192.0.2.10"]}]}),
        )
        .await;
    let ep_by_hand = c
        .create(
            "v1",
            "Endpoints",
            NS,
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext", "namespace": NS},
                "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 443}]}]}),
        )
        .await;
    // A Service with a selector and no pods: one empty placeholder slice, empty Endpoints.
    create_service(
        &c,
        "lonely",
        json!({"selector": {"app": "nobody"}, "ports": [{"port": 80}]}),
    )
    .await;
    c.wait_for("the placeholder slice", || async {
        let s = slices_of(&c, "lonely").await;
        match s.as_slice() {
            [one] if one["endpoints"] == json!([]) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_endpoints(&c, "lonely", &[], &[]).await;
    // By now the controllers have long seen "ext": its objects are as written.
    let slice = c
        .get(SLICES.0, SLICES.1, NS, "ext-1")
        .await
        .expect("slice stays");
    assert_eq!(
        slice["metadata"]["resourceVersion"],
        by_hand["metadata"]["resourceVersion"]
    );
    assert_eq!(
        slices_of(&c, "ext").await.len(),
        1,
        "no managed slice added"
    );
    let ep = c
        .get("v1", "Endpoints", NS, "ext")
        .await
        .expect("Endpoints stay");
    assert_eq!(
        ep["metadata"]["resourceVersion"],
        ep_by_hand["metadata"]["resourceVersion"]
    );

    // Deleting a Service with a selector takes its slices and Endpoints.
    create_service(
        &c,
        "gone",
        json!({"selector": {"app": "gone"}, "ports": [{"port": 80}]}),
    )
    .await;
    create_pod(&c, "gone-a", "gone", "app:1", json!({})).await;
    wait_slice_state(&c, "gone", &[("gone-a", READY)]).await;
    wait_endpoints(&c, "gone", &["gone-a"], &[]).await;
    delete(&c, "v1", "Service", "gone").await;
    c.wait_for("slices and Endpoints of a deleted Service gone", || async {
        let s = slices_of(&c, "gone").await.len();
        let e = c.get("v1", "Endpoints", NS, "gone").await.is_some();
        if s == 0 && !e {
            Ok(())
        } else {
            Err(format!("{s} slices, Endpoints: {e}"))
        }
    })
    .await;
    // The hand-made objects of the selector-less Service go with it too (as Kubernetes'
    // Endpoints controller deletes a deleted Service's Endpoints); its slice is not ours.
    delete(&c, "v1", "Service", "ext").await;
    c.wait_for("Endpoints of ext gone", || async {
        match c.get("v1", "Endpoints", NS, "ext").await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    assert!(
        c.get(SLICES.0, SLICES.1, NS, "ext-1").await.is_some(),
        "not managed: kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_endpoints_per_slice_is_configurable() {
    let mut c = Cluster::without_controllers(1).await;
    c.start_controllers_with(rudder_controller_manager::Config {
        max_endpoints_per_slice: 2,
        ..Default::default()
    });
    create_service(&c, "small", named_port_spec("small")).await;
    for i in 0..5 {
        create_pod(&c, &format!("small-{i}"), "small", "app:1", json!({})).await;
    }
    c.wait_for("5 endpoints in slices of at most 2", || async {
        let mut sizes: Vec<usize> = slices_of(&c, "small")
            .await
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        if sizes == vec![1, 2, 2] {
            Ok(())
        } else {
            Err(format!("{sizes:?}"))
        }
    })
    .await;
}
