//! The store's own tests: durability across the log and the engine, and the read path's
//! independence from the writer.

use bytes::Bytes;

use super::checkpoint::{checkpoint, object_key};
use super::*;
use crate::state::ObjIndex;
use crate::storage::SledStorage;
use crate::wal::Entry;

fn no_index(_: &ObjKey, v: &serde_json::Value) -> ObjIndex {
    ObjIndex {
        labels: rudder_api::meta::labels(v).into_iter().collect(),
        ..Default::default()
    }
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
        Wal::open(&dir.path().join("log")).unwrap().1.len(),
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
        let (mut wal, _) = Wal::open(&dir.path().join("log")).unwrap();
        wal.append(&[
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

fn put_cm(name: &str) -> Command {
    Command::Put {
        key: cm_key(name),
        expect: crate::state::Expect::Absent,
        object: Bytes::from(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#)),
        labels: vec![],
        fields: vec![],
        deleting: false,
        claims: vec![],
    }
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
    store
        .propose(Command::Put {
            key: ObjKey {
                kind: Arc::from(crate::state::NAMESPACE_KIND),
                namespace: String::new(),
                name: "default".into(),
            },
            expect: crate::state::Expect::Absent,
            object: Bytes::from_static(br#"{"metadata":{"name":"default"}}"#),
            labels: vec![],
            fields: vec![],
            deleting: false,
            claims: vec![],
        })
        .await
        .unwrap();
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
