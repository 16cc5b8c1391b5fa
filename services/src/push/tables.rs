//! The push tables and the records they keep. Pushers, the pushes waiting for a gateway, and every notification with its running totals.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Codec, Json},
    Table,
};
use ruma::push::{Action, HighlightTweakValue, SoundTweakValue, Tweak};
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one event did for one user: its actions, and the user's totals in the room counting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub actions: Vec<Action>,
    pub notify: u64,
    pub highlight: u64,
    /// The thread root when the event is a thread reply (`None`: the main timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The main timeline's running totals counting this event. Absent when they are the room's
    /// totals (no thread reply has notified the user in the room), as in records written before
    /// threads were counted apart, when every notification counted as the main timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<(u64, u64)>,
}

/// The first byte of a notification record in its compact form; a record in JSON (every other
/// record, and every record an earlier release wrote) starts with `{`.
const COMPACT: u8 = 0;

/// The actions of nearly every notification, each stored as one byte: one record is written per
/// member notified of each event (most of a large room's bytes per message), and the JSON of
/// `["notify"]` and two totals weighed ten times their compact form.
fn actions_code(actions: &[Action]) -> Option<u8> {
    let sound = |t: &Tweak| matches!(t, Tweak::Sound(SoundTweakValue::Default));
    let highlight = |t: &Tweak| matches!(t, Tweak::Highlight(HighlightTweakValue::Yes));
    match actions {
        [Action::Notify] => Some(1),
        [Action::Notify, Action::SetTweak(s)] if sound(s) => Some(2),
        [Action::Notify, Action::SetTweak(s), Action::SetTweak(h)] if sound(s) && highlight(h) => Some(3),
        [Action::Notify, Action::SetTweak(h)] if highlight(h) => Some(4),
        _ => None,
    }
}

fn actions_of(code: u8) -> Option<Vec<Action>> {
    let sound = || Action::SetTweak(Tweak::Sound(SoundTweakValue::Default));
    let highlight = || Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes));
    Some(match code {
        1 => vec![Action::Notify],
        2 => vec![Action::Notify, sound()],
        3 => vec![Action::Notify, sound(), highlight()],
        4 => vec![Action::Notify, highlight()],
        _ => return None,
    })
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a notification record ends inside a number")?;
        *bytes = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(n);
        }
    }
    Err("a number of a notification record is too long".into())
}

/// Compact when the actions have a code: [`COMPACT`], the actions' code, the totals as
/// varints, a flags byte (1: `main` follows as two varints, 2: the thread root is the rest);
/// JSON otherwise.
impl Codec for NotificationRecord {
    fn encode(&self) -> Vec<u8> {
        let Some(code) = actions_code(&self.actions) else {
            return serde_json::to_vec(self).expect("a notification record serializes");
        };
        let mut out = Vec::with_capacity(16 + self.thread.as_ref().map_or(0, String::len));
        out.extend([COMPACT, code]);
        put_varint(&mut out, self.notify);
        put_varint(&mut out, self.highlight);
        out.push(u8::from(self.main.is_some()) | (u8::from(self.thread.is_some()) << 1));
        if let Some((notify, highlight)) = self.main {
            put_varint(&mut out, notify);
            put_varint(&mut out, highlight);
        }
        if let Some(thread) = &self.thread {
            out.extend_from_slice(thread.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some((&COMPACT, rest)) = bytes.split_first() else {
            return serde_json::from_slice(bytes).map_err(|e| e.to_string());
        };
        let (&code, mut rest) = rest.split_first().ok_or("a notification record without actions")?;
        let actions = actions_of(code).ok_or_else(|| format!("unknown actions code {code}"))?;
        let notify = take_varint(&mut rest)?;
        let highlight = take_varint(&mut rest)?;
        let (&flags, mut rest) = rest.split_first().ok_or("a notification record without flags")?;
        let main = match flags & 1 {
            0 => None,
            _ => Some((take_varint(&mut rest)?, take_varint(&mut rest)?)),
        };
        let thread = match flags & 2 {
            0 if rest.is_empty() => None,
            0 => return Err("bytes after a notification record".into()),
            _ => Some(String::from_utf8(rest.to_vec()).map_err(|e| e.to_string())?),
        };
        Ok(Self { actions, notify, highlight, thread, main })
    }
}

/// A thread's running totals for a user, and the position of its latest notification (a thread
/// whose latest notification is before the user's receipt costs no further read).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ThreadTotal {
    pub notify: u64,
    pub highlight: u64,
    pub last_pos: u64,
}

/// What the pruning of old notification records (`retention.notifications`) leaves of the totals
/// before them, for one timeline of a user in a room (the main timeline, or a thread).
///
/// Records before `upto` may be gone (`upto` is the position of a record that stays). The
/// receipt the user had when they went, `read`, subtracts the totals it had then, `at_read`, so
/// the unread counts of a user who never reads a room stay exact however old their
/// notifications grow. A later receipt still before `upto` subtracts the totals at `upto`: the
/// notifications between it and `upto`, older than the retention, are no longer counted, as
/// Synapse no longer counts its push actions once deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyFold {
    pub read: u64,
    pub at_read: (u64, u64),
    pub upto: u64,
}

/// Where the totals a receipt subtracts are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalsAt {
    /// The newest record at or before this position (none: zero).
    Record(u64),
    /// These totals, kept by the fold.
    Kept((u64, u64)),
}

impl NotifyFold {
    /// Where the totals at receipt `read` are found, with this fold (or none) in place.
    pub fn totals_at(fold: Option<&NotifyFold>, read: u64) -> TotalsAt {
        match fold {
            Some(fold) if read < fold.upto => {
                if read <= fold.read {
                    TotalsAt::Kept(fold.at_read)
                } else {
                    TotalsAt::Record(fold.upto)
                }
            }
            _ => TotalsAt::Record(read),
        }
    }
}

