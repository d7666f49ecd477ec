//! `rudder get`: tables, `-o` formats (see [`crate::output`]), selectors, `--sort-by`,
//! pagination and `--watch`.
//!
//! One object named on its own prints as itself in JSON, YAML and JSONPath; anything else as a
//! `kind: List`. Named objects are not looked up across namespaces (`-A` with a name of a
//! namespaced kind is refused, as kubectl refuses it). `--sort-by` orders each kind's objects
//! (and the whole list in machine formats); under `--watch` it orders the initial listing only.

use clap::Args;
use jiff::Timestamp;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::kinds::ResourceType;
use crate::output;
use crate::printers::{self, TableOptions};
use crate::util;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// KIND[,KIND] [NAME...] or KIND/NAME...
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE, jsonpath-file=FILE,
    /// custom-columns=HEADER:PATH,... or custom-columns-file=FILE.
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
    /// Add a column with each of these labels' values (repeatable, comma-separated).
    #[arg(
        short = 'L',
        long = "label-columns",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub label_columns: Vec<String>,
    /// Print tables (and custom columns) without the header line.
    #[arg(long)]
    pub no_headers: bool,
    /// Sort the objects by this JSONPath, e.g. .metadata.name or {.status.startTime}.
    #[arg(long, value_name = "JSONPATH")]
    pub sort_by: Option<String>,
    /// List this many objects per request (0: all at once).
    #[arg(long, default_value_t = 500)]
    pub chunk_size: u32,
}

pub use crate::output::Output;

/// kubectl's `kind: List` wrapper.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// Prints one object (or a list) in a machine format: JSON, YAML or a JSONPath template.
pub fn print_structured(out: &Output, v: &Value) -> Result<()> {
    match out {
        Output::Json => util::out(&util::to_pretty_json(v)),
        Output::Yaml => util::out(&util::to_yaml(v)?),
        Output::JsonPath { template, source } => {
            util::out(&output::render_jsonpath(template, source, v)?)
        }
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, args: GetArgs) -> Result<()> {
    let out = Output::parse(args.output.as_deref())?;
    let sort = args
        .sort_by
        .as_deref()
        .map(output::parse_sort_by)
        .transpose()?;
    let targets = util::parse_targets(&args.args)?;
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let mut types: Vec<(ResourceType, Option<Vec<String>>)> = Vec::new();
    for t in &targets {
        let rt = kinds.lookup(&t.kind)?;
        util::refuse_named_across_namespaces(ctx, rt, t.names.as_deref())?;
        types.push((rt.clone(), t.names.clone()));
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
    if let Some(path) = &sort {
        for r in results.iter_mut() {
            output::sort_objects(&mut r.1, path)?;
        }
    }
    let total: usize = results.iter().map(|r| r.1.len()).sum();
    // Machine formats print every kind's objects together, sorted together.
    let all = || -> Result<Vec<Value>> {
        let mut all: Vec<Value> = results.iter().flat_map(|r| r.1.iter().cloned()).collect();
        if let Some(path) = &sort
            && several
        {
            output::sort_objects(&mut all, path)?;
        }
        Ok(all)
    };
    let now = Timestamp::now();
    let mut header_shown = args.no_headers;
    match &out {
        Output::Json | Output::Yaml | Output::JsonPath { .. } => {
            let mut all = all()?;
            if named && total == 1 && !several && !args.watch {
                print_structured(&out, &all.remove(0))?;
            } else if total > 0 || !named {
                print_structured(&out, &list_object(all))?;
            }
        }
        Output::Name => {
            for (t, objs, _) in &results {
                for o in objs {
                    util::outln(&util::ref_name(t, o))?;
                }
            }
        }
        Output::CustomColumns(cols) => {
            // As kubectl: the header shows even when the list is empty.
            if total > 0 || !named {
                let tab = output::custom_columns_table(cols, &all()?)?;
                util::out(&tab.render(!header_shown))?;
                header_shown = true;
            }
        }
        Output::Table { wide } => {
            let mut first = true;
            for (t, objs, _) in &results {
                if objs.is_empty() {
                    continue;
                }
                let opts = TableOptions {
                    wide: *wide,
                    namespace_column: ctx.all_namespaces,
                    show_labels: args.show_labels,
                    qualified_names: several,
                    label_columns: args.label_columns.clone(),
                };
                if !first {
                    util::out("\n")?;
                }
                first = false;
                util::out(&printers::table(t, objs, &opts, now).render(!args.no_headers))?;
                header_shown = true;
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
        let printer = WatchPrinter {
            out: &out,
            opts: TableOptions {
                wide: matches!(out, Output::Table { wide: true }),
                namespace_column: ctx.all_namespaces,
                show_labels: args.show_labels,
                qualified_names: false,
                label_columns: args.label_columns.clone(),
            },
            header_shown,
        };
        watch(ctx, &t, ns, &label, &field, rv, printer).await?;
    }
    if errors {
        return Err(CliError::Reported);
    }
    Ok(())
}

/// How `--watch` prints each change: one row (header first unless already shown) or one
/// document.
struct WatchPrinter<'a> {
    out: &'a Output,
    opts: TableOptions,
    /// The header line was printed already, or is not wanted (`--no-headers`).
    header_shown: bool,
}

impl WatchPrinter<'_> {
    fn print(&mut self, t: &ResourceType, v: &Value) -> Result<()> {
        match self.out {
            Output::Json | Output::Yaml | Output::JsonPath { .. } => {
                if *self.out == Output::Yaml {
                    util::out("---\n")?;
                }
                print_structured(self.out, v)
            }
            Output::Name => util::outln(&util::ref_name(t, v)),
            Output::CustomColumns(cols) => {
                let tab = output::custom_columns_table(cols, std::slice::from_ref(v))?;
                util::out(&tab.render(!self.header_shown))?;
                self.header_shown = true;
                Ok(())
            }
            Output::Table { .. } => {
                let tab = printers::table(t, std::slice::from_ref(v), &self.opts, Timestamp::now());
                util::out(&tab.render(!self.header_shown))?;
                self.header_shown = true;
                Ok(())
            }
        }
    }
}

/// Prints each change after `rv`, until the server closes.
async fn watch(
    ctx: &Ctx,
    t: &ResourceType,
    ns: &str,
    label: &str,
    field: &str,
    mut rv: u64,
    mut printer: WatchPrinter<'_>,
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
                    printer.print(t, &util::decode(&o)?)?;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
