//! The built-in kinds' table columns: one [`KindPrinter`] per kind, each beside the functions
//! that extract its cells, and [`lookup`] to find one by group and kind.
//!
//! Columns follow kubectl's for the same kind (header, order, wide-only columns after the rest),
//! with cells computed from the object's JSON alone. A kind without an entry prints `NAME AGE`.

use std::borrow::Cow;

use jiff::Timestamp;
use serde_json::Value;

use super::{Cell, Column, KindPrinter, age, human_duration};

const fn col(header: &'static str, f: fn(&Value, Timestamp) -> String) -> Column {
    Column {
        header: Cow::Borrowed(header),
        priority: 0,
        cell: Cell::Fn(f),
    }
}

/// A column only `-o wide` shows (kubectl's priority 1).
const fn wide(header: &'static str, f: fn(&Value, Timestamp) -> String) -> Column {
    Column {
        header: Cow::Borrowed(header),
        priority: 1,
        cell: Cell::Fn(f),
    }
}

/// `(group, kind)` → columns. Kinds absent here get [`KindPrinter::default`].
static TABLE: &[(&str, &str, &KindPrinter)] = &[
    ("", "Pod", &POD),
    ("apps", "Deployment", &DEPLOYMENT),
    ("apps", "ReplicaSet", &REPLICA_SET),
    ("", "ReplicationController", &REPLICA_SET),
    ("apps", "DaemonSet", &DAEMON_SET),
    ("apps", "StatefulSet", &STATEFUL_SET),
    ("batch", "Job", &JOB),
    ("batch", "CronJob", &CRON_JOB),
    ("", "Service", &SERVICE),
    ("", "Node", &NODE),
    ("", "Namespace", &NAMESPACE),
    ("", "ConfigMap", &CONFIG_MAP),
    ("", "Secret", &SECRET),
    ("", "Event", &EVENT),
    ("networking.k8s.io", "Ingress", &INGRESS),
    ("", "Endpoints", &ENDPOINTS),
    ("discovery.k8s.io", "EndpointSlice", &ENDPOINT_SLICE),
    ("coordination.k8s.io", "Lease", &LEASE),
    ("", "PersistentVolumeClaim", &PVC),
    ("", "PersistentVolume", &PV),
];

/// The built-in columns of a kind, if it has any beyond `NAME AGE`.
pub fn lookup(group: &str, kind: &str) -> Option<&'static KindPrinter> {
    TABLE
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, p)| *p)
}

// === Shared extractors ===

pub(super) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

pub(super) fn str_at(v: &Value, path: &str) -> String {
    match at(v, path) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn int_at(v: &Value, path: &str) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn int_cell(v: &Value, path: &str) -> String {
    int_at(v, path).to_string()
}

pub(super) fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn map_len(v: &Value, path: &str) -> usize {
    at(v, path)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn is_true(v: &Value, path: &str) -> bool {
    at(v, path) == Some(&Value::Bool(true))
}

/// AGE: from `metadata.creationTimestamp`.
fn age_cell(o: &Value, now: Timestamp) -> String {
    age(
        at(o, "metadata.creationTimestamp").and_then(Value::as_str),
        now,
    )
}

pub(super) const AGE: Column = col("AGE", age_cell);

/// `k=v,k2=v2` of a string map, or `<none>`.
fn selector_string(o: &Value, path: &str) -> String {
    let labels: Vec<String> = at(o, path)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(labels.join(","))
}

fn condition_true(o: &Value, ty: &str) -> Option<bool> {
    arr(o, "status.conditions")
        .iter()
        .find(|c| str_at(c, "type") == ty)
        .map(|c| str_at(c, "status") == "True")
}

fn ts_secs(v: &Value, path: &str) -> Option<i64> {
    at(v, path)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.as_second())
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

// === Workloads' wide columns (pod template and selector) ===

fn template_containers(o: &Value, field: &str) -> String {
    or_none(
        arr(o, "spec.template.spec.containers")
            .iter()
            .map(|c| str_at(c, field))
            .collect::<Vec<_>>()
            .join(","),
    )
}

const CONTAINERS: Column = wide("CONTAINERS", |o, _| template_containers(o, "name"));
const IMAGES: Column = wide("IMAGES", |o, _| template_containers(o, "image"));
const SELECTOR: Column = wide("SELECTOR", |o, _| {
    // A ReplicationController's selector is the label map itself.
    if o.get("kind").and_then(Value::as_str) == Some("ReplicationController") {
        return selector_string(o, "spec.selector");
    }
    selector_string(o, "spec.selector.matchLabels")
});

/// `ready/desired` from `status.readyReplicas` and `spec.replicas`.
fn ready_of_replicas(o: &Value, _: Timestamp) -> String {
    format!(
        "{}/{}",
        int_at(o, "status.readyReplicas"),
        int_at(o, "spec.replicas")
    )
}

// === Pod ===

static POD: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("READY", |o, _| {
            let ready = arr(o, "status.containerStatuses")
                .iter()
                .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                .count();
            format!("{ready}/{}", arr(o, "spec.containers").len())
        }),
        col("STATUS", |o, _| pod_status(o)),
        col("RESTARTS", |o, _| {
            let n: i64 = arr(o, "status.containerStatuses")
                .iter()
                .map(|c| int_at(c, "restartCount"))
                .sum();
            n.to_string()
        }),
        AGE,
        wide("IP", |o, _| or_none(str_at(o, "status.podIP"))),
        wide("NODE", |o, _| or_none(str_at(o, "spec.nodeName"))),
    ]),
};

