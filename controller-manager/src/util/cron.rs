//! Cron schedules as Kubernetes' CronJob controller reads them (the standard five-field syntax
//! of the `robfig/cron` parser it uses): `minute hour day-of-month month day-of-week`, each a
//! comma list of `*`, `?`, `n`, `a-b`, optionally `/step`, with month (`JAN`–`DEC`) and weekday
//! (`SUN`–`SAT`) names in any case; the macros `@yearly`, `@annually`, `@monthly`, `@weekly`,
//! `@daily`, `@midnight`, `@hourly`; and `@every <duration>`.
//!
//! Day matching as cron: when both day fields are restricted, a day matching either runs; when
//! either is `*` (or `?`), both must match. Times are in a time zone, and a time of day matches
//! each instant whose local wall clock shows it: a local time skipped by a DST change does not
//! run that day, and one repeated by a DST change runs twice, exactly as the Kubernetes
//! controller behaves.

use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every`: a constant delay, in whole seconds (at least one).
    Every(Duration),
}

/// The five fields as bit sets (bit `n` set: value `n` matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Day of month / of week were `*` (or `?`): they do not restrict the other.
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn value(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + b.min);
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}: invalid {} value", b.name))
}

/// One comma-separated part: its bits, and whether it was a plain `*`/`?`.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let (span, step) = match expr.split_once('/') {
        Some((span, step)) => {
            if step.contains('/') {
                return Err(format!("too many slashes: {expr}"));
            }
            let step = step
                .parse::<u32>()
                .map_err(|_| format!("failed to parse int from {step}"))?;
            (span, Some(step))
        }
        None => (expr, None),
    };
    let star = span == "*" || span == "?";
    let (start, end) = if star {
        (b.min, b.max)
    } else {
        match span.split_once('-') {
            Some((lo, hi)) => {
                if hi.contains('-') {
                    return Err(format!("too many hyphens: {expr}"));
                }
                (value(lo, b)?, value(hi, b)?)
            }
            // `n/step` means `n-max/step`.
            None if step.is_some() => (value(span, b)?, b.max),
            None => {
                let v = value(span, b)?;
                (v, v)
            }
        }
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let bits = (start..=end)
        .step_by(step as usize)
        .fold(0u64, |acc, v| acc | (1 << v));
    // A stepped `*` restricts the day like any list (robfig drops the star then).
    Ok((bits, star && step == 1))
}

fn field(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for part in expr.split(',') {
        let (v, s) = range(part, b)?;
        bits |= v;
        star |= s;
    }
    Ok((bits, star))
}

/// A Go duration (`1h30m`, `90s`, `2h`), whole seconds.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total += num
            * match unit {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                _ => 1e-9,
            };
    }
    Some(Duration::from_secs((total as u64).max(1)))
}

/// Parses a schedule; the error is the reason, as the controller reports it in an event.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    let s = spec.trim();
    if let Some(d) = s.strip_prefix("@every ") {
        return go_duration(d.trim())
            .map(Schedule::Every)
            .ok_or_else(|| format!("failed to parse duration {s}"));
    }
    let expanded = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => {
            return Err(format!("unrecognized descriptor: {other}"));
        }
        other => other,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            parts.len()
        ));
    }
    let (minute, _) = field(parts[0], &MINUTE)?;
    let (hour, _) = field(parts[1], &HOUR)?;
    let (dom, dom_star) = field(parts[2], &DOM)?;
    let (month, _) = field(parts[3], &MONTH)?;
    let (dow, dow_star) = field(parts[4], &DOW)?;
    Ok(Schedule::Fields(Fields {
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
    }))
}

fn has(bits: u64, v: i8) -> bool {
    bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, d: Date) -> bool {
        let dom = has(self.dom, d.day());
        let dow = has(self.dow, d.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The instant of local midnight starting `date` (the first instant of it, if midnight is
    /// skipped by a DST change).
    fn start_of(date: Date, tz: &TimeZone) -> Option<Timestamp> {
        tz.to_ambiguous_timestamp(DateTime::from(date))
            .compatible()
            .ok()
    }

    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let minute = SignedDuration::from_secs(60);
        let floor = after.as_second() - after.as_second().rem_euclid(60);
        let mut x = Timestamp::from_second(floor)
            .ok()?
            .checked_add(minute)
            .ok()?;
        // Like the Kubernetes controller's parser: nothing within five years is never.
        let limit = x
            .checked_add(SignedDuration::from_hours(24 * 366 * 5))
            .ok()?;
        while x <= limit {
            let local = tz.to_datetime(x);
            let skip_to = if !has(self.month, local.month()) {
                let first = local.date().first_of_month();
                Self::start_of(first.checked_add(jiff::Span::new().months(1)).ok()?, tz)
            } else if !self.day_matches(local.date()) {
                Self::start_of(local.date().tomorrow().ok()?, tz)
            } else if !has(self.hour, local.hour()) {
                x.checked_add(SignedDuration::from_mins(i64::from(60 - local.minute())))
                    .ok()
            } else if !has(self.minute, local.minute()) {
                let later = (local.minute() + 1..60).find(|m| has(self.minute, *m));
                let to = later.unwrap_or(60);
                x.checked_add(SignedDuration::from_mins(i64::from(to - local.minute())))
                    .ok()
            } else {
                return Some(x);
            };
            // Always move forward, even across an odd DST change.
            x = match skip_to {
                Some(t) if t > x => t,
                _ => x.checked_add(minute).ok()?,
            };
        }
        None
    }
}

impl Schedule {
    /// The first scheduled instant strictly after `after`, in `tz`; `None` if there is none
    /// within five years (a date that never comes, such as 30 February).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                whole.checked_add(SignedDuration::try_from(*d).ok()?).ok()
            }
            Schedule::Fields(f) => f.next(after, tz),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn nexts(spec: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = parse(spec).unwrap();
        let tz = TimeZone::get(tz).unwrap();
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next(t, &tz).unwrap();
            out.push(
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M%:z %a")
                    .to_string(),
            );
        }
        out
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        assert_eq!(
            nexts("*/20 9-10 * * MON-FRI", "UTC", "2025-01-03T10:30:00Z", 4),
            [
                "2025-01-03T10:40+00:00 Fri",
                "2025-01-06T09:00+00:00 Mon",
                "2025-01-06T09:20+00:00 Mon",
                "2025-01-06T09:40+00:00 Mon",
            ]
        );
        assert_eq!(
            nexts("0 12 1,15 jan,Jul ?", "UTC", "2025-01-01T12:00:00Z", 3),
            [
                "2025-01-15T12:00+00:00 Wed",
                "2025-07-01T12:00+00:00 Tue",
                "2025-07-15T12:00+00:00 Tue",
            ]
        );
        // `5/15` is `5-59/15`; strictly after a matching instant.
        assert_eq!(
            nexts("5/15 0 * * *", "UTC", "2025-01-01T00:05:00Z", 3),
            [
                "2025-01-01T00:20+00:00 Wed",
                "2025-01-01T00:35+00:00 Wed",
                "2025-01-01T00:50+00:00 Wed"
            ]
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday.
        assert_eq!(
            nexts("0 0 13 * 5", "UTC", "2025-06-10T00:00:00Z", 3),
            [
                "2025-06-13T00:00+00:00 Fri",
                "2025-06-20T00:00+00:00 Fri",
                "2025-06-27T00:00+00:00 Fri"
            ]
        );
        assert_eq!(
            nexts("0 0 13 * 1", "UTC", "2025-06-10T00:00:00Z", 2),
            ["2025-06-13T00:00+00:00 Fri", "2025-06-16T00:00+00:00 Mon"]
        );
        // A stepped star restricts too: the 1st, 3rd, ... or any Sunday.
        assert_eq!(
            nexts("0 0 */2 * SUN", "UTC", "2025-06-01T00:00:00Z", 2),
            ["2025-06-03T00:00+00:00 Tue", "2025-06-05T00:00+00:00 Thu"]
        );
    }

    #[test]
    fn macros_and_every() {
        let s = |m: &str| parse(m).unwrap();
        assert_eq!(s("@yearly"), s("0 0 1 1 *"));
        assert_eq!(s("@annually"), s("@yearly"));
        assert_eq!(s("@monthly"), s("0 0 1 * *"));
        assert_eq!(s("@weekly"), s("0 0 * * 0"));
        assert_eq!(s("@daily"), s("0 0 * * *"));
        assert_eq!(s("@midnight"), s("@daily"));
        assert_eq!(s("@hourly"), s("0 * * * *"));
        assert_eq!(
            nexts("@weekly", "UTC", "2025-01-01T00:00:00Z", 1),
            ["2025-01-05T00:00+00:00 Sun"]
        );
        assert_eq!(
            s("@every 1h30m"),
            Schedule::Every(Duration::from_secs(5400))
        );
        let every = s("@every 90s");
        let t = utc("2025-01-01T00:00:00.5Z");
        assert_eq!(
            every.next(t, &TimeZone::UTC),
            Some(utc("2025-01-01T00:01:30Z"))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        for (spec, want) in [
            ("* * * *", "expected exactly 5 fields, found 4"),
            ("60 * * * *", "end of range (60) above maximum (59)"),
            ("* * 0 * *", "beginning of range (0) below minimum (1)"),
            (
                "5-2 * * * *",
                "beginning of range (5) beyond end of range (2)",
            ),
            ("*/0 * * * *", "step of range should be a positive number"),
            ("* * * FOO *", "failed to parse int from FOO"),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("@every soon", "failed to parse duration"),
            ("1-2-3 * * * *", "too many hyphens"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
        // 30 February never comes.
        let never = parse("0 0 30 2 *").unwrap();
        assert_eq!(
            never.next(utc("2025-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn dst_skips_missing_local_times_and_repeats_doubled_ones() {
        // New York springs forward on 2025-03-09 at 02:00 (to 03:00): 02:30 does not exist that
        // day, so the daily 02:30 run is skipped.
        assert_eq!(
            nexts("30 2 * * *", "America/New_York", "2025-03-08T12:00:00Z", 2),
            ["2025-03-10T02:30-04:00 Mon", "2025-03-11T02:30-04:00 Tue"]
        );
        // Times around the change keep their wall-clock hour.
        assert_eq!(
            nexts("0 * * * *", "America/New_York", "2025-03-09T06:30:00Z", 2),
            ["2025-03-09T03:00-04:00 Sun", "2025-03-09T04:00-04:00 Sun"]
        );
        // It falls back on 2025-11-02 at 02:00 (to 01:00): 01:30 happens twice, and runs twice.
        assert_eq!(
            nexts("30 1 * * *", "America/New_York", "2025-11-01T12:00:00Z", 3),
            [
                "2025-11-02T01:30-04:00 Sun",
                "2025-11-02T01:30-05:00 Sun",
                "2025-11-03T01:30-05:00 Mon"
            ]
        );
        assert_eq!(
            nexts("0 * * * *", "America/New_York", "2025-11-02T04:30:00Z", 3),
            [
                "2025-11-02T01:00-04:00 Sun",
                "2025-11-02T01:00-05:00 Sun",
                "2025-11-02T02:00-05:00 Sun"
            ]
        );
        // Midnight is skipped in São Paulo's old DST (2018-11-04 00:00 → 01:00): no run then.
        assert_eq!(
            nexts("0 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00:00Z", 1),
            ["2018-11-05T00:00-02:00 Mon"]
        );
    }
}
