//! A seeded simulation of a replicated cluster in one process: three members with the real
//! state machine, Raft log and openraft, over an in-process network that loses messages and
//! answers and cuts members off, on disks that lose what was not synced when a member crashes
//! (and now and then are lost altogether: the member rejoins on an empty one).
//!
//! The fault schedule (which member crashes or is cut off when, how many unsynced bytes a crash
//! keeps, which messages are lost, which member each write goes to) comes from one seed, printed
//! at the start and replayed with `RUDDER_SIM_SEED=N`. The tasks and threads still run on real
//! time, so a replay takes the same faults, not always the same interleaving. The run lasts
//! `RUDDER_SIM_SECS` seconds (default 12), so CI spends a bounded time on it.
//!
//! Afterwards every member must hold exactly the same objects, every acknowledged write must be
//! there with the version it was acknowledged with, no version may name two writes, and a write
//! acknowledged before another began must have the lower version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::network::{Call, CallError, Network, RaftService, Transport};
use super::{RaftHandle, ReplicaConfig};
use crate::raft::crash::CrashDisk;
use crate::state::{Command, Expect, ObjIndex, ObjKey};
use crate::storage::{KvPairs, Op, Storage, StorageError, apply_ops};
use crate::store::{Store, StoreConfig};

/// The in-process network: live members by address, who is cut off, and how lossy it is.
struct Net {
    services: HashMap<String, RaftService>,
    cut: HashSet<String>,
    /// Chance that a call, or its answer, is lost.
    loss: f64,
    rng: StdRng,
    delivered: u64,
    lost: u64,
}

type SharedNet = Arc<Mutex<Net>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One member's side of the network.
struct Endpoint {
    net: SharedNet,
    from: String,
}

impl Net {
    /// Whether a message from `from` to `to` gets through now.
    fn passes(&mut self, from: &str, to: &str) -> bool {
        let cut = self.cut.contains(from) || self.cut.contains(to);
        let ok = !cut && !self.rng.random_bool(self.loss);
        if ok {
            self.delivered += 1;
        } else {
            self.lost += 1;
        }
        ok
    }
}

impl Transport for Endpoint {
    fn call(
        &self,
        addr: &str,
        call: Call,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>> {
        let (net, from, to) = (self.net.clone(), self.from.clone(), addr.to_string());
        Box::pin(async move {
            let lost = || CallError::Unreachable(format!("{from} -> {to}: lost"));
            let (service, delay) = {
                let mut n = lock(&net);
                let service = n.services.get(&to).cloned();
                let delay = Duration::from_micros(n.rng.random_range(50..3000));
                let passes = service.is_some() && n.passes(&from, &to);
                (service.filter(|_| passes), delay)
            };
            // A lost message surfaces as a broken connection, a little later.
            let Some(service) = service else {
                tokio::time::sleep(delay.min(timeout)).await;
                return Err(lost());
            };
            tokio::time::sleep(delay).await;
            let answer = tokio::time::timeout(timeout, service.handle(call, &payload)).await;
            // The call took effect; its answer may still be lost on the way back.
            if !lock(&net).passes(&to, &from) {
                return Err(lost());
            }
            match answer {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(status)) => Err(CallError::Failed(status.message().to_string())),
                Err(_) => Err(CallError::Unreachable(format!("{to}: no answer in time"))),
            }
        })
    }
}

/// An engine in memory that keeps what was flushed across a crash, and nothing else.
#[derive(Default)]
struct Engine {
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: Vec<Op>,
    /// Bumped by every crash: the crashed process's handle fails from then on.
    generation: u64,
}

/// A process's handle on an [`Engine`].
struct SimStorage {
    engine: Arc<Mutex<Engine>>,
    generation: u64,
}

impl SimStorage {
    fn engine(&self) -> Result<std::sync::MutexGuard<'_, Engine>, StorageError> {
        let e = lock(&self.engine);
        if e.generation == self.generation {
            Ok(e)
        } else {
            Err(StorageError::Io("the process crashed".into()))
        }
    }
}

impl Storage for SimStorage {
    fn scan_all(&self) -> Result<KvPairs, StorageError> {
        let e = self.engine()?;
        Ok(e.live.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.engine()?.live.get(key).cloned())
    }

