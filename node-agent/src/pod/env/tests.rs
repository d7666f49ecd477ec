use rudder_api::typed::Object;
use serde_json::{Value, json};

use super::*;
use crate::objects::testing::MemObjects;

fn pod(containers: Value) -> Pod {
    Pod::from_json(json!({
        "metadata": {
            "name": "web-1", "namespace": "shop", "uid": "u-123",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "say \"hi\"\n", "a/b": "x"},
        },
        "spec": {"nodeName": "n1", "serviceAccountName": "robot", "containers": containers},
    }))
    .expect("pod json")
}

fn ctx(pod: &Pod) -> EnvContext<'_> {
    EnvContext {
        pod,
        node_name: "n1",
        host_ip: "192.168.1.5",
        pod_ip: "10.88.0.7",
        node_allocatable_cpu_milli: 4000,
        node_allocatable_memory_bytes: 8 << 30,
    }
}

fn objects() -> MemObjects {
    let o = MemObjects::default();
    o.put_config_map(json!({
        "metadata": {"name": "app-config", "namespace": "shop"},
        "data": {"db-url": "postgres://db", "LEVEL": "debug", "1bad": "x", "has space": "y"},
    }));
    o.put_secret(json!({
        "metadata": {"name": "creds", "namespace": "shop"},
        "data": {"PASSWORD": "aHVudGVyMg==", "TOKEN": "dG9r"},
    }));
    o
}

async fn env_of(
    containers: Value,
    objects: &MemObjects,
) -> Result<Vec<(String, String)>, ConfigError> {
    let p = pod(containers);
    let c = p.spec.as_ref().expect("spec").containers[0].clone();
    container_env(&ctx(&p), &c, objects).await
}

async fn env_ok(containers: Value, objects: &MemObjects) -> Vec<(String, String)> {
    env_of(containers, objects).await.expect("env resolves")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn expansion_rules() {
    let env = pairs(&[("A", "1"), ("B", "two"), ("A", "3")]);
    assert_eq!(expand("x$(B)y", &env), "xtwoy");
    assert_eq!(expand("$(A)", &env), "3", "the later definition wins");
    assert_eq!(expand("$$(B)", &env), "$(B)", "$$ escapes");
    assert_eq!(expand("$$$(B)", &env), "$two");
    assert_eq!(expand("$(NOPE)-$(B)", &env), "$(NOPE)-two");
    assert_eq!(expand("$(B", &env), "$(B", "unterminated kept");
    assert_eq!(expand("cost $5 $", &env), "cost $5 $");
    assert_eq!(expand("$()", &env), "$()");
    assert_eq!(expand("é$(B)ü", &env), "étwoü");
    assert_eq!(expand("$$", &env), "$");
}

#[tokio::test]
async fn env_from_prefix_invalid_keys_and_override() {
    let o = objects();
    let env = env_ok(
        json!([{"name": "c", "image": "i",
            "envFrom": [
                {"configMapRef": {"name": "app-config"}},
                {"prefix": "S_", "secretRef": {"name": "creds"}},
                {"configMapRef": {"name": "gone", "optional": true}},
            ],
            "env": [{"name": "LEVEL", "value": "info"}]}]),
        &o,
    )
    .await;
    assert_eq!(
        env,
        pairs(&[
            ("LEVEL", "info"),
            ("db-url", "postgres://db"),
            ("S_PASSWORD", "hunter2"),
            ("S_TOKEN", "tok"),
        ])
    );
}

#[tokio::test]
async fn missing_required_objects_and_keys_are_errors() {
    let o = objects();
    let cases = [
        (
            json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}),
            "configmap \"gone\" not found",
        ),
        (
            json!({"envFrom": [{"secretRef": {"name": "gone"}}]}),
            "secret \"gone\" not found",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope"}}}]}),
            "couldn't find key nope in ConfigMap shop/app-config",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}),
            "couldn't find key nope in Secret shop/creds",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}]}),
            "secret \"other\" not found",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]}),
            "unsupported fieldPath: spec.restartPolicy",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}),
            "unsupported container resource : limits.gpu",
        ),
    ];
    for (mut c, want) in cases {
        c["name"] = json!("c");
        c["image"] = json!("i");
        let err = env_of(json!([c]), &o).await.expect_err(want);
        assert_eq!(err.to_string(), want);
    }
}

#[tokio::test]
async fn optional_references_leave_the_variable_unset() {
    let o = objects();
    let env = env_ok(
        json!([{"name": "c", "image": "i",
            "envFrom": [{"configMapRef": {"name": "app-config"}}],
            "env": [
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": true}}},
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "D", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN", "optional": true}}},
            ]}]),
        &o,
    )
    .await;
    // LEVEL keeps its envFrom value; A, B, C are absent.
    assert_eq!(
        env,
        pairs(&[
            ("LEVEL", "debug"),
            ("db-url", "postgres://db"),
            ("D", "tok")
        ])
    );
    // One lookup per object despite several references: app-config, ConfigMap gone, creds,
    // Secret gone.
    assert_eq!(o.gets(), 4);
}

