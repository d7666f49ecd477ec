//! Admission of real manifests (Kubernetes documentation examples, one or more per registered
//! kind) through the registry, as the API server runs it; and the exact messages for manifests
//! that must be refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rudder_api::Registry;
use rudder_api::decode::parse_documents;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_fixture(name: &str) -> Vec<Value> {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Fills what the API server fills before admission: the namespace of namespaced kinds.
fn prepare(doc: &mut Value) {
    let reg = Registry::builtin();
    let info = reg
        .by_api_version_kind(api_version(doc), kind(doc))
        .expect("registered kind");
    if info.namespaced && doc["metadata"].get("namespace").is_none() {
        doc["metadata"]["namespace"] = json!("default");
    }
}

fn api_version(doc: &Value) -> &str {
    doc["apiVersion"].as_str().unwrap_or("")
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// Admits `doc` (against `old` on update) and returns the stored form or the one-line error.
fn admit(mut doc: Value, old: Option<&Value>) -> Result<Value, String> {
    prepare(&mut doc);
    let reg = Registry::builtin();
    let info = reg
        .by_api_version_kind(api_version(&doc), kind(&doc))
        .map_err(|e| e.to_string())?;
    info.ops.admit(info, doc, old).map_err(|e| e.to_string())
}

/// Every field of `input` is in `output` with the same value; `output` may have more (defaults).
fn assert_subset(input: &Value, output: &Value, path: &str) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = format!("{path}.{k}");
                let Some(ov) = o.get(k) else {
                    panic!("{p}: missing from the admitted object")
                };
                assert_subset(v, ov, &p);
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            assert_eq!(i.len(), o.len(), "{path}: list length changed");
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                assert_subset(iv, ov, &format!("{path}[{n}]"));
            }
        }
        _ => assert_eq!(input, output, "{path}: value changed"),
    }
}

#[test]
fn every_fixture_is_admitted_unchanged_but_for_defaults() {
    let mut kinds = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for (i, mut doc) in read_fixture(&name).into_iter().enumerate() {
            prepare(&mut doc);
            let out = admit(doc.clone(), None).unwrap_or_else(|e| panic!("{name}[{i}]: {e}"));
            assert_subset(&doc, &out, &format!("{name}[{i}]"));
            // Admission is idempotent: the stored form admits to itself.
            let again =
                admit(out.clone(), None).unwrap_or_else(|e| panic!("{name}[{i}] re-admitted: {e}"));
            assert_eq!(again, out, "{name}[{i}]: defaults are not stable");
            kinds.insert(format!("{}/{}", api_version(&doc), kind(&doc)));
        }
    }
    let registered: BTreeSet<String> = Registry::builtin()
        .kinds()
        .map(|k| format!("{}/{}", k.api_version(), k.kind))
        .collect();
    let missing: Vec<_> = registered.difference(&kinds).collect();
    assert!(missing.is_empty(), "kinds without a fixture: {missing:?}");
}

#[test]
fn defaults_are_filled() {
    let out = admit(read_fixture("nginx-deployment.yaml").remove(0), None).unwrap();
    assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    let out = admit(read_fixture("simple-service.yaml").remove(0), None).unwrap();
    assert_eq!(out["spec"]["type"], "ClusterIP");
    let out = admit(read_fixture("daemonset.yaml").remove(0), None).unwrap();
    let resources = &out["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        json!({"cpu": "100m", "memory": "200Mi"})
    );
}

// ---- Refusals: decoding ----

#[test]
fn malformed_yaml() {
    let e = parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n").unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(
        msg,
        "invalid YAML: did not find expected ',' or ']' at line 4 column 1, while parsing a flow sequence at line 3 column 18"
    );
    let e = parse_documents("a: 1\n---\nb: [\n").unwrap_err();
    assert!(
        e.to_string().starts_with("invalid YAML in document 2: "),
        "{e}"
    );
}

#[test]
fn unknown_field() {
    let mut d = read_fixture("nginx-deployment.yaml").remove(0);
    d["spec"]["template"]["spec"]["containers"][0]["comand"] = json!(["nginx"]);
    assert_eq!(
        admit(d, None).unwrap_err(),
        "spec.template.spec.containers[0]: unknown field \"comand\""
    );
}

#[test]
fn wrong_type() {
    let mut d = read_fixture("nginx-deployment.yaml").remove(0);
    d["spec"]["replicas"] = json!("three");
    assert_eq!(
        admit(d, None).unwrap_err(),
        "spec.replicas: invalid type: string \"three\", expected i32"
    );
}

