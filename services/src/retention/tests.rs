//! Each kind of record is kept for its retention, then dropped by a run of the pruning task, in
//! writes of at most `retention.batch` records (2 here, so every kind needs several). "Now" is
//! the run's parameter: the tests move it forwards instead of waiting.

use std::{sync::Arc, time::Duration};

use ruma::{events::TimelineEventType, OwnedDeviceId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::json;

use super::{prune, Pruned};
use crate::{
    config::{Config, HumanDuration},
    db::{codec::Be64, Batch},
    rooms::{create::CreateRoom, NewEvent, TxnKey},
    services::Services,
};

const HOUR_MS: u64 = 3_600_000;

async fn services() -> (tempfile::TempDir, Arc<Services>) {
    services_with(|_| {}).await
}

/// Every retention an hour, except `client_transactions` (the default, a day) unless `more`
/// changes it.
async fn services_with(more: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<Services>) {
    crate::services::testing::open(|config| {
        let hour = HumanDuration(Duration::from_millis(HOUR_MS));
        config.retention.federation_transactions = hour;
        config.retention.device_list_changes = hour;
        config.retention.departed_devices = hour;
        config.retention.batch = 2;
        more(config);
    })
}

async fn device(services: &Services, user: &UserId, id: Option<&str>) -> OwnedDeviceId {
    let id = id.map(OwnedDeviceId::from);
    services.users.login(user, id, None, None, None).await.expect("login").device_id
}

#[tokio::test]
async fn received_transaction_ids_go_after_their_retention() {
    let (_dir, services) = services().await;
    let origin = ruma::OwnedServerName::try_from("remote.example").expect("server name");
    for txn in ["t1", "t2", "t3"] {
        crate::federation::receive::transaction(&services, &origin, txn, &[], &[]).await.expect("transaction");
    }
    let kept = || services.db.tables.federation.origintxn_done.iter().count();
    assert_eq!(kept(), 3);
    let now = crate::time::now_ms();
    assert_eq!(prune(&services, now).await.expect("prune").federation_transactions, 0, "younger than an hour");
    assert_eq!(kept(), 3);
    let later = prune(&services, now + HOUR_MS + 1).await.expect("prune");
    assert_eq!(later.federation_transactions, 3, "in two writes of at most 2");
    assert_eq!(kept(), 0);
    assert_eq!(services.db.tables.federation.receivedseq_origintxn.iter().count(), 0);
}

/// Device list changes older than the retention go once the federation dispatcher has passed
/// them; a sync token from before what was dropped then hears that every member of its rooms
/// changed, while a token after it hears of nothing.
#[tokio::test]
async fn device_list_changes_go_after_their_retention_and_old_tokens_hear_of_everyone() {
    let (_dir, services) = services().await;
    let ([alice, bob, _], _) = crate::services::testing::three_users_in(&services).await;
    let laptop = device(&services, &alice, None).await;
    let head = || *services.rooms.subscribe().borrow();
    let since = head();
    services.users.remove_device(&alice, &laptop).await.expect("logout");
    let until = head();
    let changed = |since: u64| -> Vec<OwnedUserId> {
        services.keys.device_list_changes(&services.rooms, &bob, since, until).expect("changes").changed
    };
    assert_eq!(changed(since), vec![alice.clone()], "the logout is on the device list stream");
    let on_stream =
        || services.db.tables.keys.pos_keychange.iter().filter(|e| e.as_ref().unwrap().0 .0 > since).count();
    assert_eq!(on_stream(), 1);

    let t0 = crate::time::now_ms();
    assert_eq!(prune(&services, t0).await.expect("prune").device_list_changes, 0);
    assert_eq!(
        prune(&services, t0 + HOUR_MS + 1).await.expect("prune").device_list_changes,
        0,
        "not before the federation dispatcher has announced it"
    );
    assert_eq!(on_stream(), 1);
    let mut batch = Batch::new();
    services.db.tables.meta.insert(&mut batch, &crate::federation::sender::DISPATCHED.to_owned(), &Be64(until));
    services.db.commit(batch).expect("dispatched");
    assert!(prune(&services, t0 + HOUR_MS + 2).await.expect("prune").device_list_changes >= 1);
    assert_eq!(on_stream(), 0, "dropped");
    assert!(changed(since).contains(&alice), "a token from before the pruned part hears of every member");
    assert!(changed(until).is_empty(), "a token after it hears of nothing");
}

/// A removed device's client transaction ids (messages and to-device sends) go after the
/// retention, those of the user's other devices stay; a device back under the same id keeps
/// its own.
#[tokio::test]
async fn what_removed_devices_leave_goes_after_their_retention() {
    let (_dir, services) = services().await;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let room = services
        .rooms
        .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &ruma::RoomVersionId::V12)
        .await
        .expect("room");
    let (laptop, phone) = (device(&services, &alice, None).await, device(&services, &alice, Some("PHONE")).await);
    let mut sent = Vec::new();
    for (device, txn) in [(&laptop, "l1"), (&laptop, "l2"), (&phone, "p1")] {
        let key = TxnKey { user: alice.clone(), device: device.clone(), txn_id: txn.to_owned(), scope: String::new() };
        let message = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": txn }));
        sent.push(services.rooms.append(&room, &alice, message, Some(key.clone())).await.expect("send"));
        services.to_device.send(&alice, device, txn, Vec::new()).await.expect("to-device");
    }
    let tables = &services.db.tables;
    let held = |device: &OwnedDeviceId, txn: &str| {
        let key = (alice.clone(), device.clone(), txn.to_owned());
        (
            tables
                .rooms
                .useriddevicetxn_eventid
                .get(&(key.0.clone(), key.1.clone(), format!("0:{txn}")))
                .unwrap()
                .is_some(),
            tables.ephemeral.useriddevicetxn_todevice.contains(&key).unwrap(),
        )
    };
    services.users.remove_device(&alice, &laptop).await.expect("logout");
    let t0 = crate::time::now_ms();
    assert_eq!(prune(&services, t0).await.expect("prune").departed_device_records, 0);
    assert_eq!(held(&laptop, "l1"), (true, true), "kept for the retention");

    let later = prune(&services, t0 + HOUR_MS + 1).await.expect("prune");
    assert_eq!((later.departed_device_records, later.departed_devices), (4, 1), "{later:?}");
    assert_eq!((held(&laptop, "l1"), held(&laptop, "l2")), ((false, false), (false, false)));
    assert!(tables.rooms.eventid_devicetxn.get(&sent[0]).unwrap().is_none());
    assert_eq!(held(&phone, "p1"), (true, true), "another device's ids stay");
    assert!(tables.rooms.eventid_devicetxn.get(&sent[2]).unwrap().is_some());
    assert_eq!(tables.users.userdeviceid_departed.iter().count(), 0, "nothing left to do");

    // Back under the same id before the run: its ids are its own again.
    services.users.remove_device(&alice, &phone).await.expect("logout");
    device(&services, &alice, Some("PHONE")).await;
    let again = prune(&services, t0 + 3 * HOUR_MS).await.expect("prune");
    assert_eq!(again, Pruned { departed_devices: 1, ..Default::default() });
    assert_eq!(held(&phone, "p1"), (true, true));
}

