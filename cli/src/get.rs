//! `rudder get`: tables, `-o json|yaml|name|wide`, selectors, pagination and `--watch`.

use clap::Args;
use jiff::Timestamp;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::printers::{self, TableOptions};
use crate::util;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// KIND[,KIND] [NAME...] or KIND/NAME...
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. status.phase=Running.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
    /// List this many objects per request (0: all at once).
    #[arg(long, default_value_t = 500)]
    pub chunk_size: u32,
}

/// A parsed `-o` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
}

impl Output {
    pub fn parse(o: Option<&str>) -> Result<Self> {
        Ok(match o.unwrap_or("") {
            "" => Output::Table { wide: false },
            "wide" => Output::Table { wide: true },
            "json" => Output::Json,
            "yaml" => Output::Yaml,
            "name" => Output::Name,
            other => {
                return Err(CliError::msg(format!(
                    "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,wide,yaml"
                )));
            }
        })
    }
}

/// kubectl's `kind: List` wrapper.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// Prints one object (or a list) in a machine format.
pub fn print_structured(out: Output, v: &Value) -> Result<()> {
    match out {
        Output::Json => util::out(&util::to_pretty_json(v)),
        Output::Yaml => util::out(&util::to_yaml(v)?),
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, args: GetArgs) -> Result<()> {
    let out = Output::parse(args.output.as_deref())?;
    let targets = util::parse_targets(&args.args)?;
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let mut types: Vec<(ResourceType, Option<Vec<String>>)> = Vec::new();
    for t in &targets {
        types.push((kinds.lookup(&t.kind)?.clone(), t.names.clone()));
    }
    if args.watch && types.len() != 1 {
        return Err(CliError::msg(
            "you may only watch one resource type at a time",
        ));
    }
    let ns = if ctx.all_namespaces {
        ""
    } else {
        ctx.namespace.as_str()
    };
    let label = args.selector.clone().unwrap_or_default();
    let field = args.field_selector.clone().unwrap_or_default();
    let several = types.len() > 1;
    let mut results: Vec<(ResourceType, Vec<Value>, u64)> = Vec::new();
    let mut errors = false;
    let mut named = false;
    for (t, names) in &types {
        match names {
            Some(names) => {
                named = true;
                let mut objs = Vec::new();
                for n in names {
                    match util::get_object(client, t, &ctx.namespace, n).await {
                        Ok(o) => objs.push(o),
                        Err(e) => {
                            eprintln!("{e}");
                            errors = true;
                        }
                    }
                }
                results.push((t.clone(), objs, 0));
            }
            None => {
                let (objs, rv) =
                    util::list_all(client, t, ns, &label, &field, args.chunk_size).await?;
                results.push((t.clone(), objs, rv));
            }
        }
    }
    let total: usize = results.iter().map(|r| r.1.len()).sum();
    let now = Timestamp::now();
    match out {
        Output::Json | Output::Yaml => {
            let mut all: Vec<Value> = results.iter().flat_map(|r| r.1.iter().cloned()).collect();
            if named && total == 1 && !several && !args.watch {
                print_structured(out, &all.remove(0))?;
            } else if total > 0 || !named {
                print_structured(out, &list_object(all))?;
            }
        }
        Output::Name => {
            for (t, objs, _) in &results {
                for o in objs {
                    util::outln(&util::ref_name(t, o))?;
                }
            }
        }
        Output::Table { wide } => {
            let mut first = true;
            for (t, objs, _) in &results {
                if objs.is_empty() {
                    continue;
                }
                let opts = TableOptions {
                    wide,
                    namespace_column: ctx.all_namespaces,
                    show_labels: args.show_labels,
                    qualified_names: several,
                };
                if !first {
                    util::out("\n")?;
                }
                first = false;
                util::out(&printers::table(t, objs, opts, now).render(true))?;
            }
        }
    }
    if total == 0 && !named && !args.watch && matches!(out, Output::Table { .. } | Output::Name) {
        let scoped = types.iter().any(|(t, _)| t.namespaced);
        if ctx.all_namespaces || !scoped {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
    }
    if args.watch
        && let Some((t, objs, rv)) = results.into_iter().next()
    {
        let mut field = field;
        if let Some(Some(names)) = types.first().map(|x| &x.1) {
            if names.len() != 1 {
                return Err(CliError::msg("watch takes at most one name"));
            }
            field = format!("metadata.name={}", names[0]);
        }
        let rv = if rv == 0 {
            objs.iter()
                .map(rudder_api::meta::resource_version)
                .max()
                .unwrap_or(0)
        } else {
            rv
        };
        // The list above printed the table's header unless it was empty.
        let header_shown = !objs.is_empty();
        watch(
            ctx,
            &t,
            ns,
            &label,
            &field,
            rv,
            out,
            args.show_labels,
            header_shown,
        )
        .await?;
    }
    if errors {
        return Err(CliError::Reported);
    }
    Ok(())
}

/// Prints each change after `rv` as one row (or one document), until the server closes.
#[allow(clippy::too_many_arguments)]
async fn watch(
    ctx: &Ctx,
    t: &ResourceType,
    ns: &str,
    label: &str,
    field: &str,
    mut rv: u64,
    out: Output,
    show_labels: bool,
    mut header_shown: bool,
) -> Result<()> {
    let client = ctx.client()?;
    loop {
        let mut stream = client
            .watch(pb::WatchRequest {
                kind: Some(t.kind_ref()),
                namespace: t.scope(ns).to_string(),
                label_selector: label.to_string(),
                field_selector: field.to_string(),
                resource_version: rv,
                allow_bookmarks: false,
                bookmark_interval_ms: 0,
            })
            .await?;
        loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                // The stream ended or broke: resume from the last version seen.
                Ok(None) | Err(_) => break,
            };
            match pb::EventType::try_from(ev.r#type).unwrap_or(pb::EventType::Unspecified) {
                pb::EventType::Error => {
                    let e = ev.error.unwrap_or_default();
                    if e.resume_resource_version > 0 {
                        rv = e.resume_resource_version;
                        break;
                    }
                    return Err(CliError::msg(format!(
                        "watch ended: {} {}",
                        e.reason, e.message
                    )));
                }
                pb::EventType::Bookmark => rv = rv.max(ev.resource_version),
                _ => {
                    let Some(o) = ev.object else { continue };
                    rv = rv.max(o.resource_version);
                    let v = util::decode(&o)?;
                    match out {
                        Output::Json | Output::Yaml => {
                            if out == Output::Yaml {
                                util::out("---\n")?;
                            }
                            print_structured(out, &v)?
                        }
                        Output::Name => util::outln(&util::ref_name(t, &v))?,
                        Output::Table { wide } => {
                            let opts = TableOptions {
                                wide,
                                namespace_column: ctx.all_namespaces,
                                show_labels,
                                qualified_names: false,
                            };
                            let tab = printers::table(t, &[v], opts, Timestamp::now());
                            util::out(&tab.render(!header_shown))?;
                            header_shown = true;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