    fn apply(&self, batch: Vec<Op>) -> Result<(), StorageError> {
        let mut e = self.engine()?;
        e.pending.extend(batch.iter().cloned());
        apply_ops(&mut e.live, batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        let mut e = self.engine()?;
        let pending = std::mem::take(&mut e.pending);
        apply_ops(&mut e.durable, pending);
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn dir(&self) -> Option<&std::path::Path> {
        None
    }
}

/// One simulated machine: its disks survive crashes; its process does not.
struct Machine {
    id: u64,
    addr: String,
    disk: CrashDisk,
    engine: Arc<Mutex<Engine>>,
    /// Snapshots are files on the real disk (written and synced before use).
    dir: tempfile::TempDir,
    running: Option<(Store, RaftHandle)>,
}

fn indexer() -> Arc<crate::store::Indexer> {
    Arc::new(|_: &ObjKey, _: &serde_json::Value| ObjIndex::default())
}

impl Machine {
    async fn start(&mut self, net: &SharedNet, members: &BTreeMap<u64, String>) {
        let storage = SimStorage {
            engine: self.engine.clone(),
            generation: lock(&self.engine).generation,
        };
        let mut replica = ReplicaConfig::new(self.id, members.clone());
        replica.snapshot_every = 300;
        replica.keep_after_snapshot = 50;
        let config = StoreConfig {
            min_free_bytes: 0,
            ..StoreConfig::default()
        };
        let network = Network::new(Arc::new(Endpoint {
            net: net.clone(),
            from: self.addr.clone(),
        }));
        let (store, raft) = Store::open_replicated(
            storage,
            Arc::new(self.disk.clone()),
            self.dir.path(),
            config,
            indexer(),
            &replica,
            network,
        )
        .await
        .unwrap_or_else(|e| panic!("member {} does not restart: {e}", self.id));
        let service = RaftService::new(raft.clone(), store.clone());
        lock(net).services.insert(self.addr.clone(), service);
        self.running = Some((store, raft));
    }

    /// The disk is replaced by an empty one (the process must be down).
    fn wipe(&mut self) {
        self.disk = CrashDisk::new();
        self.engine = Arc::default();
        self.dir = tempfile::tempdir().expect("temp dir");
    }

    /// A power cut: unsynced writes are lost (a file keeps up to `torn` unsynced bytes).
    async fn crash(&mut self, net: &SharedNet, torn: usize) {
        lock(net).services.remove(&self.addr);
        self.disk.crash(torn);
        {
            let mut e = lock(&self.engine);
            e.live = e.durable.clone();
            e.pending.clear();
            e.generation += 1;
        }
        if let Some((_, raft)) = self.running.take() {
            let _ = raft.shutdown().await;
        }
    }
}

/// A write and what became of it.
struct Done {
    name: String,
    value: String,
    started: Instant,
    ended: Instant,
    /// The version it was acknowledged with; None if its outcome is unknown.
    acked: Option<u64>,
}

fn create(name: &str, value: &str) -> Command {
    let object = serde_json::json!({"metadata": {"name": name}, "v": value});
    Command::Put {
        key: ObjKey {
            kind: Arc::from("/SimObject"),
            namespace: String::new(),
            name: name.into(),
        },
        expect: Expect::Absent,
        object: Bytes::from(object.to_string()),
        labels: vec![],
        fields: vec![],
        deleting: false,
        claims: vec![],
    }
}

/// name -> (version, value) as a member holds it.
type Holding = BTreeMap<String, (u64, String)>;

fn holding(store: &Store) -> Holding {
    store
        .snapshot()
        .iter()
        .filter(|(k, _)| &*k.kind == "/SimObject")
        .map(|(k, o)| {
            let v: serde_json::Value = serde_json::from_slice(&o.json).unwrap_or_default();
            let value = v["v"].as_str().unwrap_or_default().to_string();
            (k.name, (o.rv, value))
        })
        .collect()
}

/// Every violation of the guarantees in the module's documentation.
fn check(ops: &[Done], members: &[(u64, Holding)]) -> Vec<String> {
    let mut errors = Vec::new();
    let Some((first_id, first)) = members.first() else {
        return vec!["no members".into()];
    };
    for (id, held) in &members[1..] {
        if held != first {
            let differ: Vec<_> = first
                .iter()
                .filter(|(k, v)| held.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(held.keys().filter(|k| !first.contains_key(*k)))
                .take(5)
                .collect();
            errors.push(format!(
                "members {first_id} and {id} differ (e.g. {differ:?})"
            ));
        }
    }
    let mut by_version: HashMap<u64, &str> = HashMap::new();
    for (name, (rv, _)) in first {
        if let Some(other) = by_version.insert(*rv, name) {
            errors.push(format!("version {rv} names both {other} and {name}"));
        }
    }
    for op in ops {
        let Some(rv) = op.acked else { continue };
        match first.get(&op.name) {
            None => errors.push(format!("{} was acknowledged at {rv} and lost", op.name)),
            Some((got, value)) if *got != rv || *value != op.value => errors.push(format!(
                "{} was acknowledged at {rv} with {:?}; members hold {got} with {value:?}",
                op.name, op.value
            )),
            Some(_) => {}
        }
    }
    // Real-time order: a write acknowledged before another began has the lower version.
    let mut acked: Vec<_> = ops.iter().filter(|o| o.acked.is_some()).collect();
    acked.sort_by_key(|o| o.ended);
    let mut by_start: Vec<_> = acked.clone();
    by_start.sort_by_key(|o| o.started);
    let (mut i, mut highest) = (0, (0u64, ""));
    for op in by_start {
        while i < acked.len() && acked[i].ended < op.started {
            let rv = acked[i].acked.unwrap_or(0);
            if rv > highest.0 {
                highest = (rv, &acked[i].name);
            }
            i += 1;
        }
        let rv = op.acked.unwrap_or(0);
        if rv <= highest.0 {
            errors.push(format!(
                "{} began after {} was acknowledged at {}, yet got the lower version {rv}",
                op.name, highest.1, highest.0
            ));
        }
    }
    errors
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_crashes_partitions_and_message_loss_lose_no_acknowledged_write() {
    let seed = env_u64("RUDDER_SIM_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("RUDDER_SIM_SECS").unwrap_or(12);
    // Warnings show what the members recovered from (RUST_LOG overrides).
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    eprintln!("simulation seed {seed} (replay with RUDDER_SIM_SEED={seed}), {secs} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let net: SharedNet = Arc::new(Mutex::new(Net {
        services: HashMap::new(),
        cut: HashSet::new(),
        loss: 0.0,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        delivered: 0,
        lost: 0,
    }));
    let members: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("sim-{i}"))).collect();
    let mut machines = Vec::new();
    for (id, addr) in &members {
        machines.push(Machine {
            id: *id,
            addr: addr.clone(),
            disk: CrashDisk::new(),
            engine: Arc::default(),
            dir: tempfile::tempdir().expect("temp dir"),
            running: None,
        });
    }
    // Started together, as a new cluster's members are: each bootstraps after finding no leader.
    futures::future::join_all(machines.iter_mut().map(|m| m.start(&net, &members))).await;
    // Clients write through whichever members run; the choice of member is seeded.
    let stores: Arc<Mutex<Vec<Option<Store>>>> = Arc::new(Mutex::new(
        machines
            .iter()
            .map(|m| m.running.as_ref().map(|r| r.0.clone()))
            .collect(),
    ));
    let ops: Arc<Mutex<Vec<Done>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6u64)
        .map(|c| {
            let (stores, ops, stop) = (stores.clone(), ops.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(c + 1));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = rng.random_range(0..3);
                    let Some(store) = lock(&stores)[at].clone() else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let (name, value) = (format!("c{c}-{i}"), format!("{:x}", rng.random::<u32>()));
                    i += 1;
                    let started = Instant::now();
                    let r = store.propose(create(&name, &value)).await;
                    ops.lock().unwrap().push(Done {
                        name,
                        value,
                        started,
                        ended: Instant::now(),
                        acked: r.ok().map(|ev| ev.rv),
                    });
                }
            })
        })
        .collect();

    // The fault schedule: at most one member is down or cut off at a time, so the cluster can
    // make progress between faults; loss applies to every message.
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut crashes, mut cuts, mut wipes) = (0, 0, 0);
    let mut faulty: Option<(usize, bool)> = None; // (machine, crashed rather than cut)
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(250..1200))).await;
        match (faulty, rng.random_range(0..4)) {
            (None, 0 | 1) => {
                let i = rng.random_range(0..3);
                let torn = if rng.random_bool(0.5) {
                    rng.random_range(1..300)
                } else {
                    0
                };
                machines[i].crash(&net, torn).await;
                lock(&stores)[i] = None;
                faulty = Some((i, true));
                crashes += 1;
            }
            (None, 2) => {
                let i = rng.random_range(0..3);
                lock(&net).cut.insert(machines[i].addr.clone());
                faulty = Some((i, false));
                cuts += 1;
            }
            (Some((i, true)), 0..=2) => {
                // Now and then the disk was lost too: the member rejoins on an empty one.
                if rng.random_bool(0.2) {
                    machines[i].wipe();
                    wipes += 1;
                }
                machines[i].start(&net, &members).await;
                lock(&stores)[i] = machines[i].running.as_ref().map(|r| r.0.clone());
                faulty = None;
            }
            (Some((i, false)), 0..=2) => {
                lock(&net).cut.remove(&machines[i].addr);
                faulty = None;
            }
            _ => {
                let loss = [0.0, 0.01, 0.05, 0.15][rng.random_range(0..4)];
                lock(&net).loss = loss;
            }
        }
    }
    // Heal: everyone back, no loss; the writers stop.
    {
        let mut n = lock(&net);
        n.cut.clear();
        n.loss = 0.0;
    }
    for (i, m) in machines.iter_mut().enumerate() {
        if m.running.is_none() {
            m.start(&net, &members).await;
            lock(&stores)[i] = m.running.as_ref().map(|r| r.0.clone());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let ops = std::mem::take(&mut *ops.lock().unwrap());
    // Every write is done: wait for the members to agree on the last version.
    let settle = Instant::now() + Duration::from_secs(30);
    let versions = loop {
        let v: Vec<(u64, u64)> = machines
            .iter()
            .filter_map(|m| m.running.as_ref())
            .map(|(s, r)| {
                let applied = r.metrics().borrow().last_applied.map_or(0, |l| l.index);
                (applied, s.resource_version())
            })
            .collect();
        if v.windows(2).all(|w| w[0] == w[1]) || Instant::now() > settle {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let held: Vec<_> = machines
        .iter()
        .filter_map(|m| Some((m.id, holding(&m.running.as_ref()?.0))))
        .collect();
    let (delivered, lost) = {
        let n = lock(&net);
        (n.delivered, n.lost)
    };
    let acked = ops.iter().filter(|o| o.acked.is_some()).count();
    eprintln!(
        "{} writes ({acked} acknowledged), {crashes} crashes ({wipes} with the disk lost), {cuts} cut-offs, {delivered} messages delivered, {lost} lost; (applied index, version) per member {versions:?}",
        ops.len()
    );
    let errors = check(&ops, &held);
    for m in &mut machines {
        if let Some((_, raft)) = m.running.take() {
            let _ = raft.shutdown().await;
        }
    }
    assert!(
        errors.is_empty(),
        "seed {seed}: {} violations:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(held.len(), 3, "seed {seed}: every member runs at the end");
    assert!(
        acked > 50,
        "seed {seed}: only {acked} writes were acknowledged"
    );
}

#[test]
fn the_checker_finds_a_lost_write_a_reused_version_and_a_version_out_of_real_time_order() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let done = |name: &str, s: u64, e: u64, rv: u64| Done {
        name: name.into(),
        value: name.into(),
        started: at(s),
        ended: at(e),
        acked: Some(rv),
    };
    let held = |pairs: &[(&str, u64)]| -> Holding {
        pairs
            .iter()
            .map(|(n, rv)| (n.to_string(), (*rv, n.to_string())))
            .collect()
    };
    let good = held(&[("a", 1), ("b", 2)]);
    let ops = vec![done("a", 0, 10, 1), done("b", 20, 30, 2)];
    assert!(check(&ops, &[(1, good.clone()), (2, good.clone())]).is_empty());
    // b began after a was acknowledged, yet has the lower version.
    let swapped = held(&[("a", 2), ("b", 1)]);
    let ops2 = vec![done("a", 0, 10, 2), done("b", 20, 30, 1)];
    assert!(
        check(&ops2, &[(1, swapped)])
            .iter()
            .any(|e| e.contains("lower version"))
    );
    // An acknowledged write missing, and members that differ.
    let lost = held(&[("a", 1)]);
    let errors = check(&ops, &[(1, good.clone()), (2, lost)]);
    assert!(errors.iter().any(|e| e.contains("differ")));
    let errors = check(&ops, &[(1, held(&[("a", 1)]))]);
    assert!(errors.iter().any(|e| e.contains("lost")));
    // One version naming two writes.
    let errors = check(&[], &[(1, held(&[("a", 1), ("b", 1)]))]);
    assert!(errors.iter().any(|e| e.contains("names both")));
}
