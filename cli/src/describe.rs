//! `rudder describe`: a readable summary of an object, its key spec/status fields per kind, and
//! the events about it.

use std::fmt::Write as _;

use clap::Args;
use jiff::Timestamp;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::printers::{self, Table};
use crate::util;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// KIND [NAME...] or KIND/NAME...
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Describe the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

fn st(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `Key:  value` lines aligned on the values, with multi-valued maps continued below.
struct Section {
    lines: Vec<(String, String)>,
}

impl Section {
    fn new() -> Self {
        Section { lines: Vec::new() }
    }
    fn kv(&mut self, k: &str, v: impl Into<String>) {
        self.lines.push((format!("{k}:"), v.into()));
    }
    fn map(&mut self, k: &str, m: &std::collections::BTreeMap<String, String>) {
        if m.is_empty() {
            self.kv(k, "<none>");
            return;
        }
        for (i, (mk, mv)) in m.iter().enumerate() {
            let key = if i == 0 {
                format!("{k}:")
            } else {
                String::new()
            };
            self.lines.push((key, format!("{mk}={mv}")));
        }
    }
    fn render(&self) -> String {
        let w = self.lines.iter().map(|l| l.0.len()).max().unwrap_or(0) + 2;
        self.lines
            .iter()
            .map(|(k, v)| format!("{}\n", format!("{k:<w$}{v}").trim_end()))
            .collect()
    }
}

fn containers(out: &mut String, obj: &Value, ptr: &str, statuses: &[Value]) {
    let cs = arr(obj, ptr);
    if cs.is_empty() {
        return;
    }
    let _ = writeln!(out, "Containers:");
    for c in cs {
        let name = st(c, "/name");
        let _ = writeln!(out, "  {name}:");
        let mut s = Section::new();
        s.kv("    Image", st(c, "/image"));
        let ports: Vec<String> = arr(c, "/ports")
            .iter()
            .map(|p| {
                format!("{}/{}", st(p, "/containerPort"), {
                    let x = st(p, "/protocol");
                    if x.is_empty() { "TCP".into() } else { x }
                })
            })
            .collect();
        if !ports.is_empty() {
            s.kv("    Ports", ports.join(", "));
        }
        let cmd: Vec<String> = arr(c, "/command")
            .iter()
            .chain(arr(c, "/args"))
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        if !cmd.is_empty() {
            s.kv("    Command", cmd.join(" "));
        }
        if let Some(cs) = statuses.iter().find(|s| st(s, "/name") == name) {
            let state = cs
                .pointer("/state")
                .and_then(Value::as_object)
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            let mut state = state;
            if let Some(first) = state.get(..1) {
                state = first.to_uppercase() + &state[1..];
            }
            s.kv("    State", none(state));
            s.kv("    Ready", none(st(cs, "/ready")));
            s.kv("    Restart Count", none(st(cs, "/restartCount")));
        }
        let env: Vec<String> = arr(c, "/env")
            .iter()
            .map(|e| format!("{}={}", st(e, "/name"), st(e, "/value")))
            .collect();
        s.kv(
            "    Environment",
            if env.is_empty() {
                "<none>".into()
            } else {
                env.join(", ")
            },
        );
        out.push_str(&s.render());
    }
}

fn conditions(out: &mut String, obj: &Value) {
    let cs = arr(obj, "/status/conditions");
    if cs.is_empty() {
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let t = Table {
        headers: ["  Type", "Status", "Reason", "Message"]
            .map(String::from)
            .to_vec(),
        rows: cs
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", st(c, "/type")),
                    st(c, "/status"),
                    st(c, "/reason"),
                    st(c, "/message"),
                ]
            })
            .collect(),
    };
    out.push_str(&t.render(true));
}

