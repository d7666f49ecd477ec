//! Event expiry, as kube-apiserver's `--event-ttl`: core/v1 Events older than the TTL are
//! deleted, so a busy cluster's events do not grow without bound.
//!
//! An Event's age is taken from its `lastTimestamp`, else `eventTime`, else
//! `creationTimestamp`, by the injected clock; a repeated event (count bumped by the recorder)
//! therefore lives on while it keeps happening.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Api, kind_key};
use crate::error::ApiError;
use crate::state::{Command, Expect, ObjKey};

impl Api {
    /// Deletes every Event last seen more than `ttl` ago; returns how many went.
    pub async fn expire_events(&self, ttl: Duration) -> Result<usize, ApiError> {
        let info = self
            .registry
            .by_api_version_kind("v1", "Event")
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .clone();
        let now = self.clock.now();
        let ttl = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        let kind = kind_key(&info);
        // Copy the handles out first, so the parsing below does not keep the snapshot alive.
        let events: Vec<_> = {
            let snapshot = self.store.snapshot();
            snapshot
                .range(&kind, "", None)
                .map(|(k, o)| (k.clone(), Arc::clone(o)))
                .collect()
        };
        let expired: Vec<(ObjKey, u64)> = events
            .into_iter()
            .filter_map(|((ns, name), o)| {
                let v: Value = serde_json::from_slice(&o.json).ok()?;
                let age = now.duration_since(last_seen(&v)?);
                (age > ttl).then(|| {
                    let key = ObjKey {
                        kind: Arc::clone(&kind),
                        namespace: ns,
                        name,
                    };
                    (key, o.rv)
                })
            })
            .collect();
        let mut removed = 0;
        for (key, rv) in expired {
            // A conflict means the event was just updated (seen again): it stays.
            match self
                .propose(
                    &info,
                    Command::Delete {
                        key,
                        expect: Expect::Version(rv),
                    },
                )
                .await
            {
                Ok(_) => removed += 1,
                Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

fn last_seen(ev: &Value) -> Option<jiff::Timestamp> {
    ["lastTimestamp", "eventTime"]
        .iter()
        .filter_map(|f| ev.get(*f).and_then(Value::as_str))
        .chain(
            ev.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
        )
        .find_map(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use rudder_proto as pb;
    use serde_json::json;

    use crate::clock::{Ids, ManualClock};
    use crate::server::{ServerConfig, open_api};
    use crate::service::Identity;
    use crate::storage::SledStorage;

    #[tokio::test]
    async fn events_older_than_the_ttl_are_deleted() {
        let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new(dir.path());
        cfg.clock = clock.clone();
        cfg.ids = Arc::new(Ids::seeded(7));
        let api = open_api(SledStorage::open(dir.path()).unwrap(), &cfg)
            .await
            .unwrap();
        let event = |name: &str, last: &str| pb::CreateRequest {
            kind: Some(pb::KindRef {
                api_version: "v1".into(),
                kind: "Event".into(),
            }),
            namespace: "default".into(),
            json: Bytes::from(
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
                       "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                       "reason": "Test", "message": "m", "type": "Normal",
                       "lastTimestamp": last})
                .to_string(),
            ),
            options: None,
        };
        let id = Identity::anonymous();
        api.create(&id, event("old", "2026-01-01T00:00:00Z"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(50 * 60));
        api.create(&id, event("recent", "2026-01-01T00:50:00Z"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(20 * 60));
        // 70 minutes after "old", 20 after "recent": with a one-hour TTL only "old" goes.
        assert_eq!(
            api.expire_events(Duration::from_secs(3600)).await.unwrap(),
            1
        );
        let list = api
            .list(
                &id,
                pb::ListRequest {
                    kind: Some(pb::KindRef {
                        api_version: "v1".into(),
                        kind: "Event".into(),
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            list.items
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["recent"]
        );
    }
}
