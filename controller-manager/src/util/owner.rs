//! Who owns what: the decision of Kubernetes' `ControllerRefManager` for one candidate object,
//! kept pure here; [`crate::claim`] carries it out.

use rudder_client::cache::CachedObject;

/// What an owner does with one object in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours and matching: keep it.
    Owned,
    /// An orphan that matches: take it (add our controller reference).
    Adopt,
    /// Ours but no longer matching: let it go (drop our reference).
    Release,
    /// Someone else's, or not for us.
    Ignore,
}

/// Decides for `obj`, given whether it matches `owner`'s selector. An owner being deleted
/// neither adopts nor releases (its dependents are the garbage collector's), and an object
/// being deleted is never adopted.
pub fn decide(obj: &CachedObject, owner: &CachedObject, matches: bool) -> Claim {
    match obj.controller_ref() {
        Some(r) if r.uid == owner.uid() && !r.uid.is_empty() => {
            if matches {
                Claim::Owned
            } else if owner.is_deleting() {
                Claim::Ignore
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if matches && !owner.is_deleting() && !obj.is_deleting() {
                Claim::Adopt
            } else {
                Claim::Ignore
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(owner_uid: Option<&str>, deleting: bool) -> CachedObject {
        let mut v = json!({"metadata": {"name": "p", "uid": "p1"}});
        if let Some(u) = owner_uid {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": u, "controller": true}]);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        CachedObject::new("v1", "Pod", "ns", "p", 1, v)
    }

    #[test]
    fn decisions() {
        let owner = obj(None, false);
        let mut owner_v = owner.value.clone();
        owner_v["metadata"]["uid"] = json!("rs1");
        let owner = CachedObject::new("apps/v1", "ReplicaSet", "ns", "rs", 1, owner_v);
        assert_eq!(decide(&obj(Some("rs1"), false), &owner, true), Claim::Owned);
        assert_eq!(
            decide(&obj(Some("rs1"), false), &owner, false),
            Claim::Release
        );
        assert_eq!(
            decide(&obj(Some("other"), false), &owner, true),
            Claim::Ignore
        );
        assert_eq!(decide(&obj(None, false), &owner, true), Claim::Adopt);
        assert_eq!(decide(&obj(None, true), &owner, true), Claim::Ignore);
        assert_eq!(decide(&obj(None, false), &owner, false), Claim::Ignore);
    }
}
