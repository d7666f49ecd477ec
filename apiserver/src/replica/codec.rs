//! The replicated command's wire and log format: versioned, compact and independent of serde's
//! data model, so that a log written by one build is read the same by the next.
//!
//! `Proposal`: `version: u8 (1) | request id: u128 LE | command`.
//! `Command`: `tag: u8 (0 put, 1 delete) | key | expect | (put only) object: bytes |
//! labels: pairs | fields: pairs | deleting: u8 | claims: strings`, where a string or bytes is
//! `len: u32 LE | bytes`, a list is `count: u32 LE | items`, a key is `kind | namespace | name`
//! and `expect` is `0` (absent) or `1 | version: u64 LE`.
//!
//! `Batch` (a log entry's payload): `version: u8 (1) | count: u32 LE | (len: u32 LE |
//! proposal)*`: the proposals waiting on one member when it proposed, so that one log entry, one
//! fsync and one replication round carry them all.
//!
//! A payload that does not decode is reported with what was wrong; the log's record checksum has
//! already matched by then, so it means an incompatible build wrote it.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::{Command, Expect, ObjKey};

const VERSION: u8 = 1;

/// A write proposed to the replicated log: the command, and an id the proposer chose so that a
/// retried proposal (after a leader change) is applied once.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub id: u128,
    pub cmd: Command,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + command_len(&self.cmd));
        out.push(VERSION);
        out.extend_from_slice(&self.id.to_le_bytes());
        let key = self.cmd.key();
        out.push(match self.cmd {
            Command::Put { .. } => 0,
            Command::Delete { .. } => 1,
        });
        put_bytes(&mut out, key.kind.as_bytes());
        put_bytes(&mut out, key.namespace.as_bytes());
        put_bytes(&mut out, key.name.as_bytes());
        let expect = match &self.cmd {
            Command::Put { expect, .. } | Command::Delete { expect, .. } => *expect,
        };
        match expect {
            Expect::Absent => out.push(0),
            Expect::Version(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Command::Put {
            object,
            labels,
            fields,
            deleting,
            claims,
            ..
        } = &self.cmd
        {
            put_bytes(&mut out, object);
            put_pairs(&mut out, labels);
            put_pairs(&mut out, fields);
            out.push(u8::from(*deleting));
            out.extend_from_slice(&(claims.len() as u32).to_le_bytes());
            for c in claims {
                put_bytes(&mut out, c.as_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Proposal, String> {
        let mut r = Reader { b, at: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(format!(
                "command format version {version}; this build reads version {VERSION}"
            ));
        }
        let id = u128::from_le_bytes(r.take(16, "request id")?.try_into().map_err(|_| "id")?);
        let tag = r.u8("command tag")?;
        let key = ObjKey {
            kind: Arc::from(r.string("kind")?),
            namespace: r.string("namespace")?,
            name: r.string("name")?,
        };
        let expect = match r.u8("expect")? {
            0 => Expect::Absent,
            1 => Expect::Version(r.u64("expected version")?),
            other => return Err(format!("unknown precondition {other}")),
        };
        let cmd = match tag {
            0 => {
                let object = Bytes::copy_from_slice(r.bytes("object")?);
                let labels = r.pairs("labels")?;
                let fields = r.pairs("fields")?;
                let deleting = r.u8("deleting")? == 1;
                let n = r.u32("claims")?;
                let mut claims = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    claims.push(r.string("claim")?);
                }
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
            1 => Command::Delete { key, expect },
            other => return Err(format!("unknown command tag {other}")),
        };
        if r.at != b.len() {
            return Err(format!("{} bytes after the command", b.len() - r.at));
        }
        Ok(Proposal { id, cmd })
    }
}

fn command_len(cmd: &Command) -> usize {
    match cmd {
        Command::Put { object, .. } => object.len() + 256,
        Command::Delete { .. } => 128,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("{what} runs past the end of the command"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    fn pairs(&mut self, what: &str) -> Result<Vec<(String, String)>, String> {
        let n = self.u32(what)?;
        let mut v = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            v.push((self.string(what)?, self.string(what)?));
        }
        Ok(v)
    }
}

/// The proposals of one log entry, applied in order.
///
/// The encoding is made once and kept: the leader writes a batch to its log and sends it to
/// every follower, and a follower writes to its log the bytes it received, so each would
/// otherwise encode the same proposals again.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Not to be changed once encoded (read, or taken apart).
    pub proposals: Vec<Proposal>,
    encoded: std::sync::OnceLock<bytes::Bytes>,
}

/// Most proposals in one batch (their position in it is 16 bits of their slot).
pub const MAX_BATCH: usize = 4096;

impl Batch {
    pub fn new(proposals: Vec<Proposal>) -> Batch {
        Batch {
            proposals,
            encoded: std::sync::OnceLock::new(),
        }
    }

    /// The encoding, made on first use.
    pub fn encoded(&self) -> &bytes::Bytes {
        self.encoded
            .get_or_init(|| bytes::Bytes::from(self.encode_now()))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encoded().to_vec()
    }

    fn encode_now(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            8 + self
                .proposals
                .iter()
                .map(|p| command_len(&p.cmd) + 32)
                .sum::<usize>(),
        );
        out.push(VERSION);
        out.extend_from_slice(&(self.proposals.len() as u32).to_le_bytes());
        for p in &self.proposals {
            let b = p.encode();
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Batch, String> {
        let mut r = Reader { b, at: 0 };
        let version = r.u8("batch version")?;
        if version != VERSION {
            return Err(format!(
                "batch format version {version}; this build reads version {VERSION}"
            ));
        }
        let n = r.u32("batch count")? as usize;
        if n > MAX_BATCH {
            return Err(format!(
                "a batch of {n} proposals, at most {MAX_BATCH} allowed"
            ));
        }
        let mut proposals = Vec::with_capacity(n);
        for i in 0..n {
            let p = r.bytes("proposal")?;
            proposals.push(Proposal::decode(p).map_err(|e| format!("proposal {i}: {e}"))?);
        }
        if r.at != b.len() {
            return Err(format!("{} bytes after the batch", b.len() - r.at));
        }
        let batch = Batch::new(proposals);
        let _ = batch.encoded.set(bytes::Bytes::copy_from_slice(b));
        Ok(batch)
    }
}

// openraft carries the application's data through serde (its log entries and messages); the
// proposal goes through it as one opaque byte string in the format above.
impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.encoded())
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Batch, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Batch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an encoded batch of Rudder commands")
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Batch, E> {
                Batch::decode(b).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
                let mut b = Vec::new();
                while let Some(x) = seq.next_element::<u8>()? {
                    b.push(x);
                }
                Batch::decode(&b).map_err(de::Error::custom)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjKey {
        ObjKey {
            kind: Arc::from("core/Pod"),
            namespace: "default".into(),
            name: "web-0".into(),
        }
    }

    #[test]
    fn a_put_and_a_delete_come_back_as_they_went_in() {
        let put = Proposal {
            id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            cmd: Command::Put {
                key: key(),
                expect: Expect::Version(41),
                object: Bytes::from_static(br#"{"kind":"Pod"}"#),
                labels: vec![("app".into(), "web".into())],
                fields: vec![("spec.nodeName".into(), "n1".into())],
                deleting: true,
                claims: vec!["ip/10.96.0.1".into()],
            },
        };
        let back = Proposal::decode(&put.encode()).expect("decodes");
        assert_eq!(back.id, put.id);
        assert_eq!(format!("{:?}", back.cmd), format!("{:?}", put.cmd));
        let del = Proposal {
            id: 7,
            cmd: Command::Delete {
                key: key(),
                expect: Expect::Absent,
            },
        };
        let batch = Batch::new(vec![put.clone(), del.clone()]);
        let wire = postcard::to_allocvec(&batch).expect("serializes");
        let back: Batch = postcard::from_bytes(&wire).expect("deserializes");
        assert_eq!(back.proposals.len(), 2);
        assert_eq!(back.proposals[0].id, put.id);
        assert_eq!(
            format!("{:?}", back.proposals[1].cmd),
            format!("{:?}", del.cmd)
        );
        let mut cut = batch.encode();
        cut.truncate(cut.len() - 1);
        assert!(
            Batch::decode(&cut)
                .unwrap_err()
                .contains("proposal runs past")
        );
    }

    #[test]
    fn damage_is_named_not_misread() {
        let p = Proposal {
            id: 1,
            cmd: Command::Delete {
                key: key(),
                expect: Expect::Version(3),
            },
        };
        let b = p.encode();
        let err = Proposal::decode(&b[..b.len() - 3]).unwrap_err();
        assert!(err.contains("expected version"), "{err}");
        let mut v2 = b.clone();
        v2[0] = 2;
        assert!(Proposal::decode(&v2).unwrap_err().contains("version 2"));
        let mut extra = b;
        extra.push(0);
        assert!(
            Proposal::decode(&extra)
                .unwrap_err()
                .contains("after the command")
        );
    }
}
