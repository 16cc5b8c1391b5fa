//! Tasks: one state event per task, type [`TASK_TYPE`], state_key the task id. There is no
//! Matrix standard for tasks; the fields are named after the JSCalendar Task object (RFC 8984)
//! so other tools map them without a table: `title`, `description`, `due` (a local date-time)
//! with `timeZone`, `showWithoutTime` for a due date without a time, `progress`, `priority`,
//! `participants` (assignees), `keywords` (labels); plus `creator`, `created`, `updated` and a
//! `checklist`. An empty content is a deleted task.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub const TASK_TYPE: &str = "org.hemicycle.task";

/// The local hour a reminder for a due date without a time is sent at.
pub const REMINDER_HOUR: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Progress {
    NeedsAction,
    InProcess,
    Completed,
    Cancelled,
}

impl Progress {
    pub fn is_open(self) -> bool {
        matches!(self, Progress::NeedsAction | Progress::InProcess)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    #[serde(rename = "@type", default = "participant_type")]
    pub kind: String,
    /// JSCalendar roles; an assignee is an `attendee`.
    #[serde(default)]
    pub roles: BTreeMap<String, bool>,
}

fn participant_type() -> String {
    "Participant".into()
}

impl Participant {
    pub fn assignee() -> Participant {
        Participant { kind: participant_type(), roles: BTreeMap::from([("attendee".to_owned(), true)]) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecklistItem {
    pub text: String,
    #[serde(default)]
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(rename = "@type", default = "task_type")]
    pub kind: String,
    pub uid: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// JSCalendar LocalDateTime (`2026-12-01T17:00:00`), in `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The due date has no time of day (`due:2026-12-01`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub show_without_time: bool,
    pub progress: Progress,
    /// JSCalendar priority: 1 highest, 5 normal, 9 lowest, 0 undefined.
    #[serde(default)]
    pub priority: u8,
    /// Assignees by Matrix user id.
    #[serde(default)]
    pub participants: BTreeMap<String, Participant>,
    #[serde(default)]
    pub keywords: BTreeMap<String, bool>,
    #[serde(default)]
    pub checklist: Vec<ChecklistItem>,
    pub creator: String,
    /// UTC date-times (`2026-12-01T08:00:00Z`).
    pub created: String,
    pub updated: String,
}

fn task_type() -> String {
    "Task".into()
}

/// `prio:` values in both languages → JSCalendar priority.
pub fn parse_priority(word: &str) -> Option<u8> {
    match word.to_lowercase().as_str() {
        "high" | "haute" | "urgent" | "urgente" | "1" => Some(1),
        "normal" | "normale" | "5" => Some(5),
        "low" | "basse" | "faible" | "9" => Some(9),
        _ => None,
    }
}

/// A due date as written by a user: `2026-12-01` (no time) or `2026-12-01T17:00` / `…17:00:00`.
pub fn parse_due(text: &str) -> Option<(NaiveDateTime, bool)> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some((date.and_time(NaiveTime::MIN), true));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| (t, false))
}

pub fn local_datetime(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok()
}

/// A local time in `zone` as an instant: the earlier of two in a DST overlap, the first valid
/// one after a DST gap.
pub fn resolve<Z: TimeZone>(zone: &Z, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..4 {
        if let Some(t) = zone.from_local_datetime(&probe).earliest() {
            return t.with_timezone(&Utc);
        }
        probe += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

impl Task {
    fn zone(&self, default: chrono_tz::Tz) -> chrono_tz::Tz {
        self.time_zone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(default)
    }

    /// When the assignees are reminded: the due time, or 09:00 local on a due date.
    pub fn reminder_at(&self, default: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let due = local_datetime(self.due.as_deref()?)?;
        let due =
            if self.show_without_time { due.date().and_hms_opt(REMINDER_HOUR, 0, 0).expect("valid hour") } else { due };
        Some(resolve(&self.zone(default), due))
    }

    /// Past its due time (or, without a time, its due day), and still open.
    pub fn is_late(&self, now: DateTime<Utc>, default: chrono_tz::Tz) -> bool {
        let Some(due) = self.due.as_deref().and_then(local_datetime) else { return false };
        if !self.progress.is_open() {
            return false;
        }
        let zone = self.zone(default);
        let end = if self.show_without_time {
            due.date().succ_opt().unwrap_or(due.date()).and_time(NaiveTime::MIN)
        } else {
            due
        };
        now >= resolve(&zone, end)
    }

    pub fn assignees(&self) -> impl Iterator<Item = &str> {
        self.participants.keys().map(String::as_str)
    }

    /// The due date as people read it: `2026-12-01` or `2026-12-01 17:00`.
    pub fn due_label(&self) -> Option<String> {
        let due = local_datetime(self.due.as_deref()?)?;
        Some(if self.show_without_time {
            due.format("%Y-%m-%d").to_string()
        } else {
            due.format("%Y-%m-%d %H:%M").to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(due: &str, without_time: bool) -> Task {
        Task {
            kind: task_type(),
            uid: "t1".into(),
            title: "x".into(),
            description: String::new(),
            due: Some(due.into()),
            time_zone: Some("Europe/Paris".into()),
            show_without_time: without_time,
            progress: Progress::NeedsAction,
            priority: 0,
            participants: BTreeMap::new(),
            keywords: BTreeMap::new(),
            checklist: Vec::new(),
            creator: "@a:x".into(),
            created: String::new(),
            updated: String::new(),
        }
    }

    #[test]
    fn a_due_date_is_reminded_at_nine_local_and_late_the_next_day() {
        let t = task("2026-12-01T00:00:00", true);
        let zone = chrono_tz::Europe::Paris;
        assert_eq!(t.reminder_at(zone).unwrap().to_rfc3339(), "2026-12-01T08:00:00+00:00", "09:00 in Paris in winter");
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(!t.is_late(at("2026-12-01T22:59:00Z"), zone), "still the due day in Paris");
        assert!(t.is_late(at("2026-12-01T23:00:00Z"), zone), "midnight in Paris");
        let summer = task("2026-07-01T00:00:00", true);
        assert_eq!(summer.reminder_at(zone).unwrap().to_rfc3339(), "2026-07-01T07:00:00+00:00", "09:00 in summer time");
    }

    #[test]
    fn due_dates_and_priorities_parse_in_both_languages() {
        assert!(parse_due("2026-12-01").unwrap().1, "a date alone has no time");
        assert_eq!(parse_due("2026-12-01T17:30").unwrap().0.to_string(), "2026-12-01 17:30:00");
        assert!(parse_due("01/12/2026").is_none());
        assert!(parse_due("2026-02-30").is_none());
        assert_eq!(parse_priority("haute"), Some(1));
        assert_eq!(parse_priority("LOW"), Some(9));
        assert_eq!(parse_priority("soon"), None);
    }
}
