//! The write path's handling of forks and soft-failed events, driven with PDUs of a made-up
//! remote server (the rooms layer trusts its caller to have checked signatures, so none are made).

use std::sync::Arc;

use ruma::{
    events::{StateEventType, TimelineEventType},
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Value};

use super::{create::CreateRoom, remote::Accepted, Rooms};
use crate::{config::Config, services::Services};

pub(crate) async fn services() -> (tempfile::TempDir, Arc<Services>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    (dir, Services::open(config).expect("services"))
}

/// Alice, and a public room of room version 12 she made.
async fn alice_and_a_room(services: &Services) -> (OwnedUserId, OwnedRoomId) {
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let request = CreateRoom { public: true, ..Default::default() };
    let room = services.rooms.create_room(&alice, request, &RoomVersionId::V12).await.expect("room");
    (alice, room)
}

/// A PDU of a remote user, on top of `prev`, with the auth events the room version selects from
/// the state after `state_at` (its branch's state, whatever the room's current state); its id is
/// its reference hash.
pub(crate) fn remote_event(
    rooms: &Rooms,
    room: &RoomId,
    sender: &UserId,
    (kind, state_key, content): (&str, Option<&str>, Value),
    prev: &[OwnedEventId],
    state_at: &OwnedEventId,
) -> (OwnedEventId, CanonicalJsonObject) {
    let rules = RoomVersionId::V12.rules().expect("rules");
    let snapshot = rooms.meta(state_at).expect("read").expect("a timeline event").dag_snapshot();
    let kind_type = TimelineEventType::from(kind);
    let raw = serde_json::value::to_raw_value(&content).expect("content");
    let types = ruma::state_res::auth_types_for_event(&kind_type, sender, state_key, &raw, &rules.authorization)
        .expect("auth types");
    let mut auth_events = Vec::new();
    for (auth_kind, key) in types {
        if let Some(id) = rooms.state_event_id_in(snapshot, &auth_kind, &key).expect("read") {
            if !auth_events.contains(&id) {
                auth_events.push(id);
            }
        }
    }
    let depth = prev.iter().map(|p| u64::from(rooms.pdu(p).expect("read").expect("held").depth)).max().unwrap_or(0) + 1;
    let mut event = json!({
        "room_id": room, "sender": sender, "type": kind, "content": content, "origin_server_ts": 1_800_000_000_000u64,
        "prev_events": prev, "auth_events": auth_events, "depth": depth,
    });
    if let Some(key) = state_key {
        event["state_key"] = json!(key);
    }
    let object: CanonicalJsonObject = serde_json::from_value(event).expect("canonical JSON");
    let id = format!("${}", ruma::signatures::reference_hash(&object, &rules).expect("reference hash"));
    (OwnedEventId::try_from(id).expect("event id"), object)
}

