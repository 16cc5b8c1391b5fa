//! Calendar entries: one state event per entry, type [`CALENDAR_TYPE`], state_key its `uid`.
//! The time fields have the shape of the entries in Nordeck's `net.nordeck.meetings.metadata`
//! (`dtstart`/`dtend` as `{tzid, value}` with values like `20260316T100000`, `rrule`, `exdate`),
//! so the meetings widget's data maps one to one. Recurrences are expanded in the entry's own
//! time zone: a weekly meeting at 10:00 stays at 10:00 local across a DST change.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::tasks::resolve;

pub const CALENDAR_TYPE: &str = "org.hemicycle.calendar.event";

/// Most occurrences one entry expands to (a rule without end is cut there).
const MAX_OCCURRENCES: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTime {
    pub tzid: String,
    /// `YYYYMMDDTHHMMSS`, local to `tzid`.
    pub value: String,
}

impl LocalTime {
    pub fn new(tzid: &str, local: NaiveDateTime) -> LocalTime {
        LocalTime { tzid: tzid.to_owned(), value: local.format("%Y%m%dT%H%M%S").to_string() }
    }

    pub fn local(&self) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(&self.value, "%Y%m%dT%H%M%S").ok()
    }

    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.tzid.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attendee {
    /// `needs-action`, `yes`, `no` or `maybe`.
    pub rsvp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub uid: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    pub dtstart: LocalTime,
    pub dtend: LocalTime,
    /// An RFC 5545 RRULE value: FREQ=DAILY|WEEKLY|MONTHLY with INTERVAL, BYDAY (weekly),
    /// COUNT, UNTIL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrule: Option<String>,
    /// Occurrences removed, as local `YYYYMMDDTHHMMSS` values in `dtstart`'s zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exdate: Vec<String>,
    #[serde(default)]
    pub attendees: BTreeMap<String, Attendee>,
    /// The entry's own meeting room, in Nordeck's meeting format, once made (`!cal meeting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_room: Option<String>,
    pub creator: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freq {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub freq: Freq,
    pub interval: u32,
    pub by_day: Vec<Weekday>,
    pub count: Option<u32>,
    /// Inclusive, as a local date-time (a date alone means the end of that day).
    pub until: Option<NaiveDateTime>,
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

/// Parses the supported subset of RRULE; anything else is refused with the part named. Keys
/// and values are letters, digits and commas only (the rule is written as it is into feeds), and
/// each key comes once.
pub fn parse_rrule(text: &str) -> Result<Rule, String> {
    let mut freq = None;
    let mut rule = Rule { freq: Freq::Daily, interval: 1, by_day: Vec::new(), count: None, until: None };
    let mut seen: Vec<String> = Vec::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b',');
        if !plain(key) || !plain(value) || key.contains(',') {
            return Err(format!("{part:?}: only letters, digits and commas are allowed"));
        }
        let upper = key.to_ascii_uppercase();
        if seen.contains(&upper) {
            return Err(format!("{upper} is given twice"));
        }
        seen.push(upper);
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => {
                freq = Some(match value.to_ascii_uppercase().as_str() {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    other => return Err(format!("FREQ={other} is not supported (DAILY, WEEKLY, MONTHLY)")),
                })
            }
            "INTERVAL" => {
                rule.interval =
                    value.parse().ok().filter(|n| (1..=366).contains(n)).ok_or_else(|| format!("INTERVAL={value}"))?
            }
            "COUNT" => {
                rule.count = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_OCCURRENCES as u32).contains(n))
                        .ok_or_else(|| format!("COUNT={value}"))?,
                )
            }
            "UNTIL" => {
                let v = value.strip_suffix('Z').unwrap_or(value);
                rule.until = Some(
                    NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
                        .ok()
                        .or_else(|| NaiveDate::parse_from_str(v, "%Y%m%d").ok().and_then(|d| d.and_hms_opt(23, 59, 59)))
                        .ok_or_else(|| format!("UNTIL={value}"))?,
                )
            }
            "BYDAY" => {
                for code in value.split(',') {
                    rule.by_day.push(weekday(&code.to_ascii_uppercase()).ok_or_else(|| format!("BYDAY={value}"))?);
                }
            }
            "WKST" => {
                weekday(&value.to_ascii_uppercase()).ok_or_else(|| format!("WKST={value}"))?;
            }
            other => return Err(format!("{other} is not supported")),
        }
    }
    rule.freq = freq.ok_or("FREQ is missing")?;
    if !rule.by_day.is_empty() && rule.freq != Freq::Weekly {
        return Err("BYDAY is supported with FREQ=WEEKLY only".into());
    }
    if rule.count.is_some() && rule.until.is_some() {
        return Err("COUNT and UNTIL together".into());
    }
    Ok(rule)
}

