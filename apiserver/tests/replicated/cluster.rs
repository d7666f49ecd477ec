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
    /// The network namespace the member runs in, if not the test's own.
    pub netns: Option<String>,
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

    /// Three members cutting a snapshot every 300 entries (keeping 50 before it), once the
    /// leader takes writes: the cluster, the leader's index and a client of the leader.
    pub async fn snapshotting() -> (Cluster, usize, Client) {
        let flags = [
            "--raft-snapshot-every",
            "300",
            "--raft-keep-after-snapshot",
            "50",
        ];
        let cluster = Self::start_with(3, &flags);
        let leader = cluster
            .leader(Duration::from_secs(20))
            .await
            .expect("a leader");
        let writer = Client::new(&[cluster.members[leader].api.as_str()]).expect("client");
        // The namespaces exist once the first create goes through.
        let until = Instant::now() + Duration::from_secs(20);
        while super::create_cm(&writer, "first").await.is_err() {
            assert!(Instant::now() < until, "no write succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (cluster, leader, writer)
    }

    /// One master on a data directory restored from `backup`: a new cluster holding it.
    pub fn start_restored(backup: &std::path::Path) -> Cluster {
        let mut c = Self::build(1, &[]);
        let out = Command::new(env!("CARGO_BIN_EXE_rudder-apiserver"))
            .arg("--insecure-allow-all")
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

    /// One member in each of `hosts` (network namespace, address), on fixed ports there.
    pub fn start_in(hosts: &[(String, String)], extra: &[&str]) -> Cluster {
        let mut c = Self::build(hosts.len(), extra);
        for (m, (ns, ip)) in c.members.iter_mut().zip(hosts) {
            m.api = format!("{ip}:7100");
            m.raft = format!("{ip}:7200");
            m.client = Client::new(&[m.api.as_str()]).expect("client");
            m.netns = Some(ns.clone());
        }
        for i in 0..hosts.len() {
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
                netns: None,
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
            netns: None,
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
        let binary = env!("CARGO_BIN_EXE_rudder-apiserver");
        // `ip netns exec` execs the server, so the child is the server itself.
        let mut command = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, binary]);
                c
            }
            None => Command::new(binary),
        };
        let child = command
            .args([
                "--insecure-allow-all",
                "--data-dir",
                &m.dir.display().to_string(),
            ])
            .args(["--listen", &m.api])
            .args(["--raft-id", &m.id.to_string()])
            .args(["--raft-listen", &m.raft])
            .args(["--raft-members", &list])
            .args(&extra)
            .env(
                "RUST_LOG",
                std::env::var("RUDDER_TEST_LOG").unwrap_or_else(|_| "warn,openraft=error".into()),
            )
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

    /// Kills member `i` and deletes its data directory: a member whose disk was lost.
    pub fn wipe(&mut self, i: usize) {
        self.kill9(i);
        let dir = &self.members[i].dir;
        std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("wiping {}: {e}", dir.display()));
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

    /// One of the members that do not lead now, chosen by `rng`.
    pub async fn random_follower(&self, rng: &mut impl rand::Rng) -> usize {
        let leader = self
            .leader(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no leader; logs:\n{}", self.log_tails()));
        let followers: Vec<usize> = (0..self.members.len()).filter(|i| *i != leader).collect();
        followers[rng.random_range(0..followers.len())]
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

    /// The last lines of a member's log, and any panic in it, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(format!("{}.log", self.members[i].dir.display()))
            .unwrap_or_default();
        let all: Vec<_> = text.lines().collect();
        let mut out = Vec::new();
        if let Some(p) = all.iter().position(|l| l.contains("panicked at")) {
            out.extend(all[p..(p + 3).min(all.len())].iter().copied());
            out.push("...");
        }
        out.extend(all[all.len().saturating_sub(15)..].iter().copied());
        out.join("\n")
    }
}

impl Cluster {
    /// Every member's last log lines.
    pub fn log_tails(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("member {}:\n{}", self.members[i].id, self.log_tail(i)))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
        // A failed test's member logs are kept for reading; the data is not.
        if std::thread::panicking() {
            let keep =
                std::env::temp_dir().join(format!("rudder-replicated-logs-{}", std::process::id()));
            if std::fs::create_dir_all(&keep).is_ok() {
                for m in &self.members {
                    let log = format!("{}.log", m.dir.display());
                    let _ = std::fs::copy(&log, keep.join(format!("m{}.log", m.id)));
                }
                eprintln!("member logs kept in {}", keep.display());
            }
        }
    }
}
