//! Image pulls from a private registry, through the real agent, API server and Docker engine:
//! a local `docker-registry` with htpasswd auth (see `registry/local.rs`) holds a test image
//! that is not present locally, and pods reach it with `kubernetes.io/dockerconfigjson`
//! credentials from their `imagePullSecrets` or their ServiceAccount's, or fail to, with
//! ErrImagePull and then ImagePullBackOff carrying the registry's answer.
//!
//! Needs Docker and Debian's `docker-registry` and `apache2-utils` packages: every test panics
//! with a clear message when one is missing. The registry process, the pushed and pulled tags,
//! the containers and the network are removed when a test ends, also on failure.

#![allow(clippy::disallowed_methods)]

mod docker_cluster;
#[path = "registry/local.rs"]
mod local;

use base64::Engine;
use docker_cluster::{Cluster, NS, container_status, phase, waiting};
use local::{LocalRegistry, local_image_id};
use rudder_testkit::images;
use serde_json::{Value, json};

const REPO: &str = "rudder/pulltest";

/// A tag no earlier run used (the registry is new each time, but local tags are global).
fn unique_tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{what}-{}-{nanos}", std::process::id())
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A pull secret as `kubectl create secret docker-registry` makes it.
fn pull_secret(name: &str, server: &str, user: &str, password: &str) -> Value {
    let config = json!({"auths": {server: {
        "username": user, "password": password,
        "auth": b64(format!("{user}:{password}").as_bytes())}}});
    dockerconfigjson_secret(name, config.to_string().as_bytes())
}

fn dockerconfigjson_secret(name: &str, config: &[u8]) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
           "metadata": {"name": name, "namespace": NS},
           "data": {".dockerconfigjson": b64(config)}})
}

/// A long-running container of `image`, quick to delete (a shell as PID 1 ignores SIGTERM).
fn sleeper(image: &str, secrets: &[&str]) -> Value {
    let mut spec = json!({"terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": image, "command": ["sleep", "100000"]}]});
    if !secrets.is_empty() {
        let refs: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
        spec["imagePullSecrets"] = Value::Array(refs);
    }
    spec
}

fn running(p: &Value) -> bool {
    phase(p) == "Running" && container_status(p, "c")["state"]["running"].is_object()
}