impl Rule {
    /// The local start times the rule gives from `start` (which is the first), in order.
    pub fn local_starts(&self, start: NaiveDateTime) -> Vec<NaiveDateTime> {
        let mut out = Vec::new();
        let limit = self.count.map_or(MAX_OCCURRENCES, |c| c as usize);
        let push = |t: NaiveDateTime, out: &mut Vec<NaiveDateTime>| -> bool {
            if self.until.is_some_and(|u| t > u) || out.len() >= limit {
                return false;
            }
            out.push(t);
            true
        };
        match self.freq {
            Freq::Daily => {
                let mut t = start;
                while push(t, &mut out) {
                    t += Duration::days(i64::from(self.interval));
                }
            }
            Freq::Weekly => {
                let mut days = if self.by_day.is_empty() { vec![start.weekday()] } else { self.by_day.clone() };
                days.sort_by_key(|d| d.num_days_from_monday());
                days.dedup();
                let week_start = start.date() - Duration::days(i64::from(start.weekday().num_days_from_monday()));
                let mut week = 0i64;
                'weeks: loop {
                    for day in &days {
                        let date =
                            week_start + Duration::weeks(week) + Duration::days(i64::from(day.num_days_from_monday()));
                        let t = date.and_time(start.time());
                        if t < start {
                            continue;
                        }
                        if !push(t, &mut out) {
                            break 'weeks;
                        }
                    }
                    week += i64::from(self.interval);
                }
            }
            Freq::Monthly => {
                let mut step = 0u32;
                // Months without that day (the 31st) are skipped, as RFC 5545 says.
                while step < (MAX_OCCURRENCES as u32) * 2 {
                    if let Some(date) = start.date().checked_add_months(Months::new(step * self.interval)) {
                        if date.day() == start.day() && !push(date.and_time(start.time()), &mut out) {
                            break;
                        }
                    }
                    step += 1;
                }
            }
        }
        out
    }
}

