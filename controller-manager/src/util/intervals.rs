//! Sets of non-negative indexes written as ordered, compressed intervals, `"1,3-5,7"`, as
//! Kubernetes writes a Job's `status.completedIndexes` and `status.failedIndexes` (its
//! `orderedIntervals`). Parsing is lenient like Kubernetes': malformed parts and indexes at or
//! above the bound are skipped, so a status edited by hand never stops a controller.

use std::collections::BTreeSet;
use std::fmt;

/// A set of indexes below some bound, kept as disjoint, non-adjacent, sorted intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals {
    /// Inclusive `(first, last)` pairs, ordered, never touching.
    spans: Vec<(i64, i64)>,
}

impl Intervals {
    /// Parses `"1,3-5"`, keeping only indexes in `0..bound`.
    pub fn parse(s: &str, bound: i64) -> Intervals {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<i64>(), b.trim().parse::<i64>()),
                None => (part.parse::<i64>(), part.parse::<i64>()),
            };
            let (Ok(a), Ok(b)) = (a, b) else { continue };
            if a < 0 || b < a {
                continue;
            }
            // Clamp before expanding: a typo like "0-99999999" must not allocate millions.
            let b = b.min(bound - 1);
            let mut i = a;
            while i <= b {
                set.insert(i);
                i += 1;
            }
        }
        Intervals::from_indexes(set)
    }

    /// The set of `indexes`.
    pub fn from_indexes<I: IntoIterator<Item = i64>>(indexes: I) -> Intervals {
        let sorted: BTreeSet<i64> = indexes.into_iter().filter(|i| *i >= 0).collect();
        let mut spans: Vec<(i64, i64)> = Vec::new();
        for i in sorted {
            match spans.last_mut() {
                Some((_, last)) if *last + 1 == i => *last = i,
                _ => spans.push((i, i)),
            }
        }
        Intervals { spans }
    }

    /// This set with `more` added.
    pub fn with(&self, more: impl IntoIterator<Item = i64>) -> Intervals {
        Intervals::from_indexes(self.iter().chain(more))
    }

    pub fn has(&self, i: i64) -> bool {
        self.spans.iter().any(|(a, b)| *a <= i && i <= *b)
    }

    /// How many indexes.
    pub fn total(&self) -> i64 {
        self.spans.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every index, ascending.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.spans.iter().flat_map(|(a, b)| *a..=*b)
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (a, b)) in self.spans.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_runs_and_keeps_singletons() {
        let s = Intervals::from_indexes([5, 1, 3, 4, 7, 3]);
        assert_eq!(s.to_string(), "1,3-5,7");
        assert_eq!(s.total(), 5);
        assert!(s.has(4) && !s.has(2) && !s.has(8));
        assert_eq!(Intervals::from_indexes([0, 1]).to_string(), "0-1");
        assert_eq!(Intervals::default().to_string(), "");
        assert_eq!(s.with([2, 6]).to_string(), "1-7");
    }

    #[test]
    fn parses_leniently_within_the_bound() {
        assert_eq!(Intervals::parse("1,3-5,7", 10).to_string(), "1,3-5,7");
        assert_eq!(Intervals::parse("0-3, 9, x, 5-4, -1", 6).to_string(), "0-3");
        assert_eq!(Intervals::parse("", 3).total(), 0);
        assert_eq!(Intervals::parse("0-99999999999", 4).to_string(), "0-3");
        let parsed = Intervals::parse("2-3,0", 5);
        assert_eq!(parsed.iter().collect::<Vec<_>>(), [0, 2, 3]);
    }
}
