//! The stream's wake-ups: a write wakes the syncs of the users it concerns, and only those.

use futures::FutureExt;

use hemicycle::{
    config::Config,
    rooms::{create::CreateRoom, NewEvent},
    services::Services,
};
use ruma::events::TimelineEventType;
use serde_json::json;

#[tokio::test]
async fn a_message_wakes_only_its_rooms_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    let services = Services::open(config).unwrap();
    let alice = services.users.create("alice", None, false).await.unwrap();
    let bob = services.users.create("bob", None, false).await.unwrap();
    let carol = services.users.create("carol", None, false).await.unwrap();
    let rooms = &services.rooms;
    let room = rooms.create_room(&alice, CreateRoom::default(), &ruma::RoomVersionId::V12).await.unwrap();
    rooms.set_membership(&room, &alice, &bob, "invite", None, Default::default()).await.unwrap();
    rooms.join(&room, &bob, None).await.unwrap();

    let position = rooms.subscribe();
    let before = *position.borrow();
    let (bob_notify, carol_notify) = (rooms.notifier().subscribe(&bob), rooms.notifier().subscribe(&carol));
    let bob_woken = bob_notify.notified();
    let carol_woken = carol_notify.notified();
    tokio::pin!(bob_woken, carol_woken);
    bob_woken.as_mut().enable();
    carol_woken.as_mut().enable();

    let message = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": "hi" }));
    rooms.append(&room, &alice, message, None).await.unwrap();

    // The writer wakes a write's audience before it acknowledges the write: once `append`
    // returns, every wake-up it causes has happened, so polling once tells, without a timeout.
    assert!(*position.borrow() > before, "the durable position advanced before the send returned");
    assert!(bob_woken.now_or_never().is_some(), "bob, a member, is woken");
    assert!(carol_woken.now_or_never().is_none(), "carol shares no room: her sync sleeps on");
}