/// One occurrence, as instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Occurrence {
    pub uid: String,
    pub title: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Entry {
    /// Checks what a client could not have checked: times that parse, a known zone, an end
    /// after the start, a supported rule.
    pub fn validate(&self) -> Result<(), String> {
        // Exactly `YYYYMMDDTHHMMSS`: these values are written as they are into feeds.
        let local_form = |v: &str| {
            v.len() == 15 && v.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'T' } else { b.is_ascii_digit() })
        };
        if !local_form(&self.dtstart.value) || !local_form(&self.dtend.value) {
            return Err("dtstart.value and dtend.value must be YYYYMMDDTHHMMSS".into());
        }
        if let Some(bad) = self.exdate.iter().find(|v| !local_form(v)) {
            return Err(format!("exdate {bad:?} is not YYYYMMDDTHHMMSS"));
        }
        let start = self.dtstart.local().ok_or("dtstart.value is not YYYYMMDDTHHMMSS")?;
        let end = self.dtend.local().ok_or("dtend.value is not YYYYMMDDTHHMMSS")?;
        self.dtstart.zone().ok_or("dtstart.tzid is not an IANA time zone")?;
        self.dtend.zone().ok_or("dtend.tzid is not an IANA time zone")?;
        if end <= start {
            return Err("the end is not after the start".into());
        }
        if let Some(rule) = &self.rrule {
            parse_rrule(rule)?;
        }
        Ok(())
    }

    /// Occurrences overlapping `[from, to)`.
    pub fn occurrences(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence> {
        let (Some(start), Some(end), Some(zone), Some(end_zone)) =
            (self.dtstart.local(), self.dtend.local(), self.dtstart.zone(), self.dtend.zone())
        else {
            return Vec::new();
        };
        let length = resolve(&end_zone, end) - resolve(&zone, start);
        let starts = match self.rrule.as_deref().map(parse_rrule) {
            Some(Ok(rule)) => rule.local_starts(start),
            Some(Err(_)) | None => vec![start],
        };
        starts
            .into_iter()
            .filter(|t| !self.exdate.contains(&t.format("%Y%m%dT%H%M%S").to_string()))
            .map(|t| resolve(&zone, t))
            .filter(|s| *s < to && *s + length > from)
            .map(|s| Occurrence { uid: self.uid.clone(), title: self.title.clone(), start: s, end: s + length })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: &str, end: &str, rrule: Option<&str>) -> Entry {
        Entry {
            uid: "e1".into(),
            title: "Comité".into(),
            description: String::new(),
            location: String::new(),
            dtstart: LocalTime { tzid: "Europe/Paris".into(), value: start.into() },
            dtend: LocalTime { tzid: "Europe/Paris".into(), value: end.into() },
            rrule: rrule.map(str::to_owned),
            exdate: Vec::new(),
            attendees: BTreeMap::new(),
            meeting_room: None,
            creator: "@a:x".into(),
            created: String::new(),
            updated: String::new(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_weekly_meeting_keeps_its_local_time_across_the_spring_dst_change() {
        let e = entry("20260316T100000", "20260316T110000", Some("FREQ=WEEKLY;BYDAY=MO;COUNT=4"));
        let got: Vec<String> = e
            .occurrences(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
            .iter()
            .map(|o| format!("{}/{}", o.start.format("%m-%dT%H:%M"), o.end.format("%H:%M")))
            .collect();
        // Paris is UTC+1 until 29 March 2026, UTC+2 after.
        assert_eq!(got, ["03-16T09:00/10:00", "03-23T09:00/10:00", "03-30T08:00/09:00", "04-06T08:00/09:00"]);
    }

    #[test]
    fn byday_until_interval_exdate_and_monthly_rules() {
        let mut e = entry("20261026T090000", "20261026T093000", Some("FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20261104"));
        e.exdate = vec!["20261028T090000".into()];
        let starts: Vec<String> = e
            .occurrences(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
            .iter()
            .map(|o| o.start.format("%m-%dT%H:%M").to_string())
            .collect();
        // 26 Oct (after the autumn change on the 25th: UTC+1), the 28th removed, 2 and 4 Nov.
        assert_eq!(starts, ["10-26T08:00", "11-02T08:00", "11-04T08:00"]);
        let monthly = entry("20260131T100000", "20260131T110000", Some("FREQ=MONTHLY;COUNT=3"));
        let months: Vec<String> = monthly
            .occurrences(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
            .iter()
            .map(|o| o.start.format("%m-%d").to_string())
            .collect();
        assert_eq!(months, ["01-31", "03-31", "05-31"], "months without a 31st are skipped");
        let every_other = parse_rrule("FREQ=DAILY;INTERVAL=2;COUNT=3").unwrap();
        let days = every_other.local_starts("2026-12-30T08:00:00".parse().unwrap());
        assert_eq!(days.iter().map(|d| d.format("%m-%d").to_string()).collect::<Vec<_>>(), ["12-30", "01-01", "01-03"]);
    }

    #[test]
    fn unsupported_or_malformed_rules_are_refused_with_the_part_named() {
        assert!(parse_rrule("FREQ=YEARLY").unwrap_err().contains("YEARLY"));
        assert!(parse_rrule("FREQ=WEEKLY;BYDAY=XX").unwrap_err().contains("BYDAY"));
        assert!(parse_rrule("COUNT=3").unwrap_err().contains("FREQ"));
        assert!(parse_rrule("FREQ=DAILY;COUNT=0").unwrap_err().contains("COUNT"));
        // Nothing but letters, digits and commas, each key once: nothing to inject into a feed.
        assert!(parse_rrule("FREQ=DAILY;WKST=MO\r\nBEGIN:VALARM").is_err());
        assert!(parse_rrule("FREQ=DAILY;WKST=XX").unwrap_err().contains("WKST"));
        assert!(parse_rrule("FREQ=DAILY;COUNT=+4").is_err());
        assert!(parse_rrule("FREQ=DAILY;UNTIL=20260630ZZ").is_err());
        assert!(parse_rrule("FREQ=DAILY;FREQ=WEEKLY").unwrap_err().contains("twice"));
        assert!(parse_rrule("FREQ=DAILY;X-NAME=1").is_err());
        assert!(parse_rrule("FREQ=WEEKLY;WKST=MO;BYDAY=MO,WE;UNTIL=20260630T000000Z").is_ok());
        let mut e = entry("20260316T100000", "20260316T110000", None);
        e.exdate = vec!["20260316T100000\r\nBEGIN:VALARM".into()];
        assert!(e.validate().unwrap_err().contains("exdate"));
        assert!(entry("20260316T100000", "20260316T090000", None).validate().is_err(), "end before start");
    }
}