/// Client transaction ids of a device still signed in (a message and a to-device send) go
/// after `retention.client_transactions`, those recorded after the checkpoint that covers the
/// old ones stay; once gone, the same transaction id makes a new event. Ids recorded before
/// their index existed are filed in it by the first run and go too.
#[tokio::test]
async fn client_transaction_ids_of_devices_still_signed_in_go_after_their_retention() {
    let (_dir, services) =
        services_with(|config| config.retention.client_transactions = HumanDuration(Duration::from_millis(HOUR_MS)))
            .await;
    let tables = &services.db.tables;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let room = services
        .rooms
        .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &ruma::RoomVersionId::V12)
        .await
        .expect("room");
    let laptop = device(&services, &alice, None).await;
    let send = |txn: &'static str| {
        let (services, alice, room, laptop) = (services.clone(), alice.clone(), room.clone(), laptop.clone());
        async move {
            let key =
                TxnKey { user: alice.clone(), device: laptop.clone(), txn_id: txn.to_owned(), scope: String::new() };
            let message =
                NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": txn }));
            let event = services.rooms.append(&room, &alice, message, Some(key)).await.expect("send");
            services.to_device.send(&alice, &laptop, txn, Vec::new()).await.expect("to-device");
            event
        }
    };
    let held = |txn: &str| {
        let key = (alice.clone(), laptop.clone(), txn.to_owned());
        (
            tables
                .rooms
                .useriddevicetxn_eventid
                .get(&(key.0.clone(), key.1.clone(), format!("0:{txn}")))
                .unwrap()
                .is_some(),
            tables.ephemeral.useriddevicetxn_todevice.contains(&key).unwrap(),
        )
    };
    // An id from before the index existed: in the table, not in the index; the first run files it.
    let legacy = (alice.clone(), laptop.clone(), "legacy".to_owned());
    let mut batch = Batch::new();
    tables.ephemeral.useriddevicetxn_todevice.insert(&mut batch, &legacy, &Vec::new());
    services.db.commit(batch).expect("legacy id");
    let t0 = crate::time::now_ms();
    assert_eq!(prune(&services, t0).await.expect("prune").client_transactions, 0, "younger than an hour");
    assert_eq!(held("legacy"), (false, true));

    let old = send("old").await;
    assert_eq!(prune(&services, t0 + 10).await.expect("prune").client_transactions, 0, "younger than an hour");
    assert_eq!(held("old"), (true, true));
    let young = send("young").await;
    let later = prune(&services, t0 + HOUR_MS + 20).await.expect("prune");
    assert_eq!(later.client_transactions, 3, "the message's id, the to-device id and the older id: {later:?}");
    assert_eq!((held("old"), held("legacy")), ((false, false), (false, false)));
    assert!(tables.rooms.eventid_devicetxn.get(&old).unwrap().is_none());
    assert_eq!(held("young"), (true, true), "recorded after the checkpoint that covers the others");
    assert!(tables.rooms.eventid_devicetxn.get(&young).unwrap().is_some());
    assert_eq!(tables.retention.pos_eventtxn.iter().count(), 1);
    assert_eq!(tables.retention.pos_todevicetxn.iter().count(), 1);
    assert_ne!(send("old").await, old, "a forgotten id makes a new event");
    assert_eq!(send("young").await, young, "a kept id still answers with its event");
}

