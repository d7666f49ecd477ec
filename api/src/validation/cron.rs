//! CronJob schedules, as Kubernetes accepts them (the standard five-field cron syntax of the
//! `robfig/cron` parser): `minute hour day-of-month month day-of-week`, each a comma list of `*`,
//! `?`, `n`, `a-b`, optionally `/step`, with month and weekday names; or a macro (`@hourly`,
//! `@daily`, `@every 1h30m`, …). Only syntax is checked; the CronJob controller computes times.

/// One cron field: its name (for messages), bounds and accepted names (index + `min` = value).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    Field {
        name: "day of week",
        min: 0,
        max: 6,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

const MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks a schedule; the error is the reason, for a `FieldError::invalid` detail.
pub fn validate_schedule(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if let Some(rest) = s.strip_prefix("@every ") {
        return if is_go_duration(rest.trim()) {
            Ok(())
        } else {
            Err(format!("failed to parse duration {}", rest.trim()))
        };
    }
    if s.starts_with('@') {
        return if MACROS.contains(&s) {
            Ok(())
        } else {
            Err(format!("unrecognized descriptor: {s}"))
        };
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(&FIELDS) {
        for item in part.split(',') {
            check_item(item, field).map_err(|e| format!("{}: {e}", field.name))?;
        }
    }
    Ok(())
}

/// One comma-separated item: `*`, `?`, `n`, `a-b`, each optionally followed by `/step`.
fn check_item(item: &str, f: &Field) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        let n = parse_number(step).ok_or_else(|| format!("invalid step {step:?}"))?;
        if n == 0 {
            return Err(format!("step of range should be a positive number: {item}"));
        }
    }
    if range == "*" || range == "?" {
        return Ok(());
    }
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (value(a, f)?, value(b, f)?),
        None => {
            let v = value(range, f)?;
            (v, v)
        }
    };
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {item}"
        ));
    }
    Ok(())
}

/// A number or name within the field's bounds.
fn value(s: &str, f: &Field) -> Result<u32, String> {
    let upper = s.to_ascii_uppercase();
    if let Some(i) = f.names.iter().position(|n| *n == upper) {
        return Ok(f.min + i as u32);
    }
    let n = parse_number(s).ok_or_else(|| format!("failed to parse int from {s}"))?;
    if n < f.min || n > f.max {
        return Err(format!("value {n} out of range {}-{}", f.min, f.max));
    }
    Ok(n)
}

fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `time.ParseDuration` syntax, positive: `300ms`, `1.5h`, `2h45m`.
fn is_go_duration(s: &str) -> bool {
    const UNITS: &[&str] = &["ns", "us", "µs", "ms", "s", "m", "h"];
    let mut rest = s;
    let mut any_nonzero = false;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        any_nonzero |= num.bytes().any(|b| (b'1'..=b'9').contains(&b));
        // Longest unit first so that `ms` is not read as `m` followed by garbage.
        let Some(unit) = UNITS
            .iter()
            .filter(|u| tail.starts_with(*u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &tail[unit.len()..];
    }
    any_nonzero
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_schedules() {
        for ok in [
            "* * * * *",
            "*/1 * * * *",
            "0 0 13 * 5",
            "0 9-17/2 * JAN-mar mon,wed,FRI",
            "5 4 * * sun",
            "0 0 1,15 * ?",
            "30 2/3 * * *",
            "@hourly",
            "@annually",
            "@every 1h30m",
            "@every 500ms",
        ] {
            assert_eq!(validate_schedule(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_schedules_with_reasons() {
        for (bad, reason) in [
            ("* * * *", "expected exactly 5 fields, found 4: * * * *"),
            ("60 * * * *", "minute: value 60 out of range 0-59"),
            ("* 24 * * *", "hour: value 24 out of range 0-23"),
            ("* * 0 * *", "day of month: value 0 out of range 1-31"),
            ("* * * 13 *", "month: value 13 out of range 1-12"),
            ("* * * * 7", "day of week: value 7 out of range 0-6"),
            ("* * * FOO *", "month: failed to parse int from FOO"),
            (
                "*/0 * * * *",
                "minute: step of range should be a positive number: */0",
            ),
            (
                "5-1 * * * *",
                "minute: beginning of range (5) beyond end of range (1): 5-1",
            ),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("@every 1x", "failed to parse duration 1x"),
            ("@every 0s", "failed to parse duration 0s"),
        ] {
            assert_eq!(validate_schedule(bad), Err(reason.to_string()), "{bad}");
        }
    }
}
