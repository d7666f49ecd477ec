//! `rudder admin members list|add|remove`: the masters of a replicated cluster.
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

pub async fn run(ctx: &Ctx, a: &AdminArgs) -> Result<()> {
    let c = ctx.client()?;
    let AdminWhat::Members { op } = &a.what;
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
