//! A room's calendar as an iCalendar feed (RFC 5545) that Thunderbird and Outlook subscribe to.
//! Times keep their zone (`DTSTART;TZID=Europe/Paris:…`) with a VTIMEZONE describing it, so a
//! recurring meeting stays at its local time across DST in every client.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Offset, TimeZone, Utc};
use chrono_tz::OffsetComponents;

use crate::calendar::Entry;

/// Escapes a TEXT value (RFC 5545 §3.3.11): backslash, semicolon and comma are escaped, a line
/// break (CRLF, CR or LF) becomes `\n`, other control characters (which TEXT may not hold) are
/// dropped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A user as an iCalendar URI (`matrix:u/alice:server`), or none when the id is not a valid
/// user id (it could then break the line or add parameters).
fn user_uri(user: &str) -> Option<String> {
    crate::rights::valid_user_id(user).then(|| format!("matrix:u/{}", &user[1..]))
}

/// Folds a content line at 75 octets (never inside a UTF-8 character) and ends it with CRLF.
/// Values reach it escaped or validated; a control character that still does (other than a
/// tab) becomes a space, so no value can ever start a line of its own.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        let c = if c.is_control() && c != '\t' { ' ' } else { c };
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
    // Entries that do not validate (times, zones, rule) are left out: their fields could not be
    // written safely. The bot's own view holds none, but the feed does not rely on that.
    let entries: Vec<&Entry> = entries.iter().filter(|e| e.validate().is_ok()).collect();
    for e in &entries {
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
        line(&mut out, &format!("UID:{}", text(&format!("{}@{}", e.uid, server_name))));
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
        // Validated above: the rule's parts, the zone and the local times hold no other characters.
        if let Some(rule) = &e.rrule {
            line(&mut out, &format!("RRULE:{}", rule.to_ascii_uppercase()));
        }
        for ex in &e.exdate {
            line(&mut out, &format!("EXDATE;TZID={}:{ex}", e.dtstart.tzid));
        }
        if let Some(uri) = user_uri(&e.creator) {
            line(&mut out, &format!("ORGANIZER:{uri}"));
        }
        for (user, a) in &e.attendees {
            if let Some(uri) = user_uri(user) {
                line(&mut out, &format!("ATTENDEE;PARTSTAT={}:{uri}", partstat(&a.rsvp)));
            }
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

    /// An entry as a hostile member could shape it: line breaks, semicolons and commas in every
    /// text field and in user ids, trying to add a VALARM, a second VEVENT and properties.
    fn hostile() -> Entry {
        use std::collections::BTreeMap;

        use crate::calendar::{Attendee, LocalTime};
        let inject = "\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\nX-INJECTED:1";
        let mut attendees = BTreeMap::new();
        attendees.insert(format!("@a:b{inject}"), Attendee { rsvp: "yes".into() });
        attendees.insert("@a:b;RSVP=TRUE".into(), Attendee { rsvp: "yes".into() });
        attendees.insert("@carol:budget.gouv.fr".into(), Attendee { rsvp: "maybe\r\nX-INJECTED:2".into() });
        Entry {
            uid: format!("e1{inject}"),
            title: format!("Comité\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nSUMMARY:faux{inject}"),
            description: format!("a\\b;c,d\ne\rf\u{7}{}", "é".repeat(80)),
            location: format!("Salle 2\nATTACH:http://evil.example/{inject}"),
            dtstart: LocalTime { tzid: "Europe/Paris".into(), value: "20260316T100000".into() },
            dtend: LocalTime { tzid: "Europe/Paris".into(), value: "20260316T110000".into() },
            rrule: Some("FREQ=WEEKLY;BYDAY=MO;COUNT=4".into()),
            exdate: vec!["20260323T100000".into()],
            attendees,
            meeting_room: None,
            creator: format!("@eve:x{inject}"),
            created: String::new(),
            updated: "2026-03-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn hostile_values_add_no_line_component_or_property_to_the_feed() {
        let mut bad_rule = hostile();
        bad_rule.uid = "e2".into();
        bad_rule.rrule = Some("FREQ=DAILY;WKST=MO\r\nBEGIN:VALARM\r\nEND:VALARM".into());
        let mut bad_exdate = hostile();
        bad_exdate.uid = "e3".into();
        bad_exdate.exdate = vec!["20260323T100000\r\nX-INJECTED:3".into()];
        let ics =
            calendar(&format!("Bureau{}", "\r\nX-INJECTED:4"), "budget.gouv.fr", &[hostile(), bad_rule, bad_exdate]);

        // Folded at 75 octets, CRLF only.
        assert!(ics.ends_with("\r\n") && !ics.replace("\r\n", "").contains(['\r', '\n']), "{ics:?}");
        assert!(ics.split("\r\n").all(|l| l.len() <= 75), "{ics}");

        let unfolded = icalendar::parser::unfold(&ics);
        let parsed = icalendar::parser::read_calendar(&unfolded).unwrap_or_else(|e| panic!("{e}\n{ics}"));
        let names: Vec<&str> = parsed.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["VTIMEZONE", "VEVENT"], "one event; the entries with a bad rule or exdate left out: {ics}");
        let event = &parsed.components[1];
        assert!(event.components.is_empty(), "no VALARM inside the event: {ics}");
        let allowed =
            ["UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "DESCRIPTION", "LOCATION", "RRULE", "EXDATE", "ATTENDEE"];
        let properties: Vec<&str> = event.properties.iter().map(|p| p.name.as_str()).collect();
        assert!(properties.iter().all(|p| allowed.contains(p)), "{properties:?}");
        let value = |name: &str| event.properties.iter().find(|p| p.name == name).map(|p| p.val.as_str().to_owned());
        // Text values come back as they were written (the parser unescapes them).
        assert_eq!(value("SUMMARY").unwrap(), hostile().title.replace("\r\n", "\n"));
        assert_eq!(value("UID").unwrap(), format!("{}@budget.gouv.fr", hostile().uid.replace("\r\n", "\n")));
        assert_eq!(value("LOCATION").unwrap(), hostile().location.replace("\r\n", "\n"));
        assert_eq!(value("DESCRIPTION").unwrap(), format!("a\\b;c,d\ne\nf{}", "é".repeat(80)), "BEL dropped");
        assert_eq!(value("RRULE").unwrap(), "FREQ=WEEKLY;BYDAY=MO;COUNT=4");
        // Only the valid attendee, with its own PARTSTAT; no organizer (the creator's id is not valid).
        let attendees: Vec<_> = event.properties.iter().filter(|p| p.name == "ATTENDEE").collect();
        assert_eq!(attendees.len(), 1, "{ics}");
        assert_eq!(attendees[0].val.as_str(), "matrix:u/carol:budget.gouv.fr");
        assert_eq!(attendees[0].params.len(), 1);
        assert_eq!(attendees[0].params[0].val.as_ref().map(|v| v.as_str()), Some("NEEDS-ACTION"));
        let calendar_properties: Vec<&str> = parsed.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(calendar_properties, ["VERSION", "PRODID", "CALSCALE", "X-WR-CALNAME"]);
        assert!(!ics.contains("\nX-INJECTED") && !ics.contains("\nBEGIN:VALARM"), "{ics}");
        // The higher-level parser reads the same single event.
        let full: icalendar::Calendar = ics.parse().unwrap();
        assert_eq!(full.components.iter().filter(|c| c.as_event().is_some()).count(), 1);
    }

    #[test]
    fn long_lines_fold_and_text_is_escaped() {
        let mut out = String::new();
        line(&mut out, &format!("SUMMARY:{}", text(&"é".repeat(60))));
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines.iter().all(|l| l.len() <= 75), "{lines:?}");
        assert!(lines[1].starts_with(' '));
        assert_eq!(text("a,b;c\nd"), "a\\,b\\;c\\nd");
        assert_eq!(text("a\r\nb\rc\\d\u{0}"), "a\\nb\\nc\\\\d");
    }
}
