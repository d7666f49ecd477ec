//! `rudder diff -f`: what `apply` would change, as a unified diff of YAML.
//!
//! Each object goes through the same planning as `apply` and then a server-side dry run, so the
//! "after" side includes the server's defaults and validation. Exit codes follow kubectl: 0 no
//! differences, 1 differences, 2 (or more) the diff itself failed.

use clap::Args;
use serde_json::Value;

use crate::Ctx;
use crate::apply::{self, Plan};
use crate::error::{CliError, Result};
use crate::util::{self, DryRun};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Files, directories or - with the objects to compare.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

/// Lines of context around each change, as `diff -u`.
const CONTEXT: usize = 3;

/// A unified diff of two texts by lines (empty when equal). Uses a longest-common-subsequence
/// table: manifests are small, so the quadratic cost is fine.
pub fn unified_diff(a: &str, b: &str, name_a: &str, name_b: &str) -> String {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let (n, m) = (x.len(), y.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if x[i] == y[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (tag, line) with ' ', '-', '+'.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            ops.push((' ', x[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Deletions before additions, as `diff -u` prints them.
            ops.push(('-', x[i]));
            i += 1;
        } else {
            ops.push(('+', y[j]));
            j += 1;
        }
    }
    if ops.iter().all(|(t, _)| *t == ' ') {
        return String::new();
    }
    let mut out = format!("--- {name_a}\n+++ {name_b}\n");
    // Group changes into hunks with CONTEXT lines around them.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * CONTEXT + 1 {
            k += 1;
            end = changed[k];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        // Line numbers of the hunk's start on each side.
        let a_start = ops[..start].iter().filter(|o| o.0 != '+').count();
        let b_start = ops[..start].iter().filter(|o| o.0 != '-').count();
        let a_len = ops[start..end].iter().filter(|o| o.0 != '+').count();
        let b_len = ops[start..end].iter().filter(|o| o.0 != '-').count();
        let pos = |s: usize, l: usize| if l == 0 { s } else { s + 1 };
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            pos(a_start, a_len),
            pos(b_start, b_len)
        ));
        for (t, l) in &ops[start..end] {
            out.push(*t);
            out.push_str(l);
            out.push('\n');
        }
        k += 1;
    }
    out
}

/// Fields that change on every write and would only add noise.
fn normalise(mut v: Value) -> Value {
    if let Some(Value::Object(m)) = v.get_mut("metadata") {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

pub async fn run(ctx: &Ctx, args: DiffArgs) -> Result<i32> {
    match diff_all(ctx, &args).await {
        Ok(differs) => Ok(if differs { 1 } else { 0 }),
        Err(e) => {
            if !matches!(e, CliError::Reported) {
                eprintln!("{e}");
            }
            Ok(2)
        }
    }
}

async fn diff_all(ctx: &Ctx, args: &DiffArgs) -> Result<bool> {
    let manifests = util::read_manifests(&args.files)?;
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let mut text = String::new();
    for m in &manifests {
        let t = util::manifest_type(kinds, m)?;
        let p = apply::prepare(ctx, t, m)?;
        let live = apply::live(client, &p).await?;
        let plan = apply::plan(&p, live.as_ref());
        if plan == Plan::Unchanged {
            continue;
        }
        let merged = apply::execute(client, &p, &plan, DryRun::Server)
            .await
            .map_err(|e| e.with_context(format!("error when diffing \"{}\"", m.source)))?
            .unwrap_or_default();
        let before = match &live {
            Some(l) => util::to_yaml(&normalise(l.clone()))?,
            None => String::new(),
        };
        let after = util::to_yaml(&normalise(merged))?;
        let id = format!(
            "{}.{}.{}.{}",
            if t.group.is_empty() { "core" } else { &t.group },
            t.version,
            t.kind,
            p.name
        );
        let id = if t.namespaced {
            format!("{id}.{}", p.namespace)
        } else {
            id
        };
        text.push_str(&unified_diff(
            &before,
            &after,
            &format!("live/{id}"),
            &format!("merged/{id}"),
        ));
    }
    util::out(&text)?;
    Ok(!text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_give_nothing() {
        assert_eq!(unified_diff("a\nb\n", "a\nb\n", "x", "y"), "");
    }

    #[test]
    fn a_change_in_the_middle() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            unified_diff(a, b, "live/x", "merged/x"),
            "--- live/x\n+++ merged/x\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn creation_and_separate_hunks() {
        assert_eq!(
            unified_diff("", "a\n", "l", "m"),
            "--- l\n+++ m\n@@ -0,0 +1,1 @@\n+a\n"
        );
        let a: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let b = a.replace("2\n", "two\n").replace("19\n", "nineteen\n");
        let d = unified_diff(&a, &b, "l", "m");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
    }
}
