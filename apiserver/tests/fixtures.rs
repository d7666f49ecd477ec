//! Manifests from the Kubernetes documentation (the API crate's fixtures, one or more for every
//! registered kind) are created through the real server unchanged and read back with every field
//! they gave intact. Defaults may add fields; nothing given may change or vanish, except what
//! Kubernetes itself rewrites on create (status reset, Secret `stringData` folded into `data`).

mod common;

use std::collections::BTreeSet;

use common::*;
use rudder_api::Registry;
use rudder_client::proto as pb;
use serde_json::Value;

/// Every field of `given` is in `got` with the same value (objects recursively; lists by index).
fn assert_subset(given: &Value, got: &Value, path: &str) {
    match (given, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => assert_subset(v, w, &p),
                    None => panic!("{p}: given {v} but missing after read-back"),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                assert_subset(v, w, &format!("{path}[{i}]"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}: value changed"),
    }
}

#[tokio::test]
async fn documentation_manifests_apply_unchanged_and_read_back_intact() {
    let s = TestServer::start(&[]);
    let c = &s.client;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("fixture");
        for d in rudder_api::decode::parse_documents(&text).expect("fixture parses") {
            docs.push((f.file_name().unwrap().to_string_lossy().to_string(), d));
        }
    }
    // Namespaces the fixtures use, first.
    let namespaces: BTreeSet<String> = docs
        .iter()
        .filter_map(|(_, d)| {
            d.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    for ns in namespaces {
        if ["default", "kube-system", "kube-public", "kube-node-lease"].contains(&ns.as_str()) {
            continue;
        }
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = c.create(create_req("v1", "Namespace", "", body)).await;
    }
    let reg = Registry::builtin();
    let mut kinds_seen = BTreeSet::new();
    for (file, doc) in docs {
        let av = doc["apiVersion"].as_str().unwrap().to_string();
        let kind = doc["kind"].as_str().unwrap().to_string();
        let info = reg.by_api_version_kind(&av, &kind).unwrap();
        kinds_seen.insert(kind.clone());
        let created = match c.create(create_req(&av, &kind, "", doc.clone())).await {
            Ok(o) => o,
            Err(rudder_client::ClientError::AlreadyExists(_)) if kind == "Namespace" => continue,
            Err(e) => panic!("{file}: {kind} refused: {e}"),
        };
        let got = json(
            &c.get(pb::GetRequest {
                kind: kref(&av, &kind),
                namespace: created.namespace.clone(),
                name: created.name.clone(),
                allow_stale: false,
            })
            .await
            .unwrap(),
        );
        let mut given = doc.clone();
        let map = given.as_object_mut().unwrap();
        if info.has_status && kind != "Node" {
            map.remove("status");
        }
        if kind == "Secret" {
            // Write-only: folded into `data`, winning over the same key there.
            use base64::Engine;
            if let Some(Value::Object(plain)) = map.remove("stringData") {
                let data = map.entry("data").or_insert_with(|| serde_json::json!({}));
                for (k, v) in plain {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or_default());
                    data[k.as_str()] = Value::String(enc);
                }
            }
        }
        assert_subset(&given, &got, &format!("{file}:{kind}"));
    }
    let all: BTreeSet<String> = reg.kinds().map(|k| k.kind.to_string()).collect();
    assert_eq!(kinds_seen, all, "a fixture for every registered kind");
}