/// The notification index of earlier releases, which nothing reads any more, is emptied batch
/// by batch.
#[tokio::test]
async fn the_notification_index_of_earlier_releases_goes() {
    let (_dir, services) = services().await;
    let ([alice, _, _], room) = crate::services::testing::three_users_in(&services).await;
    let table = &services.db.tables.push.useridpos_notification;
    let mut batch = crate::db::Batch::new();
    for pos in 0..5u64 {
        table.insert(&mut batch, &(alice.clone(), crate::db::codec::Be64(pos)), &room);
    }
    services.db.commit(batch).expect("write");
    let pruned = prune(&services, crate::time::now_ms()).await.expect("prune");
    assert_eq!(pruned.legacy_notification_index, 5, "in three writes of at most 2");
    assert_eq!(table.iter().count(), 0);
}

/// A text message from `sender`.
async fn say(services: &Services, room: &RoomId, sender: &UserId, content: serde_json::Value) -> OwnedEventId {
    let event = NewEvent::message(TimelineEventType::RoomMessage, content);
    services.rooms.append(room, sender, event, None).await.expect("message")
}

/// What [`notifying`] sent: messages, a mention of Bob, and two replies in the first message's
/// thread.
struct Sent {
    messages: Vec<OwnedEventId>,
    mention: OwnedEventId,
    in_thread: [OwnedEventId; 2],
}

/// Alice sends `before` messages, a mention of Bob, two replies in the first message's thread,
/// then `after` more messages; the push rules of every member are evaluated.
async fn notifying(
    services: &Services,
    room: &RoomId,
    [alice, bob]: [&UserId; 2],
    before: usize,
    after: usize,
) -> Sent {
    let text = |n: usize| json!({ "msgtype": "m.text", "body": format!("message {n}") });
    let mut messages = Vec::new();
    for n in 0..before {
        messages.push(say(services, room, alice, text(n)).await);
    }
    let mention = json!({ "msgtype": "m.text", "body": "bob!", "m.mentions": { "user_ids": [bob] } });
    let mention = say(services, room, alice, mention).await;
    let reply = json!({
        "msgtype": "m.text",
        "body": "in the thread",
        "m.relates_to": { "rel_type": "m.thread", "event_id": messages[0] },
    });
    let in_thread = [say(services, room, alice, reply.clone()).await, say(services, room, alice, reply).await];
    for n in before..before + after {
        messages.push(say(services, room, alice, text(n)).await);
    }
    crate::push::evaluate::evaluate_all(services).await;
    Sent { messages, mention, in_thread }
}