/// kubectl's STATUS of a pod: Terminating, else a container's waiting or terminated reason
/// (CrashLoopBackOff, Error: what people need to see), else the pod's reason, else its phase.
pub fn pod_status(o: &Value) -> String {
    if rudder_api::meta::is_deleting(o) {
        return "Terminating".into();
    }
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

// === Workloads ===

static DEPLOYMENT: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("READY", ready_of_replicas),
        col("UP-TO-DATE", |o, _| int_cell(o, "status.updatedReplicas")),
        col("AVAILABLE", |o, _| int_cell(o, "status.availableReplicas")),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]),
};

static REPLICA_SET: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("DESIRED", |o, _| int_cell(o, "spec.replicas")),
        col("CURRENT", |o, _| int_cell(o, "status.replicas")),
        col("READY", |o, _| int_cell(o, "status.readyReplicas")),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]),
};

static DAEMON_SET: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("DESIRED", |o, _| {
            int_cell(o, "status.desiredNumberScheduled")
        }),
        col("CURRENT", |o, _| {
            int_cell(o, "status.currentNumberScheduled")
        }),
        col("READY", |o, _| int_cell(o, "status.numberReady")),
        col("UP-TO-DATE", |o, _| {
            int_cell(o, "status.updatedNumberScheduled")
        }),
        col("AVAILABLE", |o, _| int_cell(o, "status.numberAvailable")),
        col("NODE SELECTOR", |o, _| {
            selector_string(o, "spec.template.spec.nodeSelector")
        }),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]),
};

static STATEFUL_SET: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("READY", ready_of_replicas),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]),
};

static JOB: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("STATUS", |o, _| {
            if condition_true(o, "Complete") == Some(true) {
                "Complete"
            } else if condition_true(o, "Failed") == Some(true) {
                "Failed"
            } else if is_true(o, "spec.suspend") {
                "Suspended"
            } else {
                "Running"
            }
            .into()
        }),
        col("COMPLETIONS", |o, _| {
            let done = int_at(o, "status.succeeded");
            match at(o, "spec.completions").and_then(Value::as_i64) {
                Some(n) => format!("{done}/{n}"),
                None => format!("{done}/1 of {}", int_at(o, "spec.parallelism").max(1)),
            }
        }),
        col("DURATION", |o, now| match ts_secs(o, "status.startTime") {
            Some(start) => {
                let end = ts_secs(o, "status.completionTime").unwrap_or(now.as_second());
                human_duration(end - start)
            }
            None => String::new(),
        }),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]),
};

static CRON_JOB: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("SCHEDULE", |o, _| str_at(o, "spec.schedule")),
        col("SUSPEND", |o, _| {
            if is_true(o, "spec.suspend") {
                "True"
            } else {
                "False"
            }
            .into()
        }),
        col("ACTIVE", |o, _| arr(o, "status.active").len().to_string()),
        col("LAST SCHEDULE", |o, now| {
            match at(o, "status.lastScheduleTime").and_then(Value::as_str) {
                Some(t) => age(Some(t), now),
                None => "<none>".into(),
            }
        }),
        AGE,
    ]),
};

// === Networking ===

static SERVICE: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("TYPE", |o, _| {
            let t = str_at(o, "spec.type");
            if t.is_empty() { "ClusterIP".into() } else { t }
        }),
        col("CLUSTER-IP", |o, _| or_none(str_at(o, "spec.clusterIP"))),
        col("EXTERNAL-IP", |o, _| service_external_ip(o)),
        col("PORT(S)", |o, _| service_ports(o)),
        AGE,
        wide("SELECTOR", |o, _| selector_string(o, "spec.selector")),
    ]),
};

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

