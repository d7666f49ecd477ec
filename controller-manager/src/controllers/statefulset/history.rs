//! A StatefulSet's revisions (`getStatefulSetRevisions`, `truncateHistory`): the update
//! revision records the current template, the current revision is the one
//! `status.currentRevision` names.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rudder_client::cache::{CachedObject, INDEX_NAMESPACE};
use serde_json::Value;

use super::identity::revision_of;
use super::{Ctx, Ss};
use crate::claim::claim;
use crate::error::Error;
use crate::util::revision::{self, Labels, Limit};
use crate::util::str_at;

pub struct Revisions {
    /// The set's revisions before this reconcile made or renumbered any, oldest first.
    pub all: Vec<Arc<CachedObject>>,
    pub current: Arc<CachedObject>,
    pub update: Arc<CachedObject>,
    /// The collision count after any collisions met making the update revision.
    pub collision_count: i64,
}

/// Claims the set's revisions and finds, renumbers or makes the update revision.
pub async fn revisions(ctx: &Ctx, ss: &Ss) -> Result<Revisions, Error> {
    let candidates = ctx.revisions.by_index(INDEX_NAMESPACE, &ss.obj.namespace);
    let mut all = claim(ctx.api.as_ref(), &ss.obj, &ss.selector, candidates).await?;
    revision::sort(&mut all);
    let data = revision::patch_for(&ss.template);
    let next = revision::next_number(&all);
    let mut collision_count = ss.collision_count;
    let equal: Vec<&Arc<CachedObject>> =
        all.iter().filter(|r| revision::records(r, &data)).collect();
    let update = match (equal.last(), all.last()) {
        // The template has not changed since the latest revision.
        (Some(e), Some(last)) if e.uid() == last.uid() => Arc::clone(last),
        // A rollback to an older template: it becomes the latest.
        (Some(e), _) => revision::renumber(ctx.api.as_ref(), e, next).await?,
        (None, _) => {
            let template_labels: BTreeMap<String, String> = ss
                .template
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let labels = Labels {
                template: &template_labels,
                also_hash: None,
            };
            revision::create(
                ctx.api.as_ref(),
                &ss.obj,
                &labels,
                &data,
                next,
                &mut collision_count,
            )
            .await?
        }
    };
    let named = str_at(&ss.obj.value, "/status/currentRevision");
    let current = all
        .iter()
        .find(|r| !named.is_empty() && r.name == named)
        .cloned()
        .unwrap_or_else(|| Arc::clone(&update));
    Ok(Revisions {
        all,
        current,
        update,
        collision_count,
    })
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` that are neither current nor
/// update and that no pod is of.
pub async fn truncate(
    ctx: &Ctx,
    ss: &Ss,
    revs: &Revisions,
    pods: &[Arc<CachedObject>],
) -> Result<(), Error> {
    let live: HashSet<String> = pods.iter().map(|p| revision_of(p)).collect();
    let gone = revision::surplus(
        &revs.all,
        |r| live.contains(&r.name),
        |r| r.name == revs.current.name || r.name == revs.update.name,
        ss.history_limit,
        Limit::Unused,
    );
    for r in gone {
        revision::delete(ctx.api.as_ref(), &r).await?;
    }
    Ok(())
}