/// `user`'s read receipt at `event`: unthreaded, or in `thread` (`"main"` or a thread root).
async fn read_up_to(services: &Services, room: &RoomId, user: &UserId, event: &OwnedEventId, thread: Option<&str>) {
    use crate::ephemeral::receipts::Receipt;
    let thread_id = thread.map(str::to_owned);
    let receipt =
        Receipt { user: user.to_owned(), receipt_type: "m.read".into(), event_id: event.clone(), thread_id, ts: 1 };
    services.receipts.set(room, receipt).await.expect("receipt")
}

/// A user's notification records of what they have read go, except the newest at or before
/// their receipt (the totals the unread counts subtract), highlights, and thread replies still
/// unread in their thread; the counts read the same before and after, and a receipt sent back
/// to an earlier event is ignored, so it cannot reach records that went.
#[tokio::test]
async fn notifications_a_user_has_read_go_and_the_counts_stay() {
    let (_dir, services) = services().await;
    let ([alice, bob, _], room) = crate::services::testing::three_users_in(&services).await;
    let Sent { messages, mention, in_thread } = notifying(&services, &room, [&alice, &bob], 4, 4).await;
    let unread = || crate::push::evaluate::unread(&services, &room, &bob).expect("counts");
    let records = || {
        let prefix = crate::db::codec::prefix2(&bob, &room);
        services.db.tables.push.useridroomidpos_notification.scan_prefix(prefix).count()
    };
    let thread_records = || services.db.tables.push.useridroomidthreadpos_notifytotal.iter().count();
    assert_eq!((records(), thread_records()), (11, 2));

    // The main timeline read up to the sixth message (after the mention and the replies).
    read_up_to(&services, &room, &bob, &messages[5], Some("main")).await;
    let before = unread();
    assert_eq!(before.main, (2, 0));
    assert_eq!(before.threads, vec![(messages[0].to_string(), (2, 0))]);
    let pruned = prune(&services, crate::time::now_ms()).await.expect("prune");
    assert_eq!(pruned.notifications, 5, "messages 0 – 4; the mention, the replies and message 5 stay");
    assert_eq!(records(), 6);
    assert_eq!(unread(), before);

    // The thread read: its replies' records go, but for the newest total of the thread.
    read_up_to(&services, &room, &bob, &in_thread[1], Some(messages[0].as_str())).await;
    let before = unread();
    assert_eq!(before.threads, vec![]);
    assert_eq!(prune(&services, crate::time::now_ms()).await.expect("prune").notifications, 3);
    assert_eq!((records(), thread_records()), (4, 1), "the mention, message 5 and those after");
    assert_eq!(unread(), before);

    // Back to an earlier event: ignored (the counts would need the records that went).
    read_up_to(&services, &room, &bob, &messages[1], Some("main")).await;
    assert_eq!(unread().main, (2, 0));
    read_up_to(&services, &room, &bob, &messages[7], None).await;
    assert_eq!(unread().total(), (0, 0));
    assert_eq!(prune(&services, crate::time::now_ms()).await.expect("prune").notifications, 2);
    assert_eq!(records(), 2, "the mention and the newest read");
    let listed = crate::push::notifications(&services, &bob, None, 10, true).expect("highlights");
    assert_eq!(listed.iter().map(|n| n.event["event_id"].as_str().unwrap()).collect::<Vec<_>>(), [mention.as_str()]);
    assert_eq!(unread().total(), (0, 0));
}