/// A stored pusher: the pusher as the client set it, and the device that set it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    pub pusher: Value,
    pub device_id: OwnedDeviceId,
    pub created_ms: u64,
}

/// (user, room, thread root, position): a key per thread reply and notified member.
pub type UserRoomThreadPos = (OwnedUserId, OwnedRoomId, String, Be64);

hemicycle_core::tables! {
    /// The push column families.
    pub struct Tables {
        /// (user, app id, pushkey) → a pusher and the device that set it.
        pub useridpushkey_pusher: Table<(OwnedUserId, String, String), Json<PusherRecord>>,
        /// (app id, pushkey, user): who registered a pushkey, so a pushkey moving to another user
        /// leaves the previous one (`append: false`).
        pub appidpushkey_userid: Table<(String, String, OwnedUserId), Vec<u8>>,
        /// (user, app id, pushkey, position) → room: notifications waiting for a push gateway.
        pub pusherpos_pending: Table<(OwnedUserId, String, String, Be64), OwnedRoomId>,
        /// (user, room, position) → the actions an event's push rules gave for the user, with the
        /// user's running notification and highlight totals in the room including it.
        pub useridroomidpos_notification: Table<(OwnedUserId, OwnedRoomId, Be64), NotificationRecord>,
        /// (user, position) → room of each notification. No longer written (`/notifications`
        /// merges the rooms' records instead); declared so that a database of an earlier
        /// release, which has the column family, opens; the pruning task empties it.
        pub useridpos_notification: Table<(OwnedUserId, Be64), OwnedRoomId>,
        /// (user, room) → the running (notification, highlight) totals.
        pub useridroomid_notifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
        /// (user, room) → the running totals of the main timeline alone (events in no thread),
        /// once they differ from the room's (absent: the same).
        pub useridroomid_mainnotifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
        /// (user, room, thread root) → the running totals of that thread, and its latest position.
        pub useridroomidthread_notifytotal: Table<(OwnedUserId, OwnedRoomId, String), Json<ThreadTotal>>,
        /// (user, room, thread root, position) → the thread's running totals including that event,
        /// so a threaded receipt finds the totals at its position with one seek.
        pub useridroomidthreadpos_notifytotal: Table<UserRoomThreadPos, Json<(u64, u64)>>,
        /// (user, room, thread root, or `""` for the main timeline) → what the pruning of old
        /// records left of the totals before them (written only by `crate::retention`).
        pub useridroomidthread_notifyfold: Table<(OwnedUserId, OwnedRoomId, String), Json<NotifyFold>>,
    }
}

#[cfg(test)]
mod tests {
    use hemicycle_core::db::codec::Codec;
    use ruma::push::Action;
    use serde_json::json;

    use super::NotificationRecord;

    fn record(actions: serde_json::Value, thread: Option<&str>, main: Option<(u64, u64)>) -> NotificationRecord {
        NotificationRecord {
            actions: serde_json::from_value::<Vec<Action>>(actions).expect("actions"),
            notify: 300,
            highlight: 2,
            thread: thread.map(str::to_owned),
            main,
        }
    }

    fn same(a: &NotificationRecord, b: &NotificationRecord) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    /// The actions of the default rules are stored in a few bytes and read back as they were,
    /// with or without a thread and main-timeline totals; other actions are stored as JSON; a
    /// record written as JSON by an earlier release reads the same; a cut or altered compact
    /// record is an error, not a wrong record.
    #[test]
    fn notification_records_are_compact_and_read_back_as_written() {
        let sound = json!({ "set_tweak": "sound", "value": "default" });
        let highlight = json!({ "set_tweak": "highlight" });
        let compact = [
            json!(["notify"]),
            json!(["notify", sound]),
            json!(["notify", sound, highlight]),
            json!(["notify", highlight]),
        ];
        for actions in compact {
            for (thread, main) in [(None, None), (Some("$racine-été"), Some((7, 1))), (None, Some((0, 0)))] {
                let written = record(actions.clone(), thread, main);
                let bytes = written.encode();
                assert_eq!(bytes[0], super::COMPACT, "{actions}: compact");
                assert!(bytes.len() <= 10 + thread.map_or(0, str::len), "{actions}: {} bytes", bytes.len());
                let read = NotificationRecord::decode(&bytes).expect("decodes");
                assert!(same(&written, &read), "{actions} {thread:?} {main:?}: {:?}", read);
                for cut in 1..bytes.len() - thread.map_or(0, str::len) {
                    assert!(NotificationRecord::decode(&bytes[..cut]).is_err(), "{actions}: cut at {cut}");
                }
            }
        }
        for actions in [json!(["notify", { "set_tweak": "sound", "value": "ping" }]), json!(["dont_notify"]), json!([])]
        {
            let written = record(actions.clone(), Some("$t"), None);
            let bytes = written.encode();
            assert_eq!(bytes[0], b'{', "{actions}: JSON");
            assert!(same(&written, &NotificationRecord::decode(&bytes).expect("decodes")), "{actions}");
        }
        let earlier = br#"{"actions":["notify",{"set_tweak":"sound","value":"default"}],"notify":3,"highlight":1,"thread":"$root"}"#;
        let read = NotificationRecord::decode(earlier).expect("an earlier release's record");
        assert!(same(&read, &serde_json::from_slice(earlier).unwrap()));
        let mut unknown = record(json!(["notify"]), None, None).encode();
        unknown[1] = 99;
        assert!(NotificationRecord::decode(&unknown).is_err(), "an unknown actions code");
    }
}
