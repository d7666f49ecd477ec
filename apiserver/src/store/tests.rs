//! The store's own tests: durability across the log and the engine, and the read path's
//! independence from the writer.

use bytes::Bytes;

use super::checkpoint::{checkpoint, object_key};
use super::*;
use crate::raft::{RaftLog, RealDisk};
use crate::state::{EventType, ObjIndex};
use crate::storage::SledStorage;

fn no_index(_: &ObjKey, v: &serde_json::Value) -> ObjIndex {
    ObjIndex {
        labels: rudder_api::meta::labels(v).into_iter().collect(),
        ..Default::default()
    }
}

fn open_log(dir: &std::path::Path) -> RaftLog {
    RaftLog::open(Arc::new(RealDisk), dir, crate::raft::LogOptions::default()).unwrap()
}

fn entry(index: u64, name: &str, value: Option<&str>) -> Entry {
    let key = object_key(&ObjKey {
        kind: Arc::from("/ConfigMap"),
        namespace: "default".into(),
        name: name.into(),
    });
    Entry {
        index,
        key,
        value: value.map(|v| Bytes::from(v.to_string())),
        created: false,
    }
}

#[tokio::test]
async fn a_failed_checkpoint_stops_writes_but_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::storage::MemStorage::new();
    storage.fail_flushes();
    let store = Store::open(
        storage,
        &dir.path().join("log"),
        StoreConfig::default(),
        &no_index,
    )
    .unwrap();
    let put = |name: &str| Command::Put {
        key: ObjKey {
            kind: Arc::from("/Namespace"),
            namespace: String::new(),
            name: name.into(),
        },
        expect: crate::state::Expect::Absent,
        object: Bytes::from_static(br#"{"metadata":{"name":"x"}}"#),
        labels: vec![],
        fields: vec![],
        deleting: false,
        claims: vec![],
    };
    // Durable in the log, so acknowledged; the checkpoint into the engine then fails.
    store.propose(put("a")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.writable().is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the failed checkpoint was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        store.propose(put("b")).await,
        Err(StoreError::InsufficientStorage(_))
    ));
    assert_eq!(
        open_log(&dir.path().join("log")).read_all().unwrap().len(),
        1,
        "the log still holds the write"
    );
}

