//! Reference extraction, the decision table, and the controller on the in-memory fake under
//! paused time (the Deployment controller does not run here: these tests look at what this
//! controller writes on the Deployment).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;

const NS: &str = "default";

fn cm(name: &str) -> ConfigRef {
    ConfigRef::new(ConfigKind::ConfigMap, name)
}

fn secret(name: &str) -> ConfigRef {
    ConfigRef::new(ConfigKind::Secret, name)
}

fn container(extra: Value) -> Value {
    let mut c = json!({"name": "c", "image": "i"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

#[test]
fn every_place_a_template_can_reference_a_config_is_found() {
    let env_cm = json!({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]});
    let env_secret = json!({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}}]});
    let from_cm = json!({"envFrom": [{"configMapRef": {"name": "from-cm"}}]});
    let from_secret = json!({"envFrom": [{"prefix": "X_", "secretRef": {"name": "from-s"}}]});
    let cases: Vec<(&str, Value, ConfigRef)> = vec![
        (
            "env configMapKeyRef",
            json!({"containers": [container(env_cm.clone())]}),
            cm("env-cm"),
        ),
        (
            "env secretKeyRef",
            json!({"containers": [container(env_secret)]}),
            secret("env-s"),
        ),
        (
            "envFrom configMapRef",
            json!({"containers": [container(from_cm.clone())]}),
            cm("from-cm"),
        ),
        (
            "envFrom secretRef",
            json!({"containers": [container(from_secret.clone())]}),
            secret("from-s"),
        ),
        (
            "initContainers env",
            json!({"containers": [container(json!({}))], "initContainers": [container(env_cm)]}),
            cm("env-cm"),
        ),
        (
            "initContainers envFrom",
            json!({"initContainers": [container(from_secret)]}),
            secret("from-s"),
        ),
        (
            "ephemeralContainers envFrom",
            json!({"ephemeralContainers": [container(from_cm)]}),
            cm("from-cm"),
        ),
        (
            "second container",
            json!({"containers": [container(json!({})), container(json!({"envFrom": [{"configMapRef": {"name": "two"}}]}))]}),
            cm("two"),
        ),
        (
            "configMap volume",
            json!({"volumes": [{"name": "v", "configMap": {"name": "vol-cm"}}]}),
            cm("vol-cm"),
        ),
        (
            "secret volume (secretName)",
            json!({"volumes": [{"name": "v", "secret": {"secretName": "vol-s"}}]}),
            secret("vol-s"),
        ),
        (
            "projected configMap",
            json!({"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}, {"configMap": {"name": "proj-cm"}}]}}]}),
            cm("proj-cm"),
        ),
        (
            "projected secret",
            json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "proj-s"}}]}}]}),
            secret("proj-s"),
        ),
    ];
    for (what, spec, want) in cases {
        let got: Vec<ConfigRef> = references(&json!({"spec": spec})).into_keys().collect();
        assert_eq!(got, vec![want], "{what}");
    }
}

#[test]
fn pull_secrets_and_storage_credentials_are_not_configs() {
    let t = json!({"spec": {
        "imagePullSecrets": [{"name": "regcred"}],
        "containers": [{"name": "c", "image": "i"}],
        "volumes": [
            {"name": "a", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-cred"}}},
            {"name": "b", "emptyDir": {}},
            {"name": "c", "projected": {"sources": [{"downwardAPI": {"items": []}}]}},
            {"name": "d", "configMap": {"name": ""}},
        ],
    }});
    assert!(references(&t).is_empty(), "{:?}", references(&t));
    assert!(references(&Value::Null).is_empty());
}

#[test]
fn a_config_is_required_when_any_reference_to_it_is() {
    let t = json!({"spec": {
        "containers": [{"name": "c", "image": "i",
            "envFrom": [{"configMapRef": {"name": "both", "optional": true}}, {"secretRef": {"name": "opt", "optional": true}}],
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "req", "key": "k", "optional": false}}}]}],
        "volumes": [{"name": "v", "configMap": {"name": "both"}}, {"name": "w", "secret": {"secretName": "opt", "optional": true}}],
    }});
    let r = references(&t);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r[&cm("both")], "required by the volume");
    assert!(r[&cm("req")]);
    assert!(!r[&secret("opt")], "optional everywhere");
}

