//! Property tests of the parsers that read user input: manifests, label selectors and field
//! selectors never panic, errors stay on one line, and valid label selectors round-trip through
//! their string form.

use proptest::prelude::*;
use rudder_api::decode::parse_documents;
use rudder_api::selector::{FieldSelector, LabelSelector};

/// YAML-ish text: mostly the characters that matter to YAML's grammar, so that the parser gets
/// deep into documents rather than failing on the first byte.
fn yamlish() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC*",
        "[a-z:{}\\[\\],\\-\"' #&*!|>%@`\n\t0-9.]{0,80}",
        "(apiVersion: v1\nkind: [A-Za-z]{0,8}\n(metadata:\n  [a-z]{1,5}: [^\n]{0,10}\n)?---\n?){1,3}",
    ]
}

/// A label key: an optional DNS-subdomain prefix and a name.
fn label_key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}"),
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?",
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        })
}

fn label_value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?)?"
}

/// One requirement in selector syntax, with optional spacing where the syntax allows it.
fn requirement() -> impl Strategy<Value = String> {
    let values = proptest::collection::btree_set(
        label_value().prop_filter("non-empty", |v| !v.is_empty()),
        1..4,
    )
    .prop_map(|vs| vs.into_iter().collect::<Vec<_>>().join(", "));
    (label_key(), label_value(), values, 0..7u8, " ?").prop_map(|(k, v, vs, op, sp)| match op {
        0 => format!("{k}{sp}={sp}{v}"),
        1 => format!("{k}{sp}=={sp}{v}"),
        2 => format!("{k}{sp}!={sp}{v}"),
        3 => format!("{k} in{sp}({sp}{vs}{sp})"),
        4 => format!("{k} notin ({vs})"),
        5 => k,
        _ => format!("!{k}"),
    })
}

fn selector_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(requirement(), 0..5).prop_map(|rs| rs.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_documents_never_panics_and_errors_are_one_line(text in yamlish()) {
        if let Err(e) = parse_documents(&text) {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
        }
    }

    #[test]
    fn valid_label_selectors_round_trip(s in selector_string()) {
        let parsed = LabelSelector::parse(&s);
        prop_assert!(parsed.is_ok(), "{s:?}: {parsed:?}");
        let parsed = parsed.unwrap();
        let printed = parsed.to_string();
        prop_assert_eq!(LabelSelector::parse(&printed).unwrap(), parsed.clone(), "{} -> {}", s, printed);
        // The printed form is canonical: printing it again changes nothing.
        prop_assert_eq!(LabelSelector::parse(&printed).unwrap().to_string(), printed);
    }

    #[test]
    fn label_selector_parse_never_panics(s in "\\PC*") {
        let _ = LabelSelector::parse(&s);
    }

    #[test]
    fn label_selector_parse_never_panics_on_selector_like_text(s in "[a-z0-9=!,() ./_\t-]{0,40}") {
        let _ = LabelSelector::parse(&s);
    }

    #[test]
    fn field_selector_parse_never_panics(s in "\\PC*|[a-z.=!,\\\\ ]{0,40}") {
        if let Ok(f) = FieldSelector::parse(&s) {
            prop_assert!(f.requirements.iter().all(|r| !r.field.is_empty()));
        }
    }
}

/// Multi-byte whitespace (U+00A0, U+3000) once split a character in the parser and panicked.
#[test]
fn label_selector_parse_survives_unicode_whitespace() {
    for s in ["\u{3000}", "a\u{a0}=b", "a in (\u{2003}b)", "!\u{3000}a"] {
        let _ = LabelSelector::parse(s);
    }
}
