use base64::Engine as _;
use serde_json::json;

use super::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn pair(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn secret(ty: &str, crt: &str, key: &str) -> Value {
    json!({"type": ty, "data": {"tls.crt": b64(crt), "tls.key": b64(key)}})
}

fn why(s: &Value) -> String {
    certified_key(s, &provider()).err().unwrap_or_default()
}

#[test]
fn a_tls_secret_loads_and_each_kind_of_bad_one_says_why() {
    let (crt, key) = pair(&["a.test"]);
    let (_, other_key) = pair(&["b.test"]);
    assert!(certified_key(&secret(TLS_SECRET_TYPE, &crt, &key), &provider()).is_ok());
    assert_eq!(
        why(&secret("Opaque", &crt, &key)),
        "has type \"Opaque\", not \"kubernetes.io/tls\""
    );
    assert_eq!(
        why(&json!({"type": TLS_SECRET_TYPE, "data": {"tls.crt": b64(&crt)}})),
        "has no data.tls.key"
    );
    assert!(
        why(&json!({"type": TLS_SECRET_TYPE, "data": {"tls.crt": "!!", "tls.key": b64(&key)}}))
            .starts_with("data.tls.crt is not base64")
    );
    assert_eq!(
        why(&secret(TLS_SECRET_TYPE, "no pem here", &key)),
        "data.tls.crt holds no certificate"
    );
    assert!(why(&secret(TLS_SECRET_TYPE, &crt, "junk")).starts_with("data.tls.key is not a PEM"));
    assert!(
        why(&secret(TLS_SECRET_TYPE, &crt, &other_key))
            .starts_with("data.tls.crt and data.tls.key cannot be used together"),
        "a key of another certificate"
    );
}

#[test]
fn names_find_exact_then_one_label_wildcard_certificates() {
    let (crt, key) = pair(&["x"]);
    let k = Arc::new(certified_key(&secret(TLS_SECRET_TYPE, &crt, &key), &provider()).unwrap());
    let (crt2, key2) = pair(&["y"]);
    let w = Arc::new(certified_key(&secret(TLS_SECRET_TYPE, &crt2, &key2), &provider()).unwrap());
    let mut c = Certs::default();
    c.by_host.insert("a.example.com".into(), Arc::clone(&k));
    c.by_host.insert("*.example.com".into(), Arc::clone(&w));
    let is =
        |n: &str, want: &Arc<CertifiedKey>| c.for_name(n).is_some_and(|g| Arc::ptr_eq(&g, want));
    assert!(is("A.example.com", &k));
    assert!(is("b.example.com", &w));
    assert!(c.for_name("a.b.example.com").is_none());
    assert!(c.for_name("example.com").is_none());
}
