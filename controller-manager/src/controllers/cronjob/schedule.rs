//! Which scheduled time a CronJob should start now, as Kubernetes' `mostRecentScheduleTime`:
//! only the most recent missed schedule since the last one (or since creation) is started, and
//! the count of missed ones is estimated from the schedule's period, so a controller down for
//! a long time does not enumerate years of minutes.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::util::cron::Schedule;

/// More missed schedules than this are reported (event `TooManyMissedTimes`).
pub const MAX_MISSED: i64 = 100;

/// Requeues land this long after the scheduled time, so a clock slightly behind still sees it
/// due (Kubernetes' `nextScheduleDelta`).
pub const REQUEUE_PAD: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// The result of [`most_recent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    /// The last schedule time, or the creation time (moved up to `now - startingDeadline` when
    /// the deadline is applied).
    pub earliest: Timestamp,
    /// The most recent scheduled time at or before `now` after `earliest`, if any.
    pub time: Option<Timestamp>,
    pub missed: Missed,
}

/// What the schedule owes at `now`: see [`Recent`]. `deadline`, when given, is
/// `startingDeadlineSeconds`: nothing before `now - deadline` is considered. An error when the
/// schedule never fires or fires less than a second apart.
pub fn most_recent(
    sched: &Schedule,
    tz: &TimeZone,
    created: Timestamp,
    last: Option<Timestamp>,
    deadline: Option<i64>,
    now: Timestamp,
) -> Result<Recent, String> {
    let mut earliest = last.unwrap_or(created);
    if let Some(d) = deadline {
        let window = Timestamp::from_second(now.as_second() - d).unwrap_or(earliest);
        earliest = earliest.max(window);
    }
    let none = Recent {
        earliest,
        time: None,
        missed: Missed::None,
    };
    let never = || "the schedule has no time within five years".to_string();
    let t1 = sched.next(earliest, tz).ok_or_else(never)?;
    if now < t1 {
        return Ok(none);
    }
    let t2 = sched.next(t1, tz).ok_or_else(never)?;
    if now < t2 {
        return Ok(Recent {
            time: Some(t1),
            missed: Missed::Few,
            ..none
        });
    }
    let period = t2.as_second() - t1.as_second();
    if period < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let missed = (now.as_second() - t1.as_second()) / period + 1;
    // Start one period before the estimate and walk forward: exact even for irregular
    // schedules (`30 6-16/4 * * 1-5`) whose period varies.
    let from = t1.as_second() + (missed - 2) * period;
    let mut t = sched.next(Timestamp::from_second(from).unwrap_or(t1), tz);
    let mut recent = None;
    while let Some(x) = t.filter(|x| *x <= now) {
        recent = Some(x);
        t = sched.next(x, tz);
    }
    Ok(Recent {
        time: recent,
        missed: if missed > MAX_MISSED {
            Missed::Many
        } else {
            Missed::Few
        },
        ..none
    })
}

/// How long from `now` until the CronJob should be looked at again: the schedule after the most
/// recent one (or after `earliest` when nothing is due), padded (`nextScheduleTimeDuration`).
pub fn requeue_after(
    sched: &Schedule,
    tz: &TimeZone,
    created: Timestamp,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    let from = match most_recent(sched, tz, created, last, None, now) {
        Err(_) => now,
        Ok(Recent { time: Some(t), .. }) => t,
        Ok(Recent {
            missed: Missed::None,
            earliest,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    let next = sched.next(from, tz)?;
    let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait + REQUEUE_PAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::cron::parse;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn recent(
        spec: &str,
        created: &str,
        last: Option<&str>,
        deadline: Option<i64>,
        now: &str,
    ) -> Recent {
        most_recent(
            &parse(spec).unwrap(),
            &TimeZone::UTC,
            at(created),
            last.map(at),
            deadline,
            at(now),
        )
        .unwrap()
    }

    #[test]
    fn only_the_most_recent_missed_time_is_due() {
        let r = recent(
            "*/5 * * * *",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-01T00:03:00Z",
        );
        assert_eq!((r.time, r.missed), (None, Missed::None));
        let r = recent(
            "*/5 * * * *",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-01T00:05:00Z",
        );
        assert_eq!(
            (r.time, r.missed),
            (Some(at("2025-01-01T00:05:00Z")), Missed::Few)
        );
        // Down for an hour: twelve missed, only 01:00 is due.
        let r = recent(
            "*/5 * * * *",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-01T01:02:00Z",
        );
        assert_eq!(
            (r.time, r.missed),
            (Some(at("2025-01-01T01:00:00Z")), Missed::Few)
        );
        // From the last schedule time, not creation.
        let r = recent(
            "*/5 * * * *",
            "2025-01-01T00:00:00Z",
            Some("2025-01-01T01:00:00Z"),
            None,
            "2025-01-01T01:02:00Z",
        );
        assert_eq!(r.time, None);
        // Irregular schedules are walked exactly.
        let r = recent(
            "30 6-16/4 * * 1-5",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-08T12:00:00Z",
        );
        assert_eq!(r.time, Some(at("2025-01-08T10:30:00Z")));
    }

    #[test]
    fn over_a_hundred_missed_is_many_unless_the_deadline_narrows_it() {
        let r = recent(
            "* * * * *",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-01T03:00:30Z",
        );
        assert_eq!(r.missed, Missed::Many);
        assert_eq!(r.time, Some(at("2025-01-01T03:00:00Z")));
        let r = recent(
            "* * * * *",
            "2025-01-01T00:00:00Z",
            None,
            None,
            "2025-01-01T01:40:30Z",
        );
        assert_eq!(r.missed, Missed::Few, "exactly 100 missed is still few");
        let r = recent(
            "* * * * *",
            "2025-01-01T00:00:00Z",
            None,
            Some(300),
            "2025-01-01T03:00:30Z",
        );
        assert_eq!(r.missed, Missed::Few);
        assert_eq!(r.earliest, at("2025-01-01T02:55:30Z"));
        assert_eq!(r.time, Some(at("2025-01-01T03:00:00Z")));
    }

    #[test]
    fn requeues_at_the_next_schedule() {
        let s = parse("*/5 * * * *").unwrap();
        let wait = |last: Option<&str>, now: &str| {
            requeue_after(
                &s,
                &TimeZone::UTC,
                at("2025-01-01T00:00:00Z"),
                last.map(at),
                at(now),
            )
        };
        let pad = REQUEUE_PAD;
        assert_eq!(
            wait(None, "2025-01-01T00:01:00Z"),
            Some(Duration::from_secs(240) + pad)
        );
        assert_eq!(
            wait(Some("2025-01-01T00:05:00Z"), "2025-01-01T00:05:00Z"),
            Some(Duration::from_secs(300) + pad)
        );
        // A due time not started yet (say, Forbid): look again at the one after.
        assert_eq!(
            wait(None, "2025-01-01T00:07:00Z"),
            Some(Duration::from_secs(180) + pad)
        );
        let never = parse("0 0 30 2 *").unwrap();
        assert!(
            most_recent(
                &never,
                &TimeZone::UTC,
                at("2025-01-01T00:00:00Z"),
                None,
                None,
                at("2025-03-01T00:00:00Z")
            )
            .is_err()
        );
    }
}
