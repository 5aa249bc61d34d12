//! How the terminal shows things to people: times in the local zone beside the server's UTC,
//! tables, and a day view of a server's schedule.
//!
//! Contract: pure functions from values to text; the zone comes in, so tests can pin it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use slotcast_wire::ReservationStatus;

/// `2030-01-01 21:00:00 +09:00`.
pub fn local<Tz: TimeZone>(t: DateTime<Utc>, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.with_timezone(zone)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// `2030-01-01T12:00:00.000Z`, the server's way.
pub fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `2030-01-01 21:00:00 +09:00 → … (server 2030-01-01T12:00:00.000Z → …)`.
pub fn span<Tz: TimeZone>(start: DateTime<Utc>, end: DateTime<Utc>, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!(
        "{} → {}   (server {} → {})",
        local(start, zone),
        local(end, zone),
        utc(start),
        utc(end)
    )
}

/// `As of 2030-01-01 21:00:00 +09:00 (server 2030-01-01T12:00:00.000Z): what slotcast knew
/// then.`, the line above an answer asked as of an instant.
pub fn as_of<Tz: TimeZone>(at: DateTime<Utc>, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!(
        "As of {} (server {}): what slotcast knew then.",
        local(at, zone),
        utc(at)
    )
}

/// `in 4 min 10 s`, `12 s ago`.
pub fn relative(to: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = to - now;
    let span = |d: Duration| {
        let s = d.num_seconds().abs();
        match s {
            0..=59 => format!("{s} s"),
            60..=3599 => format!("{} min {} s", s / 60, s % 60),
            3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
            _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
        }
    };
    if d >= Duration::zero() {
        format!("in {}", span(d))
    } else {
        format!("{} ago", span(d))
    }
}

/// Columns padded to their widest cell; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One slot in the day view.
#[derive(Clone, Debug)]
pub struct DaySlot {
    pub label: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: ReservationStatus,
    pub title: Option<String>,
}

/// Columns of the day view: 48, half an hour each.
const COLUMNS: i64 = 48;

/// A server's day, `day_start` (local midnight) to 24 h later: an hour ruler, one bar per
/// slot (`#` booked, `=` live or ended), and how many slots overlap each half hour.
pub fn day<Tz: TimeZone>(
    title: &str,
    slots: &[DaySlot],
    day_start: DateTime<Utc>,
    zone: &Tz,
    capacity: Option<u64>,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let step = Duration::minutes(30);
    let day_end = day_start + step * COLUMNS as i32;
    let label_width = slots
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let pad = " ".repeat(label_width + 2);
    let mut out = format!(
        "{title}: {} (local time {}){}\n",
        day_start.with_timezone(zone).format("%a %d %b %Y"),
        day_start.with_timezone(zone).format("%:z"),
        capacity.map_or(String::new(), |c| format!(", capacity {c}"))
    );
    let mut ruler = String::new();
    for hour in (0..24).step_by(3) {
        ruler.push_str(&format!("{hour:02}    "));
    }
    out.push_str(&format!("{pad}{ruler}24\n"));
    out.push_str(&format!("{pad}{}|\n", "|     ".repeat(8)));
    let mut load = vec![0u32; COLUMNS as usize];
    let mut shown = 0;
    for slot in slots {
        if slot.end <= day_start || slot.start >= day_end {
            continue;
        }
        shown += 1;
        let mark = if matches!(
            slot.status,
            ReservationStatus::Live | ReservationStatus::Ended
        ) {
            '='
        } else {
            '#'
        };
        let bar: String = (0..COLUMNS)
            .map(|c| {
                let from = day_start + step * c as i32;
                let to = from + step;
                if slot.start < to && slot.end > from {
                    load[c as usize] += 1;
                    mark
                } else {
                    '.'
                }
            })
            .collect();
        let hhmm = |t: DateTime<Utc>| t.with_timezone(zone).format("%H:%M").to_string();
        out.push_str(&format!(
            "{:<label_width$}  {bar}  {}–{} {}{}\n",
            slot.label,
            hhmm(slot.start),
            hhmm(slot.end),
            slot.status,
            slot.title
                .as_ref()
                .map_or(String::new(), |t| format!(" \"{t}\""))
        ));
    }
    if shown == 0 {
        out.push_str(&format!("{pad}(no slots this day)\n"));
    } else {
        let busy: String = load
            .iter()
            .map(|&n| match n {
                0 => '.',
                1..=9 => char::from_digit(n, 10).unwrap_or('+'),
                _ => '+',
            })
            .collect();
        out.push_str(&format!(
            "{:<label_width$}  {busy}  slots at once\n",
            "busy"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_day_view_shows_each_slot_on_the_local_clock_and_the_overlap() {
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        // Local midnight in Tokyo.
        let midnight = t("2030-01-01T15:00:00Z");
        let slots = [
            DaySlot {
                label: "r-1".into(),
                start: t("2030-01-02T00:00:00Z"),
                end: t("2030-01-02T01:30:00Z"),
                status: ReservationStatus::Accepted,
                title: Some("Morning".into()),
            },
            DaySlot {
                label: "r-2".into(),
                start: t("2030-01-02T01:00:00Z"),
                end: t("2030-01-02T02:00:00Z"),
                status: ReservationStatus::Live,
                title: None,
            },
        ];
        let view = day("demo-1", &slots, midnight, &tokyo, Some(2));
        let expected = "\
demo-1: Wed 02 Jan 2030 (local time +09:00), capacity 2
      00    03    06    09    12    15    18    21    24
      |     |     |     |     |     |     |     |     |
r-1   ..................###...........................  09:00–10:30 accepted \"Morning\"
r-2   ....................==..........................  10:00–11:00 live
busy  ..................1121..........................  slots at once
";
        assert_eq!(view, expected);
        let empty = day("demo-1", &[], midnight, &tokyo, None);
        assert!(empty.ends_with("(no slots this day)\n"), "{empty}");
    }

    #[test]
    fn tables_and_relative_times() {
        let rows = vec![
            vec!["ID".into(), "STATUS".into()],
            vec!["r-100".into(), "accepted".into()],
        ];
        assert_eq!(table(&rows), "ID     STATUS\nr-100  accepted\n");
        let now = t("2030-01-01T00:00:00Z");
        assert_eq!(relative(t("2030-01-01T00:04:10Z"), now), "in 4 min 10 s");
        assert_eq!(relative(t("2029-12-31T23:59:48Z"), now), "12 s ago");
        assert_eq!(relative(t("2030-01-02T02:00:00Z"), now), "in 1 d 2 h");
    }

    #[test]
    fn an_answer_as_of_an_instant_says_which_on_both_clocks() {
        let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
        assert_eq!(
            as_of(t("2030-01-01T12:00:00.5Z"), &tokyo),
            "As of 2030-01-01 21:00:00 +09:00 (server 2030-01-01T12:00:00.500Z): what slotcast \
             knew then."
        );
    }
}