pub(crate) async fn take(rooms: &Rooms, room: &RoomId, (id, object): &(OwnedEventId, CanonicalJsonObject)) -> Accepted {
    rooms.append_remote(room, id, object, None).await.unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// A public room of a local admin with two members of `remote.example`, bob and mallory.
pub(crate) async fn room_with_remote_members(
    services: &Services,
) -> (OwnedRoomId, OwnedUserId, OwnedUserId, OwnedUserId) {
    let rooms = &services.rooms;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let request = CreateRoom { public: true, ..Default::default() };
    let room = rooms.create_room(&alice, request, &RoomVersionId::V12).await.expect("room");
    let bob = OwnedUserId::try_from("@bob:remote.example").expect("user id");
    let mallory = OwnedUserId::try_from("@mallory:remote.example").expect("user id");
    for user in [&bob, &mallory] {
        join_remote(rooms, &room, user).await;
    }
    (room, alice, bob, mallory)
}

/// A remote user joins `room`, on top of its extremities.
async fn join_remote(rooms: &Rooms, room: &RoomId, user: &UserId) {
    let prev = rooms.room(room).expect("read").expect("room").extremities;
    let join = remote_event(
        rooms,
        room,
        user,
        ("m.room.member", Some(user.as_str()), json!({ "membership": "join" })),
        &prev,
        &prev[0],
    );
    assert_eq!(take(rooms, room, &join).await, Accepted::Timeline);
}

/// Mallory's server, cut off while she was banned, keeps sending on top of the branch it knows:
/// her events pass against the state before them but not against the current state, so they are
/// soft-failed — kept, not shown, not forward extremities. A later event naming them as prev
/// events is taken in with the state through them (resolved with the ban), computed here rather
/// than asked of the sending server, and it covers what they covered: the room is left with that
/// one extremity, as Synapse leaves it.
#[tokio::test]
async fn events_built_on_soft_failed_events_take_their_state_and_cover_them() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (room, alice, bob, mallory) = room_with_remote_members(&services).await;
    let fork = rooms.room(&room).unwrap().unwrap().extremities;

    rooms.set_membership(&room, &alice, &mallory, "ban", None, Default::default()).await.expect("ban");
    let ban = rooms.state_event(&room, &StateEventType::RoomMember, mallory.as_str()).unwrap().unwrap().event_id;
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    let before = remote_event(rooms, &room, &bob, ("m.room.message", None, text("avant")), &fork, &fork[0]);
    assert_eq!(take(rooms, &room, &before).await, Accepted::Timeline);
    let on_before = [before.0.clone()];
    let message = remote_event(rooms, &room, &mallory, ("m.room.message", None, text("bannie")), &on_before, &before.0);
    assert!(matches!(take(rooms, &room, &message).await, Accepted::SoftFailed(_)));
    let renamed = json!({ "membership": "join", "displayname": "Mallory (bannie)" });
    // (A message changes no state: the rename's branch state is the one after bob's message.)
    let rename = remote_event(
        rooms,
        &room,
        &mallory,
        ("m.room.member", Some(mallory.as_str()), renamed),
        std::slice::from_ref(&message.0),
        &before.0,
    );
    assert!(
        matches!(take(rooms, &room, &rename).await, Accepted::SoftFailed(_)),
        "an event on a soft-failed one has a state here"
    );
    assert!(rooms.missing_prev_events(&rename.1).unwrap().is_empty());
    let mut extremities = rooms.room(&room).unwrap().unwrap().extremities;
    extremities.sort();
    let mut expected = vec![ban.clone(), before.0.clone()];
    expected.sort();
    assert_eq!(extremities, expected, "soft-failed events are no extremities");

    let on_both = [rename.0.clone(), ban.clone()];
    let after = remote_event(rooms, &room, &bob, ("m.room.message", None, text("après")), &on_both, &ban);
    assert_eq!(take(rooms, &room, &after).await, Accepted::Timeline);
    assert_eq!(
        rooms.room(&room).unwrap().unwrap().extremities,
        std::slice::from_ref(&after.0),
        "it covers what they covered"
    );
    let state = rooms.state_before_event(&after.0).unwrap().expect("a state before it");
    assert!(state.contains(&ban) && !state.contains(&rename.0), "resolved with the ban: {state:?}");
    let member = rooms.state_event(&room, &StateEventType::RoomMember, mallory.as_str()).unwrap().unwrap();
    assert_eq!(member.event_id, ban, "mallory stays banned");
    let state = rooms.state_before_event(&rename.0).unwrap().expect("other servers may ask the state at it");
    assert!(!state.contains(&ban));
}

/// The room's state is a resolution, made afresh, of the states at its forward extremities.
fn assert_resolved(rooms: &Rooms, room: &RoomId) {
    let record = rooms.room(room).unwrap().unwrap();
    let mut states = Vec::new();
    for extremity in &record.extremities {
        let snapshot = rooms.dag_state_of(extremity).unwrap().expect("a state at each extremity");
        states.push((*rooms.state.load(snapshot).unwrap()).clone());
    }
    let fresh = rooms.resolve(&record.version, &states, None).unwrap();
    assert!(*rooms.state.load(record.snapshot).unwrap() == fresh, "the room's state is its extremities' resolution");
}

