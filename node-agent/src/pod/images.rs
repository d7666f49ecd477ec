//! Images: `imagePullPolicy`, pull credentials from `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson`, the pod's and its ServiceAccount's), and the pull back-off
//! that turns a failing pull into ErrImagePull, then ImagePullBackOff.

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
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson").or_else(|| d.get(".dockercfg")))?;
    let v: Value = serde_json::from_slice(&raw.0).ok()?;
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
pub async fn ensure(
    runtime: &dyn ContainerRuntime,
    objects: &dyn ObjectSource,
    pod: &Pod,
    c: &Container,
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
        ("Never", Some(id)) | ("IfNotPresent", Some(id)) => return Ok(id),
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
    let auth = pull_auth(objects, pod, &image).await;
    runtime
        .pull(&image, auth.as_ref())
        .await
        .map_err(|e| ImageError {
            reason: "ErrImagePull",
            message: match e {
                RuntimeError::PullFailed { message, .. } => {
                    format!("failed to pull image \"{image}\": {message}")
                }
                other => other.to_string(),
            },
            pull_failed: true,
        })
}

/// The first matching credentials among the pod's pull secrets, then its ServiceAccount's.
async fn pull_auth(objects: &dyn ObjectSource, pod: &Pod, image: &str) -> Option<PullAuth> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
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
    for name in names {
        if let Ok(Some(secret)) = objects.secret(&ns, &name).await
            && let Some(a) = auth_from_secret(&secret, registry)
        {
            return Some(a);
        }
    }
    None
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
}
