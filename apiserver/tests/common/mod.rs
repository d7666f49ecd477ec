//! Test harness: a real `rudder-apiserver` process on a loopback port with its own data dir.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Client;
use rudder_client::proto as pb;
use serde_json::Value;

pub struct TestServer {
    pub child: Child,
    pub addr: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: Client,
}

impl TestServer {
    pub fn start(extra: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `dir` (which may hold an earlier server's store).
    pub fn start_in(dir: &Path, extra: &[&str]) -> TestServer {
        let bin = env!("CARGO_BIN_EXE_rudder-apiserver");
        // An explicit --listen in `extra` wins over the default free port.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(bin)
            .arg("--insecure-allow-all")
            .arg("--data-dir")
            .arg(dir)
            .args(listen)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rudder-apiserver");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from rudder-apiserver: {line:?}"))
            .to_string();
        let client = Client::new(std::slice::from_ref(&addr)).expect("client");
        TestServer {
            child,
            addr,
            dir: dir.to_path_buf(),
            _tmp: None,
            client,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Restarts on the same data directory and the same address after a kill, as a server
    /// that crashed and came back: clients keep their address.
    pub fn restart_same_addr(&mut self) {
        let addr = self.addr.clone();
        self.restart(&["--listen", &addr]);
    }

    /// Restarts on the same data directory after a kill.
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        let tmp = self._tmp.take();
        let mut next = Self::start_in(&self.dir, extra);
        next._tmp = tmp;
        std::mem::swap(self, &mut next);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kref(api_version: &str, kind: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
    })
}

pub fn json(obj: &pb::Object) -> Value {
    serde_json::from_slice(&obj.json).expect("object JSON")
}

pub fn create_req(api_version: &str, kind: &str, ns: &str, body: Value) -> pb::CreateRequest {
    pb::CreateRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

pub fn pod(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    })
}

pub fn configmap(name: &str, data: Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

pub async fn create(
    c: &Client,
    api_version: &str,
    kind: &str,
    ns: &str,
    body: Value,
) -> pb::Object {
    c.create(create_req(api_version, kind, ns, body))
        .await
        .expect("create")
}

pub fn get_req(api_version: &str, kind: &str, ns: &str, name: &str) -> pb::GetRequest {
    pb::GetRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        name: name.into(),
        allow_stale: false,
    }
}

pub fn delete_req(api_version: &str, kind: &str, ns: &str, name: &str) -> pb::DeleteRequest {
    pb::DeleteRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

pub fn update_req(api_version: &str, kind: &str, ns: &str, body: &Value) -> pb::UpdateRequest {
    pb::UpdateRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

pub fn patch_req(
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
    patch_type: pb::PatchType,
    patch: Value,
) -> pb::PatchRequest {
    pb::PatchRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        name: name.into(),
        patch_type: patch_type as i32,
        patch: Bytes::from(patch.to_string()),
        ..Default::default()
    }
}

pub fn list_req(api_version: &str, kind: &str, ns: &str) -> pb::ListRequest {
    pb::ListRequest {
        kind: kref(api_version, kind),
        namespace: ns.into(),
        ..Default::default()
    }
}

/// Next watch event within a deadline.
pub async fn next_event(s: &mut tonic::Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("watch event in time")
        .expect("watch stream ok")
        .expect("watch stream open")
}