fn counted(rooms: &Rooms) -> (u64, u64) {
    let counts = &rooms.resolutions_counted;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    (load(&counts.computed), load(&counts.cached))
}

/// Resolutions are remembered by the set of states resolved. A message on one fork changes the
/// forward extremities but not the states at them: the room's state stays, nothing is resolved
/// again. A state event on a fork is a new state: resolved once. An event on every fork finds
/// the state before it (the room's state) in the cache. A redacted state event empties it.
#[tokio::test]
async fn a_resolution_is_not_run_again_for_the_same_states() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (room, alice, bob, mallory) = room_with_remote_members(&services).await;
    let base = rooms.room(&room).unwrap().unwrap().extremities;
    let rename = |user: &UserId, name: &str, prev: &[OwnedEventId], state_at: &OwnedEventId| {
        let content = json!({ "membership": "join", "displayname": name });
        remote_event(rooms, &room, user, ("m.room.member", Some(user.as_str()), content), prev, state_at)
    };
    let bob_fork = rename(&bob, "Bob", &base, &base[0]);
    assert_eq!(take(rooms, &room, &bob_fork).await, Accepted::Timeline);
    let mallory_fork = rename(&mallory, "Mallory", &base, &base[0]);
    assert_eq!(take(rooms, &room, &mallory_fork).await, Accepted::Timeline);
    assert_resolved(rooms, &room);

    // (`assert_resolved` runs the algorithm itself: counts are read around each event.)
    let delta = |before: (u64, u64)| {
        let now = counted(rooms);
        (now.0 - before.0, now.1 - before.1)
    };
    let snapshot = rooms.room(&room).unwrap().unwrap().snapshot;
    let text = json!({ "msgtype": "m.text", "body": "sur ma branche" });
    let message = remote_event(
        rooms,
        &room,
        &bob,
        ("m.room.message", None, text),
        std::slice::from_ref(&bob_fork.0),
        &bob_fork.0,
    );
    let before = counted(rooms);
    assert_eq!(take(rooms, &room, &message).await, Accepted::Timeline);
    assert_eq!(delta(before), (0, 1), "a message on a fork resolves nothing");
    assert_eq!(rooms.room(&room).unwrap().unwrap().snapshot, snapshot, "and keeps the room's state");
    assert_resolved(rooms, &room);

    let again = rename(&mallory, "Mallory bis", std::slice::from_ref(&mallory_fork.0), &mallory_fork.0);
    let before = counted(rooms);
    assert_eq!(take(rooms, &room, &again).await, Accepted::Timeline);
    assert_eq!(delta(before), (1, 0), "a new state on a fork is resolved");
    assert_resolved(rooms, &room);

    let key = |ids: &[&OwnedEventId]| {
        let mut key: Vec<u64> = ids.iter().map(|id| rooms.dag_state_of(id).unwrap().unwrap()).collect();
        key.sort_unstable();
        key.dedup();
        key
    };
    let both = key(&[&message.0, &again.0]);
    let text = json!({ "msgtype": "m.text", "body": "sur les deux" });
    let merge = remote_event(
        rooms,
        &room,
        &bob,
        ("m.room.message", None, text),
        &[message.0.clone(), again.0.clone()],
        &message.0,
    );
    let before = counted(rooms);
    assert_eq!(take(rooms, &room, &merge).await, Accepted::Timeline);
    assert_eq!(delta(before), (0, 1), "the state before an event on every fork is known");
    assert_eq!(rooms.room(&room).unwrap().unwrap().extremities, std::slice::from_ref(&merge.0));
    assert_resolved(rooms, &room);

    assert!(rooms.cached_resolution(&both).is_some());
    let redaction = super::NewEvent::redaction(&RoomVersionId::V12, &bob_fork.0, None);
    rooms.append(&room, &alice, redaction, None).await.expect("redaction");
    assert!(rooms.cached_resolution(&both).is_none(), "a redacted state event empties the cache");
}

