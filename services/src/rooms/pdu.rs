//! A room event as servers exchange it (a PDU), and its client-facing form.

use ruma::{
    events::TimelineEventType, serde::Raw, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue as RawJsonValue;

/// The fields of a PDU the server reads. The stored JSON (with hashes and signatures) is the
/// source of truth; this is a parsed view of it.
#[derive(Clone, Debug, Deserialize)]
pub struct Pdu {
    #[serde(skip_deserializing, default = "placeholder_event_id")]
    pub event_id: OwnedEventId,
    /// Absent on room version 12 create events, whose event id *is* the room id.
    #[serde(default)]
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(deserialize_with = "event_refs")]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(deserialize_with = "event_refs")]
    pub auth_events: Vec<OwnedEventId>,
    /// Top-level `redacts` (room versions before 11; later versions carry it in `content`).
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
    #[serde(skip)]
    pub rejected: bool,
}

/// The fields of a stored event that the stream's consumers decide on (who is notified, where it
/// is sent), read from its JSON without building the event: most events need nothing more.
#[derive(Deserialize)]
pub struct Head<'a> {
    #[serde(borrow)]
    pub sender: std::borrow::Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub state_key: Option<std::borrow::Cow<'a, str>>,
    /// Absent on room version 12 create events, whose event id is the room id.
    #[serde(borrow, default)]
    pub room_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub content: MembershipOnly,
}

/// The one field of an event's content a [`Head`] reads.
#[derive(Deserialize, Default)]
pub struct MembershipOnly {
    #[serde(default)]
    pub membership: Option<String>,
}

/// The largest depth canonical JSON can carry (2^53 - 1).
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

/// The depth of a new event after events of depth `deepest`, capped as Synapse caps it: a peer
/// that sends an event at the largest depth must not leave the room unable to take a new event
/// (a depth one higher would not be canonical JSON, and every local send would fail).
pub fn next_depth(deepest: u64) -> u64 {
    deepest.saturating_add(1).min(MAX_DEPTH)
}

fn placeholder_event_id() -> OwnedEventId {
    OwnedEventId::try_from("$placeholder").expect("valid event id")
}

/// Room versions 1 and 2 reference events as `[event_id, hashes]` pairs; later ones as plain ids.
fn event_refs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(OwnedEventId),
        Pair(OwnedEventId, serde::de::IgnoredAny),
    }
    let refs = Vec::<Ref>::deserialize(deserializer)?;
    Ok(refs
        .into_iter()
        .map(|r| match r {
            Ref::Id(id) | Ref::Pair(id, _) => id,
        })
        .collect())
}

impl Pdu {
    /// Parses stored PDU JSON; `event_id` is not part of modern PDUs, so the caller supplies it.
    pub fn from_json(event_id: OwnedEventId, json: &[u8]) -> Result<Self, serde_json::Error> {
        let mut pdu: Pdu = serde_json::from_slice(json)?;
        pdu.event_id = event_id;
        Ok(pdu)
    }

    /// The event this one redacts, wherever the room version puts it.
    pub fn redacted_event(&self) -> Option<OwnedEventId> {
        if let Some(id) = &self.redacts {
            return Some(id.clone());
        }
        if self.kind != TimelineEventType::RoomRedaction {
            return None;
        }
        #[derive(Deserialize)]
        struct Redacts {
            redacts: Option<OwnedEventId>,
        }
        serde_json::from_str::<Redacts>(self.content.get()).ok().and_then(|r| r.redacts)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// The client-server format of a stored event: the PDU minus server-only fields, plus `event_id`,
/// `room_id` and `unsigned`.
///
/// Only the fields a client event carries are parsed: the signatures, hashes and DAG links of
/// the PDU, which weigh more than most contents, are skipped without being built (this runs for
/// every event of every sync).
pub fn client_event(
    event_id: &OwnedEventId,
    room_id: &RoomId,
    pdu_json: &[u8],
    unsigned: Option<serde_json::Value>,
) -> serde_json::Value {
    use serde_json::Value;
    #[derive(Deserialize)]
    struct ClientFields {
        #[serde(rename = "type")]
        kind: Option<Value>,
        content: Option<Value>,
        sender: Option<Value>,
        state_key: Option<Value>,
        origin_server_ts: Option<Value>,
        redacts: Option<Value>,
        unsigned: Option<Value>,
    }
    let Ok(fields) = serde_json::from_slice::<ClientFields>(pdu_json) else {
        return Value::Object(serde_json::Map::new());
    };
    let mut value = serde_json::Map::new();
    for (key, field) in [
        ("type", fields.kind),
        ("content", fields.content),
        ("sender", fields.sender),
        ("state_key", fields.state_key),
        ("origin_server_ts", fields.origin_server_ts),
        ("redacts", fields.redacts),
    ] {
        if let Some(field) = field {
            value.insert(key.into(), field);
        }
    }
    value.insert("event_id".into(), event_id.as_str().into());
    value.insert("room_id".into(), room_id.as_str().into());
    let mut unsigned_map = match fields.unsigned {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(Value::Object(extra)) = unsigned {
        unsigned_map.extend(extra);
    }
    if let Some(ts) = value.get("origin_server_ts").and_then(|v| v.as_u64()) {
        unsigned_map.insert("age".into(), crate::time::now_ms().saturating_sub(ts).into());
    }
    value.insert("unsigned".into(), unsigned_map.into());
    Value::Object(value)
}

/// [`client_event`] as JSON text, for who only passes it on (the appservice transactions): the
/// members are copied from the PDU as they are, never built as values. Every part is JSON
/// already (read from the stored event, or serialized here), so the text is valid JSON.
pub fn client_event_json(
    event_id: &EventId,
    room_id: &RoomId,
    pdu_json: &[u8],
    unsigned: serde_json::Map<String, serde_json::Value>,
) -> String {
    #[derive(Deserialize)]
    struct ClientParts<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        content: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        sender: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        state_key: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        origin_server_ts: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        redacts: Option<&'a RawJsonValue>,
        #[serde(borrow)]
        unsigned: Option<&'a RawJsonValue>,
    }
    let Ok(parts) = serde_json::from_slice::<ClientParts<'_>>(pdu_json) else { return "{}".to_owned() };
    let mut out = String::with_capacity(pdu_json.len());
    out.push('{');
    for (key, part) in [
        ("type", parts.kind),
        ("content", parts.content),
        ("sender", parts.sender),
        ("state_key", parts.state_key),
        ("origin_server_ts", parts.origin_server_ts),
        ("redacts", parts.redacts),
    ] {
        if let Some(part) = part {
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            out.push_str(part.get());
            out.push(',');
        }
    }
    let string = |s: &str| serde_json::to_string(s).expect("a string serializes");
    out.push_str("\"event_id\":");
    out.push_str(&string(event_id.as_str()));
    out.push_str(",\"room_id\":");
    out.push_str(&string(room_id.as_str()));
    let mut unsigned_map = parts
        .unsigned
        .and_then(|u| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(u.get()).ok())
        .unwrap_or_default();
    unsigned_map.extend(unsigned);
    if let Some(ts) = parts.origin_server_ts.and_then(|ts| serde_json::from_str::<u64>(ts.get()).ok()) {
        unsigned_map.insert("age".into(), crate::time::now_ms().saturating_sub(ts).into());
    }
    out.push_str(",\"unsigned\":");
    out.push_str(&serde_json::to_string(&unsigned_map).expect("a map serializes"));
    out.push('}');
    out
}

/// Serializes a client event for a ruma response field.
pub fn to_raw<T>(value: &serde_json::Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(value).expect("JSON values serialize"))
}
