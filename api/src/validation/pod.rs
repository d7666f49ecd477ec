//! Pod validation: the pod spec (also every workload's pod template, under its path prefix), its
//! containers, ports, env, resources, volumes and probes, and what a pod update may change.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Probe, Volume};

use super::helpers::{
    Errs, Path, at_least, count_set, dns_label, dns_subdomain, enum_value, exactly_one, label_map,
    non_negative, opt_enum, port_name, port_number, port_number_or_name, required_str,
    resource_list, unique,
};
use super::{FieldError, Validate};

pub(crate) const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
pub(crate) const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];

const ENV_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";

impl Validate for Pod {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let path = Path::new("spec");
        let Some(spec) = self.spec.as_ref() else {
            return vec![FieldError::required(path)];
        };
        let mut errs = validate_pod_spec(spec, &path);
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            errs.extend(validate_pod_spec_update(spec, old_spec, &path));
        }
        errs
    }
}

/// A pod template: its labels and its spec (which is required), under `path`.
pub fn validate_pod_template(template: &PodTemplateSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(meta) = template.metadata.as_ref() {
        let meta_path = path.child("metadata");
        label_map(&mut errs, &meta_path.child("labels"), meta.labels.as_ref());
    }
    match template.spec.as_ref() {
        Some(spec) => errs.extend(validate_pod_spec(spec, &path.child("spec"))),
        None => errs.push(FieldError::required(path.child("spec"))),
    }
    errs
}

/// A pod spec under `path` (`spec` for a Pod, `spec.template.spec` for a Deployment).
pub fn validate_pod_spec(spec: &PodSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(
        &mut errs,
        spec.volumes.as_deref().unwrap_or(&[]),
        &path.child("volumes"),
    );
    // Container names share one namespace across init and regular containers: both appear in
    // status and logs by name.
    let mut names = HashSet::new();
    let init = spec.init_containers.as_deref().unwrap_or(&[]);
    for (i, c) in init.iter().enumerate() {
        validate_container(
            &mut errs,
            c,
            &path.child("initContainers").index(i),
            &volumes,
            &mut names,
        );
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(path.child("containers")));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            &mut errs,
            c,
            &path.child("containers").index(i),
            &volumes,
            &mut names,
        );
    }
    opt_enum(
        &mut errs,
        &path.child("restartPolicy"),
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
    );
    opt_enum(
        &mut errs,
        &path.child("dnsPolicy"),
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
    );
    if spec.dns_policy.as_deref() == Some("None") && spec.dns_config.is_none() {
        errs.push(FieldError::required(path.child("dnsConfig")));
    }
    non_negative(
        &mut errs,
        &path.child("terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    at_least(
        &mut errs,
        &path.child("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        1,
    );
    label_map(
        &mut errs,
        &path.child("nodeSelector"),
        spec.node_selector.as_ref(),
    );
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        dns_subdomain(&mut errs, &path.child("serviceAccountName"), sa);
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|s| !s.is_empty()) {
            dns_label(&mut errs, &path.child(field), v);
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let p = path.child("tolerations").index(i);
        opt_enum(
            &mut errs,
            &p.child("operator"),
            t.operator.as_deref(),
            &["Equal", "Exists"],
        );
        if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            enum_value(&mut errs, &p.child("effect"), effect, TAINT_EFFECTS);
        }
        if t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            errs.push(FieldError::invalid(
                p.child("operator"),
                "Exists",
                "value must be empty when `operator` is 'Exists'",
            ));
        }
    }
    errs
}

/// Volume names are DNS labels and unique; each volume has exactly one source. Returns the names.
fn validate_volumes(errs: &mut Errs, volumes: &[Volume], path: &Path) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        if v.name.is_empty() {
            errs.push(FieldError::required(p.child("name")));
        } else {
            dns_label(errs, &p.child("name"), &v.name);
            unique(errs, &p.child("name"), &v.name, &mut names);
        }
        // Every field of a volume but its name is a source; the serialised form lists the set ones.
        let sources: Vec<String> = match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(m)) => {
                m.keys().filter(|k| *k != "name").cloned().collect()
            }
            _ => Vec::new(),
        };
        exactly_one(errs, &p, &sources, "volume type");
    }
    names
}

