//! A checker for the replicated store, in the spirit of Jepsen's: every create the test issued,
//! with its outcome and its real-time interval; what each member holds at the end; and what one
//! watch that followed the cluster through every failover saw. [`check`] verifies:
//!
//! 1. every acknowledged create is on every member, at the version it was acknowledged with and
//!    with the content written (nothing acknowledged is lost);
//! 2. the members hold the same objects at the same versions (one history);
//! 3. no version names two different writes: not among acknowledgements, not on a member, not
//!    in the watch;
//! 4. real-time order: a create acknowledged before another began has a lower version
//!    (versions are a linearizable order of the writes);
//! 5. the watch saw every object created after it started exactly once, in increasing version
//!    order, each event agreeing with the final state.
//!
//! A create that failed is indeterminate (it may or may not have happened: the write may have
//! been committed after its proposer gave up); whatever it did must still satisfy 2, 3 and 5.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

#[derive(Debug, Clone)]
pub enum Outcome {
    Acked(u64),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub name: String,
    pub value: String,
    pub started: Instant,
    pub ended: Instant,
    pub outcome: Outcome,
}

/// An object as a member (or the watch) reports it: name → (version, value).
pub type Holding = BTreeMap<String, (u64, String)>;

#[derive(Debug, Default)]
pub struct Report {
    pub acked: usize,
    pub failed: usize,
    pub events: usize,
    /// A few of the failures' reasons, for the log.
    pub failures: Vec<String>,
}