/// The kind-specific part.
/// `s` holds the common fields so that they align with the kind's own.
fn kind_details(t: &ResourceType, o: &Value, mut s: Section, out: &mut String) -> Result<()> {
    match t.kind.as_str() {
        "Pod" => {
            s.kv("Node", none(st(o, "/spec/nodeName")));
            s.kv("Status", printers::pod_status(o));
            s.kv("IP", none(st(o, "/status/podIP")));
            out.push_str(&s.render());
            containers(
                out,
                o,
                "/spec/containers",
                arr(o, "/status/containerStatuses"),
            );
            conditions(out, o);
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            // A ReplicationController's selector is the label map itself.
            let sel_path = if t.kind == "ReplicationController" {
                "/spec/selector"
            } else {
                "/spec/selector/matchLabels"
            };
            let sel: std::collections::BTreeMap<String, String> = o
                .pointer(sel_path)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            s.map("Selector", &sel);
            if t.kind == "DaemonSet" {
                s.kv(
                    "Desired Number of Nodes Scheduled",
                    st(o, "/status/desiredNumberScheduled"),
                );
                s.kv(
                    "Number of Nodes Scheduled with Available Pods",
                    st(o, "/status/numberAvailable"),
                );
            } else {
                let n = |p: &str| {
                    let x = st(o, p);
                    if x.is_empty() { "0".to_string() } else { x }
                };
                s.kv(
                    "Replicas",
                    format!(
                        "{} desired | {} updated | {} total | {} available | {} unavailable",
                        n("/spec/replicas"),
                        n("/status/updatedReplicas"),
                        n("/status/replicas"),
                        n("/status/availableReplicas"),
                        n("/status/unavailableReplicas")
                    ),
                );
            }
            if t.kind == "StatefulSet" {
                s.kv("Update Strategy", none(st(o, "/spec/updateStrategy/type")));
                let partition = st(o, "/spec/updateStrategy/rollingUpdate/partition");
                s.kv(
                    "Partition",
                    if partition.is_empty() {
                        "0".into()
                    } else {
                        partition
                    },
                );
                s.kv(
                    "Pod Management Policy",
                    none(st(o, "/spec/podManagementPolicy")),
                );
                let claims: Vec<String> = arr(o, "/spec/volumeClaimTemplates")
                    .iter()
                    .map(|c| st(c, "/metadata/name"))
                    .collect();
                s.kv(
                    "Volume Claims",
                    if claims.is_empty() {
                        "<none>".into()
                    } else {
                        claims.join(", ")
                    },
                );
            }
            if t.kind == "DaemonSet" {
                s.kv(
                    "Current Number of Nodes Scheduled",
                    st(o, "/status/currentNumberScheduled"),
                );
                s.kv(
                    "Number of Nodes Misscheduled",
                    st(o, "/status/numberMisscheduled"),
                );
                s.kv("Update Strategy", none(st(o, "/spec/updateStrategy/type")));
            }
            if t.kind == "Deployment" {
                s.kv("StrategyType", none(st(o, "/spec/strategy/type")));
                let min_ready = st(o, "/spec/minReadySeconds");
                s.kv(
                    "MinReadySeconds",
                    if min_ready.is_empty() {
                        "0".into()
                    } else {
                        min_ready
                    },
                );
                if st(o, "/spec/strategy/type") != "Recreate" {
                    let (u, g) = (
                        st(o, "/spec/strategy/rollingUpdate/maxUnavailable"),
                        st(o, "/spec/strategy/rollingUpdate/maxSurge"),
                    );
                    s.kv(
                        "RollingUpdateStrategy",
                        format!("{} max unavailable, {} max surge", none(u), none(g)),
                    );
                }
            }
            out.push_str(&s.render());
            let _ = writeln!(out, "Pod Template:");
            containers(out, o, "/spec/template/spec/containers", &[]);
            conditions(out, o);
        }
        "Service" => {
            s.kv("Type", none(st(o, "/spec/type")));
            s.kv("IP", none(st(o, "/spec/clusterIP")));
            let sel: std::collections::BTreeMap<String, String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            s.map("Selector", &sel);
            for p in arr(o, "/spec/ports") {
                s.kv(
                    "Port",
                    format!(
                        "{} {}/{}",
                        none(st(p, "/name")),
                        st(p, "/port"),
                        st(p, "/protocol")
                    ),
                );
                s.kv("TargetPort", st(p, "/targetPort"));
                if !st(p, "/nodePort").is_empty() {
                    s.kv("NodePort", st(p, "/nodePort"));
                }
            }
            out.push_str(&s.render());
        }
        "Node" => {
            s.kv(
                "Unschedulable",
                if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                    "true"
                } else {
                    "false"
                },
            );
            for a in arr(o, "/status/addresses") {
                s.kv(&format!("  {}", st(a, "/type")), st(a, "/address"));
            }
            s.kv(
                "Kubelet Version",
                none(st(o, "/status/nodeInfo/kubeletVersion")),
            );
            out.push_str(&s.render());
            conditions(out, o);
        }
        "Namespace" => {
            s.kv("Status", {
                let p = st(o, "/status/phase");
                if p.is_empty() { "Active".into() } else { p }
            });
            out.push_str(&s.render());
            // A terminating namespace's controller says there what holds it.
            conditions(out, o);
        }
        "ConfigMap" => {
            out.push_str(&s.render());
            let _ = writeln!(out, "\nData\n====");
            if let Some(m) = o.get("data").and_then(Value::as_object) {
                for (k, v) in m {
                    let _ = writeln!(out, "{k}:\n----\n{}\n", v.as_str().unwrap_or(""));
                }
            }
        }
        "Secret" => {
            s.kv("Type", st(o, "/type"));
            out.push_str(&s.render());
            let _ = writeln!(out, "\nData\n====");
            if let Some(m) = o.get("data").and_then(Value::as_object) {
                for (k, v) in m {
                    // The values are secret: only their decoded sizes are shown.
                    let n = v
                        .as_str()
                        .map(|b| b.trim_end_matches('=').len() * 3 / 4)
                        .unwrap_or(0);
                    let _ = writeln!(out, "{k}:  {n} bytes");
                }
            }
        }
        "Job" => {
            s.kv("Completions", none(st(o, "/spec/completions")));
            s.kv("Parallelism", none(st(o, "/spec/parallelism")));
            s.kv(
                "Pods Statuses",
                format!(
                    "{} Active / {} Succeeded / {} Failed",
                    st(o, "/status/active").parse::<i64>().unwrap_or(0),
                    st(o, "/status/succeeded").parse::<i64>().unwrap_or(0),
                    st(o, "/status/failed").parse::<i64>().unwrap_or(0)
                ),
            );
            out.push_str(&s.render());
            conditions(out, o);
        }
        "CronJob" => {
            let or = |p: &str, d: &str| {
                let v = st(o, p);
                if v.is_empty() { d.to_string() } else { v }
            };
            s.kv("Schedule", st(o, "/spec/schedule"));
            s.kv("TimeZone", or("/spec/timeZone", "<unset>"));
            s.kv("Concurrency Policy", or("/spec/concurrencyPolicy", "Allow"));
            s.kv(
                "Suspend",
                or("/spec/suspend", "False")
                    .replace("false", "False")
                    .replace("true", "True"),
            );
            s.kv(
                "Successful Job History Limit",
                or("/spec/successfulJobsHistoryLimit", "3"),
            );
            s.kv(
                "Failed Job History Limit",
                or("/spec/failedJobsHistoryLimit", "1"),
            );
            s.kv(
                "Starting Deadline Seconds",
                or("/spec/startingDeadlineSeconds", "<unset>"),
            );
            s.kv(
                "Last Schedule Time",
                or("/status/lastScheduleTime", "<unset>"),
            );
            let active: Vec<String> = arr(o, "/status/active")
                .iter()
                .map(|r| st(r, "/name"))
                .collect();
            s.kv(
                "Active Jobs",
                if active.is_empty() {
                    "<none>".into()
                } else {
                    active.join(", ")
                },
            );
            out.push_str(&s.render());
            let _ = writeln!(out, "Pod Template:");
            containers(
                out,
                o,
                "/spec/jobTemplate/spec/template/spec/containers",
                &[],
            );
        }
        _ => {
            out.push_str(&s.render());
            // Unknown shape: show spec and status as they are.
            for f in ["spec", "status", "data"] {
                if let Some(v) = o.get(f) {
                    let _ = writeln!(out, "{}{}:", f[..1].to_uppercase(), &f[1..]);
                    for l in util::to_yaml(v)?.lines() {
                        let _ = writeln!(out, "  {l}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The whole description of one object, events included.
/// `related`: lines printed after the kind's own (a Deployment's OldReplicaSets/NewReplicaSet).
pub fn render(
    t: &ResourceType,
    o: &Value,
    events: &[Value],
    related: &[(String, String)],
    now: Timestamp,
) -> Result<String> {
    let mut out = String::new();
    let mut s = Section::new();
    s.kv("Name", rudder_api::meta::name(o));
    if t.namespaced {
        s.kv("Namespace", rudder_api::meta::namespace(o));
    }
    s.map("Labels", &rudder_api::meta::labels(o));
    let mut ann = rudder_api::meta::annotations(o);
    // The last-applied configuration is a copy of the object: noise in a summary.
    ann.remove(crate::apply::LAST_APPLIED);
    s.map("Annotations", &ann);
    let created = st(o, "/metadata/creationTimestamp");
    s.kv(
        "CreationTimestamp",
        match created.parse::<Timestamp>() {
            Ok(ts) => ts.strftime("%a, %d %b %Y %H:%M:%S %z").to_string(),
            Err(_) => none(created),
        },
    );
    if rudder_api::meta::is_deleting(o) {
        s.kv("DeletionTimestamp", st(o, "/metadata/deletionTimestamp"));
    }
    kind_details(t, o, s, &mut out)?;
    if !related.is_empty() {
        let mut r = Section::new();
        for (k, v) in related {
            r.kv(k, v.clone());
        }
        out.push_str(&r.render());
    }
    if events.is_empty() {
        out.push_str("Events:  <none>\n");
    } else {
        out.push_str("Events:\n");
        let mut rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let last = [
                    "/lastTimestamp",
                    "/eventTime",
                    "/firstTimestamp",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .map(|p| st(e, p))
                .find(|x| !x.is_empty());
                vec![
                    format!("  {}", st(e, "/type")),
                    st(e, "/reason"),
                    printers::age(last.as_deref(), now),
                    none(st(e, "/source/component")),
                    st(e, "/message"),
                ]
            })
            .collect();
        rows.sort_by_key(|r| r[2].clone());
        let t = Table {
            headers: ["  Type", "Reason", "Age", "From", "Message"]
                .map(String::from)
                .to_vec(),
            rows,
        };
        out.push_str(&t.render(true));
    }
    Ok(out)
}

/// kubectl's `OldReplicaSets` and `NewReplicaSet` lines: the ReplicaSets the Deployment
/// controls, the new one being of the Deployment's revision. Best effort, as the events.
async fn deployment_sets(
    ctx: &Ctx,
    kinds: &crate::kinds::Kinds,
    d: &Value,
) -> Vec<(String, String)> {
    const REVISION: &str = "deployment.kubernetes.io/revision";
    let (Ok(client), Ok(rs_type)) = (ctx.client(), kinds.lookup("replicasets")) else {
        return Vec::new();
    };
    let ns = rudder_api::meta::namespace(d);
    let uid = rudder_api::meta::uid(d);
    let Ok((sets, _)) = util::list_all(client, rs_type, ns, "", "", 500).await else {
        return Vec::new();
    };
    let revision = |o: &Value| rudder_api::meta::annotations(o).get(REVISION).cloned();
    let ours: Vec<&Value> = sets
        .iter()
        .filter(|rs| {
            arr(rs, "/metadata/ownerReferences")
                .iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
        .collect();
    let line = |rs: &Value| {
        format!(
            "{} ({}/{} replicas created)",
            rudder_api::meta::name(rs),
            none(st(rs, "/status/replicas")).replace("<none>", "0"),
            none(st(rs, "/spec/replicas")).replace("<none>", "0"),
        )
    };
    let current = revision(d);
    let (new, old): (Vec<&Value>, Vec<&Value>) = ours
        .into_iter()
        .partition(|rs| current.is_some() && revision(rs) == current);
    let old: Vec<String> = old
        .into_iter()
        .filter(|rs| st(rs, "/spec/replicas") != "0" || st(rs, "/status/replicas") != "0")
        .map(line)
        .collect();
    vec![
        (
            "OldReplicaSets".into(),
            if old.is_empty() {
                "<none>".into()
            } else {
                old.join(", ")
            },
        ),
        (
            "NewReplicaSet".into(),
            new.first().map_or("<none>".into(), |rs| line(rs)),
        ),
    ]
}

/// kubectl's `Pods Status` line: the object's pods (those it controls) by phase.
async fn pods_status(ctx: &Ctx, kinds: &crate::kinds::Kinds, o: &Value) -> Vec<(String, String)> {
    let (Ok(client), Ok(pod_type)) = (ctx.client(), kinds.lookup("pods")) else {
        return Vec::new();
    };
    let uid = rudder_api::meta::uid(o);
    let ns = rudder_api::meta::namespace(o);
    let Ok((pods, _)) = util::list_all(client, pod_type, ns, "", "", 500).await else {
        return Vec::new();
    };
    let mut n = [0usize; 4];
    for p in pods.iter().filter(|p| {
        arr(p, "/metadata/ownerReferences")
            .iter()
            .any(|r| r["uid"] == uid && r["controller"] == true)
    }) {
        let i = match st(p, "/status/phase").as_str() {
            "Running" => 0,
            "Succeeded" => 2,
            "Failed" => 3,
            _ => 1,
        };
        n[i] += 1;
    }
    vec![(
        "Pods Status".into(),
        format!(
            "{} Running / {} Waiting / {} Succeeded / {} Failed",
            n[0], n[1], n[2], n[3]
        ),
    )]
}

pub async fn run(ctx: &Ctx, args: DescribeArgs) -> Result<()> {
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let ev_type = kinds.lookup("events").ok().cloned();
    let mut first = true;
    for target in util::parse_targets(&args.args)? {
        let t = kinds.lookup(&target.kind)?;
        util::refuse_named_across_namespaces(ctx, t, target.names.as_deref())?;
        let objs = match target.names {
            Some(names) => {
                let mut v = Vec::new();
                for n in names {
                    v.push(util::get_object(client, t, &ctx.namespace, &n).await?);
                }
                v
            }
            None => {
                let ns = if ctx.all_namespaces {
                    ""
                } else {
                    ctx.namespace.as_str()
                };
                let sel = args.selector.clone().unwrap_or_default();
                util::list_all(client, t, ns, &sel, "", 500).await?.0
            }
        };
        if objs.is_empty() {
            return Err(CliError::msg(format!(
                "no {} found in namespace {}",
                t.plural, ctx.namespace
            )));
        }
        for o in objs {
            let events = match &ev_type {
                Some(et) => {
                    let ns = rudder_api::meta::namespace(&o);
                    let fs = format!(
                        "involvedObject.name={},involvedObject.namespace={ns},involvedObject.kind={}",
                        rudder_api::meta::name(&o),
                        t.kind
                    );
                    // Events are a courtesy: a failure to list them must not hide the object.
                    let ev_ns = if ns.is_empty() {
                        ctx.namespace.as_str()
                    } else {
                        ns
                    };
                    util::list_all(client, et, ev_ns, "", &fs, 500)
                        .await
                        .map(|r| r.0)
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            if !first {
                util::out("\n\n")?;
            }
            first = false;
            let related = match t.kind.as_str() {
                "Deployment" => deployment_sets(ctx, kinds, &o).await,
                "ReplicaSet" | "ReplicationController" | "StatefulSet" | "DaemonSet" => {
                    pods_status(ctx, kinds, &o).await
                }
                _ => Vec::new(),
            };
            util::out(&render(t, &o, &events, &related, Timestamp::now())?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_a_configmap() {
        let k = crate::kinds::Kinds::builtin();
        let t = k.lookup("cm").unwrap();
        let o = json!({"metadata": {"name": "c", "namespace": "default", "labels": {"a": "1", "b": "2"},
            "creationTimestamp": "2024-01-01T00:00:00Z"}, "data": {"k": "v"}});
        let s = render(t, &o, &[], &[], Timestamp::now()).unwrap();
        assert!(s.starts_with("Name:               c\nNamespace:          default\nLabels:             a=1\n                    b=2\n"), "{s}");
        assert!(s.contains("Annotations:        <none>\n"), "{s}");
        assert!(s.contains("k:\n----\nv\n"), "{s}");
        assert!(s.ends_with("Events:  <none>\n"), "{s}");
    }

    /// The pod's Status line is the table's STATUS, not another cell of its row.
    #[test]
    fn describes_a_replication_controller_with_its_map_selector() {
        let t = crate::kinds::Kinds::builtin().lookup("rc").unwrap().clone();
        let o = json!({"kind": "ReplicationController", "metadata": {"name": "rc", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"app": "x"},
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"replicas": 2}});
        let s = render(&t, &o, &[], &[], Timestamp::now()).unwrap();
        let sel = s
            .lines()
            .find(|l| l.starts_with("Selector:"))
            .unwrap_or_default();
        assert!(sel.ends_with("app=x"), "{s}");
        assert!(s.contains("2 desired"), "{s}");
    }

    #[test]
    fn describes_a_stateful_set_update_strategy_and_claims() {
        let t = crate::kinds::Kinds::builtin()
            .lookup("sts")
            .unwrap()
            .clone();
        let o = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
                "podManagementPolicy": "OrderedReady",
                "volumeClaimTemplates": [{"metadata": {"name": "www"}}],
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        let s = render(&t, &o, &[], &[], Timestamp::now()).unwrap();
        for want in [
            "Update Strategy:",
            "RollingUpdate",
            "Partition:",
            "OrderedReady",
            "Volume Claims:",
            "www",
        ] {
            assert!(s.contains(want), "{want:?} in:\n{s}");
        }
    }

    #[test]
    fn describes_a_cronjob() {
        let t = crate::kinds::Kinds::builtin()
            .lookup("cronjobs")
            .unwrap()
            .clone();
        let o = json!({"metadata": {"name": "cj", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "cj-1"}], "lastScheduleTime": "2026-01-01T00:05:00Z"}});
        let s = render(&t, &o, &[], &[], Timestamp::now()).unwrap();
        for want in [
            "Schedule:",
            "*/5 * * * *",
            "Concurrency Policy:",
            "Forbid",
            "Active Jobs:",
            "cj-1",
            "busybox",
        ] {
            assert!(s.contains(want), "{want:?} in:\n{s}");
        }
    }

    #[test]
    fn describes_a_pod_status() {
        let k = crate::kinds::Kinds::builtin();
        let t = k.lookup("pod").unwrap();
        let o = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 3}]}});
        let s = render(t, &o, &[], &[], Timestamp::now()).unwrap();
        let status = s.lines().find(|l| l.starts_with("Status:")).unwrap_or("");
        assert_eq!(
            status.split_whitespace().collect::<Vec<_>>(),
            ["Status:", "Running"],
            "{s}"
        );
    }
}