fn service_external_ip(o: &Value) -> String {
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
    if !ips.is_empty() {
        ips.join(",")
    } else if str_at(o, "spec.type") == "LoadBalancer" {
        "<pending>".into()
    } else {
        "<none>".into()
    }
}

static INGRESS: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("CLASS", |o, _| or_none(str_at(o, "spec.ingressClassName"))),
        col("HOSTS", |o, _| {
            let hosts: Vec<String> = arr(o, "spec.rules")
                .iter()
                .map(|r| str_at(r, "host"))
                .filter(|h| !h.is_empty())
                .collect();
            if hosts.is_empty() {
                "*".into()
            } else {
                hosts.join(",")
            }
        }),
        col("ADDRESS", |o, _| {
            arr(o, "status.loadBalancer.ingress")
                .iter()
                .map(|i| str_at(i, "ip"))
                .collect::<Vec<_>>()
                .join(",")
        }),
        col("PORTS", |o, _| {
            if arr(o, "spec.tls").is_empty() {
                "80"
            } else {
                "80, 443"
            }
            .into()
        }),
        AGE,
    ]),
};

/// kubectl's endpoint lists: the first three, then ` + N more...`.
fn first_three(list: Vec<String>) -> String {
    if list.len() > 3 {
        format!("{} + {} more...", list[..3].join(","), list.len() - 3)
    } else {
        list.join(",")
    }
}

/// `ip:port`, bracketed for IPv6.
fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

static ENDPOINTS: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[col("ENDPOINTS", |o, _| endpoints_cell(o)), AGE]),
};

/// ENDPOINTS of core/v1 Endpoints: `ip:port` for each ready address and port of every subset
/// (the bare IP in a subset without ports); `<none>` without subsets.
fn endpoints_cell(o: &Value) -> String {
    let subsets = arr(o, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    for ss in subsets {
        let ips: Vec<String> = arr(ss, "addresses")
            .iter()
            .map(|a| str_at(a, "ip"))
            .collect();
        let ports = arr(ss, "ports");
        if ports.is_empty() {
            list.extend(ips);
            continue;
        }
        for p in ports {
            list.extend(ips.iter().map(|ip| host_port(ip, int_at(p, "port"))));
        }
    }
    first_three(list)
}

static ENDPOINT_SLICE: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("ADDRESSTYPE", |o, _| str_at(o, "addressType")),
        col("PORTS", |o, _| {
            let ports = arr(o, "ports")
                .iter()
                .map(|p| match at(p, "port") {
                    Some(Value::Number(n)) => n.to_string(),
                    _ => match at(p, "name") {
                        Some(Value::String(n)) => n.clone(),
                        _ => "*".into(),
                    },
                })
                .collect();
            or_unset(first_three(ports))
        }),
        col("ENDPOINTS", |o, _| {
            let addrs = arr(o, "endpoints")
                .iter()
                .flat_map(|e| arr(e, "addresses"))
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            or_unset(first_three(addrs))
        }),
        AGE,
    ]),
};

fn or_unset(x: String) -> String {
    if x.is_empty() { "<unset>".into() } else { x }
}

// === Cluster ===

static NODE: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("STATUS", |o, _| {
            let mut st = match condition_true(o, "Ready") {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if is_true(o, "spec.unschedulable") {
                st.push_str(",SchedulingDisabled");
            }
            st
        }),
        col("ROLES", |o, _| {
            let labels = rudder_api::meta::labels(o);
            let roles: Vec<&str> = labels
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            or_none(roles.join(","))
        }),
        AGE,
        col("VERSION", |o, _| {
            str_at(o, "status.nodeInfo.kubeletVersion")
        }),
        wide("INTERNAL-IP", |o, _| {
            let ip = arr(o, "status.addresses")
                .iter()
                .find(|a| str_at(a, "type") == "InternalIP")
                .map(|a| str_at(a, "address"))
                .unwrap_or_default();
            or_none(ip)
        }),
        wide("OS-IMAGE", |o, _| {
            or_none(str_at(o, "status.nodeInfo.osImage"))
        }),
        wide("KERNEL-VERSION", |o, _| {
            or_none(str_at(o, "status.nodeInfo.kernelVersion"))
        }),
    ]),
};

static NAMESPACE: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("STATUS", |o, _| {
            let p = str_at(o, "status.phase");
            if p.is_empty() { "Active".into() } else { p }
        }),
        AGE,
    ]),
};

