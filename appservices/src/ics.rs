//! A room's calendar as an iCalendar feed (RFC 5545) that Thunderbird and Outlook subscribe to.
//! Times keep their zone (`DTSTART;TZID=Europe/Paris:…`) with a VTIMEZONE describing it, so a
//! recurring meeting stays at its local time across DST in every client.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Offset, TimeZone, Utc};
use chrono_tz::OffsetComponents;

use crate::calendar::Entry;

/// Escapes a TEXT value.
fn text(s: &str) -> String {
    s.replace('\\', "\\\\").replace(';', "\\;").replace(',', "\\,").replace('\r', "").replace('\n', "\\n")
}

/// Folds a content line at 75 octets (never inside a UTF-8 character) and ends it with CRLF.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    format!("{sign}{:02}{:02}", s / 3600, (s / 60) % 60)
}

/// The zone's UTC offset changes between `from` and `to`: (instant, offset before, offset
/// after, is daylight time after). Found hour by hour, then to the minute.
fn transitions(zone: chrono_tz::Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, i32, i32, bool)> {
    let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc();
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let next = t + Duration::hours(1);
        if offset(t) != offset(next) {
            let (mut lo, mut hi) = (t, next);
            while hi - lo > Duration::minutes(1) {
                let mid = lo + (hi - lo) / 2;
                if offset(mid) == offset(lo) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let dst = !zone.offset_from_utc_datetime(&hi.naive_utc()).dst_offset().is_zero();
            out.push((hi, offset(lo), offset(hi), dst));
        }
        t = next;
    }
    out
}

fn vtimezone(out: &mut String, zone: chrono_tz::Tz, years: (i32, i32)) {
    let from = Utc.with_ymd_and_hms(years.0, 1, 1, 0, 0, 0).single().expect("valid date");
    let to = Utc.with_ymd_and_hms(years.1 + 1, 1, 1, 0, 0, 0).single().expect("valid date");
    line(out, "BEGIN:VTIMEZONE");
    line(out, &format!("TZID:{}", zone.name()));
    let changes = transitions(zone, from, to);
    if changes.is_empty() {
        let o = zone.offset_from_utc_datetime(&from.naive_utc()).fix().local_minus_utc();
        line(out, "BEGIN:STANDARD");
        line(out, "DTSTART:19700101T000000");
        line(out, &format!("TZOFFSETFROM:{}", offset_text(o)));
        line(out, &format!("TZOFFSETTO:{}", offset_text(o)));
        line(out, "END:STANDARD");
    }
    for (at, before, after, dst) in changes {
        let kind = if dst { "DAYLIGHT" } else { "STANDARD" };
        // DTSTART of an observance is the local time in the offset in force before it.
        let local = at.naive_utc() + Duration::seconds(i64::from(before));
        line(out, &format!("BEGIN:{kind}"));
        line(out, &format!("DTSTART:{}", local.format("%Y%m%dT%H%M%S")));
        line(out, &format!("TZOFFSETFROM:{}", offset_text(before)));
        line(out, &format!("TZOFFSETTO:{}", offset_text(after)));
        line(out, &format!("END:{kind}"));
    }
    line(out, "END:VTIMEZONE");
}

fn partstat(rsvp: &str) -> &'static str {
    match rsvp {
        "yes" => "ACCEPTED",
        "no" => "DECLINED",
        "maybe" => "TENTATIVE",
        _ => "NEEDS-ACTION",
    }
}

fn utc_stamp(rfc3339: &str) -> String {
    rfc3339
        .parse::<DateTime<Utc>>()
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| "19700101T000000Z".into())
}

/// The feed: every entry of the room, with the zones they use.
pub fn calendar(name: &str, server_name: &str, entries: &[Entry]) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//Hemicycle//Workspace//FR");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, &format!("X-WR-CALNAME:{}", text(name)));
    let mut zones: BTreeSet<String> = BTreeSet::new();
    let (mut first, mut last) = (i32::MAX, i32::MIN);
    for e in entries {
        for t in [&e.dtstart, &e.dtend] {
            zones.insert(t.tzid.clone());
            if let Some(local) = t.local() {
                first = first.min(local.year());
                last = last.max(local.year());
            }
        }
    }
    // Recurrences may run on: describe the zone a few years past the last start.
    for zone in zones.iter().filter_map(|z| z.parse::<chrono_tz::Tz>().ok()) {
        vtimezone(&mut out, zone, (first, last + 3));
    }
    for e in entries {
        line(&mut out, "BEGIN:VEVENT");
        line(&mut out, &format!("UID:{}@{}", e.uid, server_name));
        line(&mut out, &format!("DTSTAMP:{}", utc_stamp(&e.updated)));
        line(&mut out, &format!("DTSTART;TZID={}:{}", e.dtstart.tzid, e.dtstart.value));
        line(&mut out, &format!("DTEND;TZID={}:{}", e.dtend.tzid, e.dtend.value));
        line(&mut out, &format!("SUMMARY:{}", text(&e.title)));
        if !e.description.is_empty() {
            line(&mut out, &format!("DESCRIPTION:{}", text(&e.description)));
        }
        if !e.location.is_empty() {
            line(&mut out, &format!("LOCATION:{}", text(&e.location)));
        }
        if let Some(rule) = &e.rrule {
            line(&mut out, &format!("RRULE:{rule}"));
        }
        for ex in &e.exdate {
            line(&mut out, &format!("EXDATE;TZID={}:{ex}", e.dtstart.tzid));
        }
        line(&mut out, &format!("ORGANIZER:matrix:u/{}", e.creator.trim_start_matches('@')));
        for (user, a) in &e.attendees {
            line(
                &mut out,
                &format!("ATTENDEE;PARTSTAT={}:matrix:u/{}", partstat(&a.rsvp), user.trim_start_matches('@')),
            );
        }
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_has_its_two_changes_a_year_at_the_right_local_times() {
        let mut out = String::new();
        vtimezone(&mut out, chrono_tz::Europe::Paris, (2026, 2026));
        assert!(
            out.contains("BEGIN:DAYLIGHT\r\nDTSTART:20260329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200"),
            "{out}"
        );
        assert!(
            out.contains("BEGIN:STANDARD\r\nDTSTART:20261025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100"),
            "{out}"
        );
    }

    #[test]
    fn long_lines_fold_and_text_is_escaped() {
        let mut out = String::new();
        line(&mut out, &format!("SUMMARY:{}", text(&"é".repeat(60))));
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines.iter().all(|l| l.len() <= 75), "{lines:?}");
        assert!(lines[1].starts_with(' '));
        assert_eq!(text("a,b;c\nd"), "a\\,b\\;c\\nd");
    }
}
