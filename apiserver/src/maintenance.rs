//! The store looking after itself: scheduled backups into a directory, keeping the newest few,
//! and an alarm raised well before a full disk (or an oversized store) stops writes.
//!
//! Log compaction needs no task here: the single master's log is cut at every checkpoint and a
//! replicated member's at every snapshot.
//!
//! - A backup is the same file `rudder admin snapshot save` writes (every object at one
//!   version, after a read barrier, so it holds every write acknowledged before it began),
//!   named `rudder-<UTC time>-rv<version>.rbak`, written to a temporary name, synced and
//!   renamed, so a crash never leaves half a backup under a backup's name. After each backup
//!   only the newest `keep` of those files stay; other files in the directory are not touched.
//! - The alarm is raised while free space under the data directory is below
//!   `disk_alarm_bytes` (writes stop below the store's `min_free_bytes`, much lower), or while
//!   the store is larger than `size_alarm_bytes`. Each alarm, when raised, is recorded as a
//!   Warning Event (reason `StoreAlarm`) in `kube-system`; the current alarms are in the Admin
//!   `Stats` answer and in `rudder status`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rudder_proto as pb;
use serde_json::json;

use crate::service::Api;
use crate::store::StoreStats;

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// Where scheduled backups go; none are taken without it.
    pub backup_dir: Option<PathBuf>,
    pub backup_every: Duration,
    /// Backups kept in `backup_dir` (at least one).
    pub backup_keep: usize,
    /// Alarm below this many free bytes on the data directory's filesystem.
    pub disk_alarm_bytes: u64,
    /// Alarm above this store size in bytes; 0 turns it off.
    pub size_alarm_bytes: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            backup_dir: None,
            backup_every: Duration::from_secs(3600),
            backup_keep: 24,
            disk_alarm_bytes: 1024 * 1024 * 1024,
            size_alarm_bytes: 8 * 1024 * 1024 * 1024,
        }
    }
}

/// What the maintenance task last found, for the Admin `Stats` answer.
#[derive(Debug, Default)]
pub struct Health {
    alarms: Mutex<Vec<String>>,
    last_backup: Mutex<String>,
}

