//! Rollout on config change on the in-process cluster (real API server, scheduler, simulated
//! nodes, every controller): an opted-in Deployment records its configs' versions at creation
//! without a second revision, and a ConfigMap change rolls it out to completion as a new
//! revision whose change cause names the ConfigMap; a Deployment that did not opt in stays.
//! Waits poll up to 30 s; no assertion depends on how fast anything is.

mod common;

use common::deploy::{NS, deployment, rolling, sets_by_revision, wait_complete};
use common::{Cluster, int};
use rudder_controller_manager::controllers::configrollout::{
    CHANGE_CAUSE, CONFIG_HASH, CONFIG_VERSIONS, ENABLED,
};
use serde_json::{Value, json};

fn with_config_env(mut d: Value, config: &str) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": config, "key": "greeting"}}},
    ]);
    d
}

fn ann<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn rv(o: &Value) -> &str {
    o["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

/// The ReplicaSet of `deployment` at `revision`.
async fn replica_set(c: &Cluster, deployment: &str, revision: i64) -> Value {
    let sets = sets_by_revision(c, deployment).await;
    let (name, _, _) = sets.get(&revision).expect("revision exists");
    c.get("apps/v1", "ReplicaSet", NS, name)
        .await
        .expect("replica set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_change_rolls_an_opted_in_deployment_to_a_new_revision() {
    let c = Cluster::start(2).await;
    let cm = c
        .create(
            "v1",
            "ConfigMap",
            NS,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "web-config", "namespace": NS},
                "data": {"greeting": "hello"}}),
        )
        .await;
    let mut web = with_config_env(
        deployment("web", 2, "web:v1", rolling(json!(1), json!(0))),
        "web-config",
    );
    web["metadata"]["annotations"] = json!({ENABLED: "true"});
    c.create("apps/v1", "Deployment", NS, web).await;
    let plain = with_config_env(
        deployment("plain", 1, "plain:v1", rolling(json!(1), json!(0))),
        "web-config",
    );
    c.create("apps/v1", "Deployment", NS, plain).await;
    wait_complete(&c, "web", "web:v1").await;
    wait_complete(&c, "plain", "plain:v1").await;

    // Creation: the versions are recorded, the template is left alone, one revision.
    let versions = format!("configmap/web-config={}", rv(&cm));
    let d = c
        .wait_for("the config versions recorded", || async {
            let d = c
                .get("apps/v1", "Deployment", NS, "web")
                .await
                .ok_or("gone")?;
            match ann(&d, CONFIG_VERSIONS) {
                Some(v) if v == versions && ann(&d, CONFIG_HASH).is_some() => Ok(d),
                _ => Err(format!("{}", d["metadata"])),
            }
        })
        .await;
    assert_eq!(
        d.pointer("/spec/template/metadata/annotations/rudder.io~1config-hash"),
        None,
        "{d}"
    );
    let web_d = wait_complete(&c, "web", "web:v1").await;
    assert_eq!(int(&web_d, "/metadata/generation"), 1, "{web_d}");
    let revisions: Vec<i64> = sets_by_revision(&c, "web").await.into_keys().collect();
    assert_eq!(revisions, [1], "no second revision at creation");

    // The ConfigMap changes: revision 2 rolls out to completion, named by its change cause.
    c.patch(
        "v1",
        "ConfigMap",
        NS,
        "web-config",
        json!({"data": {"greeting": "bonjour"}}),
    )
    .await;
    let cm = c
        .get("v1", "ConfigMap", NS, "web-config")
        .await
        .expect("config map");
    c.wait_for("revision 2", || async {
        let s = sets_by_revision(&c, "web").await;
        if s.contains_key(&2) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let d = wait_complete(&c, "web", "web:v1").await;
    let hash = ann(&d, CONFIG_HASH).expect("hash").to_string();
    let sets = sets_by_revision(&c, "web").await;
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!((sets[&1].1, sets[&2].1), (0, 2), "{sets:?}");
    let rs = replica_set(&c, "web", 2).await;
    let cause = format!("config change: configmap/web-config@{}", rv(&cm));
    assert_eq!(ann(&rs, CHANGE_CAUSE), Some(cause.as_str()), "{rs}");
    let pods = c.list("v1", "Pod", NS).await;
    let web_pods: Vec<&Value> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!("web")))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    assert_eq!(web_pods.len(), 2);
    for p in web_pods {
        assert_eq!(
            ann(p, CONFIG_HASH),
            Some(hash.as_str()),
            "pods carry the hash"
        );
    }
    let events = c.list("v1", "Event", NS).await;
    assert!(
        events.iter().any(|e| e["reason"] == "ConfigChanged"
            && e["involvedObject"]["name"] == "web"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains(cause.trim_start_matches("config change: ")))),
        "a ConfigChanged event naming the config"
    );

    // The Deployment without the annotation saw the same change and stayed on revision 1.
    let plain = c
        .get("apps/v1", "Deployment", NS, "plain")
        .await
        .expect("plain");
    assert_eq!(int(&plain, "/metadata/generation"), 1, "{plain}");
    assert_eq!(ann(&plain, CONFIG_HASH), None, "{plain}");
    let revisions: Vec<i64> = sets_by_revision(&c, "plain").await.into_keys().collect();
    assert_eq!(revisions, [1]);
}
