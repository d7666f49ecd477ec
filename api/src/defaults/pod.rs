//! Pod defaults: the pod spec, its containers, probes and volumes. Shared by every kind that
//! embeds a pod template (Deployment, Job, …) through [`default_pod_template`].

use k8s_openapi::api::core::v1::{
    Container, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Volume,
};

use super::{Defaulting, or_str, or_val};

impl Defaulting for k8s_openapi::api::core::v1::Pod {
    fn apply_defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            default_pod_spec(spec);
        }
    }
}

/// Defaults the pod spec of a template, if it has one.
pub fn default_pod_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// Kubernetes' `SetDefaults_PodSpec` and what it reaches: containers, probes, volumes.
pub fn default_pod_spec(spec: &mut PodSpec) {
    or_str(&mut spec.restart_policy, "Always");
    or_str(&mut spec.dns_policy, "ClusterFirst");
    or_val(&mut spec.termination_grace_period_seconds, 30);
    or_str(&mut spec.scheduler_name, "default-scheduler");
    or_val(&mut spec.security_context, PodSecurityContext::default());
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

/// `Always` when the image has no tag or the `latest` tag and no digest, else `IfNotPresent`:
/// a floating tag must be re-pulled to mean anything.
pub fn default_image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A `:` before the last `/` is a registry port, not a tag.
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        let policy = default_image_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.to_string());
    }
    or_str(&mut c.termination_message_path, "/dev/termination-log");
    or_str(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        or_str(&mut p.protocol, "TCP");
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(field_ref) = e.value_from.as_mut().and_then(|s| s.field_ref.as_mut()) {
            or_str(&mut field_ref.api_version, "v1");
        }
    }
    // A limit without a request means the request equals the limit, resource by resource.
    if let Some(resources) = c.resources.as_mut()
        && let Some(limits) = resources.limits.clone()
    {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (name, q) in limits {
            requests.entry(name).or_insert(q);
        }
    }
}

fn default_probe(p: &mut Probe) {
    or_val(&mut p.timeout_seconds, 1);
    or_val(&mut p.period_seconds, 10);
    or_val(&mut p.success_threshold, 1);
    or_val(&mut p.failure_threshold, 3);
    if let Some(http) = p.http_get.as_mut() {
        or_str(&mut http.path, "/");
        or_str(&mut http.scheme, "HTTP");
    }
}

/// Projected files are world-readable, owner-writable (0644) unless told otherwise.
const DEFAULT_FILE_MODE: i32 = 0o644;

fn default_volume(v: &mut Volume) {
    if let Some(s) = v.secret.as_mut() {
        or_val(&mut s.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(s) = v.config_map.as_mut() {
        or_val(&mut s.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        or_val(&mut s.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(s) = v.projected.as_mut() {
        or_val(&mut s.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(s) = v.host_path.as_mut() {
        or_str(&mut s.type_, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(default_image_pull_policy("nginx"), "Always");
        assert_eq!(default_image_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_image_pull_policy("nginx:1.14.2"), "IfNotPresent");
        assert_eq!(default_image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(
            default_image_pull_policy("localhost:5000/nginx:1"),
            "IfNotPresent"
        );
        assert_eq!(
            default_image_pull_policy("nginx@sha256:abc"),
            "IfNotPresent"
        );
        assert_eq!(
            default_image_pull_policy("nginx:latest@sha256:abc"),
            "IfNotPresent"
        );
    }

    #[test]
    fn pod_defaults() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{
                "name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}
            }]}
        }))
        .unwrap();
        pod.apply_defaults();
        let v = serde_json::to_value(&pod).unwrap();
        let spec = &v["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                   "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
    }

    #[test]
    fn set_fields_are_kept() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]}
        }))
        .unwrap();
        pod.apply_defaults();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }
}
