//! Backups: the whole state at one version in one checksummed file, and its restore into an
//! empty data directory.
//!
//! File: `magic "RUDDRBAK" | format version: u32 LE (1) | crc32 of the body: u32 LE | body`,
//! where the body is postcard of `(resourceVersion, [(kind, namespace, name, JSON)])`. A file
//! whose checksum or format does not match is refused with what was wrong; nothing is written.
//!
//! A restore writes the objects into the engine with the version as its applied position. The
//! server then starts on it: a single master continues from it, and a replicated member started
//! alone bootstraps a new cluster holding it (others join with `rudder admin members add`,
//! receiving it by snapshot). Versions continue from the backup's, so clients' later versions
//! never repeat one they saw.

use std::sync::Arc;

use super::checkpoint::{META_APPLIED, object_key};
use crate::state::{ObjKey, State};
use crate::storage::{Op, Storage, StorageError};

/// A backup taken now: the bytes of the file, the version it holds and how many objects.
pub struct Taken {
    pub data: Vec<u8>,
    pub resource_version: u64,
    pub objects: u64,
}

impl super::Store {
    /// Every object at one version, after a read barrier (so it holds every write acknowledged
    /// before the call), encoded off the async threads.
    pub async fn backup(&self) -> Result<Taken, super::StoreError> {
        self.read_barrier().await?;
        let state = self.snapshot();
        let (resource_version, objects) = (state.rv, state.len() as u64);
        let data = tokio::task::spawn_blocking(move || encode(&state))
            .await
            .map_err(|e| super::StoreError::Unavailable(format!("encoding the backup: {e}")))?;
        Ok(Taken {
            data,
            resource_version,
            objects,
        })
    }
}

/// Writes `dir/name` whole or not at all: the parts go to a temporary file, which is synced,
/// renamed over the name, and the directory synced.
pub fn write_synced(dir: &std::path::Path, name: &str, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    for p in parts {
        f.write_all(p)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

const MAGIC: &[u8; 8] = b"RUDDRBAK";
const VERSION: u32 = 1;

type Body = (u64, Vec<(String, String, String, Vec<u8>)>);

/// Every object of `state` as (kind, namespace, name, JSON): the body of backups and of Raft
/// snapshots.
pub(super) fn objects(state: &State) -> Vec<(String, String, String, Vec<u8>)> {
    state
        .iter()
        .map(|(k, o)| {
            (
                k.kind.to_string(),
                k.namespace.clone(),
                k.name.clone(),
                o.json.to_vec(),
            )
        })
        .collect()
}

/// Encodes `state` (at its version) as a backup file.
pub fn encode(state: &State) -> Vec<u8> {
    let body: Body = (state.rv, objects(state));
    let body = postcard::to_allocvec(&body).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// What a backup holds.
#[derive(Debug)]
pub struct Backup {
    pub resource_version: u64,
    pub objects: Vec<(ObjKey, Vec<u8>)>,
}

/// Decodes and verifies a backup file.
pub fn decode(b: &[u8]) -> Result<Backup, String> {
    if b.len() < 16 || &b[..8] != MAGIC {
        return Err("not a Rudder backup (bad header)".into());
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != VERSION {
        return Err(format!(
            "backup format version {version}; this build reads version {VERSION}"
        ));
    }
    let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let body = &b[16..];
    if crc32fast::hash(body) != crc {
        return Err(
            "the backup's checksum does not match: the file is damaged or incomplete".into(),
        );
    }
    let (rv, objects): Body =
        postcard::from_bytes(body).map_err(|e| format!("the backup does not decode: {e}"))?;
    Ok(Backup {
        resource_version: rv,
        objects: objects
            .into_iter()
            .map(|(kind, namespace, name, json)| {
                (
                    ObjKey {
                        kind: Arc::from(kind.as_str()),
                        namespace,
                        name,
                    },
                    json,
                )
            })
            .collect(),
    })
}

/// Writes `backup` into an empty engine, durably.
pub fn restore<S: Storage>(storage: &S, backup: &Backup) -> Result<(), StorageError> {
    if !storage.scan_all()?.is_empty() {
        return Err(StorageError::Corrupt(
            "the data directory already holds a store; restore into an empty one".into(),
        ));
    }
    let mut ops: Vec<Op> = backup
        .objects
        .iter()
        .map(|(k, json)| Op::Put(object_key(k), json.clone()))
        .collect();
    ops.push(Op::Put(
        META_APPLIED.to_vec(),
        backup.resource_version.to_be_bytes().to_vec(),
    ));
    storage.apply(ops)?;
    storage.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn a_damaged_backup_is_refused_and_a_whole_one_restores() {
        let mut state = State::default();
        let key = ObjKey {
            kind: Arc::from("core/ConfigMap"),
            namespace: "default".into(),
            name: "a".into(),
        };
        let obj = crate::state::StoredObject {
            rv: 7,
            deleting: false,
            json: bytes::Bytes::from_static(br#"{"metadata":{"resourceVersion":"7"}}"#),
            labels: vec![],
            fields: vec![],
            claims: vec![],
        };
        state.load(key.clone(), Arc::new(obj));
        state.rv = 9;
        let file = encode(&state);
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(&file[..10]).unwrap_err().contains("header"));
        let b = decode(&file).expect("decodes");
        assert_eq!(b.resource_version, 9);
        let storage = MemStorage::new();
        restore(&storage, &b).expect("restores");
        assert!(storage.get(&object_key(&key)).expect("get").is_some());
        assert_eq!(
            storage.get(META_APPLIED).expect("get"),
            Some(9u64.to_be_bytes().to_vec())
        );
        assert!(
            restore(&storage, &b).is_err(),
            "a second restore over data is refused"
        );
    }
}