/// An event none of whose prev events has a state here resolves no state at all: the algorithm
/// gives the empty state for that (a537e1f read the first state unconditionally and a node's
/// worker panicked in the Synapse convergence run).
#[tokio::test]
async fn resolving_no_state_gives_the_empty_state() {
    let (_dir, services) = services().await;
    for version in [RoomVersionId::V10, RoomVersionId::V12] {
        let resolved = services.rooms.resolve(&version, &[], None).expect("resolution of nothing");
        assert!(resolved.is_empty(), "{version}: {resolved:?}");
    }
}

/// A member event written before a profile change (a join through another server, answered after
/// the change) is brought to the current profile once, and only when it differs.
#[tokio::test]
async fn a_member_event_is_brought_to_the_current_profile_once() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let room = rooms.create_room(&alice, CreateRoom::default(), &RoomVersionId::V12).await.expect("room");
    let displayname = |rooms: &Rooms| {
        let member =
            rooms.state_event(&room, &StateEventType::RoomMember, alice.as_str()).expect("read").expect("member");
        let content: Value = serde_json::from_str(member.content.get()).expect("content");
        content["displayname"].as_str().map(str::to_owned)
    };
    assert_eq!(displayname(rooms), Some("alice".to_owned()));
    // The profile changes without touching the room, as when the room was not joined yet.
    services.profiles.set_field(&alice, "displayname", Some(json!("Alice Martin"))).expect("profile");
    rooms.refresh_profile_in(&room, &alice).await.expect("refresh");
    assert_eq!(displayname(rooms), Some("Alice Martin".to_owned()));
    let extremities = rooms.room(&room).expect("read").expect("room").extremities;
    rooms.refresh_profile_in(&room, &alice).await.expect("refresh");
    assert_eq!(
        rooms.room(&room).expect("read").expect("room").extremities,
        extremities,
        "no event for the same profile"
    );
}

/// A state key's short number is read from the store once: a local message looks its auth
/// events' keys up twice (to pick them, then in the auth rules), and those never change.
#[tokio::test]
async fn short_state_keys_are_read_from_the_store_once() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (alice, room) = alice_and_a_room(&services).await;
    let power = rooms.state.short_key(&StateEventType::RoomPowerLevels, "").expect("read").expect("interned");
    let before = services.db.reads();
    for _ in 0..3 {
        let again = rooms.state.short_key(&StateEventType::RoomPowerLevels, "").expect("read");
        assert_eq!(again, Some(power), "the same number");
    }
    let member = rooms.state.short_key(&StateEventType::RoomMember, alice.as_str()).expect("read");
    assert!(member.is_some(), "alice's membership is in the room's state of {room}");
    assert_eq!(services.db.reads() - before, 0, "numbers interned or read once are not read again");
    assert_eq!(
        rooms.state.short_key(&StateEventType::RoomTopic, "none").expect("read"),
        None,
        "a key never used has no number"
    );
}

