//! Images: `imagePullPolicy`, pull credentials from `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson`, the pod's and its ServiceAccount's), and the pull back-off
//! that turns a failing pull into ErrImagePull, then ImagePullBackOff.
//!
//! Every credential matching the image's registry is tried in turn, the pod's secrets first,
//! then its ServiceAccount's (as kubelet does); with none the pull is anonymous. A failure
//! reports each distinct answer of the registry.

use rudder_api::k8s_openapi::api::core::v1::{Container, Pod, Secret};
use serde_json::Value;

use crate::objects::ObjectSource;
use crate::runtime::{ContainerRuntime, PullAuth, RuntimeError};

/// The registry host an image reference names (`docker.io` when none is named).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Whether the reference names a tag other than `latest` or a digest.
fn pinned(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag != "latest",
        None => false,
    }
}

/// The effective pull policy: as given, else `Always` for `:latest` or no tag, `IfNotPresent`
/// otherwise (Kubernetes' defaulting).
pub fn pull_policy(c: &Container) -> &str {
    match c.image_pull_policy.as_deref() {
        Some(p) if !p.is_empty() => p,
        _ => {
            if pinned(c.image.as_deref().unwrap_or("")) {
                "IfNotPresent"
            } else {
                "Always"
            }
        }
    }
}

/// Credentials for `registry` in a dockerconfigjson secret.
pub fn auth_from_secret(secret: &Secret, registry: &str) -> Option<PullAuth> {
    // `stringData` counts too: the fake API stores it unfolded.
    let data = crate::objects::secret_data(secret);
    let raw = data
        .get(".dockerconfigjson")
        .or_else(|| data.get(".dockercfg"))?;
    let v: Value = serde_json::from_slice(raw).ok()?;
    let auths = v.get("auths").unwrap_or(&v).as_object()?;
    let norm = |s: &str| {
        s.trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let want = norm(registry);
    let docker_hub = want == "docker.io" || want == "index.docker.io";
    let (server, entry) = auths.iter().find(|(k, _)| {
        let k = norm(k);
        k == want || (docker_hub && (k == "index.docker.io" || k == "docker.io"))
    })?;
    let (mut username, mut password) = (
        entry["username"].as_str().unwrap_or("").to_string(),
        entry["password"].as_str().unwrap_or("").to_string(),
    );
    if username.is_empty()
        && let Some(a) = entry["auth"].as_str()
    {
        use base64::Engine;
        let dec = base64::engine::general_purpose::STANDARD.decode(a).ok()?;
        let s = String::from_utf8(dec).ok()?;
        let (u, p) = s.split_once(':')?;
        username = u.to_string();
        password = p.to_string();
    }
    Some(PullAuth {
        server: server.clone(),
        username,
        password,
    })
}

/// Why an image is not ready: the waiting reason and message for the container status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    pub reason: &'static str,
    pub message: String,
    /// Whether a retry is worth it (a pull failed) or only a spec change helps.
    pub pull_failed: bool,
}

