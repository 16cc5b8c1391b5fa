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

async fn services() -> (tempfile::TempDir, Arc<Services>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    (dir, Services::open(config).expect("services"))
}

/// A PDU of a remote user, on top of `prev`, with the auth events the room version selects from
/// the state after `state_at` (its branch's state, whatever the room's current state); its id is
/// its reference hash.
fn remote_event(
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

async fn take(rooms: &Rooms, room: &RoomId, (id, object): &(OwnedEventId, CanonicalJsonObject)) -> Accepted {
    rooms.append_remote(room, id, object, None).await.unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// A public room of a local admin with two members of `remote.example`, bob and mallory.
async fn room_with_remote_members(services: &Services) -> (OwnedRoomId, OwnedUserId, OwnedUserId, OwnedUserId) {
    let rooms = &services.rooms;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let request = CreateRoom { public: true, ..Default::default() };
    let room = rooms.create_room(&alice, request, &RoomVersionId::V12).await.expect("room");
    let bob = OwnedUserId::try_from("@bob:remote.example").expect("user id");
    let mallory = OwnedUserId::try_from("@mallory:remote.example").expect("user id");
    for user in [&bob, &mallory] {
        let prev = rooms.room(&room).expect("read").expect("room").extremities;
        let join = remote_event(
            rooms,
            &room,
            user,
            ("m.room.member", Some(user.as_str()), json!({ "membership": "join" })),
            &prev,
            &prev[0],
        );
        assert_eq!(take(rooms, &room, &join).await, Accepted::Timeline);
    }
    (room, alice, bob, mallory)
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
