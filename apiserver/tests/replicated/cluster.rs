//! Three (or more) real `rudder-apiserver` processes forming one replicated cluster on loopback,
//! each with its own data directory; members can be killed (SIGKILL) and restarted on the same
//! directory and ports. Every process is killed when the cluster is dropped, also on failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rudder_client::Client;
use rudder_proto as pb;

pub struct Member {
    pub id: u64,
    pub api: String,
    pub raft: String,
    pub dir: PathBuf,
    child: Option<Child>,
    /// A client that talks to this member only.
    pub client: Client,
}

pub struct Cluster {
    pub members: Vec<Member>,
    /// Flags every member starts with, besides its place in the cluster.
    pub extra: Vec<String>,
    pub _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// One master on a data directory restored from `backup`: a new cluster holding it.
    pub fn start_restored(backup: &std::path::Path) -> Cluster {
        let mut c = Self::build(1, &[]);
        let out = Command::new(env!("CARGO_BIN_EXE_rudder-apiserver"))
            .arg("--data-dir")
            .arg(&c.members[0].dir)
            .arg("--restore-from")
            .arg(backup)
            .arg("--restore-only")
            .output()
            .expect("running the restore");
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.spawn(0);
        c
    }

    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Self::build(n, extra);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// The cluster's members, none started yet.
    fn build(n: usize, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut members = Vec::new();
        for i in 0..n {
            let api = format!("127.0.0.1:{}", free_port());
            let raft = format!("127.0.0.1:{}", free_port());
            members.push(Member {
                id: i as u64 + 1,
                client: Client::new(&[api.as_str()]).expect("client"),
                api,
                raft,
                dir: tmp.path().join(format!("m{}", i + 1)),
                child: None,
            });
        }
        Cluster {
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: tmp,
        }
    }

    /// Starts one more member (next id, fresh directory) with `flags` besides the cluster's;
    /// returns its index.
    pub fn add_member(&mut self, flags: &[&str]) -> usize {
        let id = self.members.len() as u64 + 1;
        let api = format!("127.0.0.1:{}", free_port());
        let raft = format!("127.0.0.1:{}", free_port());
        self.members.push(Member {
            id,
            client: Client::new(&[api.as_str()]).expect("client"),
            api,
            raft,
            dir: self._tmp.path().join(format!("m{id}")),
            child: None,
        });
        let i = self.members.len() - 1;
        let saved = self.extra.clone();
        self.extra.extend(flags.iter().map(|s| s.to_string()));
        self.spawn(i);
        self.extra = saved;
        i
    }

    /// `--raft-members` for this cluster.
    pub fn member_list(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.id, m.raft))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's API address, for a client that fails over between them.
    pub fn api_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.api.clone()).collect()
    }

    pub fn spawn(&mut self, i: usize) {
        let list = self.member_list();
        let extra = self.extra.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already runs", m.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{}.log", m.dir.display()))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rudder-apiserver"))
            .args(["--data-dir", &m.dir.display().to_string()])
            .args(["--listen", &m.api])
            .args(["--raft-id", &m.id.to_string()])
            .args(["--raft-listen", &m.raft])
            .args(["--raft-members", &list])
            .args(&extra)
            .env("RUST_LOG", "warn,openraft=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting rudder-apiserver");
        m.child = Some(child);
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    pub async fn raft_status(&self, i: usize) -> Option<pb::RaftStatus> {
        if !self.running(i) {
            return None;
        }
        let s = tokio::time::timeout(Duration::from_secs(2), self.members[i].client.stats());
        s.await.ok()?.ok()?.raft
    }

    /// The index of the member that is leader, as the members running agree, waiting up to
    /// `limit`.
    pub async fn leader(&self, limit: Duration) -> Option<usize> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            for i in 0..self.members.len() {
                if let Some(s) = self.raft_status(i).await
                    && s.role == "Leader"
                {
                    return Some(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub async fn stats(&self, i: usize) -> Option<pb::StatsResponse> {
        if !self.running(i) {
            return None;
        }
        let s = tokio::time::timeout(Duration::from_secs(2), self.members[i].client.stats());
        s.await.ok()?.ok()
    }

    /// Waits until every running member has applied the same log index, with a
    /// resourceVersion of at least `at_least`; returns that version.
    pub async fn converged(&self, at_least: u64, limit: Duration) -> Result<u64, String> {
        let until = Instant::now() + limit;
        let mut last = Vec::new();
        while Instant::now() < until {
            last.clear();
            for i in 0..self.members.len() {
                if self.running(i) {
                    last.push(
                        self.stats(i)
                            .await
                            .and_then(|s| Some((s.raft?.applied_index, s.resource_version))),
                    );
                }
            }
            if let Some(Some((first, rv))) = last.first()
                && *rv >= at_least
                && last.iter().all(|a| *a == Some((*first, *rv)))
            {
                return Ok(*rv);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "members did not converge on a version >= {at_least}: (applied index, version) {last:?}"
        ))
    }

    /// The last lines of a member's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(format!("{}.log", self.members[i].dir.display()))
            .unwrap_or_default();
        let lines: Vec<_> = text.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}