/// Asserts the pod runs the pulled image: its status names the image id now present locally.
fn assert_runs_pulled(p: &Value, reference: &str) {
    let local = local_image_id(reference)
        .unwrap_or_else(|| panic!("{reference} is not present locally after the pod started"));
    let status = container_status(p, "c");
    assert_eq!(status["image"], json!(reference), "{p:#}");
    assert_eq!(
        status["imageID"].as_str(),
        Some(local.as_str()),
        "the status's imageID is the pulled image's: {p:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_and_service_accounts_bring_images_from_a_private_registry() {
    let mut reg = LocalRegistry::start("puller", "correct horse");
    let bb = images::busybox();
    let kubectl_style = reg.push(bb, REPO, &unique_tag("secret"));
    let docker_style = reg.push(bb, REPO, &unique_tag("fallback"));
    let via_sa = reg.push(bb, REPO, &unique_tag("sa"));
    let c = Cluster::start("ok", 20).await;
    c.create(
        "Secret",
        pull_secret("regcred", &reg.host, &reg.user, &reg.password),
    )
    .await;
    c.create(
        "Secret",
        pull_secret("stale", &reg.host, &reg.user, "an old password"),
    )
    .await;
    // What `docker login` wrote: an `auth` field only, as `--from-file` would carry it.
    c.create(
        "Secret",
        dockerconfigjson_secret("from-docker", &reg.docker_config_json()),
    )
    .await;
    c.create(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "builder", "namespace": NS},
               "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .await;

    c.pod("pulled", sleeper(&kubectl_style, &["regcred"])).await;
    let p = c.wait_pod("pulled", 60, "running", running).await;
    assert_runs_pulled(&p, &kubectl_style);

    // Every matching credential is tried in turn, as kubelet does: a stale one first does not
    // stop the pull.
    c.pod(
        "fallback",
        sleeper(&docker_style, &["stale", "from-docker"]),
    )
    .await;
    let p = c.wait_pod("fallback", 60, "running", running).await;
    assert_runs_pulled(&p, &docker_style);

    let mut spec = sleeper(&via_sa, &[]);
    spec["serviceAccountName"] = json!("builder");
    c.pod("via-sa", spec).await;
    let p = c.wait_pod("via-sa", 60, "running", running).await;
    assert_runs_pulled(&p, &via_sa);
    c.shutdown().await;
    drop(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_valid_credentials_pulls_back_off_until_the_service_account_has_them() {
    let mut reg = LocalRegistry::start("puller", "s3cret-pass");
    let bb = images::busybox();
    let image = reg.push(bb, REPO, &unique_tag("anonymous"));
    // Its own image, so that its recovery needs a pull of its own.
    let image2 = reg.push(bb, REPO, &unique_tag("wrong-password"));
    let c = Cluster::start("denied", 21).await;
    // The namespace's default ServiceAccount, without pull secrets for now (the API server
    // does not create it).
    c.create(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "default", "namespace": NS}}),
    )
    .await;
    c.create(
        "Secret",
        pull_secret("wrong", &reg.host, &reg.user, "not the password"),
    )
    .await;
    c.create(
        "Secret",
        pull_secret("regcred", &reg.host, &reg.user, &reg.password),
    )
    .await;
    // A pod whose image is local: the failing pulls beside it must not disturb it.
    c.pod("bystander", sleeper(bb, &[])).await;
    c.wait_pod("bystander", 60, "running", running).await;

    let logs = [
        c.record_waiting("anonymous").await,
        c.record_waiting("wrong-password").await,
    ];
    c.pod("anonymous", sleeper(&image, &[])).await;
    c.pod("wrong-password", sleeper(&image2, &["wrong"])).await;
    for ((pod, image, registry_said), log) in [
        ("anonymous", &image, "no basic auth credentials"),
        ("wrong-password", &image2, "unauthorized"),
    ]
    .into_iter()
    .zip(&logs)
    {
        let p = c
            .wait_pod(pod, 30, "ImagePullBackOff", |p| {
                waiting(p, "c").0 == "ImagePullBackOff"
            })
            .await;
        assert_eq!(phase(&p), "Pending", "{p:#}");
        let reasons = log.seen("ImagePullBackOff").await;
        assert!(
            reasons.ends_with(&["ErrImagePull".to_string(), "ImagePullBackOff".to_string()]),
            "{pod}: ErrImagePull, then ImagePullBackOff: {reasons:?}"
        );
        let (_, message) = waiting(&p, "c");
        assert!(
            message.starts_with(&format!(
                "Back-off pulling image \"{image}\": ErrImagePull:"
            )) && message.contains(registry_said),
            "{pod}: the back-off carries the registry's answer ({registry_said}): {message}"
        );
        // The failed pull itself was reported as ErrImagePull, with the same answer.
        let events = c.events(pod).await;
        assert!(
            events.iter().any(|(reason, m)| reason == "Failed"
                && m.starts_with(&format!("failed to pull image \"{image}\":"))
                && m.contains(registry_said)),
            "{pod}: a Failed event for the pull: {events:#?}"
        );
        assert!(
            local_image_id(image).is_none(),
            "nothing was pulled without valid credentials"
        );
    }
    let p = c.get_pod("bystander").await.expect("bystander");
    assert!(running(&p), "the other pod is unaffected: {p:#}");
    assert_eq!(container_status(&p, "c")["restartCount"], 0, "{p:#}");

    // Credentials arrive through the namespace's default ServiceAccount: the next retry (10 s
    // after the first failure) pulls. The pod with the wrong secret falls back to them too.
    c.patch(
        "ServiceAccount",
        "default",
        json!({"imagePullSecrets": [{"name": "regcred"}]}),
    )
    .await;
    for (pod, image) in [("anonymous", &image), ("wrong-password", &image2)] {
        let p = c
            .wait_pod(pod, 40, "running once credentials exist", running)
            .await;
        assert_runs_pulled(&p, image);
    }
    c.shutdown().await;
    drop(reg);
}