#[tokio::test]
async fn values_expand_against_earlier_entries_only() {
    let o = objects();
    let env = env_ok(
        json!([{"name": "c", "image": "i",
            "envFrom": [{"configMapRef": {"name": "app-config"}}],
            "env": [
                {"name": "URL", "value": "$(db-url)/$(NAME)?$$(LEVEL)"},
                {"name": "NAME", "value": "orders"},
                {"name": "FULL", "value": "$(NAME)@$(URL) $(LEVEL)"},
                {"name": "EMPTY"},
                {"name": "FROM_KEY", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "db-url"}}},
                {"name": "NOT_EXPANDED", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "db-url"}}, "value": ""},
            ]}]),
        &o,
    )
    .await;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("URL"), Some("postgres://db/$(NAME)?$(LEVEL)"));
    assert_eq!(
        get("FULL"),
        Some("orders@postgres://db/$(NAME)?$(LEVEL) debug")
    );
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(get("FROM_KEY"), Some("postgres://db"));
    assert_eq!(get("NOT_EXPANDED"), Some("postgres://db"));
}

#[tokio::test]
async fn field_refs() {
    let o = MemObjects::default();
    let paths = [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "u-123"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['a/b']", "x"),
        ("metadata.labels", "app=\"web\"\ntier=\"front\""),
        (
            "metadata.annotations",
            "a/b=\"x\"\nnote=\"say \\\"hi\\\"\\n\"",
        ),
        ("spec.nodeName", "n1"),
        ("spec.host", "n1"),
        ("spec.serviceAccountName", "robot"),
        ("status.podIP", "10.88.0.7"),
        ("status.podIPs", "10.88.0.7"),
        ("status.hostIP", "192.168.1.5"),
        ("status.hostIPs", "192.168.1.5"),
    ];
    let env: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, (p, _))| json!({"name": format!("V{i}"), "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": p}}}))
        .collect();
    let got = env_ok(json!([{"name": "c", "image": "i", "env": env}]), &o).await;
    for (i, (path, want)) in paths.iter().enumerate() {
        assert_eq!(got[i].1, *want, "{path}");
    }
    let bad_version = json!([{"name": "c", "image": "i", "env": [{"name": "X",
        "valueFrom": {"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}}}]}]);
    let err = env_of(bad_version, &o).await.expect_err("v2");
    assert_eq!(err.to_string(), "unsupported pod version: v2");
}

#[tokio::test]
async fn resource_refs_divide_and_round_up() {
    let o = MemObjects::default();
    let refs = [
        // (resource, divisor, containerName, expected)
        ("limits.cpu", None, None, "1"), // 250m rounded up to one core
        ("limits.cpu", Some("1m"), None, "250"),
        ("requests.cpu", Some("1m"), None, "100"),
        ("requests.cpu", None, None, "1"),
        ("limits.memory", Some("1Mi"), None, "64"),
        ("limits.memory", None, None, "67108864"),
        ("requests.memory", Some("1M"), None, "34"), // 32Mi = 33.55 MB, rounded up
        ("limits.ephemeral-storage", Some("1Gi"), None, "2"),
        ("requests.ephemeral-storage", None, None, "0"),
        // The sidecar has no limits: node allocatable instead.
        ("limits.cpu", Some("1m"), Some("side"), "4000"),
        ("limits.memory", Some("1Gi"), Some("side"), "8"),
        ("limits.ephemeral-storage", Some("1Gi"), Some("side"), "0"),
        ("requests.memory", None, Some("side"), "0"),
        ("limits.cpu", Some("0"), None, "1"), // zero divisor means 1
        ("limits.hugepages-2Mi", Some("1Mi"), None, "4"),
    ];
    let env: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, (r, d, c, _))| {
            let mut sel = json!({"resource": r});
            if let Some(d) = d {
                sel["divisor"] = json!(d);
            }
            if let Some(c) = c {
                sel["containerName"] = json!(c);
            }
            json!({"name": format!("R{i}"), "valueFrom": {"resourceFieldRef": sel}})
        })
        .collect();
    let containers = json!([
        {"name": "c", "image": "i", "env": env, "resources": {
            "limits": {"cpu": "250m", "memory": "64Mi", "ephemeral-storage": "1536Mi", "hugepages-2Mi": "4Mi"},
            "requests": {"cpu": "100m", "memory": "32Mi"}}},
        {"name": "side", "image": "i"},
    ]);
    let got = env_ok(containers, &o).await;
    for (i, (r, d, c, want)) in refs.iter().enumerate() {
        assert_eq!(got[i].1, *want, "{r} divisor {d:?} container {c:?}");
    }

    let other = json!([{"name": "c", "image": "i", "env": [{"name": "X",
        "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "ghost"}}}]}]);
    let err = env_of(other, &o).await.expect_err("ghost");
    assert_eq!(err.to_string(), "container ghost not found");
}

#[test]
fn env_var_names_and_quoting() {
    for ok in ["A", "_a", "a.b-c", "-x", "A1"] {
        assert!(is_env_var_name(ok), "{ok}");
    }
    for bad in ["", "1A", "a b", "a=b", "ü"] {
        assert!(!is_env_var_name(bad), "{bad}");
    }
    assert_eq!(
        go_quote("a\"b\\c\td\u{1}é\u{200b}"),
        "\"a\\\"b\\\\c\\td\\x01é\\u200b\""
    );
}