fn validate_container(
    errs: &mut Errs,
    c: &Container,
    path: &Path,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
) {
    let name_path = path.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path));
    } else {
        dns_label(errs, &name_path, &c.name);
        unique(errs, &name_path, &c.name, names);
    }
    required_str(errs, &path.child("image"), c.image.as_deref());
    opt_enum(
        errs,
        &path.child("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
    );
    opt_enum(
        errs,
        &path.child("terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        TERMINATION_MESSAGE_POLICIES,
    );
    validate_ports(errs, c, &path.child("ports"));
    validate_env(errs, c, &path.child("env"));
    validate_resources(errs, c, &path.child("resources"));
    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = path.child("volumeMounts").index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(p.child("name")));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(p.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(p.child("mountPath")));
        } else if !mount_paths.insert(m.mount_path.clone()) {
            errs.push(FieldError::invalid(
                p.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(errs, probe, &path.child(field), field != "readinessProbe");
        }
    }
}

fn validate_ports(errs: &mut Errs, c: &Container, path: &Path) {
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let p = path.index(i);
        port_number(errs, &p.child("containerPort"), port.container_port);
        // Zero means "no host port", as in Kubernetes.
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            port_number(errs, &p.child("hostPort"), hp);
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            port_name(errs, &p.child("name"), name);
            unique(errs, &p.child("name"), name, &mut port_names);
        }
        opt_enum(
            errs,
            &p.child("protocol"),
            port.protocol.as_deref(),
            PROTOCOLS,
        );
    }
}

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`: what a shell or a process can receive as a variable name.
fn is_env_var_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    name.bytes()
        .next()
        .is_some_and(|b| !b.is_ascii_digit() && ok(b))
        && name.bytes().all(ok)
}

fn validate_env(errs: &mut Errs, c: &Container, path: &Path) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        let p = path.index(i);
        if e.name.is_empty() {
            errs.push(FieldError::required(p.child("name")));
        } else if !is_env_var_name(&e.name) {
            errs.push(FieldError::invalid(p.child("name"), &e.name, ENV_NAME_MSG));
        }
        let Some(from) = e.value_from.as_ref() else {
            continue;
        };
        let sources = count_set(&[
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.file_key_ref.is_some(),
        ]);
        if sources != 1 {
            errs.push(FieldError::invalid(
                p.child("valueFrom"),
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef` or `fileKeyRef`",
            ));
        }
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                p.child("valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
    }
}

fn validate_resources(errs: &mut Errs, c: &Container, path: &Path) {
    let Some(r) = c.resources.as_ref() else {
        return;
    };
    let limits = resource_list(errs, &path.child("limits"), r.limits.as_ref());
    let requests = resource_list(errs, &path.child("requests"), r.requests.as_ref());
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name).filter(|lim| req > *lim) {
            let raw = r
                .requests
                .as_ref()
                .and_then(|m| m.get(name))
                .map_or(String::new(), |q| q.0.clone());
            let lim_raw = r
                .limits
                .as_ref()
                .and_then(|m| m.get(name))
                .map_or(lim.to_string(), |q| q.0.clone());
            errs.push(FieldError::invalid(
                path.child("requests").key(name),
                raw,
                format!("must be less than or equal to {name} limit of {lim_raw}"),
            ));
        }
    }
}

