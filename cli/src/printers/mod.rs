//! kubectl's tables: per-kind columns, ages, and tab-aligned rendering.

use std::io::Write;

use jiff::Timestamp;
use serde_json::Value;

use crate::kinds::ResourceType;

/// kubectl's human age: `45s`, `3m2s`, `15m`, `4h12m`, `20h`, `3d4h`, `30d`, `2y40d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if days < 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

/// Age of an RFC 3339 timestamp relative to `now`; `<unknown>` when absent or malformed.
pub fn age(ts: Option<&str>, now: Timestamp) -> String {
    match ts.and_then(|s| s.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// A table: headers and rows of cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Tab-aligned text with three spaces between columns, like kubectl.
    pub fn render(&self, with_headers: bool) -> String {
        let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3);
        let mut lines: Vec<&Vec<String>> = Vec::new();
        if with_headers {
            lines.push(&self.headers);
        }
        lines.extend(self.rows.iter());
        for l in lines {
            // Writing into a Vec cannot fail.
            let _ = writeln!(tw, "{}", l.join("\t"));
        }
        let bytes = tw.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn s<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn str_at(v: &Value, path: &str) -> String {
    match s(v, path) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn int_at(v: &Value, path: &str) -> i64 {
    s(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    s(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `k=v,k2=v2` or `<none>`.
pub fn labels_string(obj: &Value) -> String {
    or_none(
        rudder_api::meta::labels(obj)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The kind-specific columns (between NAME and AGE, AGE included where kubectl puts it).
fn columns(kind: &str, wide: bool) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = match kind {
        "Pod" => vec!["READY", "STATUS", "RESTARTS", "AGE"],
        "Deployment" => vec!["READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "ReplicaSet" => vec!["DESIRED", "CURRENT", "READY", "AGE"],
        "DaemonSet" => vec![
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        "StatefulSet" => vec!["READY", "AGE"],
        "Job" => vec!["STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "CronJob" => vec!["SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
        "Service" => vec!["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "Node" => vec!["STATUS", "ROLES", "AGE", "VERSION"],
        "Namespace" => vec!["STATUS", "AGE"],
        "ConfigMap" => vec!["DATA", "AGE"],
        "Secret" => vec!["TYPE", "DATA", "AGE"],
        "Event" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "Ingress" => vec!["CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        "Lease" => vec!["HOLDER", "AGE"],
        "PersistentVolumeClaim" => vec![
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "AGE",
        ],
        "PersistentVolume" => vec![
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "AGE",
        ],
        _ => vec!["AGE"],
    };
    if wide {
        match kind {
            "Pod" => c.extend(["IP", "NODE"]),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
                c.extend(["CONTAINERS", "IMAGES", "SELECTOR"])
            }
            "Service" => c.push("SELECTOR"),
            "Node" => c.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION"]),
            _ => {}
        }
    }
    c
}

fn access_modes(v: &Value, path: &str) -> String {
    arr(v, path)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn pod_status(o: &Value) -> String {
    if rudder_api::meta::is_deleting(o) {
        return "Terminating".into();
    }
    // A container's waiting/terminated reason (CrashLoopBackOff, Error) is what people need.
    for cs in arr(o, "status.containerStatuses") {
        for st in ["state.waiting.reason", "state.terminated.reason"] {
            let r = str_at(cs, st);
            if !r.is_empty() && r != "Completed" {
                return r;
            }
        }
    }
    let reason = str_at(o, "status.reason");
    if !reason.is_empty() {
        return reason;
    }
    let phase = str_at(o, "status.phase");
    if phase.is_empty() {
        "Pending".into()
    } else {
        phase
    }
}

fn selector_string(o: &Value, path: &str) -> String {
    let labels: Vec<String> = s(o, path)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(labels.join(","))
}

fn containers_images(o: &Value, path: &str) -> (String, String) {
    let cs = arr(o, path);
    let names = cs
        .iter()
        .map(|c| str_at(c, "name"))
        .collect::<Vec<_>>()
        .join(",");
    let images = cs
        .iter()
        .map(|c| str_at(c, "image"))
        .collect::<Vec<_>>()
        .join(",");
    (or_none(names), or_none(images))
}

fn service_ports(o: &Value) -> String {
    or_none(
        arr(o, "spec.ports")
            .iter()
            .map(|p| {
                let port = int_at(p, "port");
                let proto = {
                    let x = str_at(p, "protocol");
                    if x.is_empty() { "TCP".to_string() } else { x }
                };
                match int_at(p, "nodePort") {
                    0 => format!("{port}/{proto}"),
                    np => format!("{port}:{np}/{proto}"),
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn external_ip(o: &Value) -> String {
    let mut ips: Vec<String> = arr(o, "status.loadBalancer.ingress")
        .iter()
        .map(|i| {
            let ip = str_at(i, "ip");
            if ip.is_empty() {
                str_at(i, "hostname")
            } else {
                ip
            }
        })
        .collect();
    ips.extend(
        arr(o, "spec.externalIPs")
            .iter()
            .filter_map(|v| v.as_str().map(String::from)),
    );
    if ips.is_empty() {
        if str_at(o, "spec.type") == "LoadBalancer" {
            "<pending>".into()
        } else {
            "<none>".into()
        }
    } else {
        ips.join(",")
    }
}

fn condition_true(o: &Value, ty: &str) -> Option<bool> {
    arr(o, "status.conditions")
        .iter()
        .find(|c| str_at(c, "type") == ty)
        .map(|c| str_at(c, "status") == "True")
}

fn ts_secs(v: &Value, path: &str) -> Option<i64> {
    s(v, path)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.as_second())
}

/// The cells after NAME for one object.
fn cells(kind: &str, o: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let age_ = age(
        s(o, "metadata.creationTimestamp").and_then(Value::as_str),
        now,
    );
    let mut c = match kind {
        "Pod" => {
            let total = arr(o, "spec.containers").len();
            let statuses = arr(o, "status.containerStatuses");
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                .count();
            let restarts: i64 = statuses.iter().map(|c| int_at(c, "restartCount")).sum();
            vec![
                format!("{ready}/{total}"),
                pod_status(o),
                restarts.to_string(),
                age_,
            ]
        }
        "Deployment" => vec![
            format!(
                "{}/{}",
                int_at(o, "status.readyReplicas"),
                int_at(o, "spec.replicas")
            ),
            int_at(o, "status.updatedReplicas").to_string(),
            int_at(o, "status.availableReplicas").to_string(),
            age_,
        ],
        "ReplicaSet" => vec![
            int_at(o, "spec.replicas").to_string(),
            int_at(o, "status.replicas").to_string(),
            int_at(o, "status.readyReplicas").to_string(),
            age_,
        ],
        "DaemonSet" => vec![
            int_at(o, "status.desiredNumberScheduled").to_string(),
            int_at(o, "status.currentNumberScheduled").to_string(),
            int_at(o, "status.numberReady").to_string(),
            int_at(o, "status.updatedNumberScheduled").to_string(),
            int_at(o, "status.numberAvailable").to_string(),
            selector_string(o, "spec.template.spec.nodeSelector"),
            age_,
        ],
        "StatefulSet" => vec![
            format!(
                "{}/{}",
                int_at(o, "status.readyReplicas"),
                int_at(o, "spec.replicas")
            ),
            age_,
        ],
        "Job" => {
            let status = if condition_true(o, "Complete") == Some(true) {
                "Complete"
            } else if condition_true(o, "Failed") == Some(true) {
                "Failed"
            } else if s(o, "spec.suspend") == Some(&Value::Bool(true)) {
                "Suspended"
            } else {
                "Running"
            };
            let completions = match s(o, "spec.completions").and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", int_at(o, "status.succeeded")),
                None => format!(
                    "{}/1 of {}",
                    int_at(o, "status.succeeded"),
                    int_at(o, "spec.parallelism").max(1)
                ),
            };
            let duration = match ts_secs(o, "status.startTime") {
                Some(start) => {
                    let end = ts_secs(o, "status.completionTime").unwrap_or(now.as_second());
                    human_duration(end - start)
                }
                None => String::new(),
            };
            vec![status.into(), completions, duration, age_]
        }
        "CronJob" => vec![
            str_at(o, "spec.schedule"),
            if s(o, "spec.suspend") == Some(&Value::Bool(true)) {
                "True"
            } else {
                "False"
            }
            .into(),
            arr(o, "status.active").len().to_string(),
            match s(o, "status.lastScheduleTime").and_then(Value::as_str) {
                Some(t) => age(Some(t), now),
                None => "<none>".into(),
            },
            age_,
        ],
        "Service" => vec![
            {
                let t = str_at(o, "spec.type");
                if t.is_empty() { "ClusterIP".into() } else { t }
            },
            or_none(str_at(o, "spec.clusterIP")),
            external_ip(o),
            service_ports(o),
            age_,
        ],
        "Node" => {
            let mut st = match condition_true(o, "Ready") {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if s(o, "spec.unschedulable") == Some(&Value::Bool(true)) {
                st.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = rudder_api::meta::labels(o)
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            vec![
                st,
                or_none(roles.join(",")),
                age_,
                str_at(o, "status.nodeInfo.kubeletVersion"),
            ]
        }
        "Namespace" => vec![
            {
                let p = str_at(o, "status.phase");
                if p.is_empty() { "Active".into() } else { p }
            },
            age_,
        ],
        "ConfigMap" => {
            let n = s(o, "data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + s(o, "binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![n.to_string(), age_]
        }
        "Secret" => {
            let n = s(o, "data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![str_at(o, "type"), n.to_string(), age_]
        }
        "Event" => {
            let last = [
                "lastTimestamp",
                "eventTime",
                "firstTimestamp",
                "metadata.creationTimestamp",
            ]
            .iter()
            .find_map(|p| s(o, p).and_then(Value::as_str))
            .map(|t| age(Some(t), now))
            .unwrap_or_else(|| "<unknown>".into());
            vec![
                last,
                str_at(o, "type"),
                str_at(o, "reason"),
                format!(
                    "{}/{}",
                    str_at(o, "involvedObject.kind").to_lowercase(),
                    str_at(o, "involvedObject.name")
                ),
                str_at(o, "message"),
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = arr(o, "spec.rules")
                .iter()
                .map(|r| str_at(r, "host"))
                .filter(|h| !h.is_empty())
                .collect();
            let addrs: Vec<String> = arr(o, "status.loadBalancer.ingress")
                .iter()
                .map(|i| str_at(i, "ip"))
                .collect();
            let ports = if arr(o, "spec.tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                or_none(str_at(o, "spec.ingressClassName")),
                if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                },
                addrs.join(","),
                ports.into(),
                age_,
            ]
        }
        "Lease" => vec![or_none(str_at(o, "spec.holderIdentity")), age_],
        "PersistentVolumeClaim" => vec![
            str_at(o, "status.phase"),
            str_at(o, "spec.volumeName"),
            str_at(o, "status.capacity.storage"),
            access_modes(o, "status.accessModes"),
            str_at(o, "spec.storageClassName"),
            age_,
        ],
        "PersistentVolume" => {
            let claim = match (
                str_at(o, "spec.claimRef.namespace"),
                str_at(o, "spec.claimRef.name"),
            ) {
                (_, n) if n.is_empty() => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                str_at(o, "spec.capacity.storage"),
                access_modes(o, "spec.accessModes"),
                str_at(o, "spec.persistentVolumeReclaimPolicy"),
                str_at(o, "status.phase"),
                claim,
                str_at(o, "spec.storageClassName"),
                age_,
            ]
        }
        _ => vec![age_],
    };
    if wide {
        match kind {
            "Pod" => {
                c.push(or_none(str_at(o, "status.podIP")));
                c.push(or_none(str_at(o, "spec.nodeName")));
            }
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
                let (n, i) = containers_images(o, "spec.template.spec.containers");
                c.push(n);
                c.push(i);
                c.push(selector_string(o, "spec.selector.matchLabels"));
            }
            "Service" => c.push(selector_string(o, "spec.selector")),
            "Node" => {
                let ip = arr(o, "status.addresses")
                    .iter()
                    .find(|a| str_at(a, "type") == "InternalIP")
                    .map(|a| str_at(a, "address"))
                    .unwrap_or_default();
                c.push(or_none(ip));
                c.push(or_none(str_at(o, "status.nodeInfo.osImage")));
                c.push(or_none(str_at(o, "status.nodeInfo.kernelVersion")));
            }
            _ => {}
        }
    }
    c
}

/// How to lay a table out.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    pub wide: bool,
    /// Adds a NAMESPACE column first (`-A`).
    pub namespace_column: bool,
    pub show_labels: bool,
    /// NAME shows `kind.group/name` (several kinds in one `get`).
    pub qualified_names: bool,
}

/// Builds the table for objects of one type.
pub fn table(t: &ResourceType, objs: &[Value], opts: TableOptions, now: Timestamp) -> Table {
    let mut headers: Vec<String> = Vec::new();
    if opts.namespace_column && t.namespaced {
        headers.push("NAMESPACE".into());
    }
    // kubectl's events table has no NAME column.
    let event = t.kind == "Event";
    if !event {
        headers.push("NAME".into());
    }
    headers.extend(columns(&t.kind, opts.wide).into_iter().map(String::from));
    if opts.show_labels {
        headers.push("LABELS".into());
    }
    let rows = objs
        .iter()
        .map(|o| {
            let mut r = Vec::new();
            if opts.namespace_column && t.namespaced {
                r.push(rudder_api::meta::namespace(o).to_string());
            }
            if !event {
                let name = rudder_api::meta::name(o);
                r.push(if opts.qualified_names {
                    format!("{}/{name}", t.qualified_singular())
                } else {
                    name.to_string()
                });
            }
            r.extend(cells(&t.kind, o, opts.wide, now));
            if opts.show_labels {
                r.push(labels_string(o));
            }
            r
        })
        .collect();
    Table { headers, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;
    use serde_json::json;

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(182), "3m2s");
        assert_eq!(human_duration(180), "3m");
        assert_eq!(human_duration(15 * 60 + 7), "15m");
        assert_eq!(human_duration(4 * 3600), "4h");
        assert_eq!(human_duration(4 * 3600 + 5 * 60), "4h5m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(30 * 86400), "30d");
        assert_eq!(human_duration(800 * 86400), "2y70d");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(-5), "<invalid>");
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(age(Some("2024-01-01T00:00:00Z"), now), "60s");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn deployment_table() {
        let k = Kinds::builtin();
        let t = k.lookup("deploy").unwrap();
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let d = json!({"metadata": {"name": "web", "namespace": "default",
            "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"app": "web"}},
            "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let tab = table(
            t,
            &[d],
            TableOptions {
                show_labels: true,
                namespace_column: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            tab.render(true),
            "NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE   LABELS\n\
             default     web    2/3     3            2           10m   app=web\n"
        );
    }

    #[test]
    fn pod_and_service_tables() {
        let k = Kinds::builtin();
        let now: Timestamp = "2024-01-01T00:00:30Z".parse().unwrap();
        let p = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let tab = table(
            k.lookup("po").unwrap(),
            &[p],
            TableOptions {
                wide: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            tab.headers,
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
        );
        assert_eq!(
            tab.rows[0],
            ["p", "1/2", "CrashLoopBackOff", "3", "30s", "10.0.0.5", "n1"]
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let tab = table(
            k.lookup("svc").unwrap(),
            &[svc],
            TableOptions::default(),
            now,
        );
        assert_eq!(
            tab.rows[0],
            [
                "s",
                "NodePort",
                "10.96.0.9",
                "<none>",
                "80:30080/TCP,53/UDP",
                "<unknown>"
            ]
        );
    }

    #[test]
    fn other_kinds_get_name_and_age() {
        let k = Kinds::builtin();
        let now: Timestamp = "2024-01-01T00:00:30Z".parse().unwrap();
        let tab = table(
            k.lookup("sa").unwrap(),
            &[json!({"metadata": {"name": "x"}})],
            TableOptions::default(),
            now,
        );
        assert_eq!(tab.render(true), "NAME   AGE\nx      <unknown>\n");
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let tab = table(
            k.lookup("cm").unwrap(),
            &[cm],
            TableOptions {
                qualified_names: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(tab.rows[0], ["configmap/c", "2", "<unknown>"]);
    }
}