static LEASE: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("HOLDER", |o, _| or_none(str_at(o, "spec.holderIdentity"))),
        AGE,
    ]),
};

/// kubectl's events table: no NAME column, and LAST SEEN in place of AGE.
static EVENT: KindPrinter = KindPrinter {
    name_column: false,
    columns: Cow::Borrowed(&[
        col("LAST SEEN", |o, now| {
            [
                "lastTimestamp",
                "eventTime",
                "firstTimestamp",
                "metadata.creationTimestamp",
            ]
            .iter()
            .find_map(|p| at(o, p).and_then(Value::as_str))
            .map(|t| age(Some(t), now))
            .unwrap_or_else(|| "<unknown>".into())
        }),
        col("TYPE", |o, _| str_at(o, "type")),
        col("REASON", |o, _| str_at(o, "reason")),
        col("OBJECT", |o, _| {
            format!(
                "{}/{}",
                str_at(o, "involvedObject.kind").to_lowercase(),
                str_at(o, "involvedObject.name")
            )
        }),
        col("MESSAGE", |o, _| str_at(o, "message")),
    ]),
};

// === Configuration and storage ===

static CONFIG_MAP: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("DATA", |o, _| {
            (map_len(o, "data") + map_len(o, "binaryData")).to_string()
        }),
        AGE,
    ]),
};

static SECRET: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("TYPE", |o, _| str_at(o, "type")),
        col("DATA", |o, _| map_len(o, "data").to_string()),
        AGE,
    ]),
};

static PVC: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("STATUS", |o, _| str_at(o, "status.phase")),
        col("VOLUME", |o, _| str_at(o, "spec.volumeName")),
        col("CAPACITY", |o, _| str_at(o, "status.capacity.storage")),
        col("ACCESS MODES", |o, _| access_modes(o, "status.accessModes")),
        col("STORAGECLASS", |o, _| str_at(o, "spec.storageClassName")),
        AGE,
    ]),
};

static PV: KindPrinter = KindPrinter {
    name_column: true,
    columns: Cow::Borrowed(&[
        col("CAPACITY", |o, _| str_at(o, "spec.capacity.storage")),
        col("ACCESS MODES", |o, _| access_modes(o, "spec.accessModes")),
        col("RECLAIM POLICY", |o, _| {
            str_at(o, "spec.persistentVolumeReclaimPolicy")
        }),
        col("STATUS", |o, _| str_at(o, "status.phase")),
        col("CLAIM", |o, _| {
            let name = str_at(o, "spec.claimRef.name");
            if name.is_empty() {
                String::new()
            } else {
                format!("{}/{name}", str_at(o, "spec.claimRef.namespace"))
            }
        }),
        col("STORAGECLASS", |o, _| str_at(o, "spec.storageClassName")),
        AGE,
    ]),
};

#[cfg(test)]
mod endpoint_tests {
    use serde_json::json;

    use super::*;

    fn row(kind: &str, o: &Value) -> Vec<String> {
        let group = if kind == "EndpointSlice" {
            "discovery.k8s.io"
        } else {
            ""
        };
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        lookup(group, kind)
            .expect("a printer")
            .columns
            .iter()
            .map(|c| match &c.cell {
                super::super::Cell::Fn(f) => f(o, now),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn endpoints_as_kubectl_prints_them() {
        let meta = json!({"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"});
        let ep = json!({"metadata": meta, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            row("Endpoints", &ep),
            vec!["10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...", "10m"]
        );
        let headless = json!({"metadata": meta, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        assert_eq!(row("Endpoints", &headless)[0], "10.0.0.1");
        assert_eq!(row("Endpoints", &json!({"metadata": meta}))[0], "<none>");
        let v6 = json!({"metadata": meta, "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(row("Endpoints", &v6)[0], "[fd00::1]:80");
    }

    #[test]
    fn endpoint_slices_as_kubectl_prints_them() {
        let meta = json!({"name": "web-abc", "creationTimestamp": "2024-01-01T00:00:00Z"});
        let slice = json!({"metadata": meta, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc"}, {}, {"port": 1}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            row("EndpointSlice", &slice),
            vec![
                "IPv4",
                "8080,grpc,* + 1 more...",
                "10.0.0.1,10.0.0.2",
                "10m"
            ]
        );
        let empty = json!({"metadata": meta, "addressType": "IPv4", "ports": [], "endpoints": []});
        assert_eq!(
            row("EndpointSlice", &empty),
            vec!["IPv4", "<unset>", "<unset>", "10m"]
        );
    }
}