#[test]
fn the_version_string_is_sorted_and_parses_back() {
    let v: Versions = [
        (secret("db"), None),
        (cm("web"), Some(12)),
        (cm("api"), Some(30)),
    ]
    .into_iter()
    .collect();
    let s = version_string(&v);
    assert_eq!(s, "configmap/api=30,configmap/web=12,secret/db=absent");
    let p = parse_version_string(&s).unwrap();
    assert_eq!(p["secret/db"], "absent");
    assert_eq!(p["configmap/web"], "12");
    assert_eq!(parse_version_string("").unwrap().len(), 0);
    assert!(parse_version_string("garbage").is_none());
    assert_ne!(
        config_hash(&s),
        config_hash("configmap/api=31,configmap/web=12,secret/db=absent")
    );
}

#[test]
fn decisions() {
    let req = |names: &[(ConfigRef, bool)]| names.iter().cloned().collect::<BTreeMap<_, _>>();
    let vers = |v: &[(ConfigRef, Option<u64>)]| v.iter().cloned().collect::<Versions>();
    let web_12 = vers(&[(cm("web"), Some(12))]);
    let s12 = version_string(&web_12);
    let h12 = config_hash(&s12);
    let required = req(&[(cm("web"), true)]);
    let optional = req(&[(cm("web"), false)]);
    let roll = |c: &[&str]| Decision::Roll {
        changed: c.iter().map(|s| s.to_string()).collect(),
    };
    let record = |m: &[&str]| Decision::Record {
        missing: m.iter().map(|s| s.to_string()).collect(),
    };
    // (what, recorded hash, recorded versions, required, current, decision)
    let cases = vec![
        (
            "first sight",
            None,
            None,
            &required,
            web_12.clone(),
            record(&[]),
        ),
        (
            "unchanged",
            Some(h12.as_str()),
            Some(s12.as_str()),
            &required,
            web_12.clone(),
            Decision::Nothing,
        ),
        (
            "changed",
            Some(&h12),
            Some(&s12),
            &required,
            vers(&[(cm("web"), Some(13))]),
            roll(&["configmap/web@13"]),
        ),
        (
            "no version string",
            Some(&h12),
            None,
            &required,
            vers(&[(cm("web"), Some(13))]),
            roll(&["configmap/web@13"]),
        ),
        (
            "required gone",
            Some(&h12),
            Some(&s12),
            &required,
            vers(&[(cm("web"), None)]),
            record(&["configmap/web"]),
        ),
        (
            "optional gone",
            Some(&h12),
            Some(&s12),
            &optional,
            vers(&[(cm("web"), None)]),
            roll(&["configmap/web@absent"]),
        ),
        (
            "reference added by a template edit",
            Some(&h12),
            Some(&s12),
            &required,
            vers(&[(cm("web"), Some(12)), (secret("db"), Some(3))]),
            record(&[]),
        ),
        (
            "one changed, one required gone",
            Some("x"),
            Some("configmap/web=12,secret/db=3"),
            &required,
            vers(&[(cm("web"), Some(14)), (secret("db"), None)]),
            roll(&["configmap/web@14", "secret/db@absent"]),
        ),
    ];
    for (what, hash, versions, required, current, want) in cases {
        assert_eq!(decide(hash, versions, required, &current), want, "{what}");
    }
    let absent = vers(&[(cm("web"), None)]);
    let sa = version_string(&absent);
    assert_eq!(
        decide(Some(&config_hash(&sa)), Some(&sa), &required, &web_12),
        roll(&["configmap/web@12"]),
        "created after the record"
    );
}

// The controller on the fake.

struct Env {
    fake: Arc<FakeApi>,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start() -> Env {
    let clock: SharedClock = ManualClock::shared(11);
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    let stop = CancellationToken::new();
    let cfg = crate::Config {
        controllers: vec!["config-rollout".into()],
        ..crate::Config::default()
    };
    tokio::spawn(crate::run(fake.clone(), clock, cfg, stop.clone()));
    Env { fake, stop }
}

impl Env {
    async fn create(&self, api_version: &str, kind: &str, body: Value) -> Value {
        let o = self
            .fake
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .expect("create");
        serde_json::from_slice(&o.json).expect("json")
    }