impl Health {
    pub fn alarms(&self) -> Vec<String> {
        self.alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last scheduled backup's file and time, or why it failed; empty before the first.
    pub fn last_backup(&self) -> String {
        self.last_backup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// The alarms the store's figures raise now. `min_free` is where writes stop.
pub fn alarms(stats: &StoreStats, cfg: &MaintenanceConfig, min_free: u64) -> Vec<String> {
    let mut out = Vec::new();
    // No figure yet (0 free) is not an alarm: the sampler has not run.
    if stats.disk_free > 0 && stats.disk_free < cfg.disk_alarm_bytes {
        out.push(format!(
            "disk space low: {} free under the data directory; the alarm is at {} and writes stop below {}",
            gib(stats.disk_free),
            gib(cfg.disk_alarm_bytes),
            gib(min_free)
        ));
    }
    if cfg.size_alarm_bytes > 0 && stats.size_on_disk > cfg.size_alarm_bytes {
        out.push(format!(
            "store size {} is above the alarm at {}",
            gib(stats.size_on_disk),
            gib(cfg.size_alarm_bytes)
        ));
    }
    out
}

/// Takes one backup into `dir` now and prunes older ones; the file written.
pub async fn backup_once(api: &Api, dir: &Path, keep: usize) -> Result<PathBuf, String> {
    let taken = api.store().backup().await.map_err(|e| e.to_string())?;
    let stamp = api.clock.now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let name = format!("rudder-{stamp}-rv{}.rbak", taken.resource_version);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::store::backup::write_synced(&dir, &name, &[&taken.data]))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        prune(&dir, keep.max(1)).map_err(|e| format!("pruning {}: {e}", dir.display()))?;
        Ok(dir.join(name))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Deletes all but the newest `keep` backups (by name, which sorts by time).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("rudder-") && n.ends_with(".rbak"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for n in &names[..excess] {
        std::fs::remove_file(dir.join(n))?;
    }
    Ok(())
}

/// Records a raised alarm as a Warning Event.
async fn record_alarm(api: &Api, message: &str) {
    let now = api.clock.now().to_string();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": "rudder-apiserver-store-alarm-", "namespace": "kube-system"},
        "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system"},
        "reason": "StoreAlarm", "message": message, "type": "Warning",
        "source": {"component": "rudder-apiserver"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let req = pb::CreateRequest {
        kind: Some(pb::KindRef {
            api_version: "v1".into(),
            kind: "Event".into(),
        }),
        namespace: "kube-system".into(),
        json: Bytes::from(ev.to_string()),
        options: None,
    };
    if let Err(e) = api.create(&Api::server_identity(), req).await {
        tracing::warn!(error = %e, "recording the store alarm as an Event");
    }
}

/// Checks the alarms every few seconds and takes backups on schedule, until the task is
/// dropped.
pub async fn run(api: Api, cfg: MaintenanceConfig, health: Arc<Health>) {
    let check = Duration::from_secs(5).min(cfg.backup_every);
    let mut tick = tokio::time::interval(check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_backup = Instant::now() + cfg.backup_every;
    loop {
        tick.tick().await;
        let stats = api.store().stats();
        let now = alarms(&stats, &cfg, api.store().min_free_bytes());
        let before = health.alarms();
        for a in now.iter().filter(|a| !before.contains(a)) {
            tracing::warn!(alarm = %a, "store alarm");
            record_alarm(&api, a).await;
        }
        *health.alarms.lock().unwrap_or_else(|p| p.into_inner()) = now;
        let Some(dir) = &cfg.backup_dir else { continue };
        if Instant::now() < next_backup {
            continue;
        }
        next_backup = Instant::now() + cfg.backup_every;
        let at = api.clock.now();
        let line = match backup_once(&api, dir, cfg.backup_keep).await {
            Ok(file) => {
                tracing::info!(file = %file.display(), "scheduled backup taken");
                format!("{} at {at}", file.display())
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled backup failed");
                format!("failed at {at}: {e}")
            }
        };
        *health.last_backup.lock().unwrap_or_else(|p| p.into_inner()) = line;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ServerConfig, open_api};
    use crate::service::Identity;
    use crate::storage::SledStorage;

    fn kind(k: &str) -> Option<pb::KindRef> {
        Some(pb::KindRef {
            api_version: "v1".into(),
            kind: k.into(),
        })
    }

    async fn config_map(api: &Api, name: &str) {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        api.create(
            &Identity::anonymous(),
            pb::CreateRequest {
                kind: kind("ConfigMap"),
                namespace: "default".into(),
                json: Bytes::from(body.to_string()),
                options: None,
            },
        )
        .await
        .expect("create");
    }

    #[tokio::test]
    async fn scheduled_backups_keep_the_newest_and_restore_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir_all(&backups).unwrap();
        // Not a backup: pruning leaves it alone.
        std::fs::write(backups.join("notes.txt"), "keep me").unwrap();
        let cfg = ServerConfig::new(dir.path().join("data"));
        let api = open_api(SledStorage::open(&cfg.data_dir).unwrap(), &cfg)
            .await
            .unwrap();
        let mut names = Vec::new();
        for i in 0..4 {
            config_map(&api, &format!("cm{i}")).await;
            let file = backup_once(&api, &backups, 2).await.expect("backup");
            names.push(file);
            // Names sort by time to the second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let mut left: Vec<_> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 3, "two backups and the other file: {left:?}");
        assert!(left.contains(&"notes.txt".to_string()));
        for kept in &names[2..] {
            assert!(kept.exists(), "{} was pruned", kept.display());
        }
        // The newest holds every config map, at the version it names.
        let b = crate::store::backup::decode(&std::fs::read(&names[3]).unwrap()).unwrap();
        let cms = b
            .objects
            .iter()
            .filter(|(k, _)| k.kind.ends_with("/ConfigMap") && k.name.starts_with("cm"))
            .count();
        assert_eq!(cms, 4);
        assert!(
            names[3]
                .display()
                .to_string()
                .ends_with(&format!("-rv{}.rbak", b.resource_version))
        );
    }

    #[tokio::test]
    async fn alarms_are_recorded_once_as_events_and_backups_are_taken_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new(dir.path());
        // Any real disk has less free space than this, and any store more than one byte.
        cfg.api.maintenance.disk_alarm_bytes = u64::MAX;
        cfg.api.maintenance.size_alarm_bytes = 1;
        cfg.api.maintenance.backup_dir = Some(dir.path().join("backups"));
        cfg.api.maintenance.backup_every = Duration::from_secs(1);
        let api = open_api(SledStorage::open(dir.path()).unwrap(), &cfg)
            .await
            .unwrap();
        let task = tokio::spawn(run(
            api.clone(),
            cfg.api.maintenance.clone(),
            api.health.clone(),
        ));
        let until = Instant::now() + Duration::from_secs(20);
        while api.health.alarms().len() < 2 {
            assert!(Instant::now() < until, "alarms: {:?}", api.health.alarms());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let alarms = api.health.alarms();
        assert!(alarms[0].contains("disk space low"), "{alarms:?}");
        assert!(alarms[1].contains("store size"), "{alarms:?}");
        // Later checks find the same alarms: no second Event.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let events = api
            .list(
                &Identity::anonymous(),
                pb::ListRequest {
                    kind: kind("Event"),
                    namespace: "kube-system".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let reasons: Vec<String> = events
            .items
            .iter()
            .map(|o| {
                let v: serde_json::Value = serde_json::from_slice(&o.json).unwrap();
                format!("{} {}", v["type"], v["reason"])
            })
            .collect();
        assert_eq!(
            reasons,
            vec!["\"Warning\" \"StoreAlarm\"".to_string(); 2],
            "one Event per alarm"
        );
        let last = api.health.last_backup();
        assert!(
            last.contains(".rbak at "),
            "the last scheduled backup: {last:?}"
        );
        let taken: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            taken.len() >= 2,
            "{taken:?}: backups in about 7 s, one a second"
        );
        task.abort();
    }

    #[test]
    fn no_alarm_without_a_figure_or_below_the_thresholds() {
        let cfg = MaintenanceConfig::default();
        let mut s = StoreStats {
            disk_free: 0,
            size_on_disk: 10,
            ..Default::default()
        };
        assert!(alarms(&s, &cfg, 64 << 20).is_empty(), "no sample yet");
        s.disk_free = 100 << 30;
        assert!(alarms(&s, &cfg, 64 << 20).is_empty());
        s.disk_free = 512 << 20;
        assert_eq!(alarms(&s, &cfg, 64 << 20).len(), 1);
        let off = MaintenanceConfig {
            size_alarm_bytes: 0,
            ..MaintenanceConfig::default()
        };
        s.size_on_disk = u64::MAX;
        s.disk_free = 100 << 30;
        assert!(alarms(&s, &off, 64 << 20).is_empty(), "size alarm off");
    }
}
