//! Races between writers that the state machine itself must settle, driven through the service
//! in-process (the same `Api` the gRPC handlers call).

use std::sync::Arc;

use bytes::Bytes;
use rudder_apiserver::ServerConfig;
use rudder_apiserver::server::open_api;
use rudder_apiserver::service::{Api, Identity};
use rudder_apiserver::storage::MemStorage;
use rudder_proto as pb;
use serde_json::{Value, json};

fn kref(kind: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: kind.into(),
    })
}

fn create_req(kind: &str, ns: &str, body: Value) -> pb::CreateRequest {
    pb::CreateRequest {
        kind: kref(kind),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

fn get_req(kind: &str, ns: &str, name: &str) -> pb::GetRequest {
    pb::GetRequest {
        kind: kref(kind),
        namespace: ns.into(),
        name: name.into(),
        allow_stale: false,
    }
}

async fn api(dir: &std::path::Path) -> Api {
    let mut cfg = ServerConfig::new(dir);
    cfg.ids = Arc::new(rudder_apiserver::clock::Ids::seeded(1));
    open_api(MemStorage::new(), &cfg).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_racing_the_delete_of_an_empty_namespace_never_leaves_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let id = Identity::anonymous();
    for i in 0..200 {
        let ns = format!("race-{i}");
        api.create(
            &id,
            create_req("Namespace", "", json!({"metadata": {"name": ns}})),
        )
        .await
        .unwrap();
        // Finalized up front, so the delete sees an empty namespace that nothing holds and
        // removes it directly, while the create commits in between: the state machine must
        // refuse one of them.
        api.finalize(
            &id,
            pb::UpdateRequest {
                kind: kref("Namespace"),
                json: Bytes::from(json!({"metadata": {"name": ns}}).to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let creator = {
            let (api, id, ns) = (api.clone(), id.clone(), ns.clone());
            tokio::spawn(async move {
                api.create(
                    &id,
                    create_req("ConfigMap", &ns, json!({"metadata": {"name": "c"}})),
                )
                .await
            })
        };
        let deleter = {
            let (api, id, ns) = (api.clone(), id.clone(), ns.clone());
            tokio::spawn(async move {
                api.delete(
                    &id,
                    pb::DeleteRequest {
                        kind: kref("Namespace"),
                        name: ns,
                        ..Default::default()
                    },
                )
                .await
            })
        };
        let _ = creator.await.unwrap();
        deleter
            .await
            .unwrap()
            .expect("the namespace delete succeeds");
        let cm = api.get(&id, get_req("ConfigMap", &ns, "c")).await;
        let namespace = api.get(&id, get_req("Namespace", "", &ns)).await;
        assert!(
            cm.is_err() || namespace.is_ok(),
            "iteration {i}: ConfigMap {ns}/c outlived its namespace"
        );
    }
}

#[tokio::test]
async fn an_open_watch_does_not_hold_up_a_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = rudder_apiserver::Server::serve(api, listener);
    let client = rudder_client::Client::new(&[server.addr.to_string()]).unwrap();
    let mut watch = client
        .watch(pb::WatchRequest {
            kind: kref("ConfigMap"),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server.shutdown()).await;
    assert!(stopped.is_ok(), "the server did not stop with a watch open");
    // The stream ended rather than being left hanging.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message()).await;
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "{end:?}");
}
