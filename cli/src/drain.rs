//! `rudder drain NODE`: cordon a node, then evict its pods through the eviction subresource,
//! as kubectl drain does.
//!
//! Which pods: every pod bound to the node except mirror (static) pods, which are skipped.
//! Refused unless a flag allows them (all refusals are listed and nothing is evicted): pods
//! with no controller (`--force`), DaemonSet pods (`--ignore-daemonsets`, which then skips
//! them: their controller would put them back), pods with emptyDir volumes
//! (`--delete-emptydir-data`). Finished pods are evicted without further checks.
//!
//! Evictions run for all pods at once. One refused with TooManyRequests (its disruption
//! budget does not allow it now) is tried again every [`RETRY_INTERVAL`], its reason printed
//! once per pod; any other error stops the drain. Each evicted pod is then waited for until it
//! is gone (or replaced by a new pod of the same name). `--timeout` bounds the whole drain
//! (0, the default, waits for ever); `--grace-period` overrides the pods' own (negative: theirs);
//! `--disable-eviction` deletes instead of evicting, bypassing budgets; `--dry-run` says what
//! would be evicted and writes nothing (server: the cordon and evictions as server dry runs).

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Ctx;
use crate::cordon::CordonArgs;
use crate::error::{CliError, Result};
use crate::rollout::target::Selection;
use crate::util::{self, DryRun};

/// Between two evictions of a pod its budget refused (kubectl's 5 s).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Between two looks at whether an evicted pod is gone.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node to drain.
    pub node: String,
    /// Also evict pods that no controller manages (they will not come back).
    #[arg(long)]
    pub force: bool,
    /// Skip DaemonSet-managed pods instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Also evict pods with emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Give up after this long (0s: wait for ever).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Seconds each pod gets to terminate; negative: the pod's own.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Delete the pods instead of evicting them (disruption budgets are not consulted).
    #[arg(long)]
    pub disable_eviction: bool,
    /// Only pods matching this label selector are drained (the node is cordoned all the same).
    #[arg(long, default_value = "")]
    pub pod_selector: String,
    /// List the node's pods in pages of this many (0: all at once).
    #[arg(long, default_value_t = 500)]
    pub chunk_size: u32,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// A pod on the node, as drain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn of(p: &Value) -> PodRef {
        let m = |f: &str| rudder_api::meta::str_field(p, f).to_string();
        PodRef {
            namespace: rudder_api::meta::namespace(p).to_string(),
            name: rudder_api::meta::name(p).to_string(),
            uid: m("uid"),
        }
    }

    fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What drain will do with a node's pods.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub evict: Vec<PodRef>,
    /// Lines of warnings (skipped DaemonSet pods, pods allowed by a flag).
    pub warnings: Vec<String>,
    /// Reasons the drain cannot go on.
    pub errors: Vec<String>,
}

fn controller_kind(p: &Value) -> Option<&str> {
    p.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["kind"].as_str())
}

fn has_empty_dir(p: &Value) -> bool {
    p.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().any(|v| v.get("emptyDir").is_some()))
}

/// Sorts a node's pods into evict, skip (with a warning) and refuse, as kubectl's filters.
pub fn plan(pods: &[Value], args: &DrainArgs) -> Plan {
    let mut out = Plan::default();
    let (mut no_ctl, mut ds, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for p in pods {
        let r = PodRef::of(p);
        if rudder_api::meta::annotations(p).contains_key("kubernetes.io/config.mirror") {
            continue;
        }
        let phase = p.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            out.evict.push(r);
            continue;
        }
        match controller_kind(p) {
            Some("DaemonSet") => {
                ds.push(r.display());
                continue;
            }
            Some(_) => {}
            None => no_ctl.push(r.display()),
        }
        if has_empty_dir(p) {
            local.push(r.display());
        }
        out.evict.push(r);
    }
    let mut judge = |allowed: bool, pods: Vec<String>, refuse: &str, warn: &str| {
        if pods.is_empty() {
        } else if allowed {
            out.warnings.push(format!("{warn}: {}", pods.join(", ")));
        } else {
            out.errors.push(format!("{refuse}: {}", pods.join(", ")));
        }
    };
    judge(
        args.ignore_daemonsets,
        ds,
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
        "ignoring DaemonSet-managed Pods",
    );
    judge(
        args.force,
        no_ctl,
        "cannot delete Pods that declare no controller (use --force to override)",
        "deleting Pods that declare no controller",
    );
    judge(
        args.delete_emptydir_data,
        local,
        "cannot delete Pods with local storage (use --delete-emptydir-data to override)",
        "deleting Pods with local storage",
    );
    out
}

pub async fn run(ctx: &Ctx, args: DrainArgs) -> Result<()> {
    let timeout = util::parse_duration(&args.timeout)?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let cordon = CordonArgs {
        nodes: vec![args.node.clone()],
        sel: Selection::default(),
        dry_run: args.dry_run,
    };
    crate::cordon::run(ctx, cordon, true).await?;
    let client = ctx.client()?;
    let mut pods: Vec<Value> = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list(pb::ListRequest {
                kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
                field_selector: format!("spec.nodeName={}", args.node),
                label_selector: args.pod_selector.clone(),
                limit: args.chunk_size,
                continue_token: token,
                ..Default::default()
            })
            .await?;
        pods.extend(
            page.items
                .iter()
                .map(|o| serde_json::from_slice(&o.json).unwrap_or(Value::Null)),
        );
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    let plan = plan(&pods, &args);
    for w in &plan.warnings {
        eprintln!("Warning: {w}");
    }
    if !plan.errors.is_empty() {
        return Err(CliError::msg(format!(
            "unable to drain node \"{}\": {}",
            args.node,
            plan.errors.join("; ")
        )));
    }
    let suffix = args.dry_run.suffix();
    if args.dry_run == DryRun::Client {
        for p in &plan.evict {
            util::outln(&format!("evicting pod {}{suffix}", p.display()))?;
        }
        return util::outln(&format!("node/{} drained{suffix}", args.node));
    }
    let api: &dyn Api = client;
    let results = futures::future::join_all(
        plan.evict
            .iter()
            .map(|p| evict_and_wait(api, p, &args, deadline)),
    )
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    if !failed.is_empty() {
        return Err(CliError::msg(format!(
            "unable to drain node \"{}\": {}",
            args.node,
            failed.join("; ")
        )));
    }
    util::outln(&format!("node/{} drained{suffix}", args.node))
}

