//! Slow-start batches (Kubernetes' `slowStartBatch`): create 1, then 2, 4, ... at once, and stop
//! at the first batch with a failure, so a controller whose creations all fail (quota, an
//! admission rule) sends one request, not hundreds.

use std::future::Future;

/// Calls `op` up to `count` times in doubling batches starting at `initial`; returns how many
/// succeeded and the first error of the batch that stopped it.
pub async fn slow_start<E, F, Fut>(count: usize, initial: usize, op: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut batch = initial.max(1).min(remaining);
    let mut ok = 0;
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| op())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (ok, first_err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (ok, None)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn doubles_and_stops_at_a_failing_batch() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(10, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!((ok, err, calls.load(Ordering::SeqCst)), (10, None, 10));

        // Every call fails: only the first batch (one call) is sent.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(10, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("quota")
        })
        .await;
        assert_eq!(
            (ok, err, calls.load(Ordering::SeqCst)),
            (0, Some("quota"), 1)
        );

        // The 4th call fails: batches 1, 2, then 4 (of which 3 succeed); the 8-batch never runs.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(20, 1, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 3 { Err("boom") } else { Ok(()) }
        })
        .await;
        assert_eq!(
            (ok, err, calls.load(Ordering::SeqCst)),
            (6, Some("boom"), 7)
        );
    }
}
