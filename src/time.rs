//! Small time helpers every layer may use: the product's one text form of a time, and reading
//! the forms databases and users write.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};

/// RFC 3339, UTC, whole seconds: `2025-09-15T14:30:00Z` (SPEC §5). Times in the state database are
/// stored in this form, which sorts as text.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `serialize_with` for a time written as [`rfc3339`].
pub fn serialize_rfc3339<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// A time written by [`rfc3339`] (or any RFC 3339 time), in UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads a time as the databases write it: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f][+zz[:zz]]`, or a
/// bare date. Times without a zone are UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    // Unix seconds, as some apps keep them.
    s.parse::<i64>()
        .ok()
        .and_then(|n| DateTime::from_timestamp(n, 0))
}

/// A std duration as a chrono one; durations past chrono's range (they come from a config or a
/// flag) saturate instead of panicking.
pub fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at [`last_time`] instead of panicking: times are kept as RFC 3339 text
/// and compared as text, and a year past 9999 would be written `+10000-…` and sort first (due at
/// once, for ever).
pub fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .min(last_time())
}

/// `t - d`, saturating at the earliest time chrono holds instead of panicking (a policy's
/// `older_than` of a thousand years reaches back before any upload).
pub fn before(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_sub_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// 9999-12-31T23:59:59Z: the last time whose RFC 3339 text sorts after every earlier one.
pub fn last_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Minutes since the Unix epoch: the unit the API budget counts calls in.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_saturates_where_the_text_still_sorts_last() {
        let now = Utc::now();
        for d in [
            std::time::Duration::MAX,
            std::time::Duration::from_secs(u64::MAX / 2),
        ] {
            let t = after(now, d);
            assert_eq!(rfc3339(t), "9999-12-31T23:59:59Z");
            assert!(rfc3339(t) > rfc3339(now));
        }
        assert_eq!(
            after(now, std::time::Duration::from_mins(1)),
            now + TimeDelta::seconds(60)
        );
    }

    #[test]
    fn times_in_every_database_format() {
        let want = "2025-09-15T14:30:00+00:00";
        for s in [
            "2025-09-15T14:30:00Z",
            "2025-09-15 14:30:00",
            "2025-09-15 14:30:00.000",
            "2025-09-15 14:30:00+00",
            "2025-09-15 16:30:00+02",
            "2025-09-15 16:30:00+02:00",
            "2025-09-15T14:30:00",
            "1757946600",
        ] {
            assert_eq!(
                parse_time(s).map(|t| t.to_rfc3339()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        assert!(parse_time("2025-09-15").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn rfc3339_is_whole_seconds_in_utc_and_reads_back() {
        let t = parse_time("2025-09-15 16:30:00.75+02").expect("time");
        assert_eq!(rfc3339(t), "2025-09-15T14:30:00Z");
        assert_eq!(
            parse_rfc3339("2025-09-15T14:30:00Z")
                .map(rfc3339)
                .as_deref(),
            Some("2025-09-15T14:30:00Z")
        );
    }

    #[test]
    fn durations_past_the_end_of_time_saturate() {
        let now = Utc::now();
        assert_eq!(after(now, std::time::Duration::MAX), last_time());
        assert_eq!(delta(std::time::Duration::MAX), TimeDelta::MAX);
        assert_eq!(minute_of(DateTime::from_timestamp(125, 0).expect("t")), 2);
    }
}
