//! `rudder top node` and `rudder top pod`: CPU and memory use from each node agent's summary,
//! asked through the API server (`NodeSummary`), as kubectl top reads the metrics API.

use clap::{Args, Subcommand};
use rudder_proto as pb;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::printers::Table;
use crate::util;

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(subcommand)]
    pub what: TopWhat,
}

#[derive(Debug, Subcommand)]
pub enum TopWhat {
    /// CPU and memory of each node (or the named one).
    Node {
        name: Option<String>,
        #[arg(long)]
        no_headers: bool,
    },
    /// CPU and memory of each pod in the namespace (or the named one).
    Pod {
        name: Option<String>,
        /// One line per container.
        #[arg(long)]
        containers: bool,
        #[arg(long)]
        no_headers: bool,
    },
}

/// `250m`-style cores from nanocores.
fn cores(nano: u64) -> String {
    format!("{}m", nano / 1_000_000)
}

/// `128Mi`-style bytes.
fn mebibytes(b: u64) -> String {
    format!("{}Mi", b / (1024 * 1024))
}

fn u(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

async fn nodes(ctx: &Ctx, name: Option<&str>) -> Result<Vec<Value>> {
    let kinds = ctx.kinds().await?;
    let t = kinds.lookup("nodes")?;
    let client = ctx.client()?;
    match name {
        Some(n) => Ok(vec![util::get_object(client, t, "", n).await?]),
        None => Ok(util::list_all(client, t, "", "", "", 0).await?.0),
    }
}

async fn summary(ctx: &Ctx, node: &str) -> Result<Value> {
    let r = ctx
        .client()?
        .node_summary(pb::SummaryRequest {
            node: node.to_string(),
        })
        .await?;
    serde_json::from_slice(&r.json)
        .map_err(|e| CliError::msg(format!("node {node}'s summary is not JSON: {e}")))
}

fn allocatable(node: &Value, res: &str) -> Option<u64> {
    let q = node
        .pointer(&format!("/status/allocatable/{res}"))?
        .as_str()?;
    let v = rudder_api::quantity::parse_quantity(q).ok()?;
    let n = if res == "cpu" {
        v.milli_value() * 1_000_000
    } else {
        v.value()
    };
    u64::try_from(n).ok()
}

pub async fn run(ctx: &Ctx, a: TopArgs) -> Result<()> {
    match a.what {
        TopWhat::Node { name, no_headers } => {
            let mut rows = Vec::new();
            for n in nodes(ctx, name.as_deref()).await? {
                let node = n
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let s = match summary(ctx, &node).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("node {node}: metrics not available: {e}");
                        continue;
                    }
                };
                let (cpu, mem) = (
                    u(&s, "/node/cpu/usageNanoCores"),
                    u(&s, "/node/memory/workingSetBytes"),
                );
                let pct = |used: u64, res: &str| {
                    allocatable(&n, res)
                        .filter(|a| *a > 0)
                        .map(|a| format!("{}%", used * 100 / a))
                        .unwrap_or_else(|| "<unknown>".into())
                };
                rows.push(vec![
                    node,
                    cores(cpu),
                    pct(cpu, "cpu"),
                    mebibytes(mem),
                    pct(mem, "memory"),
                ]);
            }
            let t = Table {
                headers: ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
                    .map(String::from)
                    .to_vec(),
                rows,
            };
            util::out(&t.render(!no_headers))
        }
        TopWhat::Pod {
            name,
            containers,
            no_headers,
        } => {
            let mut rows = Vec::new();
            for n in nodes(ctx, None).await? {
                let node = n
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Ok(s) = summary(ctx, &node).await else {
                    continue;
                };
                for p in s["pods"].as_array().into_iter().flatten() {
                    let ns = p
                        .pointer("/podRef/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let pod = p
                        .pointer("/podRef/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if (!ctx.all_namespaces && ns != ctx.namespace)
                        || name.as_deref().is_some_and(|n| n != pod)
                    {
                        continue;
                    }
                    let mut lead = Vec::new();
                    if ctx.all_namespaces {
                        lead.push(ns.to_string());
                    }
                    lead.push(pod.to_string());
                    if containers {
                        for c in p["containers"].as_array().into_iter().flatten() {
                            let mut row = lead.clone();
                            row.push(c["name"].as_str().unwrap_or("").to_string());
                            row.push(cores(u(c, "/cpu/usageNanoCores")));
                            row.push(mebibytes(u(c, "/memory/workingSetBytes")));
                            rows.push(row);
                        }
                    } else {
                        let mut row = lead;
                        row.push(cores(u(p, "/cpu/usageNanoCores")));
                        row.push(mebibytes(u(p, "/memory/workingSetBytes")));
                        rows.push(row);
                    }
                }
            }
            if rows.is_empty() {
                return Err(CliError::msg(match name {
                    Some(n) => format!("pod {n} has no metrics (not running on a node?)"),
                    None => format!("no pod metrics found in {} namespace", ctx.namespace),
                }));
            }
            rows.sort();
            let mut headers: Vec<String> = Vec::new();
            if ctx.all_namespaces {
                headers.push("NAMESPACE".into());
            }
            headers.push("NAME".into());
            if containers {
                headers.push("CONTAINER".into());
            }
            headers.extend(["CPU(cores)".to_string(), "MEMORY(bytes)".to_string()]);
            util::out(&Table { headers, rows }.render(!no_headers))
        }
    }
}