/// An event of a room no other server is in is stored unsigned and signed on its way out
/// (through the aws-lc signer, whose test shows it signs as ruma's key pair does), each time
/// to the same bytes, which verify with the key the server publishes; an event of a room
/// another server is in is signed once, as it is built, and leaves as stored.
#[tokio::test]
async fn events_are_signed_once_they_leave_for_another_server() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (shared, alice, ..) = room_with_remote_members(&services).await;
    let room = rooms
        .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &RoomVersionId::V12)
        .await
        .expect("room");
    let own = &services.federation.own;
    let mut keys = ruma::signatures::PublicKeyMap::new();
    keys.insert(own.server_name().to_string(), own.public_key_set());
    let rules = RoomVersionId::V12.rules().expect("rules");
    let message = |body: &str| {
        super::NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": body }))
    };
    let parse = |json: Vec<u8>| -> CanonicalJsonObject { serde_json::from_slice(&json).expect("canonical JSON") };

    let before = own.signer().signatures();
    let id = rooms.append(&room, &alice, message("signé plus tard"), None).await.expect("message");
    assert_eq!(own.signer().signatures(), before, "nothing signed for a room of this server alone");
    let stored = parse(rooms.pdu_json(&id).expect("read").expect("stored"));
    assert!(!stored.contains_key("signatures"), "stored unsigned: {stored:?}");
    let out = rooms.pdu_json_for_peers(&id).expect("read").expect("stored");
    assert_eq!(own.signer().signatures() - before, 1, "signed on the way out");
    let leaving = parse(out.clone());
    assert_eq!(
        ruma::signatures::verify_event(&keys, &leaving, &rules).expect("verifies"),
        ruma::signatures::Verified::All,
        "signature and content hash hold"
    );
    let reference = ruma::signatures::reference_hash(&leaving, &rules).expect("reference hash");
    assert_eq!(id.as_str(), format!("${reference}"), "the event id is the reference hash");
    assert_eq!(rooms.pdu_json_for_peers(&id).unwrap().unwrap(), out, "the same bytes each time");
    assert_eq!(own.signer().signatures() - before, 1, "signed once: the signature is kept");
    // Redacted, it leaves with the signature kept, which holds over the redacted form.
    let redaction = super::NewEvent::message(TimelineEventType::RoomRedaction, json!({ "redacts": id }));
    rooms.append(&room, &alice, redaction, None).await.expect("redaction");
    let redacted = parse(rooms.pdu_json_for_peers(&id).unwrap().unwrap());
    assert_eq!(redacted["content"], ruma::CanonicalJsonValue::Object(CanonicalJsonObject::new()), "redacted");
    assert_eq!(
        ruma::signatures::verify_event(&keys, &redacted, &rules).expect("verifies"),
        ruma::signatures::Verified::Signatures,
        "the kept signature holds over the redacted form"
    );
    assert_eq!(own.signer().signatures() - before, 1, "not signed again");

    let before = own.signer().signatures();
    let id = rooms.append(&shared, &alice, message("signé"), None).await.expect("message");
    assert_eq!(own.signer().signatures() - before, 1, "one event built, one signature");
    let stored = rooms.pdu_json(&id).expect("read").expect("stored");
    assert_eq!(
        ruma::signatures::verify_event(&keys, &parse(stored.clone()), &rules).expect("verifies"),
        ruma::signatures::Verified::All,
        "stored signed"
    );
    assert_eq!(rooms.pdu_json_for_peers(&id).unwrap().unwrap(), stored, "it leaves as stored");
    assert_eq!(own.signer().signatures() - before, 1, "and is not signed again");
}

/// The size limit counts the signature an event stored unsigned will carry when it leaves: a
/// server with a long name signs with a long `signatures` object, and an event that fits
/// without it but not with it is refused, not stored to be unsendable later.
#[tokio::test]
async fn the_size_limit_counts_the_signature_an_event_will_carry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    let long = format!("{}.{}.{}.example", "a".repeat(60), "b".repeat(60), "c".repeat(60));
    config.server_name = ruma::OwnedServerName::try_from(long).expect("server name");
    let services = Services::open(config).expect("services");
    let rooms = &services.rooms;
    let (alice, room) = alice_and_a_room(&services).await;
    let sized = |n: usize| {
        super::NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": "x".repeat(n) }))
    };
    let small = rooms.append(&room, &alice, sized(10), None).await.expect("small");
    let unsigned = rooms.pdu_json(&small).unwrap().unwrap().len();
    let signature = rooms.pdu_json_for_peers(&small).unwrap().unwrap().len() - unsigned;
    assert!(signature > 300, "a signature of this server adds {signature} bytes");
    // Stored unsigned, 220 bytes under the limit; signed, over it.
    let body = super::MAX_PDU_BYTES - 220 - unsigned + 10;
    let refused = rooms.append(&room, &alice, sized(body), None).await;
    assert!(matches!(refused, Err(crate::error::Error::TooLarge(_))), "{refused:?}");
    // 600 bytes under: it leaves under the limit.
    let fits = rooms.append(&room, &alice, sized(body - 380), None).await.expect("fits");
    let out = rooms.pdu_json_for_peers(&fits).unwrap().unwrap();
    assert!(out.len() <= super::MAX_PDU_BYTES, "{} bytes once signed", out.len());
}

