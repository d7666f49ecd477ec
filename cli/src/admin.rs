//! `rudder admin members list|add|remove`: the masters of a replicated cluster.
//! `rudder admin snapshot save FILE`: a backup of the whole state at one version;
//! `rudder admin snapshot restore FILE --data-dir DIR`: that backup into an empty data
//! directory (verified by checksum), for a server to start on as a new cluster.
//!
//! Any master answers; a change goes to the leader, which carries it out. `add` waits until the
//! new master has caught up (it joins as a learner, receives the log or a snapshot, then votes
//! unless `--learner`); the new master must already be running with `--raft-join`.

use clap::{Args, Subcommand};
use rudder_proto as pb;

use crate::Ctx;
use crate::error::{CliError, Result};
use crate::printers::Table;
use crate::util;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub what: AdminWhat,
}

#[derive(Debug, Subcommand)]
pub enum AdminWhat {
    /// The masters of a replicated cluster.
    Members {
        #[command(subcommand)]
        op: MembersOp,
    },
    /// Backups of the whole state.
    Snapshot {
        #[command(subcommand)]
        op: SnapshotOp,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotOp {
    /// Write a backup of every object, at one version, to FILE.
    Save { file: std::path::PathBuf },
    /// Restore FILE into the empty data directory DIR; start `rudder-apiserver --data-dir DIR`
    /// on it afterwards (a replicated master alone, the others added with `members add`).
    Restore {
        file: std::path::PathBuf,
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersOp {
    /// Every master: id, Raft address, voter or learner, and (from the leader) how far behind.
    List,
    /// Add the master `ID` whose Raft port is `ADDRESS` (started with `--raft-join`).
    Add {
        id: u64,
        address: String,
        /// Keep it a learner (it receives the log but does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove the master `ID`: it receives no more writes. Stop it afterwards.
    Remove { id: u64 },
}

fn render(s: &pb::RaftStatus) -> String {
    let rows = s
        .members
        .iter()
        .map(|m| {
            let role = if m.id == s.leader {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            vec![
                m.id.to_string(),
                m.address.clone(),
                role.to_string(),
                if s.role == "Leader" {
                    m.matched_index.to_string()
                } else {
                    "-".into()
                },
                if s.role == "Leader" {
                    m.lag.to_string()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let t = Table {
        headers: ["ID", "ADDRESS", "ROLE", "MATCHED", "LAG"]
            .map(String::from)
            .to_vec(),
        rows,
    };
    format!(
        "{}\nanswered by member {} ({}, term {}), applied index {}\n",
        t.render(true),
        s.id,
        s.role,
        s.term,
        s.applied_index
    )
}

async fn snapshot(ctx: &Ctx, op: &SnapshotOp) -> Result<()> {
    match op {
        SnapshotOp::Save { file } => {
            let b = ctx.client()?.save_backup().await?;
            // Written whole or not at all: a crash leaves the previous file.
            let tmp = file.with_extension("partial");
            std::fs::write(&tmp, &b.data)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, file))
                .map_err(|e| CliError::msg(format!("writing {}: {e}", file.display())))?;
            util::outln(&format!(
                "saved {} objects at resourceVersion {} to {} ({} bytes)",
                b.objects,
                b.resource_version,
                file.display(),
                b.data.len()
            ))
        }
        SnapshotOp::Restore { file, data_dir } => {
            let bin = crate::cluster::find_binary("rudder-apiserver")?;
            let out = std::process::Command::new(bin)
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--restore-from")
                .arg(file)
                .arg("--restore-only")
                .output()
                .map_err(|e| CliError::msg(format!("running rudder-apiserver: {e}")))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let line = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(CliError::msg(format!("restore failed: {line}")));
            }
            util::out(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

pub async fn run(ctx: &Ctx, a: &AdminArgs) -> Result<()> {
    let op = match &a.what {
        AdminWhat::Snapshot { op } => return snapshot(ctx, op).await,
        AdminWhat::Members { op } => op,
    };
    let c = ctx.client()?;
    let status = match op {
        MembersOp::List => c.members().await?,
        MembersOp::Add {
            id,
            address,
            learner,
        } => {
            if *id == 0 {
                return Err(CliError::msg("ID: a member id is a positive number"));
            }
            c.change_members(pb::ChangeMembersRequest {
                op: "add".into(),
                id: *id,
                address: address.clone(),
                learner: *learner,
            })
            .await?
        }
        MembersOp::Remove { id } => {
            c.change_members(pb::ChangeMembersRequest {
                op: "remove".into(),
                id: *id,
                ..Default::default()
            })
            .await?
        }
    };
    util::out(&render(&status))
}