#[test]
fn unknown_kind() {
    let e = Registry::builtin()
        .by_api_version_kind("example.com/v1", "Widget")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no kind \"Widget\" is registered in version \"example.com/v1\""
    );
}

// ---- Refusals: validation ----

/// Admits fixture `file` document `doc` after `edit`, expecting exactly `message`.
fn refused(file: &str, doc: usize, edit: impl FnOnce(&mut Value), message: &str) {
    let mut d = read_fixture(file).remove(doc);
    edit(&mut d);
    assert_eq!(admit(d, None).unwrap_err(), message, "{file}");
}

/// Admits the fixture, then an edited copy as its update, expecting exactly `message`.
fn refused_update(file: &str, doc: usize, edit: impl FnOnce(&mut Value), message: &str) {
    let d = read_fixture(file).remove(doc);
    let stored = admit(d.clone(), None).expect("original admitted");
    let mut new = d;
    edit(&mut new);
    assert_eq!(admit(new, Some(&stored)).unwrap_err(), message, "{file}");
}

#[test]
fn pod_refusals() {
    refused(
        "simple-pod.yaml",
        0,
        |d| d["spec"]["containers"][0]["imagePullPolicy"] = json!("Sometimes"),
        "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
    );
    refused(
        "simple-pod.yaml",
        0,
        |d| {
            let c = d["spec"]["containers"][0].clone();
            d["spec"]["containers"].as_array_mut().unwrap().push(c);
        },
        "spec.containers[1].name: Duplicate value: \"nginx\"",
    );
    refused_update(
        "simple-pod.yaml",
        0,
        |d| d["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080),
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.nodeName` (only when unset)",
    );
}

#[test]
fn workload_refusals() {
    refused(
        "nginx-deployment.yaml",
        0,
        |d| d["spec"]["template"]["metadata"]["labels"]["app"] = json!("apache"),
        "spec.template.metadata.labels: Invalid value: \"app=apache\": `selector` does not match template `labels`",
    );
    refused(
        "nginx-deployment.yaml",
        0,
        |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(""),
        "spec.template.spec.containers[0].image: Required value",
    );
    refused_update(
        "nginx-deployment.yaml",
        0,
        |d| {
            d["spec"]["selector"]["matchLabels"]["tier"] = json!("web");
            d["spec"]["template"]["metadata"]["labels"]["tier"] = json!("web");
        },
        "spec.selector: Invalid value: field is immutable",
    );
    refused(
        "job.yaml",
        0,
        |d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Always"),
        "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    );
    refused(
        "cronjob.yaml",
        0,
        |d| d["spec"]["schedule"] = json!("*/5 * * *"),
        "spec.schedule: Invalid value: \"*/5 * * *\": expected exactly 5 fields, found 4: */5 * * *",
    );
    refused(
        "statefulset-web.yaml",
        1,
        |d| d["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] = json!("data"),
        "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"www\"",
    );
}

#[test]
fn service_refusals() {
    refused(
        "simple-service.yaml",
        0,
        |d| d["spec"]["ports"][0]["port"] = json!(70000),
        "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    refused(
        "simple-service.yaml",
        0,
        |d| d["spec"]["ports"] = json!([]),
        "spec.ports: Required value",
    );
}

#[test]
fn other_refusals() {
    refused(
        "configmap-game-demo.yaml",
        0,
        |d| d["data"]["bad key"] = json!("x"),
        "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
    );
    refused(
        "secret.yaml",
        1,
        |d| {
            d["data"].as_object_mut().unwrap().remove("tls.key");
        },
        "data[tls.key]: Required value",
    );
    refused(
        "rbac.yaml",
        1,
        |d| d["roleRef"]["kind"] = json!("Group"),
        "roleRef.kind: Unsupported value: \"Group\": supported values: \"Role\", \"ClusterRole\"",
    );
    refused(
        "storage.yaml",
        1,
        |d| d["spec"]["resources"] = json!({}),
        "spec.resources[storage]: Required value",
    );
    refused(
        "minimal-ingress.yaml",
        0,
        |d| d["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("Glob"),
        "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Glob\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
    );
    refused(
        "hpa-php-apache.yaml",
        0,
        |d| d["spec"]["maxReplicas"] = json!(0),
        "spec.maxReplicas: Invalid value: 0: must be greater than 0",
    );
    refused(
        "zk-pdb.yaml",
        0,
        |d| d["spec"]["maxUnavailable"] = json!(1),
        "spec: Invalid value: \"\": minAvailable and maxUnavailable cannot be both set",
    );
    refused(
        "namespace-dev.yaml",
        0,
        |d| d["metadata"]["name"] = json!("Development"),
        "metadata.name: Invalid value: \"Development\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)",
    );
}