/// The stream's consumers read a new event from the memory of the writer (no read of the
/// store), and what changes a stored event shows at once: a redaction's redacted form, a
/// purge's absence.
#[tokio::test]
async fn recent_events_are_read_from_memory_and_their_changes_show() {
    let (_dir, services, [alice, ..], room) = crate::services::testing::three_users_and_a_room().await;
    let rooms = &services.rooms;
    let content = json!({ "msgtype": "m.text", "body": "secret" });
    let message = rooms
        .append(&room, &alice, super::NewEvent::message(TimelineEventType::RoomMessage, content), None)
        .await
        .expect("message");
    let reads = services.db.reads();
    let json: Value = serde_json::from_slice(&rooms.pdu_json(&message).unwrap().expect("held")).unwrap();
    assert_eq!(json["content"]["body"], "secret");
    assert!(rooms.meta(&message).unwrap().is_some());
    assert_eq!(services.db.reads(), reads, "both from memory");

    let redaction = super::NewEvent::redaction(&RoomVersionId::V12, &message, None);
    rooms.append(&room, &alice, redaction, None).await.expect("redaction");
    let json: Value = serde_json::from_slice(&rooms.pdu_json(&message).unwrap().expect("held")).unwrap();
    assert_eq!(json["content"], json!({}), "the redacted form");
    assert!(rooms.meta(&message).unwrap().expect("meta").redacted_because.is_some());

    let other = json!({ "msgtype": "m.text", "body": "another" });
    let second = rooms
        .append(&room, &alice, super::NewEvent::message(TimelineEventType::RoomMessage, other), None)
        .await
        .unwrap();
    let third = json!({ "msgtype": "m.text", "body": "the room's latest" });
    let third = rooms
        .append(&room, &alice, super::NewEvent::message(TimelineEventType::RoomMessage, third), None)
        .await
        .unwrap();
    assert!(rooms.pdu_json(&second).unwrap().is_some());
    let before = rooms.meta(&third).unwrap().expect("meta").pos;
    assert!(rooms.purge_history(&room, before, true).await.expect("purge") >= 1);
    assert!(rooms.pdu_json(&second).unwrap().is_none(), "purged");
    assert!(rooms.meta(&second).unwrap().is_none());
}

/// A room's new record is in the cache before its event can be seen. Once the writer has made
/// an event durable it wakes the readers (a sync showing the event); a read of the room's state
/// that follows must not find the previous record, even when the thread that queued the event
/// has not run since: the test's hook stands there, waits until the event is durable, and reads
/// the room's record as such a reader would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_record_is_cached_before_its_event_is_seen() {
    let (_dir, services, [alice, ..], room) = crate::services::testing::three_users_and_a_room().await;
    let rooms = &services.rooms;
    let seen = Arc::new(std::sync::Mutex::new(None));
    let hook = {
        let (services, room, seen) = (services.clone(), room.clone(), seen.clone());
        let mut stream = rooms.subscribe();
        let before = *stream.borrow_and_update();
        let stream = std::sync::Mutex::new(stream);
        move |queued: &RoomId| {
            use crate::db::codec::{prefix, Be64, Codec};
            if *queued != *room {
                return;
            }
            let start = (room.clone(), Be64(before + 1)).encode();
            let table = &services.db.tables.rooms.roomidpos_eventid;
            let mut stream = stream.lock().expect("stream");
            while table.scan_from(prefix(&room), start.clone(), true).next().is_none() {
                let woken = tokio::task::block_in_place(|| futures::executor::block_on(stream.changed()));
                woken.expect("the writer runs");
            }
            *seen.lock().expect("seen") = services.rooms.room(&room).expect("read").map(|r| r.snapshot);
        }
    };
    *rooms.after_queued.lock().expect("hook") = Some(Box::new(hook));
    let topic = super::NewEvent::state(StateEventType::RoomTopic, "", json!({ "topic": "the new topic" }));
    let topic = rooms.append(&room, &alice, topic, None).await.expect("topic");
    *rooms.after_queued.lock().expect("hook") = None;
    let snapshot = rooms.meta(&topic).expect("read").expect("meta").snapshot;
    assert_eq!(*seen.lock().expect("seen"), Some(snapshot), "the room's state as the topic was first seen");
}