/// `once`: liveness and startup probes, whose success threshold must be 1.
fn validate_probe(errs: &mut Errs, probe: &Probe, path: &Path, once: bool) {
    let handlers = count_set(&[
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]);
    match handlers {
        0 => errs.push(FieldError::required(path)),
        1 => {}
        _ => errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(h) = probe.http_get.as_ref() {
        port_number_or_name(errs, &path.child("httpGet").child("port"), &h.port);
        opt_enum(
            errs,
            &path.child("httpGet").child("scheme"),
            h.scheme.as_deref(),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(t) = probe.tcp_socket.as_ref() {
        port_number_or_name(errs, &path.child("tcpSocket").child("port"), &t.port);
    }
    if let Some(g) = probe.grpc.as_ref() {
        port_number(errs, &path.child("grpc").child("port"), g.port);
    }
    for (field, v) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(errs, &path.child(field), v);
    }
    if once && probe.success_threshold.is_some_and(|s| s != 1) {
        errs.push(FieldError::invalid(
            path.child("successThreshold"),
            probe.success_threshold.unwrap_or_default(),
            "must be 1",
        ));
    }
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.nodeName` (only when unset)";

/// A pod's spec is fixed once created, but for images, the deadline, added tolerations and a
/// first node assignment: the kubelet restarts a container to change its image, nothing else.
fn validate_pod_spec_update(new: &PodSpec, old: &PodSpec, path: &Path) -> Vec<FieldError> {
    let mut mutated = new.clone();
    let carry_images = |new: &mut [Container], old: &[Container]| {
        if new.len() == old.len() {
            for (n, o) in new.iter_mut().zip(old) {
                n.image.clone_from(&o.image);
            }
        }
    };
    carry_images(&mut mutated.containers, &old.containers);
    if let (Some(n), Some(o)) = (
        mutated.init_containers.as_mut(),
        old.init_containers.as_ref(),
    ) {
        carry_images(n, o);
    }
    mutated.active_deadline_seconds = old.active_deadline_seconds;
    let old_tolerations = old.tolerations.as_deref().unwrap_or(&[]);
    let new_tolerations = mutated.tolerations.as_deref().unwrap_or(&[]);
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        mutated.tolerations.clone_from(&old.tolerations);
    }
    if old.node_name.as_deref().unwrap_or("").is_empty() {
        mutated.node_name.clone_from(&old.node_name);
    }
    if mutated == *old {
        Vec::new()
    } else {
        vec![FieldError::forbidden(path, POD_UPDATE_MSG)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn errors(p: &Pod, old: Option<&Pod>) -> Vec<String> {
        p.validate(old).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_pod_passes() {
        let p = pod(
            json!({"restartPolicy": "Always", "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
                "env": [{"name": "A_B.c-d", "value": "1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                "readinessProbe": {"tcpSocket": {"port": "http"}}}]}),
        );
        assert_eq!(errors(&p, None), Vec::<String>::new());
    }

    #[test]
    fn reports_each_problem_with_its_path() {
        let p = pod(
            json!({"restartPolicy": "Sometimes", "dnsPolicy": "Local", "terminationGracePeriodSeconds": -1,
            "nodeSelector": {"disk": "ssd!"},
            "volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}],
            "initContainers": [{"name": "web", "image": "busybox"}],
            "containers": [{"name": "web", "imagePullPolicy": "Sometimes",
                "ports": [{"containerPort": 70000, "name": "http", "protocol": "HTTP"}, {"containerPort": 81, "name": "http"}],
                "env": [{"name": "1X"}],
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "lots"}},
                "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}, "successThreshold": 2}}]}),
        );
        let errs = errors(&p, None);
        let expect = [
            "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.containers[0].name: Duplicate value: \"web\"",
            "spec.containers[0].image: Required value",
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
            "spec.containers[0].env[0].name: Invalid value: \"1X\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Local\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x == e), "missing {e}\nin {errs:#?}");
        }
        assert!(
            errs.iter()
                .any(|x| x.starts_with("spec.nodeSelector[disk]: Invalid value: \"ssd!\"")),
            "{errs:#?}"
        );
        assert_eq!(errs.len(), expect.len() + 1, "{errs:#?}");
    }

    #[test]
    fn no_containers_and_no_handler() {
        let p = pod(json!({"containers": []}));
        assert_eq!(errors(&p, None), vec!["spec.containers: Required value"]);
        let p = pod(json!({"containers": [{"name": "c", "image": "i", "readinessProbe": {}}]}));
        assert_eq!(
            errors(&p, None),
            vec!["spec.containers[0].readinessProbe: Required value"]
        );
    }

    #[test]
    fn updates_may_change_only_images_deadline_tolerations_and_unset_node() {
        let old = pod(json!({"containers": [{"name": "c", "image": "nginx:1"}],
            "tolerations": [{"key": "a", "operator": "Exists"}]}));
        let ok = pod(
            json!({"containers": [{"name": "c", "image": "nginx:2"}], "nodeName": "n1",
            "activeDeadlineSeconds": 10,
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}),
        );
        assert_eq!(errors(&ok, Some(&old)), Vec::<String>::new());
        let bad = pod(
            json!({"containers": [{"name": "c", "image": "nginx:1", "args": ["x"]}],
            "tolerations": [{"key": "a", "operator": "Exists"}]}),
        );
        assert_eq!(
            errors(&bad, Some(&old)),
            vec![format!("spec: Forbidden: {POD_UPDATE_MSG}")]
        );
        let moved = pod(
            json!({"containers": [{"name": "c", "image": "nginx:1"}], "nodeName": "n2",
            "tolerations": [{"key": "a", "operator": "Exists"}]}),
        );
        assert_eq!(errors(&moved, Some(&ok)).len(), 1);
        let dropped = pod(json!({"containers": [{"name": "c", "image": "nginx:1"}]}));
        assert_eq!(errors(&dropped, Some(&old)).len(), 1);
    }
}
