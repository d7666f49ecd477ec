//! `rudder create secret docker-registry` against a real `rudder-apiserver`: the stored secret
//! is kubectl's (type, key, JSON), from flags or from a docker config.json, with `--dry-run`
//! and `-o` as the other create subcommands, and one-line errors.

mod common;

use base64::Engine;
use common::Server;
use serde_json::{Value, json};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

/// The decoded `.dockerconfigjson` of a secret as `get -o json` shows it.
fn docker_config(secret: &Value) -> Vec<u8> {
    let b64 = secret["data"][".dockerconfigjson"]
        .as_str()
        .unwrap_or_else(|| panic!("no .dockerconfigjson: {secret:#}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 data")
}

#[test]
fn docker_registry_secrets_from_flags_and_files() {
    let s = Server::start();
    assert_eq!(
        s.run(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=127.0.0.1:5000",
            "--docker-username=alice",
            "--docker-password=s3cret:x",
            "--docker-email=alice@example.com",
        ])
        .ok(),
        "secret/regcred created\n"
    );
    let sec = json(s.run(&["get", "secret", "regcred", "-o", "json"]).ok());
    assert_eq!(sec["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        sec["data"].as_object().map(|d| d.len()),
        Some(1),
        "only the config: {sec:#}"
    );
    let config = docker_config(&sec);
    assert_eq!(
        String::from_utf8_lossy(&config),
        r#"{"auths":{"127.0.0.1:5000":{"username":"alice","password":"s3cret:x","email":"alice@example.com","auth":"YWxpY2U6czNjcmV0Ong="}}}"#,
        "kubectl's bytes: fields in its order, auth = base64(user:password)"
    );

    // Docker Hub by default; no email, no email field; into another namespace.
    s.run(&["create", "ns", "dev"]).ok();
    s.run(&[
        "create",
        "secret",
        "docker-registry",
        "hub",
        "-n",
        "dev",
        "--docker-username=bob",
        "--docker-password=pw",
    ])
    .ok();
    let hub = json(
        s.run(&["get", "secret", "hub", "-n", "dev", "-o", "json"])
            .ok(),
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&docker_config(&hub))),
        json!({"auths": {"https://index.docker.io/v1/": {"username": "bob", "password": "pw", "auth": "Ym9iOnB3"}}})
    );

    // From a docker config.json, kept byte for byte.
    let file = r#"{"auths":{"registry.example.com":{"auth":"dTpw"}},"credsStore":""}"#;
    let path = s.file("config.json", file);
    assert_eq!(
        s.run(&[
            "create",
            "secret",
            "docker-registry",
            "fromfile",
            "--from-file",
            &path,
            "-o",
            "name"
        ])
        .ok(),
        "secret/fromfile\n"
    );
    let ff = json(s.run(&["get", "secret", "fromfile", "-o", "json"]).ok());
    assert_eq!(ff["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(String::from_utf8_lossy(&docker_config(&ff)), file);

    // Client dry run: printed, not stored.
    let y = s
        .run(&[
            "create",
            "secret",
            "docker-registry",
            "dry",
            "--docker-username=u",
            "--docker-password=p",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .ok()
        .to_string();
    assert!(
        y.contains("type: kubernetes.io/dockerconfigjson") && y.contains(".dockerconfigjson:"),
        "{y}"
    );
    s.run(&["get", "secret", "dry"]).err_line();
    assert_eq!(
        s.run(&[
            "create",
            "secret",
            "docker-registry",
            "dry",
            "--docker-username=u",
            "--docker-password=p",
            "--dry-run=server",
        ])
        .ok(),
        "secret/dry created (server dry run)\n"
    );
    s.run(&["get", "secret", "dry"]).err_line();

    // Errors are one line, exit 1: no credentials, a file that is not JSON, a duplicate.
    let e = s
        .run(&[
            "create",
            "secret",
            "docker-registry",
            "x",
            "--docker-username=u",
        ])
        .err_line()
        .to_string();
    assert!(e.contains("--docker-password"), "{e}");
    let bad = s.file("bad.json", "user:password");
    let e = s
        .run(&[
            "create",
            "secret",
            "docker-registry",
            "x",
            "--from-file",
            &bad,
        ])
        .err_line()
        .to_string();
    assert!(e.contains("not a docker config.json"), "{e}");
    let e = s
        .run(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-username=u",
            "--docker-password=p",
        ])
        .err_line()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
}