/// A non-state event that passed the auth rules against the room's create event, power levels
/// and its sender's membership passes again without them being read; any change of the power
/// levels or of the membership is a new input, checked in full.
#[tokio::test]
async fn a_kept_auth_outcome_follows_the_power_levels_and_the_membership() {
    let (_dir, services, [alice, bob, _], room) = crate::services::testing::three_users_and_a_room().await;
    let rooms = &services.rooms;
    let say = |body: &str| {
        super::NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": body }))
    };
    rooms.append(&room, &bob, say("first"), None).await.expect("bob may talk");
    rooms.append(&room, &bob, say("second"), None).await.expect("and again");

    let mut levels: Value = serde_json::from_str(
        rooms.state_event(&room, &StateEventType::RoomPowerLevels, "").unwrap().expect("power levels").content.get(),
    )
    .unwrap();
    levels["events"]["m.room.message"] = json!(50);
    let muted = super::NewEvent::state(StateEventType::RoomPowerLevels, "", levels.clone());
    rooms.append(&room, &alice, muted, None).await.expect("alice mutes the room");
    let refused = rooms.append(&room, &bob, say("third"), None).await;
    assert!(matches!(refused, Err(crate::error::Error::Forbidden(_))), "{refused:?}");

    levels["users"][bob.as_str()] = json!(50);
    let promoted = super::NewEvent::state(StateEventType::RoomPowerLevels, "", levels);
    rooms.append(&room, &alice, promoted, None).await.expect("alice promotes bob");
    rooms.append(&room, &bob, say("fourth"), None).await.expect("bob may talk again");

    rooms.set_membership(&room, &bob, &bob, "leave", None, Default::default()).await.expect("bob leaves");
    let refused = rooms.append(&room, &bob, say("fifth"), None).await;
    assert!(matches!(refused, Err(crate::error::Error::Forbidden(_))), "{refused:?}");
}

/// Another public room of alice's, which mallory (of another server) joins and where she holds
/// power level 100: a room where she may redact (in `room_with_remote_members`' room she may not).
pub(crate) async fn a_room_where_mallory_redacts(services: &Services, alice: &UserId, mallory: &UserId) -> OwnedRoomId {
    let rooms = &services.rooms;
    let request = CreateRoom { public: true, ..Default::default() };
    let own = rooms.create_room(alice, request, &RoomVersionId::V12).await.expect("room");
    join_remote(rooms, &own, mallory).await;
    let mut levels: Value = serde_json::from_str(
        rooms.state_event(&own, &StateEventType::RoomPowerLevels, "").unwrap().expect("power levels").content.get(),
    )
    .unwrap();
    levels["users"][mallory.as_str()] = json!(100);
    let promoted = super::NewEvent::state(StateEventType::RoomPowerLevels, "", levels);
    rooms.append(&own, alice, promoted, None).await.expect("alice promotes mallory");
    own
}