pub fn check(
    ops: &[Op],
    members: &[(u64, Holding)],
    watch_from: u64,
    watched: &[(u64, String, String)],
) -> Result<Report, Vec<String>> {
    let mut errors = Vec::new();
    let mut report = Report::default();
    let mut acked_rv: HashMap<u64, &str> = HashMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::Acked(rv) => {
                report.acked += 1;
                if let Some(other) = acked_rv.insert(*rv, &op.name) {
                    errors.push(format!(
                        "version {rv} acknowledged for two writes: {other} and {}",
                        op.name
                    ));
                }
                for (id, held) in members {
                    match held.get(&op.name) {
                        None => errors.push(format!(
                            "acknowledged {} (version {rv}) is missing on member {id}",
                            op.name
                        )),
                        Some((got, v)) if got != rv || *v != op.value => errors.push(format!(
                            "member {id} holds {} at version {got} with {v:?}; acknowledged at {rv} with {:?}",
                            op.name, op.value
                        )),
                        Some(_) => {}
                    }
                }
            }
            Outcome::Failed(why) => {
                report.failed += 1;
                if report.failures.len() < 3 {
                    report.failures.push(why.clone());
                }
            }
        }
    }
    if let Some((first_id, first)) = members.first() {
        for (id, held) in &members[1..] {
            if held != first {
                let differ: Vec<_> = first
                    .iter()
                    .filter(|(k, v)| held.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .chain(held.keys().filter(|k| !first.contains_key(*k)).cloned())
                    .take(5)
                    .collect();
                errors.push(format!(
                    "members {first_id} and {id} hold different objects ({} and {}), e.g. {differ:?}",
                    first.len(),
                    held.len()
                ));
            }
        }
        for (id, held) in members {
            let mut by_rv: HashMap<u64, &str> = HashMap::new();
            for (name, (rv, _)) in held {
                if let Some(other) = by_rv.insert(*rv, name) {
                    errors.push(format!(
                        "member {id}: version {rv} names both {other} and {name}"
                    ));
                }
            }
        }
    }
    // Real-time order among acknowledged writes: sort by acknowledgement and check that no
    // later-started write got a lower version than one acknowledged before it started.
    let mut acked: Vec<(&Op, u64)> = ops
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Acked(rv) => Some((o, rv)),
            Outcome::Failed(_) => None,
        })
        .collect();
    acked.sort_by_key(|(o, _)| o.ended);
    let mut by_start: Vec<(&Op, u64)> = acked.clone();
    by_start.sort_by_key(|(o, _)| o.started);
    // For each write in start order, the highest version acknowledged before it started.
    let mut j = 0;
    let mut max_before: Option<(u64, &str)> = None;
    for (op, rv) in &by_start {
        while j < acked.len() && acked[j].0.ended < op.started {
            if max_before.is_none_or(|(m, _)| acked[j].1 > m) {
                max_before = Some((acked[j].1, &acked[j].0.name));
            }
            j += 1;
        }
        if let Some((m, name)) = max_before
            && m >= *rv
        {
            errors.push(format!(
                "{} began after {name} was acknowledged at version {m}, yet got version {rv}",
                op.name
            ));
        }
    }
    // The watch.
    report.events = watched.len();
    let mut last = watch_from;
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (rv, name, value) in watched {
        if *rv <= last {
            errors.push(format!(
                "the watch saw version {rv} ({name}) after version {last}: out of order or repeated"
            ));
        }
        last = last.max(*rv);
        if let Some(prev) = seen.insert(name, *rv) {
            errors.push(format!(
                "the watch saw {name} created twice, at {prev} and {rv}"
            ));
        }
        if let Some((_, held)) = members.first() {
            match held.get(name) {
                Some((hrv, hv)) if hrv == rv && hv == value => {}
                other => errors.push(format!(
                    "the watch saw {name} at {rv} with {value:?}; the members hold {other:?}"
                )),
            }
        }
    }
    if let Some((_, held)) = members.first() {
        let missed: Vec<_> = held
            .iter()
            .filter(|(name, (rv, _))| *rv > watch_from && !seen.contains_key(name.as_str()))
            .map(|(name, (rv, _))| format!("{name}@{rv}"))
            .collect();
        if !missed.is_empty() {
            errors.push(format!(
                "the watch missed {} creations, e.g. {:?}",
                missed.len(),
                &missed[..missed.len().min(5)]
            ));
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(name: &str, start: u64, end: u64, outcome: Outcome) -> Op {
        let t0 = Instant::now();
        Op {
            name: name.into(),
            value: format!("v-{name}"),
            started: t0 + Duration::from_millis(start),
            ended: t0 + Duration::from_millis(end),
            outcome,
        }
    }

    fn holding(items: &[(&str, u64)]) -> Holding {
        items
            .iter()
            .map(|(n, rv)| (n.to_string(), (*rv, format!("v-{n}"))))
            .collect()
    }

    #[test]
    fn the_checker_catches_each_violation_it_names() {
        let ops = vec![
            op("a", 0, 10, Outcome::Acked(5)),
            op("b", 20, 30, Outcome::Acked(7)),
            op("c", 20, 40, Outcome::Failed("unavailable".into())),
        ];
        let good = holding(&[("a", 5), ("b", 7)]);
        let watch = vec![(5, "a".into(), "v-a".into()), (7, "b".into(), "v-b".into())];
        let ok = check(&ops, &[(1, good.clone()), (2, good.clone())], 0, &watch);
        assert!(ok.is_ok(), "{ok:?}");

        // A lost acknowledged write.
        let lost = holding(&[("a", 5)]);
        let e = check(&ops, &[(1, good.clone()), (2, lost)], 0, &watch).unwrap_err();
        assert!(e.iter().any(|m| m.contains("missing on member 2")), "{e:?}");

        // Real-time order broken: b began after a was acknowledged but got a lower version.
        let late = vec![
            op("a", 0, 10, Outcome::Acked(7)),
            op("b", 20, 30, Outcome::Acked(5)),
        ];
        let held = holding(&[("a", 7), ("b", 5)]);
        let e = check(&late, &[(1, held)], 100, &[]).unwrap_err();
        assert!(e.iter().any(|m| m.contains("began after a")), "{e:?}");

        // One version, two writes.
        let dup = holding(&[("a", 5), ("b", 5)]);
        let e = check(&[], &[(1, dup)], 100, &[]).unwrap_err();
        assert!(e.iter().any(|m| m.contains("names both")), "{e:?}");

        // The watch repeating, and missing.
        let repeated = vec![(5, "a".into(), "v-a".into()), (5, "a".into(), "v-a".into())];
        let e = check(&ops, &[(1, good.clone())], 0, &repeated).unwrap_err();
        assert!(
            e.iter().any(|m| m.contains("out of order or repeated")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("missed 1")), "{e:?}");
    }
}