/// Records older than `retention.notifications` go whether read or not, and highlights after
/// `retention.highlights`; the unread counts of whoever had not read them stay exact (the fold
/// keeps the totals at their receipt), and a later receipt into what went counts only what is
/// left after it, as Synapse does.
#[tokio::test]
async fn old_notifications_go_and_the_counts_of_who_never_read_them_stay() {
    let (_dir, services) = services_with(|config| {
        config.retention.notifications = HumanDuration(Duration::from_millis(HOUR_MS));
        config.retention.highlights = HumanDuration(Duration::from_millis(3 * HOUR_MS));
    })
    .await;
    let ([alice, bob, carol], room) = crate::services::testing::three_users_in(&services).await;
    services.rooms.join(&room, &carol, None).await.expect("join");
    let Sent { mut messages, mention, in_thread } = notifying(&services, &room, [&alice, &bob], 3, 0).await;
    let unread = |user: &UserId| crate::push::evaluate::unread(&services, &room, user).expect("counts");
    let records = |user: &UserId| {
        let prefix = crate::db::codec::prefix2(&user.to_owned(), &room);
        services.db.tables.push.useridroomidpos_notification.scan_prefix(prefix).count()
    };
    let folds = || services.db.tables.push.useridroomidthread_notifyfold.iter().count();

    // Bob reads the first message of the main timeline and the first reply of the thread;
    // nothing is old yet.
    read_up_to(&services, &room, &bob, &messages[0], Some("main")).await;
    read_up_to(&services, &room, &bob, &in_thread[0], Some(messages[0].as_str())).await;
    let t0 = crate::time::now_ms();
    assert_eq!(prune(&services, t0).await.expect("prune").notifications, 0);
    assert_eq!(records(&bob), 6, "the first message read is the newest at the receipt");
    for n in 3..5 {
        let text = json!({ "msgtype": "m.text", "body": format!("message {n}") });
        messages.push(say(&services, &room, &alice, text).await);
    }
    crate::push::evaluate::evaluate_all(&services).await;
    let (bob_before, carol_before) = (unread(&bob), unread(&carol));
    assert_eq!(bob_before.main, (5, 1));
    assert_eq!(bob_before.threads, vec![(messages[0].to_string(), (1, 0))]);
    assert_eq!(carol_before.total(), (8, 0));

    // Two hours on: what was there at t0 is old but the newest record of then (the second reply)
    // and the mention (a highlight, kept three hours). Bob's and Carol's counts are the same.
    let pruned = prune(&services, t0 + 2 * HOUR_MS).await.expect("prune");
    // Bob: messages 0 – 2 and the first reply, and its thread total; Carol: the same and the
    // mention (no highlight for her).
    assert_eq!(pruned.notifications, (4 + 1) + (5 + 1));
    assert_eq!(records(&bob), 4, "the mention, the second reply, messages 3 and 4");
    assert_eq!(records(&carol), 3);
    assert_eq!(folds(), 4, "the main timeline and the thread, for Bob and Carol");
    assert_eq!((unread(&bob), unread(&carol)), (bob_before.clone(), carol_before.clone()));
    let listed = crate::push::notifications(&services, &bob, None, 10, false).expect("list");
    let listed: Vec<_> = listed.iter().map(|n| n.event["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, [&messages[4], &messages[3], &in_thread[1], &mention].map(|e| e.to_string()));
    // Nothing more to drop: the folds stay as they are.
    assert_eq!(prune(&services, t0 + 2 * HOUR_MS).await.expect("prune").notifications, 0);
    assert_eq!((unread(&bob), unread(&carol)), (bob_before, carol_before.clone()));

    // A receipt into what went counts what is left after it (the messages since).
    read_up_to(&services, &room, &bob, &messages[1], Some("main")).await;
    assert_eq!(unread(&bob).main, (2, 0));
    assert_eq!(prune(&services, t0 + 2 * HOUR_MS).await.expect("prune").notifications, 0);
    assert_eq!(unread(&bob).main, (2, 0), "the same once folded again at that receipt");

    // Read to the end, four hours on: the folds go with the records read, and the mention, older
    // than the highlights' retention, goes too.
    read_up_to(&services, &room, &bob, &messages[4], None).await;
    let pruned = prune(&services, t0 + 4 * HOUR_MS).await.expect("prune");
    // Bob's two folds, the mention, the second reply and message 3; Carol's second reply and
    // message 3 (her main timeline folded at message 4 now).
    assert_eq!(pruned.notifications, (2 + 3) + 2);
    assert_eq!((records(&bob), records(&carol)), (1, 1));
    assert_eq!(unread(&bob).total(), (0, 0));
    assert_eq!(folds(), 2, "Carol's");
    assert_eq!(unread(&carol), carol_before);
}
