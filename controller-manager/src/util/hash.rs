//! The `pod-template-hash`: a short, stable name for a pod template, as Kubernetes'
//! `controller.ComputeHash` (FNV-1a 32 over the template, then the collision count) encoded
//! with `rand.SafeEncodeString`'s alphabet (no vowels, no look-alike digits), so a Deployment's
//! ReplicaSets are `web-7d4b9c8f6b`-like and a template always maps to the same name.
//!
//! The bytes hashed are the template's canonical JSON (keys sorted), so the hash depends on the
//! template's content and not on the order its fields were written in.

use serde_json::Value;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits.
fn fnv1a(h: &mut u32, bytes: &[u8]) {
    for b in bytes {
        *h ^= u32::from(*b);
        *h = h.wrapping_mul(0x0100_0193);
    }
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The hash of `template` with `collision_count` (the owner's `status.collisionCount`, raised
/// when another object already holds the name).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut bytes = Vec::new();
    canonical(template, &mut bytes);
    let mut h: u32 = 0x811c_9dc5;
    fnv1a(&mut h, &bytes);
    if let Some(c) = collision_count {
        fnv1a(&mut h, &(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stable_across_field_order_and_changed_by_content_and_collisions() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        let c = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        assert_ne!(template_hash(&a, None), template_hash(&c, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        let h = template_hash(&a, None);
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)), "{h}");
        assert!((8..=10).contains(&h.len()), "{h}");
    }
}
