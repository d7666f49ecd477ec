//! A pod template printed as kubectl's `rollout history --revision` and `rollout undo
//! --dry-run=client` print it (kubectl's pod template describer): `Key:\tvalue` lines, indented
//! two spaces per level, with the tabs left raw, since kubectl writes them without aligning.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

/// kubectl's limit for an annotation on one line (key, `: ` and value).
const MAX_ANNOTATION_LEN: usize = 140;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn flag(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

/// An int-or-string field (a port) as Go prints it.
fn int_or_string(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(x)) => x.clone(),
        _ => String::new(),
    }
}

fn string_map(v: &Value, ptr: &str) -> BTreeMap<String, String> {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A quantity in its canonical form, as kubectl prints one; unparsable text as it is.
fn quantity(q: &str) -> String {
    rudder_api::quantity::parse_quantity(q)
        .map(|q| q.to_string())
        .unwrap_or_else(|_| q.to_string())
}

fn labels(out: &mut String, title: &str, m: &BTreeMap<String, String>) {
    let _ = write!(out, "{title}:\t");
    if m.is_empty() {
        out.push_str("<none>\n");
        return;
    }
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let _ = writeln!(out, "{k}={v}");
    }
}

fn annotations(out: &mut String, title: &str, m: &BTreeMap<String, String>) {
    let _ = write!(out, "{title}:\t");
    if m.is_empty() {
        out.push_str("<none>\n");
        return;
    }
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            let _ = writeln!(out, "{k}:");
            for line in v.split('\n') {
                let _ = writeln!(out, "\t  {}", shorten(line, MAX_ANNOTATION_LEN - 2));
            }
        } else {
            let _ = writeln!(out, "{k}: {v}");
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// `80/TCP, 443/TCP` for the container or the host ports.
fn ports(c: &Value, field: &str) -> String {
    arr(c, "/ports")
        .iter()
        .map(|p| {
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            format!("{}/{proto}", int(p, field))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn probe(p: &Value) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        int(p, "/initialDelaySeconds"),
        int(p, "/timeoutSeconds"),
        int(p, "/periodSeconds"),
        int(p, "/successThreshold"),
        int(p, "/failureThreshold")
    );
    if let Some(e) = p.get("exec") {
        let cmd: Vec<&str> = arr(e, "/command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        return format!("exec [{}] {attrs}", cmd.join(" "));
    }
    if let Some(h) = p.get("httpGet") {
        let scheme = match s(h, "/scheme") {
            "" => "http".to_string(),
            x => x.to_lowercase(),
        };
        let port = int_or_string(h, "/port");
        let host = s(h, "/host");
        let authority = if port.is_empty() {
            host.to_string()
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = s(h, "/path");
        let sep = if path.is_empty() || path.starts_with('/') {
            ""
        } else {
            "/"
        };
        return format!("http-get {scheme}://{authority}{sep}{path} {attrs}");
    }
    if let Some(t) = p.get("tcpSocket") {
        return format!(
            "tcp-socket {}:{} {attrs}",
            s(t, "/host"),
            int_or_string(t, "/port")
        );
    }
    if let Some(g) = p.get("grpc") {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            int(g, "/port"),
            s(g, "/service")
        );
    }
    format!("unknown {attrs}")
}

/// A `resourceFieldRef` env value as kubectl computes it from the container's own resources:
/// the quantity divided by the divisor, rounded up; "node allocatable" for an unset limit.
fn resource_field_value(c: &Value, r: &Value) -> String {
    let resource = s(r, "/resource");
    let (section, name) = resource.split_once('.').unwrap_or(("", resource));
    let divisor = rudder_api::quantity::parse_quantity(match s(r, "/divisor") {
        "" => "1",
        d => d,
    })
    .map(|q| q.nanos())
    .unwrap_or(1_000_000_000);
    let value = c
        .pointer(&format!("/resources/{section}/{name}"))
        .and_then(Value::as_str)
        .and_then(|q| rudder_api::quantity::parse_quantity(q).ok())
        .map(|q| q.nanos())
        .unwrap_or(0);
    if value == 0 && section == "limits" && (name == "cpu" || name == "memory") {
        return "node allocatable".to_string();
    }
    if divisor <= 0 {
        return "0".to_string();
    }
    let q = value / divisor + i128::from(value % divisor != 0);
    q.to_string()
}

fn env(out: &mut String, c: &Value) {
    let from = arr(c, "/envFrom");
    if !from.is_empty() {
        out.push_str("    Environment Variables from:\n");
        for e in from {
            let (kind, name, optional) = if let Some(r) = e.get("configMapRef") {
                ("ConfigMap", s(r, "/name"), flag(r, "/optional"))
            } else if let Some(r) = e.get("secretRef") {
                ("Secret", s(r, "/name"), flag(r, "/optional"))
            } else {
                ("", "", false)
            };
            match s(e, "/prefix") {
                "" => {
                    let _ = writeln!(out, "      {name}\t{kind}\tOptional: {optional}");
                }
                p => {
                    let _ = writeln!(
                        out,
                        "      {name}\t{kind} with prefix '{p}'\tOptional: {optional}"
                    );
                }
            }
        }
    }
    let vars = arr(c, "/env");
    if vars.is_empty() {
        out.push_str("    Environment:\t<none>\n");
        return;
    }
    out.push_str("    Environment:\n");
    for e in vars {
        let name = s(e, "/name");
        let Some(vf) = e.get("valueFrom") else {
            for (i, line) in s(e, "/value").split('\n').enumerate() {
                if i == 0 {
                    let _ = writeln!(out, "      {name}:\t{line}");
                } else {
                    let _ = writeln!(out, "      \t{line}");
                }
            }
            continue;
        };
        if let Some(f) = vf.get("fieldRef") {
            let av = match s(f, "/apiVersion") {
                "" => "v1",
                x => x,
            };
            let _ = writeln!(out, "      {name}:\t ({av}:{})", s(f, "/fieldPath"));
        } else if let Some(r) = vf.get("resourceFieldRef") {
            let _ = writeln!(
                out,
                "      {name}:\t{} ({})",
                resource_field_value(c, r),
                s(r, "/resource")
            );
        } else if let Some(r) = vf.get("secretKeyRef") {
            let _ = writeln!(
                out,
                "      {name}:\t<set to the key '{}' in secret '{}'>\tOptional: {}",
                s(r, "/key"),
                s(r, "/name"),
                flag(r, "/optional")
            );
        } else if let Some(r) = vf.get("configMapKeyRef") {
            let _ = writeln!(
                out,
                "      {name}:\t<set to the key '{}' of config map '{}'>\tOptional: {}",
                s(r, "/key"),
                s(r, "/name"),
                flag(r, "/optional")
            );
        }
    }
}

fn mounts(out: &mut String, c: &Value) {
    let mut ms: Vec<&Value> = arr(c, "/volumeMounts").iter().collect();
    if ms.is_empty() {
        out.push_str("    Mounts:\t<none>\n");
    } else {
        out.push_str("    Mounts:\n");
        ms.sort_by(|a, b| s(a, "/mountPath").cmp(s(b, "/mountPath")));
        for m in ms {
            let mut flags = vec![if flag(m, "/readOnly") { "ro" } else { "rw" }.to_string()];
            if !s(m, "/subPath").is_empty() {
                flags.push(format!("path={:?}", s(m, "/subPath")));
            }
            let _ = writeln!(
                out,
                "      {} from {} ({})",
                s(m, "/mountPath"),
                s(m, "/name"),
                flags.join(",")
            );
        }
    }
    let devices = arr(c, "/volumeDevices");
    if !devices.is_empty() {
        out.push_str("    Devices:\n");
        for d in devices {
            let _ = writeln!(out, "      {} from {}", s(d, "/devicePath"), s(d, "/name"));
        }
    }
}

fn resources(out: &mut String, c: &Value) {
    for (title, section) in [("Limits", "limits"), ("Requests", "requests")] {
        let m = string_map(c, &format!("/resources/{section}"));
        if m.is_empty() {
            continue;
        }
        let _ = writeln!(out, "    {title}:");
        for (k, v) in m {
            let _ = writeln!(out, "      {k}:\t{}", quantity(&v));
        }
    }
}

fn containers(out: &mut String, label: &str, cs: &[Value]) {
    let none = if cs.is_empty() { " <none>" } else { "" };
    let _ = writeln!(out, "  {label}:{none}");
    for c in cs {
        let _ = writeln!(out, "   {}:", s(c, "/name"));
        let _ = writeln!(out, "    Image:\t{}", s(c, "/image"));
        for (one, many, field) in [
            ("Port", "Ports", "/containerPort"),
            ("Host Port", "Host Ports", "/hostPort"),
        ] {
            let p = ports(c, field);
            if p.contains(',') {
                let _ = writeln!(out, "    {many}:\t{p}");
            } else {
                let p = if p.is_empty() { "<none>" } else { &p };
                let _ = writeln!(out, "    {one}:\t{p}");
            }
        }
        if !s(c, "/restartPolicy").is_empty() {
            let _ = writeln!(out, "    Restart Policy:\t{}", s(c, "/restartPolicy"));
        }
        for (title, field) in [("Command", "/command"), ("Args", "/args")] {
            let items = arr(c, field);
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "    {title}:");
            for item in items.iter().filter_map(Value::as_str) {
                for line in item.split('\n') {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        resources(out, c);
        for (title, field) in [
            ("Liveness", "livenessProbe"),
            ("Readiness", "readinessProbe"),
            ("Startup", "startupProbe"),
        ] {
            if let Some(p) = c.get(field) {
                let _ = writeln!(out, "    {title}:\t{}", probe(p));
            }
        }
        env(out, c);
        mounts(out, c);
    }
}

fn volumes(out: &mut String, vs: &[Value]) {
    if vs.is_empty() {
        out.push_str("  Volumes:\t<none>\n");
        return;
    }
    out.push_str("  Volumes:\n");
    for v in vs {
        let _ = writeln!(out, "   {}:", s(v, "/name"));
        if let Some(e) = v.get("emptyDir") {
            let limit = match s(e, "/sizeLimit") {
                "" => "<unset>".to_string(),
                l => quantity(l),
            };
            let _ = writeln!(
                out,
                "    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{limit}",
                s(e, "/medium")
            );
        } else if let Some(h) = v.get("hostPath") {
            // An absent type prints <none>; a set but empty one prints empty, as kubectl.
            let ty = h.get("type").and_then(Value::as_str).unwrap_or("<none>");
            let _ = writeln!(
                out,
                "    Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{ty}",
                s(h, "/path")
            );
        } else if let Some(c) = v.get("configMap") {
            let _ = writeln!(
                out,
                "    Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}",
                s(c, "/name"),
                flag(c, "/optional")
            );
        } else if let Some(c) = v.get("secret") {
            let _ = writeln!(
                out,
                "    Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}",
                s(c, "/secretName"),
                flag(c, "/optional")
            );
        } else if let Some(c) = v.get("persistentVolumeClaim") {
            let _ = writeln!(
                out,
                "    Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}",
                s(c, "/claimName"),
                flag(c, "/readOnly")
            );
        } else {
            out.push_str("  <unknown>\n");
        }
    }
}

fn tolerations(out: &mut String, ts: &[Value]) {
    out.push_str("  Tolerations:\t");
    if ts.is_empty() {
        out.push_str("<none>\n");
        return;
    }
    let mut ts: Vec<&Value> = ts.iter().collect();
    ts.sort_by(|a, b| s(a, "/key").cmp(s(b, "/key")));
    for (i, t) in ts.into_iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let (key, value, effect) = (s(t, "/key"), s(t, "/value"), s(t, "/effect"));
        out.push_str(key);
        if !value.is_empty() {
            let _ = write!(out, "={value}");
        }
        if !effect.is_empty() {
            let _ = write!(out, ":{effect}");
        }
        if s(t, "/operator") == "Exists" && value.is_empty() {
            if key.is_empty() && effect.is_empty() {
                out.push_str("op=Exists");
            } else {
                out.push_str(" op=Exists");
            }
        }
        if let Some(secs) = t.get("tolerationSeconds").and_then(Value::as_i64) {
            let _ = write!(out, " for {secs}s");
        }
        out.push('\n');
    }
}

/// The template (`metadata` and `spec`) as kubectl describes it, starting `Pod Template:`.
pub fn describe(tpl: &Value) -> String {
    let mut out = String::from("Pod Template:\n");
    labels(&mut out, "  Labels", &string_map(tpl, "/metadata/labels"));
    let ann = string_map(tpl, "/metadata/annotations");
    if !ann.is_empty() {
        annotations(&mut out, "  Annotations", &ann);
    }
    let spec = tpl.get("spec").unwrap_or(&Value::Null);
    if !s(spec, "/serviceAccountName").is_empty() {
        let _ = writeln!(
            out,
            "  Service Account:\t{}",
            s(spec, "/serviceAccountName")
        );
    }
    let init = arr(spec, "/initContainers");
    if !init.is_empty() {
        containers(&mut out, "Init Containers", init);
    }
    containers(&mut out, "Containers", arr(spec, "/containers"));
    volumes(&mut out, arr(spec, "/volumes"));
    if !s(spec, "/priorityClassName").is_empty() {
        let _ = writeln!(
            out,
            "  Priority Class Name:\t{}",
            s(spec, "/priorityClassName")
        );
    }
    labels(
        &mut out,
        "  Node-Selectors",
        &string_map(spec, "/nodeSelector"),
    );
    tolerations(&mut out, arr(spec, "/tolerations"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_a_template_as_kubectl() {
        let tpl = json!({
            "metadata": {
                "labels": {"app": "web", "pod-template-hash": "abc"},
                "annotations": {"kubernetes.io/change-cause": "rudder set image"}
            },
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "true"]}],
                "containers": [{
                    "name": "c",
                    "image": "nginx:1",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "0.5", "memory": "128Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}},
                        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"operator": "Exists"}]
            }
        });
        let want = "Pod Template:\n\
            \x20 Labels:\tapp=web\n\
            \tpod-template-hash=abc\n\
            \x20 Annotations:\tkubernetes.io/change-cause: rudder set image\n\
            \x20 Init Containers:\n\
            \x20  init:\n\
            \x20   Image:\tbusybox\n\
            \x20   Port:\t<none>\n\
            \x20   Host Port:\t<none>\n\
            \x20   Command:\n\
            \x20     sh\n\
            \x20     -c\n\
            \x20     true\n\
            \x20   Environment:\t<none>\n\
            \x20   Mounts:\t<none>\n\
            \x20 Containers:\n\
            \x20  c:\n\
            \x20   Image:\tnginx:1\n\
            \x20   Port:\t80/TCP\n\
            \x20   Host Port:\t0/TCP\n\
            \x20   Limits:\n\
            \x20     cpu:\t500m\n\
            \x20     memory:\t128Mi\n\
            \x20   Readiness:\thttp-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3\n\
            \x20   Environment:\n\
            \x20     A:\t1\n\
            \x20     B:\t<set to the key 'b' of config map 'cfg'>\tOptional: false\n\
            \x20     CPU:\t1 (limits.cpu)\n\
            \x20   Mounts:\n\
            \x20     /data from data (ro)\n\
            \x20 Volumes:\n\
            \x20  data:\n\
            \x20   Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n\
            \x20   Medium:\t\n\
            \x20   SizeLimit:\t<unset>\n\
            \x20 Node-Selectors:\t<none>\n\
            \x20 Tolerations:\top=Exists\n";
        assert_eq!(describe(&tpl), want);
    }

    #[test]
    fn long_annotations_wrap() {
        let long = "x".repeat(150);
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), long.clone());
        let mut out = String::new();
        annotations(&mut out, "  Annotations", &m);
        assert_eq!(
            out,
            format!("  Annotations:\tk:\n\t  {}...\n", &long[..138])
        );
    }
}
