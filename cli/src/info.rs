//! `rudder api-resources` and `rudder version`.

use clap::Args;

use crate::Ctx;
use crate::error::Result;
use crate::printers::Table;
use crate::util;

#[derive(Debug, Args)]
pub struct ApiResourcesArgs {
    /// Only namespaced (true) or cluster-scoped (false) types.
    #[arg(long)]
    pub namespaced: Option<bool>,
    /// Output format: name (just qualified plural names).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

pub async fn api_resources(ctx: &Ctx, args: ApiResourcesArgs) -> Result<()> {
    let kinds = ctx.kinds().await?;
    let mut types: Vec<_> = kinds
        .all()
        .iter()
        .filter(|t| args.namespaced.is_none_or(|n| n == t.namespaced))
        .collect();
    // kubectl lists the core group first, then by group, then by name.
    types.sort_by(|a, b| {
        (!a.group.is_empty(), &a.group, &a.plural).cmp(&(!b.group.is_empty(), &b.group, &b.plural))
    });
    if args.output.as_deref() == Some("name") {
        for t in types {
            util::outln(&t.qualified_plural())?;
        }
        return Ok(());
    }
    let table = Table {
        headers: ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
            .map(String::from)
            .to_vec(),
        rows: types
            .iter()
            .map(|t| {
                vec![
                    t.plural.clone(),
                    t.short_names.join(","),
                    t.api_version(),
                    t.namespaced.to_string(),
                    t.kind.clone(),
                ]
            })
            .collect(),
    };
    util::out(&table.render(true))
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the client's version (no server needed).
    #[arg(long)]
    pub client: bool,
}

pub async fn version(ctx: &Ctx, args: VersionArgs) -> Result<()> {
    util::outln(&format!("Client Version: v{}", env!("CARGO_PKG_VERSION")))?;
    if args.client {
        return Ok(());
    }
    let v = ctx.client()?.version().await?;
    let mut line = format!("Server Version: v{}", v.version.trim_start_matches('v'));
    if !v.git_commit.is_empty() && v.git_commit != "unknown" {
        line.push_str(&format!(" (commit {})", v.git_commit));
    }
    util::outln(&line)?;
    if !v.kubernetes_schema.is_empty() {
        util::outln(&format!("Kubernetes Schema: {}", v.kubernetes_schema))?;
    }
    Ok(())
}