/// A redaction from another server, from its user's own room where she may redact, naming
/// an event of ours elsewhere, and one in that event's room from a member without the power to
/// redact: both pass the auth rules (which leave redactions to the server) and are kept, and
/// neither touches the event — as Synapse ignores them.
#[tokio::test]
async fn a_redaction_redacts_only_in_its_own_room_with_the_power_to() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (room, alice, bob, mallory) = room_with_remote_members(&services).await;
    let own = a_room_where_mallory_redacts(&services, &alice, &mallory).await;
    let text = json!({ "msgtype": "m.text", "body": "Ordre du jour" });
    let message =
        rooms.append(&room, &alice, super::NewEvent::message(TimelineEventType::RoomMessage, text), None).await;
    let message = message.expect("alice talks");

    let redacts = json!({ "redacts": message });
    for (user, at) in [(&mallory, &own), (&bob, &room)] {
        let prev = rooms.room(at).expect("read").expect("room").extremities;
        let redaction = remote_event(rooms, at, user, ("m.room.redaction", None, redacts.clone()), &prev, &prev[0]);
        assert_eq!(take(rooms, at, &redaction).await, Accepted::Timeline, "{user} in {at}");
        assert!(rooms.meta(&redaction.0).unwrap().is_some(), "the redaction is kept");
        assert!(rooms.meta(&message).unwrap().expect("meta").redacted_because.is_none(), "{user} in {at}");
        let json: Value = serde_json::from_slice(&rooms.pdu_json(&message).unwrap().expect("held")).unwrap();
        assert_eq!(json["content"]["body"], "Ordre du jour", "{user} in {at}");
        assert!(rooms.redacted_target(at.as_str(), &message).unwrap().is_none());
    }

    let mine = rooms.append(&room, &alice, super::NewEvent::redaction(&RoomVersionId::V12, &message, None), None).await;
    mine.expect("alice redacts her own message");
    assert!(rooms.redacted_target(room.as_str(), &message).unwrap().is_some(), "her own redaction takes effect");
}

/// The client event as JSON text (appservice transactions) says what the client event as a
/// value says, for a message, a state event replacing another, a redacted event and the
/// redaction, and the events of a remote server.
#[tokio::test]
async fn a_client_event_as_text_is_the_client_event() {
    let (_dir, services) = services().await;
    let rooms = &services.rooms;
    let (room, alice, _, _) = room_with_remote_members(&services).await;
    let text = json!({ "msgtype": "m.text", "body": "« Ordre du jour »\n" });
    let message = super::NewEvent::message(TimelineEventType::RoomMessage, text);
    let message = rooms.append(&room, &alice, message, None).await.expect("message");
    let name = super::NewEvent::state(StateEventType::RoomName, "", json!({ "name": "Conseil" }));
    rooms.append(&room, &alice, name, None).await.expect("name");
    let name = super::NewEvent::state(StateEventType::RoomName, "", json!({ "name": "Conseil restreint" }));
    rooms.append(&room, &alice, name, None).await.expect("renamed");
    rooms
        .append(&room, &alice, super::NewEvent::redaction(&RoomVersionId::V12, &message, None), None)
        .await
        .expect("redact");

    let without_age = |mut event: Value| {
        assert!(event["unsigned"]["age"].is_u64(), "{event}");
        event["unsigned"].as_object_mut().expect("unsigned").remove("age");
        event
    };
    let mut seen = 0;
    for entry in services.db.tables.rooms.roomidpos_eventid.scan_prefix(crate::db::codec::prefix(&room)) {
        let (_, id) = entry.expect("read");
        let value = rooms.client_event(&id).unwrap().expect("held");
        let text = rooms.client_event_json(&id).unwrap().expect("held");
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(without_age(parsed), without_age(value), "{id}");
        seen += 1;
    }
    assert!(seen >= 8, "the whole room: {seen}");
    let redacted: Value = serde_json::from_str(&rooms.client_event_json(&message).unwrap().unwrap()).unwrap();
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    assert!(redacted["unsigned"]["redacted_because"]["event_id"].is_string(), "{redacted}");
}