    async fn patch(&self, api_version: &str, kind: &str, name: &str, patch: Value) -> Value {
        let o = self
            .fake
            .patch(pb::PatchRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(patch.to_string()),
                status: false,
                options: None,
            })
            .await
            .expect("patch");
        serde_json::from_slice(&o.json).expect("json")
    }

    async fn delete(&self, api_version: &str, kind: &str, name: &str) {
        self.fake
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("delete");
    }

    fn deployment(&self, name: &str) -> Value {
        self.fake
            .get_json(&kind_ref("apps/v1", "Deployment"), NS, name)
            .expect("deployment")
    }

    fn events(&self, reason: &str) -> Vec<String> {
        self.fake
            .list_json(&kind_ref("v1", "Event"))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Lets the controller run for a few seconds of paused time.
    async fn settle(&self) {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rv(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn ann<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn template_ann<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn dep(name: &str, opted_in: bool, pod_spec: Value) -> Value {
    let annotations = if opted_in {
        json!({ENABLED: "true"})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    })
}

fn env_from(kind: &str, name: &str, optional: bool) -> Value {
    json!({"containers": [{"name": "c", "image": "i", "envFrom": [{kind: {"name": name, "optional": optional}}]}]})
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": data})
}

#[tokio::test(start_paused = true)]
async fn records_at_creation_and_rolls_once_per_configmap_change() {
    let e = start();
    let c = e
        .create(
            "v1",
            "ConfigMap",
            config_map("web-config", json!({"k": "1"})),
        )
        .await;
    e.create(
        "apps/v1",
        "Deployment",
        dep("web", true, env_from("configMapRef", "web-config", false)),
    )
    .await;
    e.settle().await;
    let d = e.deployment("web");
    assert_eq!(
        ann(&d, CONFIG_VERSIONS),
        Some(format!("configmap/web-config={}", rv(&c)).as_str()),
        "{d}"
    );
    assert!(ann(&d, CONFIG_HASH).is_some(), "{d}");
    assert_eq!(
        template_ann(&d, CONFIG_HASH),
        None,
        "no rollout at creation: {d}"
    );
    assert_eq!(ann(&d, CHANGE_CAUSE), None);
    assert_eq!(d["metadata"]["generation"], 1, "{d}");

    let c = e
        .patch("v1", "ConfigMap", "web-config", json!({"data": {"k": "2"}}))
        .await;
    e.settle().await;
    let d = e.deployment("web");
    let hash = ann(&d, CONFIG_HASH).expect("hash");
    assert_eq!(template_ann(&d, CONFIG_HASH), Some(hash), "{d}");
    let cause = format!("config change: configmap/web-config@{}", rv(&c));
    assert_eq!(ann(&d, CHANGE_CAUSE), Some(cause.as_str()), "{d}");
    assert_eq!(d["metadata"]["generation"], 2, "one template change: {d}");
    let events = e.events("ConfigChanged");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains(&format!("configmap/web-config@{}", rv(&c))),
        "{events:?}"
    );

    // A write that stores nothing keeps the version: no rollout.
    e.patch("v1", "ConfigMap", "web-config", json!({"data": {"k": "2"}}))
        .await;
    e.settle().await;
    assert_eq!(e.deployment("web")["metadata"]["generation"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_secret_change_rolls_without_its_data_reaching_the_deployment() {
    let e = start();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": NS},
        "stringData": {"password": "hunter2-first"}});
    e.create("v1", "Secret", s).await;
    let spec = json!({"containers": [{"name": "c", "image": "i"}],
        "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "db"}}]}}]});
    e.create("apps/v1", "Deployment", dep("api", true, spec))
        .await;
    e.settle().await;
    let s = e
        .patch(
            "v1",
            "Secret",
            "db",
            json!({"stringData": {"password": "hunter2-second"}}),
        )
        .await;
    e.settle().await;
    let d = e.deployment("api");
    let cause = format!("config change: secret/db@{}", rv(&s));
    assert_eq!(ann(&d, CHANGE_CAUSE), Some(cause.as_str()), "{d}");
    assert!(template_ann(&d, CONFIG_HASH).is_some(), "{d}");
    let text = d.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyM"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_annotation_nothing_is_written_and_removing_it_stops_rollouts() {
    let e = start();
    e.create("v1", "ConfigMap", config_map("cfg", json!({"k": "1"})))
        .await;
    let plain = e
        .create(
            "apps/v1",
            "Deployment",
            dep("plain", false, env_from("configMapRef", "cfg", false)),
        )
        .await;
    e.create(
        "apps/v1",
        "Deployment",
        dep("opted", true, env_from("configMapRef", "cfg", false)),
    )
    .await;
    e.settle().await;
    e.patch("v1", "ConfigMap", "cfg", json!({"data": {"k": "2"}}))
        .await;
    e.settle().await;
    assert_eq!(rv(&e.deployment("plain")), rv(&plain), "never written");
    assert_eq!(e.deployment("opted")["metadata"]["generation"], 2);

    e.patch(
        "apps/v1",
        "Deployment",
        "opted",
        json!({"metadata": {"annotations": {ENABLED: null}}}),
    )
    .await;
    e.settle().await;
    let before = e.deployment("opted");
    e.patch("v1", "ConfigMap", "cfg", json!({"data": {"k": "3"}}))
        .await;
    e.settle().await;
    let after = e.deployment("opted");
    assert_eq!(rv(&after), rv(&before), "{after}");
    assert!(ann(&after, CONFIG_HASH).is_some(), "the record stays");
}

#[tokio::test(start_paused = true)]
async fn a_missing_required_config_rolls_on_creation_but_not_on_deletion() {
    let e = start();
    e.create(
        "apps/v1",
        "Deployment",
        dep("web", true, env_from("configMapRef", "late", false)),
    )
    .await;
    e.settle().await;
    let d = e.deployment("web");
    assert_eq!(
        ann(&d, CONFIG_VERSIONS),
        Some("configmap/late=absent"),
        "{d}"
    );
    assert_eq!(template_ann(&d, CONFIG_HASH), None);

    let c = e
        .create("v1", "ConfigMap", config_map("late", json!({"k": "1"})))
        .await;
    e.settle().await;
    let d = e.deployment("web");
    let cause = format!("config change: configmap/late@{}", rv(&c));
    assert_eq!(ann(&d, CHANGE_CAUSE), Some(cause.as_str()), "{d}");
    assert_eq!(d["metadata"]["generation"], 2);

    // Deleting it: new pods could not start, so the template stays; the record moves on.
    e.delete("v1", "ConfigMap", "late").await;
    e.settle().await;
    let d = e.deployment("web");
    assert_eq!(d["metadata"]["generation"], 2, "{d}");
    assert_eq!(ann(&d, CONFIG_VERSIONS), Some("configmap/late=absent"));
    let warnings = e.events("ConfigMissing");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("configmap/late"), "{warnings:?}");
}

#[tokio::test(start_paused = true)]
async fn an_optional_config_deleted_rolls() {
    let e = start();
    e.create("v1", "ConfigMap", config_map("flags", json!({"k": "1"})))
        .await;
    e.create(
        "apps/v1",
        "Deployment",
        dep("web", true, env_from("configMapRef", "flags", true)),
    )
    .await;
    e.settle().await;
    e.delete("v1", "ConfigMap", "flags").await;
    e.settle().await;
    let d = e.deployment("web");
    assert_eq!(
        ann(&d, CHANGE_CAUSE),
        Some("config change: configmap/flags@absent"),
        "{d}"
    );
    assert_eq!(d["metadata"]["generation"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_paused_deployment_still_gets_the_template_change() {
    let e = start();
    e.create("v1", "ConfigMap", config_map("cfg", json!({"k": "1"})))
        .await;
    let mut d = dep("web", true, env_from("configMapRef", "cfg", false));
    d["spec"]["paused"] = json!(true);
    e.create("apps/v1", "Deployment", d).await;
    e.settle().await;
    e.patch("v1", "ConfigMap", "cfg", json!({"data": {"k": "2"}}))
        .await;
    e.settle().await;
    let d = e.deployment("web");
    assert!(template_ann(&d, CONFIG_HASH).is_some(), "{d}");
    let events = e.events("ConfigChanged");
    assert!(events.iter().any(|m| m.contains("paused")), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn a_template_edit_adding_a_reference_only_records_it() {
    let e = start();
    e.create("v1", "ConfigMap", config_map("a", json!({"k": "1"})))
        .await;
    e.create("v1", "ConfigMap", config_map("b", json!({"k": "1"})))
        .await;
    e.create(
        "apps/v1",
        "Deployment",
        dep("web", true, env_from("configMapRef", "a", false)),
    )
    .await;
    e.settle().await;
    let spec = json!({"containers": [{"name": "c", "image": "i",
        "envFrom": [{"configMapRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}]}]});
    e.patch(
        "apps/v1",
        "Deployment",
        "web",
        json!({"spec": {"template": {"spec": spec}}}),
    )
    .await;
    e.settle().await;
    let d = e.deployment("web");
    // The edit itself is the rollout (generation 2); no second template change on top.
    assert_eq!(d["metadata"]["generation"], 2, "{d}");
    assert_eq!(template_ann(&d, CONFIG_HASH), None, "{d}");
    assert!(
        ann(&d, CONFIG_VERSIONS).is_some_and(|v| v.contains("configmap/b=")),
        "{d}"
    );
    assert!(e.events("ConfigChanged").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_is_retried() {
    let e = start();
    e.create("v1", "ConfigMap", config_map("cfg", json!({"k": "1"})))
        .await;
    e.create(
        "apps/v1",
        "Deployment",
        dep("web", true, env_from("configMapRef", "cfg", false)),
    )
    .await;
    e.settle().await;
    e.patch("v1", "ConfigMap", "cfg", json!({"data": {"k": "2"}}))
        .await;
    let patches = e.fake.calls(Op::Patch);
    // Set after the test's own write: the controller has not run since (paused, one thread).
    e.fake
        .fail_times(Op::Patch, ClientError::Conflict("stale".into()), 2);
    e.settle().await;
    let d = e.deployment("web");
    assert!(template_ann(&d, CONFIG_HASH).is_some(), "{d}");
    assert!(
        e.fake.calls(Op::Patch) >= patches + 3,
        "two refusals, then the write"
    );
    assert_eq!(
        e.events("ConfigChanged").len(),
        1,
        "one rollout despite the retries"
    );
}

#[tokio::test(start_paused = true)]
async fn a_decision_on_a_stale_deployment_is_refused_by_its_resource_version() {
    use rudder_client::cache::{CachedObject, Store};
    let clock: SharedClock = ManualClock::shared(3);
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    let e = Env {
        fake: Arc::clone(&fake),
        stop: CancellationToken::new(),
    };
    let c = e
        .create("v1", "ConfigMap", config_map("cfg", json!({"k": "1"})))
        .await;
    let stale = e
        .create(
            "apps/v1",
            "Deployment",
            dep("web", true, env_from("configMapRef", "cfg", false)),
        )
        .await;
    // Someone else writes the Deployment after the cache saw it.
    e.patch(
        "apps/v1",
        "Deployment",
        "web",
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    let cached = |v: &Value| {
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        let (api_version, kind) = (v["apiVersion"].as_str(), v["kind"].as_str());
        Arc::new(CachedObject::new(
            api_version.unwrap_or(""),
            kind.unwrap_or(""),
            NS,
            name,
            rv,
            v.clone(),
        ))
    };
    let (mut deployments, dr) = Store::new();
    deployments.apply(cached(&stale));
    let (mut configmaps, cr) = Store::new();
    configmaps.apply(cached(&c));
    let (_secrets, sr) = Store::new();
    let api: Arc<dyn Api> = fake.clone();
    let (events, _task) = EventRecorder::new(Arc::clone(&api), "t", "h", clock, 16);
    let ctx = Arc::new(Ctx {
        api,
        events,
        deployments: dr,
        configmaps: cr,
        secrets: sr,
    });
    let r = reconcile(format!("{NS}/web"), ctx).await;
    assert!(
        matches!(r, Err(Error::Api(ClientError::Conflict(_)))),
        "{r:?}"
    );
    assert_eq!(ann(&e.deployment("web"), CONFIG_HASH), None);
}
