//! The indexer's guarantees, checked on notifications, never on a clock: it commits by itself
//! with no search asking (the timer behind "searchable within a second"), and a search waits for
//! it to reach the stream head it starts at, so it sees every event acknowledged before it.

use std::{sync::Arc, time::Duration};

use ruma::{events::TimelineEventType, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::json;

use super::{Ordering, SearchQuery};
use crate::{
    config::Config,
    rooms::{create::CreateRoom, NewEvent},
    services::Services,
};

/// Only a guard, so that a broken indexer fails the test instead of hanging it: nothing here
/// is expected to take more than a fraction of it.
const GUARD: Duration = Duration::from_secs(60);

async fn room_with_indexer() -> (tempfile::TempDir, Arc<Services>, OwnedUserId, OwnedRoomId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    let services = Services::open(config).expect("services");
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let room = services
        .rooms
        .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &RoomVersionId::V12)
        .await
        .expect("room");
    super::start(services.clone());
    (dir, services, alice, room)
}

async fn say(services: &Services, room: &OwnedRoomId, user: &OwnedUserId, body: &str) {
    let message = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": body }));
    services.rooms.append(room, user, message, None).await.expect("send");
}

/// A search of `term` in the message bodies of `room`, newest first.
fn query(room: &OwnedRoomId, term: &str) -> SearchQuery {
    SearchQuery {
        term: term.to_owned(),
        keys: vec!["content.body"],
        rooms: vec![room.clone()],
        senders: None,
        not_senders: Vec::new(),
        order: Ordering::Recent,
        limit: 10,
        next_batch: None,
    }
}

fn found(services: &Services, user: &OwnedUserId, room: &OwnedRoomId, term: &str) -> Vec<String> {
    let results = services.search.search(services, user, &query(room, term), &|_| true).expect("search");
    results.hits.iter().map(|h| h.event["content"]["body"].as_str().unwrap_or_default().to_owned()).collect()
}

/// With no search waiting, the indexer still commits what it holds (a second after the last
/// event, at most once a second under a steady stream): its published position reaches the head
/// and the event is then found by a search that does not wait at all.
#[tokio::test]
async fn the_indexer_commits_what_it_holds_with_no_search_asking() {
    let (_dir, services, alice, room) = room_with_indexer().await;
    say(&services, &room, &alice, "Réunion budgétaire jeudi").await;
    let head = *services.rooms.subscribe().borrow();
    let mut indexed = services.search.indexed.subscribe();
    tokio::time::timeout(GUARD, indexed.wait_for(|done| *done >= head))
        .await
        .expect("the indexer committed by itself")
        .expect("indexer alive");
    assert_eq!(found(&services, &alice, &room, "budgetaire"), vec!["Réunion budgétaire jeudi"]);
}

/// A search started after an event was acknowledged finds it, whatever the indexer's timer:
/// the search asks for a commit and waits for the indexer's position to reach the head.
#[tokio::test]
async fn a_search_sees_every_event_acknowledged_before_it() {
    let (_dir, services, alice, room) = room_with_indexer().await;
    for n in 0..5 {
        let body = format!("Ordre du jour numéro{n}");
        say(&services, &room, &alice, &body).await;
        let head = *services.rooms.subscribe().borrow();
        tokio::time::timeout(GUARD, services.search.caught_up(head, crate::db::STREAM_BASE)).await.expect("caught up");
        assert_eq!(found(&services, &alice, &room, &format!("numéro{n}")), vec![body]);
    }
}

/// How many documents of the index hold `term`, whatever the reader may see: a redacted event
/// must leave the index itself, not only be filtered out when read back.
fn indexed_count(services: &Services, user: &OwnedUserId, room: &OwnedRoomId, term: &str) -> u64 {
    services.search.search(services, user, &query(room, term), &|_| true).expect("search").count
}

/// A redaction deletes its target's document from the index (by the target's position): the
/// count of matching documents falls to zero, and an unrelated message stays.
#[tokio::test]
async fn a_redaction_removes_its_target_from_the_index() {
    let (_dir, services, alice, room) = room_with_indexer().await;
    let first = NewEvent::message(
        TimelineEventType::RoomMessage,
        json!({ "msgtype": "m.text", "body": "Conseil restreint mardi" }),
    );
    let target = services.rooms.append(&room, &alice, first, None).await.expect("send");
    say(&services, &room, &alice, "Conseil élargi mercredi").await;
    let head = *services.rooms.subscribe().borrow();
    tokio::time::timeout(GUARD, services.search.caught_up(head, crate::db::STREAM_BASE)).await.expect("caught up");
    assert_eq!(indexed_count(&services, &alice, &room, "conseil"), 2);
    let version = services.rooms.room(&room).expect("room").expect("record").version;
    services.rooms.append(&room, &alice, NewEvent::redaction(&version, &target, None), None).await.expect("redact");
    let head = *services.rooms.subscribe().borrow();
    tokio::time::timeout(GUARD, services.search.caught_up(head, crate::db::STREAM_BASE)).await.expect("caught up");
    assert_eq!(indexed_count(&services, &alice, &room, "conseil"), 1);
    assert_eq!(found(&services, &alice, &room, "conseil"), vec!["Conseil élargi mercredi"]);
}

/// Any member's server may send a redaction naming any event id: one from another room, or from
/// a member without the power to redact, is stored but redacts nothing, and the event stays
/// found.
#[tokio::test]
async fn a_redaction_that_redacts_nothing_leaves_its_target_found() {
    use crate::rooms::tests::{a_room_where_mallory_redacts, remote_event, room_with_remote_members, take};
    let (_dir, services) = crate::rooms::tests::services().await;
    let rooms = &services.rooms;
    let (room, alice, bob, mallory) = room_with_remote_members(&services).await;
    let own = a_room_where_mallory_redacts(&services, &alice, &mallory).await;
    super::start(services.clone());
    let text = json!({ "msgtype": "m.text", "body": "Conseil restreint mardi" });
    let message = rooms.append(&room, &alice, NewEvent::message(TimelineEventType::RoomMessage, text), None).await;
    let message = message.expect("send");

    for (user, at) in [(&mallory, &own), (&bob, &room)] {
        let prev = rooms.room(at).expect("read").expect("room").extremities;
        let content = json!({ "redacts": message });
        let redaction = remote_event(rooms, at, user, ("m.room.redaction", None, content), &prev, &prev[0]);
        take(rooms, at, &redaction).await;
        let head = *rooms.subscribe().borrow();
        tokio::time::timeout(GUARD, services.search.caught_up(head, crate::db::STREAM_BASE)).await.expect("caught up");
        assert_eq!(found(&services, &alice, &room, "conseil"), vec!["Conseil restreint mardi"], "{user} in {at}");
    }
}
