//! `rudder rollout`: kubectl's rollout subcommands over the API, with no controller of its own.
//!
//! - [`status`]: the status viewers (deployment, daemon set, stateful set) and the watch.
//! - [`history`]: `history` and `undo` from a deployment's replica sets; [`revisions`]: from a
//!   daemon set's or stateful set's ControllerRevisions.
//! - [`control`]: `pause`, `resume`, `restart`, and Rudder's canary `promote` and `abort`.
//! - [`template`]: a pod template printed as kubectl describes it.
//! - [`target`]: naming objects, reading and writing them; shared with `scale` and `set`.

pub mod control;
pub mod history;
pub mod revisions;
pub mod status;
pub mod target;
pub mod template;

use clap::{Args, Subcommand};

use crate::Ctx;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show the status of the rollout, watching until it is done.
    Status(status::StatusArgs),
    /// View rollout history (deployments, daemon sets, stateful sets).
    History(history::HistoryArgs),
    /// Roll back to a previous rollout (deployments, daemon sets, stateful sets).
    Undo(history::UndoArgs),
    /// Mark a deployment as paused: its template changes are not rolled out.
    Pause(control::ControlArgs),
    /// Resume a paused deployment.
    Resume(control::ControlArgs),
    /// Restart a deployment's, daemon set's or stateful set's pods.
    Restart(control::ControlArgs),
    /// Move a deployment's canary past its current step (`--full`: to the end).
    Promote(control::PromoteArgs),
    /// Abort a deployment's canary: the stable revision serves again.
    Abort(control::ControlArgs),
}

pub async fn run(ctx: &Ctx, args: RolloutArgs) -> Result<()> {
    match args.command {
        RolloutCommand::Status(a) => status::run(ctx, a).await,
        RolloutCommand::History(a) => history::history(ctx, a).await,
        RolloutCommand::Undo(a) => history::undo(ctx, a).await,
        RolloutCommand::Pause(a) => control::run(ctx, a, control::Action::Pause).await,
        RolloutCommand::Resume(a) => control::run(ctx, a, control::Action::Resume).await,
        RolloutCommand::Restart(a) => control::run(ctx, a, control::Action::Restart).await,
        RolloutCommand::Promote(a) => {
            control::run(ctx, a.control, control::Action::Promote { full: a.full }).await
        }
        RolloutCommand::Abort(a) => control::run(ctx, a, control::Action::Abort).await,
    }
}