#[tokio::test]
async fn records_only_in_the_log_are_replayed_into_the_engine_on_open() {
    let dir = tempfile::tempdir().unwrap();
    // The engine saw index 1 only; the log holds 1..=3 (the process died before the
    // checkpoint of 2 and 3).
    {
        let storage = SledStorage::open(dir.path()).unwrap();
        let mut first = vec![entry(
            1,
            "a",
            Some(r#"{"metadata":{"resourceVersion":"1","name":"a"}}"#),
        )];
        checkpoint(&storage, &mut first).unwrap();
        let mut log = open_log(&dir.path().join("log"));
        log.append(&[
            entry(
                1,
                "a",
                Some(r#"{"metadata":{"resourceVersion":"1","name":"a"}}"#),
            ),
            entry(
                2,
                "b",
                Some(r#"{"metadata":{"resourceVersion":"2","name":"b"}}"#),
            ),
            entry(3, "a", None),
        ])
        .unwrap();
    }
    let storage = SledStorage::open(dir.path()).unwrap();
    let store = Store::open(
        storage,
        &dir.path().join("log"),
        StoreConfig::default(),
        &no_index,
    )
    .unwrap();
    let key = |n: &str| ObjKey {
        kind: Arc::from("/ConfigMap"),
        namespace: "default".into(),
        name: n.into(),
    };
    assert!(
        store.get(&key("a")).is_none(),
        "the logged delete was replayed"
    );
    assert_eq!(store.get(&key("b")).map(|o| o.rv), Some(2));
    assert_eq!(store.resource_version(), 3);
}

fn cm_key(name: &str) -> ObjKey {
    ObjKey {
        kind: Arc::from("/ConfigMap"),
        namespace: "default".into(),
        name: name.into(),
    }
}

/// A create of the object `key` named `name`.
fn create(key: ObjKey) -> Command {
    let object = Bytes::from(format!(r#"{{"metadata":{{"name":"{}"}}}}"#, key.name));
    Command::Put {
        key,
        expect: crate::state::Expect::Absent,
        object,
        labels: vec![],
        fields: vec![],
        deleting: false,
        claims: vec![],
    }
}

fn put_cm(name: &str) -> Command {
    create(cm_key(name))
}

fn put_ns(name: &str) -> Command {
    create(ns_key(name))
}

/// A store over memory with the `default` namespace and `n` ConfigMaps in it.
async fn store_with(dir: &std::path::Path, n: usize) -> Store {
    let store = Store::open(
        crate::storage::MemStorage::new(),
        &dir.join("log"),
        StoreConfig::default(),
        &no_index,
    )
    .unwrap();
    store.propose(put_ns("default")).await.unwrap();
    let writes: Vec<_> = (0..n)
        .map(|i| {
            let s = store.clone();
            async move { s.propose(put_cm(&format!("cm-{i:05}"))).await }
        })
        .collect();
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    store
}

#[tokio::test]
async fn a_page_examines_a_bounded_number_of_objects_however_many_follow() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5000;
    let store = store_with(dir.path(), n).await;
    let examined = std::sync::atomic::AtomicUsize::new(0);
    let keep = |_: &(String, String), _: &StoredObject| {
        examined.fetch_add(1, Ordering::Relaxed);
        true
    };
    let first = store
        .list("/ConfigMap", "default", None, None, 10, &keep)
        .unwrap();
    assert_eq!(first.items.len(), 10);
    let after = first.continue_after.clone().expect("more remain");
    let seen = examined.swap(0, Ordering::Relaxed);
    assert!(
        seen <= 10 + read::COUNT_AHEAD + 1,
        "the first page examined {seen} of {n} objects"
    );
    // A later page, at the first page's version, with writes in between.
    store.propose(put_cm("cm-00005x")).await.unwrap();
    let second = store
        .list(
            "/ConfigMap",
            "default",
            Some(first.resource_version),
            Some(&after),
            10,
            &keep,
        )
        .unwrap();
    assert_eq!(
        second.items[0].0.1, "cm-00010",
        "the write after the first page is not seen"
    );
    let seen = examined.load(Ordering::Relaxed);
    assert!(
        seen <= 10 + read::COUNT_AHEAD + 1,
        "the second page examined {seen} of {n} objects"
    );
    // Near the end the count is exact; far from it, unknown (0) but the token is there.
    assert_eq!(first.remaining, 0);
    let near = store
        .list(
            "/ConfigMap",
            "default",
            None,
            Some(&("default".into(), format!("cm-{:05}", n - 26))),
            10,
            &keep,
        )
        .unwrap();
    assert_eq!(near.remaining, 15);
    assert!(near.continue_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_in_progress_does_not_hold_up_writers_or_other_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 100).await;
    // A list that pauses halfway through until released.
    let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let lister = {
        let store = store.clone();
        std::thread::spawn(move || {
            let count = std::sync::atomic::AtomicUsize::new(0);
            let keep = |_: &(String, String), _: &StoredObject| {
                if count.fetch_add(1, Ordering::Relaxed) == 50 {
                    let _ = paused_tx.send(());
                    let _ = release_rx.recv();
                }
                true
            };
            store
                .list("/ConfigMap", "default", None, None, 0, &keep)
                .map(|p| p.items.len())
        })
    };
    paused_rx.recv().unwrap();
    // While it is paused, a write commits and a get sees it.
    let write = tokio::time::timeout(Duration::from_secs(5), store.propose(put_cm("during")));
    let ev = write
        .await
        .expect("the write was held up by the list")
        .unwrap();
    assert_eq!(store.get(&cm_key("during")).map(|o| o.rv), Some(ev.rv));
    release_tx.send(()).unwrap();
    assert_eq!(
        lister.join().unwrap().unwrap(),
        100,
        "the list is of its own snapshot, without the later write"
    );
}

/// A gate a test opens to let a blocked store thread go on.
#[derive(Default)]
struct Gate(std::sync::Mutex<bool>, std::sync::Condvar);

impl Gate {
    fn wait(&self) {
        let mut open = self.0.lock().unwrap();
        while !*open {
            open = self.1.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }
}

/// A log whose appends wait for the gate: a disk that has stopped answering.
struct GatedLog(Arc<Gate>);

impl Log for GatedLog {
    fn append(&mut self, _: &[Entry]) -> Result<(), AppendError> {
        self.0.wait();
        Ok(())
    }
    fn recover(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    fn compact(&mut self, _: u64) {}
    fn size(&self) -> u64 {
        0
    }
}

/// An engine whose batches wait for the gate: sled falling behind.
struct GatedEngine(crate::storage::MemStorage, Arc<Gate>);

impl Storage for GatedEngine {
    fn scan_all(&self) -> Result<crate::storage::KvPairs, StorageError> {
        self.0.scan_all()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(key)
    }
    fn apply(&self, batch: Vec<crate::storage::Op>) -> Result<(), StorageError> {
        self.1.wait();
        self.0.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.0.flush()
    }
    fn size_on_disk(&self) -> u64 {
        self.0.size_on_disk()
    }
    fn dir(&self) -> Option<&std::path::Path> {
        None
    }
}

const MIB: usize = 1024 * 1024;

fn big_cm(name: &str) -> Command {
    let body = format!(
        r#"{{"metadata":{{"name":"{name}"}},"data":{{"v":"{}"}}}}"#,
        "x".repeat(MIB)
    );
    match put_cm(name) {
        Command::Put {
            key,
            expect,
            labels,
            fields,
            deleting,
            claims,
            ..
        } => Command::Put {
            key,
            expect,
            object: Bytes::from(body),
            labels,
            fields,
            deleting,
            claims,
        },
        other => other,
    }
}

/// A ConfigMap kind with no namespace check needed: cluster-scoped keys.
fn cluster_scoped(cmd: Command) -> Command {
    match cmd {
        Command::Put {
            mut key,
            expect,
            object,
            labels,
            fields,
            deleting,
            claims,
        } => {
            key.namespace = String::new();
            Command::Put {
                key,
                expect,
                object,
                labels,
                fields,
                deleting,
                claims,
            }
        }
        other => other,
    }
}

#[tokio::test]
async fn the_history_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        history_bytes: 4 * MIB,
        ..StoreConfig::default()
    };
    let store = Store::open(
        crate::storage::MemStorage::new(),
        &dir.path().join("log"),
        config,
        &no_index,
    )
    .unwrap();
    for i in 0..10 {
        store
            .propose(cluster_scoped(big_cm(&format!("big-{i}"))))
            .await
            .unwrap();
    }
    let st = store.stats();
    assert!(
        st.history_events <= 4,
        "{} events of 1 MiB kept",
        st.history_events
    );
    assert!(st.history_bytes <= 4 * MIB as u64, "{}", st.history_bytes);
    // What is kept is still a valid window: resuming inside it works, before it is expired.
    assert!(store.subscribe_from(st.resource_version - 1).is_ok());
    assert!(store.subscribe_from(1).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_proposals_are_bounded_by_bytes() {
    let gate = Arc::new(Gate::default());
    let config = StoreConfig {
        proposal_queue_bytes: 4 * MIB + 4096,
        ..StoreConfig::default()
    };
    let store = Store::open_with_log(
        crate::storage::MemStorage::new(),
        GatedLog(gate.clone()),
        config,
        &no_index,
    )
    .unwrap();
    let writers: Vec<_> = (0..12)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.propose(cluster_scoped(big_cm(&format!("q-{i}")))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued = store.stats().queued_bytes;
    assert!(
        queued <= 4 * MIB as u64 + 4096 && queued >= 3 * MIB as u64,
        "{queued} bytes of proposals held while the log is stuck"
    );
    gate.open();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    assert_eq!(store.stats().queued_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_waiting_for_a_checkpoint_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let config = StoreConfig {
        checkpoint_queue_bytes: 3 * MIB,
        ..StoreConfig::default()
    };
    let store = Store::open(
        GatedEngine(crate::storage::MemStorage::new(), gate.clone()),
        &dir.path().join("log"),
        config,
        &no_index,
    )
    .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..8 {
                store
                    .propose(cluster_scoped(big_cm(&format!("c-{i}"))))
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let written = done.load(Ordering::Relaxed);
    assert!(
        written < 8,
        "all {written} writes were taken while the engine was stuck"
    );
    let waiting = store.stats().checkpoint_queued_bytes;
    assert!(waiting <= 3 * MIB as u64, "{waiting} bytes waiting");
    gate.open();
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writes resume once the engine catches up")
        .unwrap();
}

fn open_on_fake(disk: &crate::raft::crash::CrashDisk) -> Result<Store, StorageError> {
    Store::open_on(
        crate::storage::MemStorage::new(),
        Arc::new(disk.clone()),
        std::path::Path::new("/data/log"),
        StoreConfig::default(),
        &no_index,
    )
}

/// Writes namespaces through a store on `disk`, then closes it.
async fn write_namespaces(disk: &crate::raft::crash::CrashDisk, names: &[&str]) {
    let store = open_on_fake(disk).unwrap();
    for n in names {
        store.propose(put_ns(n)).await.unwrap();
    }
}

fn ns_key(name: &str) -> ObjKey {
    ObjKey {
        kind: Arc::from(crate::state::NAMESPACE_KIND),
        namespace: String::new(),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_and_a_full_disk_still_serves_reads() {
    let disk = crate::raft::crash::CrashDisk::new();
    write_namespaces(&disk, &["a", "b", "c"]).await;
    // A power cut: only what was synced is left; a fresh engine is rebuilt from the log alone.
    disk.crash(0);
    disk.set_free(Some(0));
    let store = open_on_fake(&disk).expect("a store on a full disk opens");
    assert_eq!(store.resource_version(), 3);
    assert_eq!(store.get(&ns_key("b")).map(|o| o.rv), Some(2));
    let e = store.propose(put_ns("d")).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::InsufficientStorage(m) if m.contains("insufficient storage") && m.contains("writes are refused")),
        "{e}"
    );
    // Space comes back: writes go on, with no restart.
    disk.set_free(None);
    let ev = store.propose(put_ns("d")).await.unwrap();
    assert_eq!(ev.rv, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_in_the_log_is_rolled_back_and_writes_go_on() {
    let disk = crate::raft::crash::CrashDisk::new();
    let store = open_on_fake(&disk).unwrap();
    store.propose(put_ns("a")).await.unwrap();
    // The next append's write fails part-way (its sync would be the operation after).
    disk.fail_once(1);
    let e = store.propose(put_ns("lost")).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::InsufficientStorage(m) if m.contains("nothing of it is stored")),
        "{e}"
    );
    assert!(store.writable().is_ok(), "the failure did not stick");
    let ev = store.propose(put_ns("b")).await.unwrap();
    assert_eq!(ev.rv, 2, "the failed write's version was never published");
    drop(store);
    disk.crash(usize::MAX);
    let store = open_on_fake(&disk).unwrap();
    assert!(store.get(&ns_key("lost")).is_none());
    assert_eq!(store.get(&ns_key("b")).map(|o| o.rv), Some(2));
}

#[tokio::test]
async fn a_corrupt_log_stops_the_start_with_the_file_and_offset() {
    let disk = crate::raft::crash::CrashDisk::new();
    write_namespaces(&disk, &["a", "b", "c"]).await;
    let seg = std::path::Path::new("/data/log/00000000000000000001.seg");
    // A byte in the first record's payload: records 2 and 3 follow it.
    disk.corrupt(seg, 24 + 28 + 2, b"\xee");
    let e = open_on_fake(&disk).err().expect("refused to start");
    let msg = e.to_string();
    assert!(
        msg.contains("00000000000000000001.seg at byte 24") && msg.contains("record 1"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_a_restart_resumes_from_the_history_rebuilt_from_the_log() {
    let disk = crate::raft::crash::CrashDisk::new();
    let store = open_on_fake(&disk).unwrap();
    store.propose(put_ns("a")).await.unwrap();
    let seen = store.propose(put_ns("b")).await.unwrap().rv;
    let Command::Put {
        key,
        object,
        labels,
        fields,
        deleting,
        claims,
        ..
    } = put_ns("a")
    else {
        unreachable!()
    };
    store
        .propose(Command::Put {
            key,
            expect: crate::state::Expect::Version(1),
            object,
            labels,
            fields,
            deleting,
            claims,
        })
        .await
        .unwrap();
    store
        .propose(Command::Delete {
            key: ns_key("b"),
            expect: crate::state::Expect::Version(2),
        })
        .await
        .unwrap();
    drop(store);
    disk.crash(0);
    let store = open_on_fake(&disk).unwrap();
    let (backlog, _live) = store
        .subscribe_from(seen)
        .expect("the history after the restart reaches back to the watch's version");
    let got: Vec<_> = backlog
        .iter()
        .map(|e| (e.rv, e.kind, e.key.name.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, EventType::Modified, "a".to_string()),
            (4, EventType::Deleted, "b".to_string())
        ]
    );
    assert_eq!(
        backlog[1].object.rv, 4,
        "the deletion carries its own version"
    );
    assert!(store.subscribe_from(0).is_ok(), "the whole log is history");
}

#[test]
fn the_rebuilt_history_starts_after_a_change_whose_previous_version_is_older_than_the_log() {
    let mk = |index: u64, name: &str, value: Option<&str>, created: bool| Entry {
        created,
        ..entry(index, name, value)
    };
    let json = |rv: u64| format!(r#"{{"metadata":{{"resourceVersion":"{rv}","name":"y"}}}}"#);
    let entries = vec![
        mk(5, "old", Some(&json(5)), false),
        mk(6, "y", Some(&json(6)), true),
        mk(7, "y", Some(&json(7)), false),
        mk(8, "y", None, false),
    ];
    let (oldest, events) = super::history::rebuild(&entries, &no_index).unwrap();
    assert_eq!(oldest, 5, "the change at 5 has no known previous version");
    let kinds: Vec<_> = events.iter().map(|e| (e.rv, e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (6, EventType::Added),
            (7, EventType::Modified),
            (8, EventType::Deleted)
        ]
    );
    assert_eq!(events[1].prev.as_ref().map(|p| p.rv), Some(6));
    assert!(events[2].object.deleting && events[2].object.rv == 8);
}
