//! `rudder edit`: the object as YAML in `$EDITOR`, sent back as an update guarded by the
//! resourceVersion it was read at (so a concurrent change is a conflict, not lost).

use std::io::Write;

use clap::Args;
use rudder_client::proto as pb;
use serde_json::Value;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::util;

#[derive(Debug, Args)]
pub struct EditArgs {
    /// KIND NAME or KIND/NAME.
    #[arg(required = true)]
    pub args: Vec<String>,
}

const HEADER: &str = "# Please edit the object below. Lines beginning with a '#' will be ignored,\n\
# and an empty file will abort the edit. If an error occurs while saving, this file is\n\
# kept and its path printed.\n#\n";

/// Runs the editor on `path`. `$EDITOR` may hold arguments (`code --wait`), so it goes through
/// the shell, with the path passed as a positional parameter rather than spliced into the text.
fn run_editor(path: &std::path::Path) -> Result<()> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("rudder-edit")
        .arg(path)
        .status()
        .map_err(|e| CliError::io(format!("running editor \"{editor}\""), e))?;
    if !status.success() {
        return Err(CliError::msg(format!(
            "editor \"{editor}\" exited with {status}"
        )));
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: EditArgs) -> Result<()> {
    let targets = util::parse_targets(&args.args)?;
    let [target] = targets.as_slice() else {
        return Err(CliError::msg("edit takes one KIND NAME"));
    };
    let Some([name]) = target.names.as_deref() else {
        return Err(CliError::msg("edit takes exactly one object name"));
    };
    let client = ctx.client()?;
    let kinds = ctx.kinds().await?;
    let t = kinds.lookup(&target.kind)?;
    let original = util::get_object(client, t, &ctx.namespace, name).await?;
    let rv = rudder_api::meta::str_field(&original, "resourceVersion").to_string();
    let mut file = tempfile::Builder::new()
        .prefix("rudder-edit-")
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| CliError::io("creating a temporary file", e))?;
    let yaml = util::to_yaml(&original)?;
    file.write_all(HEADER.as_bytes())
        .and_then(|_| file.write_all(yaml.as_bytes()))
        .and_then(|_| file.flush())
        .map_err(|e| CliError::io("writing the temporary file", e))?;
    run_editor(file.path())?;
    let text = std::fs::read_to_string(file.path())
        .map_err(|e| CliError::io(format!("reading {}", file.path().display()), e))?;
    let uncommented: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if uncommented.trim().is_empty() {
        util::outln("Edit cancelled, saved file was empty.")?;
        return Ok(());
    }
    let keep = |file: tempfile::NamedTempFile, e: CliError| -> CliError {
        match file.keep() {
            Ok((_, path)) => {
                eprintln!("{e}");
                CliError::msg(format!(
                    "A copy of your changes has been stored to \"{}\"",
                    path.display()
                ))
            }
            Err(_) => e,
        }
    };
    let edited: Value = match yaml_serde::from_str(&uncommented) {
        Ok(v) => v,
        Err(e) => {
            return Err(keep(
                file,
                CliError::msg(format!("the edited file is not valid YAML: {e}")),
            ));
        }
    };
    if edited == original {
        util::outln("Edit cancelled, no changes made.")?;
        return Ok(());
    }
    let mut edited = edited;
    // The update must be guarded by the version that was edited, whatever the file now says.
    rudder_api::meta::metadata_mut(&mut edited).insert("resourceVersion".into(), Value::String(rv));
    let r = client
        .update(pb::UpdateRequest {
            kind: Some(t.kind_ref()),
            namespace: t.scope(&ctx.namespace).to_string(),
            json: util::to_json_bytes(&edited),
            options: None,
        })
        .await;
    match r {
        Ok(_) => util::outln(&format!("{}/{name} edited", t.qualified_singular())),
        Err(e) => Err(keep(file, CliError::from(e))),
    }
}