/// Evicts (or deletes) one pod, retrying while its budget refuses, then waits for it to go.
async fn evict_and_wait(
    api: &dyn Api,
    p: &PodRef,
    args: &DrainArgs,
    deadline: Option<Instant>,
) -> std::result::Result<(), String> {
    let server_dry = args.dry_run == DryRun::Server;
    let grace = (args.grace_period >= 0).then_some(args.grace_period);
    let verb = if args.disable_eviction {
        "deleted"
    } else {
        "evicted"
    };
    let _ = util::outln(&format!("evicting pod {}", p.display()));
    let mut told = false;
    loop {
        let res = if args.disable_eviction {
            api.delete(pb::DeleteRequest {
                kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                grace_period_seconds: grace,
                options: Some(pb::WriteOptions {
                    dry_run: server_dry,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
        } else {
            let mut opts = json!({});
            if let Some(g) = grace {
                opts["gracePeriodSeconds"] = json!(g);
            }
            if server_dry {
                opts["dryRun"] = json!(["All"]);
            }
            let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": p.name, "namespace": p.namespace}, "deleteOptions": opts});
            api.evict(pb::EvictRequest {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
        };
        match res {
            Ok(_) => break,
            Err(e) if e.is_not_found() => break,
            Err(ClientError::TooManyRequests(why)) => {
                if !told {
                    eprintln!(
                        "error when evicting pods/\"{}\" -n \"{}\" (will retry after {}s): {why}",
                        p.name,
                        p.namespace,
                        RETRY_INTERVAL.as_secs()
                    );
                    told = true;
                }
                if deadline.is_some_and(|d| Instant::now() + RETRY_INTERVAL > d) {
                    return Err(format!(
                        "pod {} was not evicted within --timeout {}: {why}",
                        p.display(),
                        args.timeout
                    ));
                }
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
            Err(e) => return Err(format!("error when evicting pod {}: {e}", p.display())),
        }
    }
    if server_dry {
        let _ = util::outln(&format!("pod/{} {verb} (server dry run)", p.name));
        return Ok(());
    }
    loop {
        let got = api
            .get(pb::GetRequest {
                kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                allow_stale: false,
            })
            .await;
        let gone = match got {
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(format!("waiting for pod {}: {e}", p.display())),
            Ok(o) => {
                let v: Value = serde_json::from_slice(&o.json).unwrap_or(Value::Null);
                rudder_api::meta::uid(&v) != p.uid
            }
        };
        if gone {
            let _ = util::outln(&format!("pod/{} {verb}", p.name));
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!(
                "pod {} was evicted but not gone within --timeout {}",
                p.display(),
                args.timeout
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(force: bool, ds: bool, local: bool) -> DrainArgs {
        DrainArgs {
            node: "n".into(),
            force,
            ignore_daemonsets: ds,
            delete_emptydir_data: local,
            timeout: "0s".into(),
            grace_period: -1,
            disable_eviction: false,
            pod_selector: String::new(),
            chunk_size: 500,
            dry_run: DryRun::None,
        }
    }

    fn pod(name: &str, owner: Option<&str>, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {}, "status": {"phase": "Running"}});
        if let Some(k) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": k, "name": "o", "controller": true}]);
        }
        if let (Value::Object(p), Value::Object(x)) = (&mut p, extra) {
            for (k, v) in x {
                p.insert(k, v);
            }
        }
        p
    }

    #[test]
    fn pods_are_sorted_as_kubectl_filters_them() {
        let pods = vec![
            pod("web", Some("ReplicaSet"), json!({})),
            pod("stray", None, json!({})),
            pod("agent", Some("DaemonSet"), json!({})),
            pod(
                "cache",
                Some("ReplicaSet"),
                json!({"spec": {"volumes": [{"name": "t", "emptyDir": {}}]}}),
            ),
            pod(
                "static",
                None,
                json!({"metadata": {"name": "static", "namespace": "ns",
                "annotations": {"kubernetes.io/config.mirror": "x"}}}),
            ),
            pod("done", None, json!({"status": {"phase": "Succeeded"}})),
        ];
        let refused = plan(&pods, &args(false, false, false));
        assert_eq!(refused.errors.len(), 3, "{:?}", refused.errors);
        assert!(
            refused.errors[1].contains("no controller") && refused.errors[1].ends_with("ns/stray")
        );
        let ok = plan(&pods, &args(true, true, true));
        assert!(ok.errors.is_empty());
        let names: Vec<&str> = ok.evict.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["web", "stray", "cache", "done"],
            "mirror and DaemonSet pods skipped"
        );
        assert_eq!(ok.warnings.len(), 3, "{:?}", ok.warnings);
    }
}
