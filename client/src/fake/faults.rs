//! Injected faults and per-caller handles.
//!
//! Faults queue per operation: errors and delays are consumed one call at a time, a hang lasts
//! until released. The fake's own faults hit every caller; a [`FakeClient`]'s hit only calls
//! made through that handle. Delays and hangs wait on `tokio::time` and a notification, so
//! tests under paused time drive them and a released hang resumes the calls already waiting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rudder_proto as pb;
use tokio::sync::watch;

use super::{FakeApi, Op, Write};
use crate::api::{Api, ApiFuture, WatchStream};
use crate::conn::ClientError;

/// One set of injected faults and call counts.
pub(crate) struct Faults {
    state: Mutex<FaultState>,
    /// Bumped whenever a hang is released, waking the calls that wait.
    released: watch::Sender<u64>,
}

#[derive(Default)]
struct FaultState {
    errors: HashMap<Op, VecDeque<ClientError>>,
    delays: HashMap<Op, VecDeque<Duration>>,
    hung: HashSet<Op>,
    calls: HashMap<Op, usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::new(FaultState::default()),
            released: watch::channel(0).0,
        }
    }
}

/// What the faults decided for one call.
pub(crate) struct Plan {
    pub error: Option<ClientError>,
    pub delay: Option<Duration>,
    pub hung: bool,
}

impl Plan {
    /// Adds a second set's decision; the first error wins.
    pub fn merge(&mut self, other: Plan) {
        if self.error.is_none() {
            self.error = other.error;
        }
        self.delay = match (self.delay, other.delay) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.hung |= other.hung;
    }

    /// Whether the call completes without waiting.
    pub fn is_immediate(&self) -> bool {
        self.delay.is_none() && !self.hung
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fail_next(&self, op: Op, err: ClientError) {
        self.lock().errors.entry(op).or_default().push_back(err);
    }

    pub fn fail_times(&self, op: Op, err: ClientError, n: usize) {
        let mut st = self.lock();
        let q = st.errors.entry(op).or_default();
        q.extend(std::iter::repeat_n(err, n));
    }

    pub fn delay_next(&self, op: Op, d: Duration) {
        self.lock().delays.entry(op).or_default().push_back(d);
    }

    pub fn hang(&self, op: Op) {
        self.lock().hung.insert(op);
    }

    pub fn release(&self, op: Op) {
        self.lock().hung.remove(&op);
        self.released.send_modify(|n| *n += 1);
    }

    pub fn clear(&self) {
        {
            let mut st = self.lock();
            st.errors.clear();
            st.delays.clear();
            st.hung.clear();
        }
        self.released.send_modify(|n| *n += 1);
    }

    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call and takes the faults queued for it; an error only if `take_error` (a call
    /// already failing for another reason leaves this set's next error for a later call).
    pub fn plan(&self, op: Op, take_error: bool) -> Plan {
        let mut st = self.lock();
        *st.calls.entry(op).or_default() += 1;
        let error = if take_error {
            st.errors.get_mut(&op).and_then(VecDeque::pop_front)
        } else {
            None
        };
        Plan {
            error,
            delay: st.delays.get_mut(&op).and_then(VecDeque::pop_front),
            hung: st.hung.contains(&op),
        }
    }

    /// Returns once `op` is not hung (at once if it is not).
    pub async fn wait_released(&self, op: Op) {
        let mut rx = self.released.subscribe();
        while self.lock().hung.contains(&op) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One caller's handle on a shared [`FakeApi`]: the same store, its own faults.
///
/// Get one with [`FakeApi::client`]; hand it to the component under test as its
/// `Arc<dyn Api>`. Faults injected here affect only this handle's calls; the fake's own faults
/// affect every handle's. Watches opened through the handle can be ended on their own with
/// [`FakeClient::drop_watches`].
pub struct FakeClient {
    fake: Arc<FakeApi>,
    id: u64,
    name: String,
    faults: Faults,
}

impl std::fmt::Debug for FakeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeClient")
            .field("name", &self.name)
            .finish()
    }
}

impl FakeClient {
    pub(super) fn new(fake: Arc<FakeApi>, id: u64, name: &str) -> Self {
        FakeClient {
            fake,
            id,
            name: name.to_string(),
            faults: Faults::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared fake behind this handle.
    pub fn fake(&self) -> &Arc<FakeApi> {
        &self.fake
    }

    /// This caller's next call of `op` fails with `err` (errors queue up in order).
    pub fn fail_next(&self, op: Op, err: ClientError) {
        self.faults.fail_next(op, err);
    }

    /// This caller's next `n` calls of `op` fail with `err`.
    pub fn fail_times(&self, op: Op, err: ClientError, n: usize) {
        self.faults.fail_times(op, err, n);
    }

    /// This caller's next call of `op` waits `d` (tokio time) before it reaches the store.
    pub fn delay_next(&self, op: Op, d: Duration) {
        self.faults.delay_next(op, d);
    }

    /// This caller's calls of `op` wait, without reaching the store, until released.
    pub fn hang(&self, op: Op) {
        self.faults.hang(op);
    }

    /// Every call of this caller hangs: it is cut off from the server.
    pub fn hang_all(&self) {
        for op in Op::ALL {
            self.faults.hang(op);
        }
    }

    /// Ends a hang of `op`; waiting calls proceed.
    pub fn release(&self, op: Op) {
        self.faults.release(op);
    }

    /// Forgets this caller's faults not yet consumed and releases its hung calls.
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// How many times this caller called `op` (failed and waiting calls included).
    pub fn calls(&self, op: Op) -> usize {
        self.faults.calls(op)
    }

    /// Ends this caller's watch streams without an ERROR event (its connection dropped).
    pub fn drop_watches(&self) {
        self.fake.lock().watchers.retain(|w| w.owner != self.id);
    }

    /// This caller's open watch streams.
    pub fn watcher_count(&self) -> usize {
        let mut st = self.fake.lock();
        st.watchers.retain(|w| !w.is_closed());
        st.watchers.iter().filter(|w| w.owner == self.id).count()
    }
}

impl Api for FakeClient {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        self.fake.dispatch_get(req, Some(&self.faults))
    }

    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        self.fake.dispatch_list(req, Some(&self.faults))
    }

    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        self.fake.dispatch_watch(req, Some(&self.faults), self.id)
    }

    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake.dispatch_write(Op::Create, Write::Create(req), f)
    }

    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake.dispatch_write(Op::Update, Write::Update(req), f)
    }

    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake
            .dispatch_write(Op::UpdateStatus, Write::UpdateStatus(req), f)
    }

    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake.dispatch_write(Op::Patch, Write::Patch(req), f)
    }

    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.fake.dispatch_delete(req, Some(&self.faults))
    }

    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake.dispatch_write(Op::Bind, Write::Bind(req), f)
    }

    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        let f = Some(&self.faults);
        self.fake
            .dispatch_write(Op::Finalize, Write::Finalize(req), f)
    }

    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.fake.dispatch_evict(req, Some(&self.faults))
    }

    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse> {
        self.fake.dispatch_discovery(Some(&self.faults))
    }
}
