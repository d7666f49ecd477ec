//! Group commit: the single writer that sequences proposals, evaluates them against the state
//! machine, makes each batch durable through the [`Log`] with one append, and only then applies,
//! publishes and replies.
//!
//! Guarantees: a proposal is answered `Ok` only after its batch is durable; readers and watchers
//! never see an effect that is not durable; effects are applied and published in log order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::checkpoint::object_key;
use super::log::{AppendError, Entry, Log};
use super::{Proposal, Shared, StoreError};
use crate::state::{Event, EventType, Overlay, State};

/// The single writer: batches proposals, evaluates them in log order, persists the batch with one
/// append, then publishes and replies.
///
/// It runs on its own OS thread and blocks on I/O: a flush never occupies an async worker, and
/// no hand-off to a blocking pool sits between the fsync and the replies.
pub(super) fn writer<L: Log>(
    shared: Arc<Shared>,
    mut state: State,
    mut log: L,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let mut compacted_upto = 0;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < shared.config.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if let Err(reason) = shared.writable() {
            for p in batch {
                let _ = p
                    .reply
                    .send(Err(StoreError::InsufficientStorage(reason.clone())));
            }
            continue;
        }

        // Evaluate in log order against the state plus this batch's pending effects.
        let mut results: Vec<Result<Arc<Event>, StoreError>> = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        {
            let mut index = state.rv;
            let mut overlay = Overlay::new();
            for p in &batch {
                match state.evaluate(&overlay, index + 1, &p.cmd) {
                    Ok(ev) => {
                        index += 1;
                        entries.push(Entry {
                            index: ev.rv,
                            key: object_key(&ev.key),
                            value: (ev.kind != EventType::Deleted).then(|| ev.object.json.clone()),
                            created: ev.kind == EventType::Added,
                        });
                        overlay.record(&ev);
                        results.push(Ok(Arc::new(ev)));
                    }
                    Err(e) => results.push(Err(e.into())),
                }
            }
        }

        if !entries.is_empty() {
            if let Err(e) = log.append(&entries) {
                let reason = match e {
                    // Nothing written (space): the next batch may go in.
                    AppendError::Refused(r) => r,
                    AppendError::Unknown(r) => match log.recover() {
                        Ok(()) => format!(
                            "the write failed in the log ({r}); the log was cut back to its last acknowledged entry, so nothing of it is stored; retry"
                        ),
                        Err(e) => {
                            let reason = format!(
                                "the store stopped accepting writes after a storage failure ({r}; cutting the log back failed: {e}); the outcome of the last writes is unknown; repair the disk, then restart the API server"
                            );
                            shared.fail(reason.clone());
                            reason
                        }
                    },
                };
                tracing::error!(%reason, "log append failed");
                for p in batch {
                    let _ = p
                        .reply
                        .send(Err(StoreError::InsufficientStorage(reason.clone())));
                }
                continue;
            }
            shared.counters.committed(entries.len() as u64);
            for ev in results.iter().flatten() {
                state.commit(ev);
            }
            // O(1): the snapshot shares every node with the writer's state, whose next changes
            // copy only the paths they touch.
            let snapshot = Arc::new(state.clone());
            let previous = {
                let mut front = shared.front();
                for ev in results.iter().flatten() {
                    front.hub.publish(ev.clone());
                }
                front.hub.trim();
                std::mem::replace(&mut front.snapshot, snapshot)
            };
            // Freeing what only the old snapshot held happens outside the lock.
            drop(previous);
            shared.published.send_replace(state.rv);
            // The engine catches up in the background. This waits only when the checkpointer is
            // the queue's bytes behind; a failed checkpointer never makes it wait.
            shared.checkpoints.push(entries);
            shared
                .counters
                .log_bytes
                .store(log.size(), Ordering::Relaxed);
        }
        let checkpointed = shared.checkpointed.load(Ordering::Acquire);
        if checkpointed > compacted_upto {
            log.compact(checkpointed);
            compacted_upto = checkpointed;
        }
        for (p, r) in batch.into_iter().zip(results) {
            // Its bytes leave the queue before the proposer hears back.
            let Proposal { reply, _queued, .. } = p;
            drop(_queued);
            let _ = reply.send(r);
        }
    }
    shared.checkpoints.close();
    shared.closed.store(true, Ordering::Relaxed);
}
