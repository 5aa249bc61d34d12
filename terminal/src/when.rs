//! Times and durations as a broadcaster types them.
//!
//! Contract: pure; `now` (the server's time, as the corrected clock reads it) and the time
//! zone come in. A TIME is one of:
//! - RFC 3339 with a zone: `2030-01-01T12:00:00Z`, `2030-01-01T21:00+09:00`;
//! - wall time in the terminal's time zone (`TZ`), no zone given: `2030-01-01 12:00`,
//!   `2030-01-01T12:00:30`, or `12:00` alone, meaning its next occurrence after `now`;
//! - relative to now: `now`, `+5m`, `now+1h30m`.
//!
//! A DURATION is whole numbers with units, largest first: `30m`, `1h30m`, `90s`, `2h`.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Reads a TIME; the error says what was expected.
pub fn parse_time<Tz: TimeZone>(
    text: &str,
    now: DateTime<Utc>,
    zone: &Tz,
) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(rest) = text.strip_prefix("now+").or_else(|| text.strip_prefix('+')) {
        return Ok(now + parse_duration(rest)?);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%d %H:%M:%S%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    let wall = |naive: NaiveDateTime| {
        match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(..) => Err(format!(
            "{text} happens twice in your time zone (a clock change): add the offset, e.g. {}+01:00",
            naive.format("%Y-%m-%dT%H:%M")
        )),
        LocalResult::None => Err(format!(
            "{text} does not exist in your time zone (a clock change)"
        )),
    }
    };
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return wall(naive);
        }
    }
    for format in ["%H:%M:%S", "%H:%M"] {
        if let Ok(clock) = NaiveTime::parse_from_str(text, format) {
            let today: NaiveDate = now.with_timezone(zone).date_naive();
            let candidate = wall(today.and_time(clock))?;
            if candidate > now {
                return Ok(candidate);
            }
            let tomorrow = today.succ_opt().ok_or("a date past the end of time")?;
            return wall(tomorrow.and_time(clock));
        }
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2030-01-01T12:00:00Z), local wall time \
         (2030-01-01 12:00, or 12:00 for its next occurrence), or +30m from now"
    ))
}

/// Reads a DURATION (`1h30m`, `90s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use e.g. 30m, 1h30m, 90s, 30d");
    let mut total = Duration::zero();
    let mut number = String::new();
    let mut last_unit = u8::MAX;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, seconds) = match c {
            'd' => (3, 86_400),
            'h' => (2, 3600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(bad()),
        };
        if number.is_empty() || rank >= last_unit {
            return Err(bad());
        }
        let n: i64 = number.parse().map_err(|_| bad())?;
        total = total
            .checked_add(&Duration::seconds(n.checked_mul(seconds).ok_or_else(bad)?))
            .ok_or_else(bad)?;
        number.clear();
        last_unit = rank;
    }
    if !number.is_empty() || last_unit == u8::MAX {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = utc("2030-01-01T10:00:00Z");
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        let p = |s: &str| parse_time(s, now, &tokyo);
        assert_eq!(p("2030-01-01T12:00:00Z"), Ok(utc("2030-01-01T12:00:00Z")));
        assert_eq!(p("2030-01-01T21:00+09:00"), Ok(utc("2030-01-01T12:00:00Z")));
        assert_eq!(
            p("2030-01-01T21:00:00+09:00"),
            Ok(utc("2030-01-01T12:00:00Z"))
        );
        // Wall time in the terminal's zone.
        assert_eq!(p("2030-01-01 21:00"), Ok(utc("2030-01-01T12:00:00Z")));
        assert_eq!(p("2030-01-01T21:00:30"), Ok(utc("2030-01-01T12:00:30Z")));
        // 10:00Z is 19:00 in Tokyo: 20:00 is later today, 18:00 is tomorrow.
        assert_eq!(p("20:00"), Ok(utc("2030-01-01T11:00:00Z")));
        assert_eq!(p("18:00"), Ok(utc("2030-01-02T09:00:00Z")));
        assert_eq!(p("now"), Ok(now));
        assert_eq!(p("+5m"), Ok(utc("2030-01-01T10:05:00Z")));
        assert_eq!(p("now+1h30m"), Ok(utc("2030-01-01T11:30:00Z")));
        assert!(p("tomorrow").unwrap_err().contains("is not a time"));
    }

    #[test]
    fn durations_are_units_largest_first() {
        assert_eq!(parse_duration("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_duration("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::hours(36)));
        for bad in [
            "",
            "30",
            "m",
            "30m1h",
            "1h1h",
            "1w",
            "-5m",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