/// Makes `c`'s image present as its policy says; returns the image id.
/// `note(reason, message)` receives kubelet's Normal events: `Pulling`, `Pulled` (with the
/// pull's duration, or "already present on machine").
pub async fn ensure(
    runtime: &dyn ContainerRuntime,
    objects: &dyn ObjectSource,
    pod: &Pod,
    c: &Container,
    clock: &dyn rudder_client::clock::Clock,
    note: &(dyn Fn(&str, String) + Send + Sync),
) -> Result<String, ImageError> {
    let image = c.image.clone().unwrap_or_default();
    let policy = pull_policy(c);
    let engine = |e: RuntimeError| ImageError {
        reason: "ErrImagePull",
        message: e.to_string(),
        pull_failed: true,
    };
    let present = runtime.image_id(&image).await.map_err(engine)?;
    match (policy, present) {
        ("Never", Some(id)) | ("IfNotPresent", Some(id)) => {
            note(
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(id);
        }
        ("Never", None) => {
            return Err(ImageError {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
                pull_failed: false,
            });
        }
        _ => {}
    }
    let auths = pull_auths(objects, pod, &image).await;
    note("Pulling", format!("Pulling image \"{image}\""));
    let t0 = clock.instant();
    let pulled = |id: String| {
        let took = clock.instant().saturating_duration_since(t0);
        note(
            "Pulled",
            format!(
                "Successfully pulled image \"{image}\" in {:.3}s. Image id: {id}",
                took.as_secs_f64()
            ),
        );
        id
    };
    if auths.is_empty() {
        return runtime
            .pull(&image, None)
            .await
            .map(pulled)
            .map_err(|e| match e {
                RuntimeError::PullFailed { message, .. } => pull_error(&image, vec![message]),
                other => engine(other),
            });
    }
    // As kubelet: each matching credential in turn, the first that works wins (a stale pod
    // secret does not hide a good one in the ServiceAccount).
    let mut failures = Vec::new();
    for auth in &auths {
        match runtime.pull(&image, Some(auth)).await {
            Ok(id) => return Ok(pulled(id)),
            Err(RuntimeError::PullFailed { message, .. }) => failures.push(message),
            // The engine itself failed: other credentials would fare no better.
            Err(e) => return Err(engine(e)),
        }
    }
    Err(pull_error(&image, failures))
}

/// ErrImagePull with the engine's answers (one per credential tried, repeats dropped).
fn pull_error(image: &str, mut messages: Vec<String>) -> ImageError {
    // Unsorted: keep the first of each message in place.
    let mut seen = std::collections::HashSet::new();
    messages.retain(|m| seen.insert(m.clone()));
    ImageError {
        reason: "ErrImagePull",
        message: format!("failed to pull image \"{image}\": {}", messages.join("; ")),
        pull_failed: true,
    }
}

/// Every matching credential among the pod's pull secrets, then its ServiceAccount's, in that
/// order, without repeats.
async fn pull_auths(objects: &dyn ObjectSource, pod: &Pod, image: &str) -> Vec<PullAuth> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut names: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    let sa = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    if let Ok(Some(sa)) = objects.service_account(&ns, &sa).await {
        names.extend(
            sa.image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone()),
        );
    }
    let registry = registry_of(image);
    let mut auths: Vec<PullAuth> = Vec::new();
    for name in names {
        if let Ok(Some(secret)) = objects.secret(&ns, &name).await
            && let Some(a) = auth_from_secret(&secret, registry)
            && !auths.contains(&a)
        {
            auths.push(a);
        }
    }
    auths
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registries_and_policies() {
        assert_eq!(registry_of("localhost:5000/app:1"), "localhost:5000");
        assert_eq!(
            registry_of("registry.example.com/a/b"),
            "registry.example.com"
        );
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
        let c = |image: &str| -> Container {
            serde_json::from_value(json!({"name": "c", "image": image})).expect("container")
        };
        assert_eq!(pull_policy(&c("a")), "Always");
        assert_eq!(pull_policy(&c("a:latest")), "Always");
        assert_eq!(pull_policy(&c("a:1.0")), "IfNotPresent");
        assert_eq!(pull_policy(&c("localhost:5000/a")), "Always");
        assert_eq!(pull_policy(&c("a@sha256:00")), "IfNotPresent");
    }

    #[test]
    fn credentials_from_a_dockerconfigjson_secret() {
        use base64::Engine;
        let cfg = json!({"auths": {
            "localhost:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p")},
            "https://index.docker.io/v1/": {"username": "hub", "password": "x"}
        }});
        let s: Secret = serde_json::from_value(json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(cfg.to_string())}
        }))
        .expect("secret");
        let a = auth_from_secret(&s, "localhost:5000").expect("local auth");
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        assert_eq!(
            auth_from_secret(&s, "docker.io").expect("hub").username,
            "hub"
        );
        assert_eq!(auth_from_secret(&s, "other:5000"), None);
    }

    #[tokio::test]
    async fn every_matching_credential_is_tried_in_turn() {
        use crate::objects::testing::MemObjects;
        use crate::runtime::fake::{Call, FakeRuntime};
        let rt = FakeRuntime::new(rudder_client::clock::ManualClock::shared(1));
        let image = "127.0.0.1:5000/app:1";
        let good = PullAuth {
            server: "127.0.0.1:5000".into(),
            username: "u".into(),
            password: "right".into(),
        };
        rt.add_registry_image(image, Some(good));
        let objects = MemObjects::default();
        let secret = |name: &str, password: &str| {
            let cfg = json!({"auths": {"127.0.0.1:5000": {"username": "u", "password": password}}});
            json!({"metadata": {"name": name, "namespace": "ns"},
                   "type": "kubernetes.io/dockerconfigjson",
                   "stringData": {".dockerconfigjson": cfg.to_string()}})
        };
        objects.put_secret(secret("stale", "old"));
        objects.put_secret(secret("good", "right"));
        let pod = |secrets: &[&str]| -> Pod {
            let refs: Vec<_> = secrets.iter().map(|s| json!({"name": s})).collect();
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
                "spec": {"imagePullSecrets": refs, "containers": [{"name": "c", "image": image}]}}))
            .expect("pod")
        };
        let c: Container = serde_json::from_value(json!({"name": "c", "image": image})).expect("c");
        let pulls = || {
            rt.calls()
                .iter()
                .filter(|c| matches!(c, Call::Pull(_)))
                .count()
        };
        let clock = rudder_client::clock::RealClock;
        let notes = std::sync::Mutex::new(Vec::<String>::new());
        let note = |reason: &str, _msg: String| {
            notes.lock().expect("notes").push(reason.to_string());
        };
        let e = ensure(&rt, &objects, &pod(&["stale", "stale"]), &c, &clock, &note)
            .await
            .expect_err("only a stale credential");
        assert_eq!(
            e.message,
            format!("failed to pull image \"{image}\": unauthorized: authentication required")
        );
        assert_eq!(pulls(), 1, "a repeated secret is tried once");
        let id = ensure(&rt, &objects, &pod(&["stale", "good"]), &c, &clock, &note)
            .await
            .expect("the second credential pulls");
        assert!(id.starts_with("sha256:"), "{id}");
        assert_eq!(pulls(), 3);
        assert_eq!(
            *notes.lock().expect("notes"),
            vec!["Pulling", "Pulling", "Pulled"],
            "a Pulling event per attempt, Pulled on success"
        );
    }
}
