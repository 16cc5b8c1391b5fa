//! `/sync` as matrix-sdk and raw clients see it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use matrix_sdk::{
    config::SyncSettings,
    ruma::events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
    RoomState,
};
use serde_json::{json, Value};

use crate::common::{urlencode, TestServer};

async fn get(server: &TestServer, token: &str, path: &str) -> Value {
    let response = server.http().get(format!("{}{}", server.url, path)).bearer_auth(token).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

async fn put(server: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let response =
        server.http().put(format!("{}{}", server.url, path)).bearer_auth(token).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

async fn post(server: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let response =
        server.http().post(format!("{}{}", server.url, path)).bearer_auth(token).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

/// Creates a room with `body` and returns its id.
async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    post(server, token, "/_matrix/client/v3/createRoom", body).await["room_id"].as_str().unwrap().to_owned()
}

fn bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn matrix_sdk_clients_invite_join_and_chat_through_sync() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    request.name = Some("Bureau".into());
    let room_id = alice.create_room(request).await.unwrap().room_id().to_owned();

    bob.sync_once(SyncSettings::default()).await.unwrap();
    let invited = bob.get_room(&room_id).expect("bob sees the invite");
    assert_eq!(invited.state(), RoomState::Invited);
    invited.join().await.unwrap();

    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    alice.add_event_handler(move |event: OriginalSyncRoomMessageEvent| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(event.content.body().to_owned());
        }
    });
    let response = alice.sync_once(SyncSettings::default()).await.unwrap();
    bob.sync_once(SyncSettings::default()).await.unwrap();
    let room = bob.get_room(&room_id).unwrap();
    assert_eq!(room.state(), RoomState::Joined);
    assert_eq!(room.name().as_deref(), Some("Bureau"));
    room.send(RoomMessageEventContent::text_plain("bonjour Alice")).await.unwrap();

    alice.sync_once(SyncSettings::default().token(response.next_batch)).await.unwrap();
    assert_eq!(*received.lock().unwrap(), vec!["bonjour Alice".to_owned()]);
    let alice_room = alice.get_room(&room_id).unwrap();
    assert_eq!(alice_room.joined_members_count(), 2);
}

#[tokio::test]
async fn incremental_sync_returns_only_new_things() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let room = create_room(&server, &token, json!({ "name": "Ici" })).await;
    put(
        &server,
        &token,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
        json!({ "msgtype": "m.text", "body": "un" }),
    )
    .await;

    let initial = get(&server, &token, "/_matrix/client/v3/sync").await;
    assert_eq!(bodies(&initial, &room), vec!["un"]);
    // The state before the timeline plus the timeline hold the whole room (here the timeline
    // reaches back to the create event, so the state before it is empty).
    let joined = &initial["rooms"]["join"][&room];
    let mut seen: Vec<&Value> = joined["state"]["events"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    seen.extend(joined["timeline"]["events"].as_array().unwrap());
    assert!(seen.iter().any(|e| e["type"] == "m.room.create"), "initial sync carries the room's state");
    assert!(seen.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Ici"));
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    put(
        &server,
        &token,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/2"),
        json!({ "msgtype": "m.text", "body": "deux" }),
    )
    .await;
    put(&server, &token, "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.x", json!({ "k": 1 }))
        .await;
    let next = get(&server, &token, &format!("/_matrix/client/v3/sync?since={since}")).await;
    assert_eq!(bodies(&next, &room), vec!["deux"], "only the new message");
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], Value::Null, "not limited");
    assert!(next["rooms"]["join"][&room]["state"]["events"].as_array().is_none_or(|s| s.is_empty()));
    assert_eq!(next["account_data"]["events"][0]["type"], "org.example.x");

    let since = next["next_batch"].as_str().unwrap().to_owned();
    let empty = get(&server, &token, &format!("/_matrix/client/v3/sync?since={since}&timeout=0")).await;
    assert!(empty["rooms"]["join"].as_object().is_none_or(|j| j.is_empty()), "{empty}");
    assert!(empty["account_data"]["events"].as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(empty["next_batch"].as_str().unwrap(), since);
}

#[tokio::test]
async fn gappy_sync_is_limited_with_a_prev_batch_that_messages_fills() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let room = create_room(&server, &token, json!({})).await;
    let since = get(&server, &token, "/_matrix/client/v3/sync").await["next_batch"].as_str().unwrap().to_owned();
    for i in 0..15 {
        put(
            &server,
            &token,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/g{i}"),
            json!({ "msgtype": "m.text", "body": format!("g{i}") }),
        )
        .await;
    }
    let filter = r#"{"room":{"timeline":{"limit":5}}}"#;
    let next =
        get(&server, &token, &format!("/_matrix/client/v3/sync?since={since}&filter={}", urlencode(filter))).await;
    let joined = &next["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(bodies(&next, &room), (10..15).map(|i| format!("g{i}")).collect::<Vec<_>>());
    let prev_batch = joined["timeline"]["prev_batch"].as_str().unwrap();
    let page =
        get(&server, &token, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&from={prev_batch}"))
            .await;
    let earlier: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(earlier, (0..10).rev().map(|i| format!("g{i}")).collect::<Vec<_>>(), "the gap is filled exactly");
}

/// Above 32 joined rooms with news, sync computes the rooms side by side: every room is there,
/// each with its own state, timeline and unread counts, on an initial and on an incremental sync.
#[tokio::test]
async fn a_sync_over_many_rooms_brings_each_room_whole() {
    let server = TestServer::start();
    let client = server.register("alice", "pw").await;
    let token = client.access_token().unwrap();
    let alice = token.as_str();
    let mut rooms = Vec::new();
    for n in 0..40 {
        let room = create_room(&server, alice, json!({ "name": format!("room {n}"), "preset": "public_chat" })).await;
        put(
            &server,
            alice,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a{n}"),
            json!({ "msgtype": "m.text", "body": format!("first {n}") }),
        )
        .await;
        rooms.push(room);
    }
    let initial = get(&server, alice, "/_matrix/client/v3/sync").await;
    assert_eq!(initial["rooms"]["join"].as_object().unwrap().len(), 40);
    for (n, room) in rooms.iter().enumerate() {
        assert_eq!(bodies(&initial, room), vec![format!("first {n}")], "{room}");
        let section = |key: &str| initial["rooms"]["join"][room][key]["events"].as_array().cloned().unwrap_or_default();
        let name = section("timeline")
            .into_iter()
            .chain(section("state"))
            .find(|e| e["type"] == "m.room.name")
            .expect("the room's name");
        assert_eq!(name["content"]["name"], format!("room {n}"));
    }
    let since = initial["next_batch"].as_str().unwrap().to_owned();
    for (n, room) in rooms.iter().enumerate().skip(5) {
        put(
            &server,
            alice,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/b{n}"),
            json!({ "msgtype": "m.text", "body": format!("second {n}") }),
        )
        .await;
    }
    let next = get(&server, alice, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let joined = next["rooms"]["join"].as_object().unwrap();
    assert_eq!(joined.len(), 35, "only the rooms written to");
    for (n, room) in rooms.iter().enumerate() {
        if n < 5 {
            assert!(!joined.contains_key(room), "{room} had nothing new");
        } else {
            assert_eq!(bodies(&next, room), vec![format!("second {n}")], "{room}");
        }
    }
    // Someone else writes n % 4 messages in room n: each room's count is its own.
    let bob = server.register("bob", "pw").await;
    let bob_token = bob.access_token().unwrap();
    for (n, room) in rooms.iter().enumerate() {
        post(&server, &bob_token, &format!("/_matrix/client/v3/join/{}", urlencode(room)), json!({})).await;
        for i in 0..n % 4 {
            put(
                &server,
                &bob_token,
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/c{n}-{i}"),
                json!({ "msgtype": "m.text", "body": format!("from bob {n}/{i}") }),
            )
            .await;
        }
    }
    let counted = get(&server, alice, "/_matrix/client/v3/sync").await;
    for (n, room) in rooms.iter().enumerate() {
        let unread = &counted["rooms"]["join"][room]["unread_notifications"];
        assert_eq!(unread["notification_count"], json!(n % 4), "{room}: {unread}");
    }
}

#[tokio::test]
async fn long_poll_wakes_when_an_event_arrives() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let room = create_room(&server, &token, json!({})).await;
    let since = get(&server, &token, "/_matrix/client/v3/sync").await["next_batch"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let poll = {
        let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout=60000", server.url);
        let http = server.http();
        let token = token.clone();
        tokio::spawn(
            async move { http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    server.wait_for_waiting("syncs", 1).await;
    assert!(!poll.is_finished(), "nothing new yet: the request waits");
    put(
        &server,
        &token,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w"),
        json!({ "msgtype": "m.text", "body": "réveil" }),
    )
    .await;
    let woken = poll.await.unwrap();
    assert_eq!(bodies(&woken, &room), vec!["réveil"]);
    assert!(started.elapsed() < Duration::from_secs(30), "answered by the event, not by the 60 s timeout");
}

fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind)
}

#[tokio::test]
async fn typing_receipts_and_read_markers_reach_sync() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let event = put(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
        json!({ "msgtype": "m.text", "body": "lu ?" }),
    )
    .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = get(&server, &b, "/_matrix/client/v3/sync").await["next_batch"].as_str().unwrap().to_owned();

    // Bob waits; Alice starts typing; Bob's long-poll is woken with it.
    let poll = {
        let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout=60000", server.url);
        let (http, b) = (server.http(), b.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(b).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    server.wait_for_waiting("syncs", 1).await;
    assert!(!poll.is_finished(), "nothing new yet: bob's sync waits");
    put(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
        json!({ "typing": true, "timeout": 30000 }),
    )
    .await;
    let woken = poll.await.unwrap();
    assert_eq!(ephemeral(&woken, &room, "m.typing").unwrap()["content"]["user_ids"], json!(["@alice:localhost"]));
    let since = woken["next_batch"].as_str().unwrap().to_owned();
    let response = server
        .http()
        .put(format!("{}/_matrix/client/v3/rooms/{room}/typing/@bob:localhost", server.url))
        .bearer_auth(&a)
        .json(&json!({ "typing": true, "timeout": 1000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "nobody types for someone else");

    // Receipts: public ones reach Bob, private ones only their owner.
    post(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"), json!({})).await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{event}"), json!({})).await;
    let next = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let receipts = &ephemeral(&next, &room, "m.receipt").unwrap()["content"][&event];
    assert!(receipts["m.read"]["@alice:localhost"]["ts"].is_u64());
    assert!(receipts["m.read.private"]["@bob:localhost"].is_object(), "own private receipt visible");
    let alice_view = get(&server, &a, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let receipts = &ephemeral(&alice_view, &room, "m.receipt").unwrap()["content"][&event];
    assert!(receipts.get("m.read.private").is_none(), "others' private receipts are hidden: {receipts}");

    // Typing stops.
    let since = next["next_batch"].as_str().unwrap().to_owned();
    put(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"), json!({ "typing": false }))
        .await;
    let stopped = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}")).await;
    assert_eq!(ephemeral(&stopped, &room, "m.typing").unwrap()["content"]["user_ids"], json!([]));

    // Read markers set m.fully_read (room account data) and a receipt.
    let since = get(&server, &a, "/_matrix/client/v3/sync").await["next_batch"].as_str().unwrap().to_owned();
    post(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
        json!({ "m.fully_read": event, "m.read": event }),
    )
    .await;
    let marked = get(&server, &a, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let account = marked["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(account.iter().any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == event.as_str()));
    let response = server
        .http()
        .put(format!("{}/_matrix/client/v3/user/@alice:localhost/rooms/{room}/account_data/m.fully_read", server.url))
        .bearer_auth(&a)
        .json(&json!({ "event_id": event }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405, "m.fully_read is server-managed");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_BAD_JSON");
}

#[tokio::test]
async fn to_device_messages_arrive_exactly_once_even_across_restart() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let bob_device = bob.device_id().unwrap().to_string();
    let send = |txn: &str, n: u32| {
        let body = json!({ "messages": { "@bob:localhost": { bob_device.clone(): { "n": n } } } });
        (format!("/_matrix/client/v3/sendToDevice/org.example.ping/{txn}"), body)
    };
    let (path, body) = send("t1", 1);
    put(&server, &a, &path, body.clone()).await;
    put(&server, &a, &path, body).await; // the same transaction again: still one message

    let first = get(&server, &b, "/_matrix/client/v3/sync").await;
    let events = first["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["type"], "org.example.ping");
    assert_eq!(events[0]["content"]["n"], 1);
    // Not acknowledged yet: a sync from the same (old) position sees it again.
    let again = get(&server, &b, "/_matrix/client/v3/sync").await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 1);
    let since = again["next_batch"].as_str().unwrap().to_owned();
    let acked = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}")).await;
    assert!(acked["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()), "delivered once");

    let since = acked["next_batch"].as_str().unwrap().to_owned();
    let (path, body) = send("t2", 2);
    put(&server, &a, &path, body).await;
    server.restart();
    let after = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let events = after["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "survives the restart");
    assert_eq!(events[0]["content"]["n"], 2);
    let since = after["next_batch"].as_str().unwrap().to_owned();
    let done = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}")).await;
    assert!(done["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()));
}

#[tokio::test]
async fn presence_is_shared_with_room_members_only() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let (a, b, c) = (alice.access_token().unwrap(), bob.access_token().unwrap(), carol.access_token().unwrap());
    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let since = get(&server, &b, "/_matrix/client/v3/sync?set_presence=offline").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    put(
        &server,
        &a,
        "/_matrix/client/v3/presence/@alice:localhost/status",
        json!({ "presence": "unavailable", "status_msg": "en réunion" }),
    )
    .await;
    let next = get(&server, &b, &format!("/_matrix/client/v3/sync?since={since}&set_presence=offline")).await;
    let events = next["presence"]["events"].as_array().unwrap();
    let alice_presence = events.iter().find(|e| e["sender"] == "@alice:localhost").expect("bob sees alice's presence");
    assert_eq!(alice_presence["content"]["presence"], "unavailable");
    assert_eq!(alice_presence["content"]["status_msg"], "en réunion");

    let status = get(&server, &b, "/_matrix/client/v3/presence/@alice:localhost/status").await;
    assert_eq!(status["presence"], "unavailable");
    assert_eq!(status["status_msg"], "en réunion");
    let response = server
        .http()
        .get(format!("{}/_matrix/client/v3/presence/@alice:localhost/status", server.url))
        .bearer_auth(&c)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "carol shares no room with alice");
    let carol_sync = get(&server, &c, "/_matrix/client/v3/sync?set_presence=offline").await;
    let seen = carol_sync["presence"]["events"]
        .as_array()
        .map(|e| e.iter().any(|p| p["sender"] == "@alice:localhost"))
        .unwrap_or(false);
    assert!(!seen, "presence does not leak outside shared rooms");
}

/// Counts per thread (`unread_thread_notifications`) and threaded read receipts: a receipt of a
/// thread clears that thread, one of `main` the main timeline, an unthreaded one everything.
#[tokio::test]
async fn threads_are_counted_apart_and_cleared_by_their_own_receipts() {
    let mut server = TestServer::start();
    let a = server.register("alice", "pw").await.access_token().unwrap();
    let b = server.register("bob", "pw").await.access_token().unwrap();
    let room = create_room(&server, &b, json!({ "preset": "public_chat" })).await;
    post(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let txn = std::sync::atomic::AtomicU32::new(0);
    let send = |body: Value| {
        let n = txn.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
        let (server, b) = (&server, &b);
        async move { put(server, b, &path, body).await["event_id"].as_str().unwrap().to_owned() }
    };
    let root = send(json!({ "msgtype": "m.text", "body": "ordre du jour" })).await;
    let reply = |body: &str, mention: bool| {
        let mut content = json!({
            "msgtype": "m.text", "body": body,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                              "m.in_reply_to": { "event_id": root } },
        });
        if mention {
            content["m.mentions"] = json!({ "user_ids": ["@alice:localhost"] });
        }
        content
    };
    send(reply("point 1", false)).await;
    let last_reply = send(reply("alice, point 2 ?", true)).await;
    let main = send(json!({ "msgtype": "m.text", "body": "autre sujet" })).await;

    let apart = urlencode(&json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string());
    let counts = |filtered: bool| {
        let path = if filtered {
            format!("/_matrix/client/v3/sync?filter={apart}")
        } else {
            "/_matrix/client/v3/sync".to_owned()
        };
        let (server, a, room) = (&server, &a, &room);
        async move {
            let sync = get(server, a, &path).await;
            let joined = &sync["rooms"]["join"][room];
            let pair =
                |c: &Value| (c["notification_count"].as_u64().unwrap_or(0), c["highlight_count"].as_u64().unwrap_or(0));
            let threads: Vec<(String, (u64, u64))> = joined["unread_thread_notifications"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), pair(v))).collect())
                .unwrap_or_default();
            (pair(&joined["unread_notifications"]), threads)
        }
    };
    assert_eq!(counts(true).await, ((2, 0), vec![(root.clone(), (2, 1))]), "main timeline and the thread apart");
    assert_eq!(counts(false).await, ((4, 1), vec![]), "without the filter, one sum and no per-thread map");

    let receipt = |event: &str, thread: Option<&str>| {
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}");
        let body = thread.map_or(json!({}), |t| json!({ "thread_id": t }));
        let (server, a) = (&server, &a);
        async move { post(server, a, &path, body).await }
    };
    receipt(&last_reply, Some(&root)).await;
    assert_eq!(counts(true).await, ((2, 0), vec![]), "the thread's receipt clears the thread only");
    assert_eq!(counts(false).await, ((2, 0), vec![]));

    send(reply("point 3", false)).await;
    receipt(&main, Some("main")).await;
    assert_eq!(
        counts(true).await,
        ((0, 0), vec![(root.clone(), (1, 0))]),
        "the main receipt clears the main timeline only"
    );

    let latest = send(json!({ "msgtype": "m.text", "body": "fin" })).await;
    receipt(&latest, None).await;
    assert_eq!(counts(true).await, ((0, 0), vec![]), "an unthreaded receipt clears every thread");
    send(reply("point 4", true)).await;
    server.kill();
    server.restart();
    let sync = get(&server, &a, &format!("/_matrix/client/v3/sync?filter={apart}")).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], 0, "{sync}");
    assert_eq!(joined["unread_thread_notifications"][&root]["highlight_count"], 1, "kept across a kill: {sync}");
}

/// Members with the default rules share one evaluation of an event that names none of them; the
/// one it mentions, and one whose rules differ, still get their own outcome.
#[tokio::test]
async fn a_mention_highlights_only_for_the_member_it_names() {
    let server = TestServer::start();
    let mut tokens = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        tokens.push(server.register(name, "pw").await.access_token().unwrap());
    }
    let room = create_room(&server, &tokens[3], json!({ "preset": "public_chat" })).await;
    for token in &tokens[..3] {
        post(&server, token, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    }
    // Carol mutes plain messages: her rules are no longer the defaults.
    put(
        &server,
        &tokens[2],
        "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled",
        json!({ "enabled": false }),
    )
    .await;
    let body = json!({ "msgtype": "m.text", "body": "bob ?", "m.mentions": { "user_ids": ["@bob:localhost"] } });
    put(&server, &tokens[3], &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"), body).await;
    let plain = json!({ "msgtype": "m.text", "body": "bonjour" });
    put(&server, &tokens[3], &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/2"), plain).await;
    let mut seen = Vec::new();
    for token in &tokens[..3] {
        let sync = get(&server, token, "/_matrix/client/v3/sync").await;
        let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
        seen.push((counts["notification_count"].as_u64(), counts["highlight_count"].as_u64()));
    }
    assert_eq!(seen, [(Some(2), Some(0)), (Some(2), Some(1)), (Some(0), Some(0))], "alice, bob, carol (muted)");
}

#[tokio::test]
async fn push_rules_drive_unread_counts() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let (a, b, c) = (alice.access_token().unwrap(), bob.access_token().unwrap(), carol.access_token().unwrap());
    let rules = get(&server, &a, "/_matrix/client/v3/pushrules/").await;
    let overrides = rules["global"]["override"].as_array().unwrap();
    assert!(overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"), "the spec's default rules");

    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    post(&server, &c, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let send = |token: String, txn: &'static str, body: Value| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let server = &server;
        async move { put(server, &token, &path, body).await["event_id"].as_str().unwrap().to_owned() }
    };
    // In a group room a plain message notifies (.m.rule.message) and a mention also highlights.
    send(b.clone(), "1", json!({ "msgtype": "m.text", "body": "bonjour" })).await;
    send(
        b.clone(),
        "2",
        json!({ "msgtype": "m.text", "body": "alice ?", "m.mentions": { "user_ids": ["@alice:localhost"] } }),
    )
    .await;
    send(a.clone(), "3", json!({ "msgtype": "m.text", "body": "my own message" })).await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{counts}");
    assert_eq!(counts["highlight_count"], 1, "the mention highlights");

    // Disable the catch-all message rule: later plain messages no longer notify (rules apply
    // when an event arrives, as Synapse does: past counts stay).
    put(
        &server,
        &a,
        "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled",
        json!({ "enabled": false }),
    )
    .await;
    let enabled = get(&server, &a, "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled").await;
    assert_eq!(enabled["enabled"], false);
    send(b.clone(), "2b", json!({ "msgtype": "m.text", "body": "encore bonjour" })).await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 2);

    // A keyword rule of Alice's own.
    put(
        &server,
        &a,
        "/_matrix/client/v3/pushrules/global/content/budget",
        json!({ "pattern": "budget", "actions": ["notify"] }),
    )
    .await;
    let rule = get(&server, &a, "/_matrix/client/v3/pushrules/global/content/budget").await;
    assert_eq!(rule["pattern"], "budget");
    send(c.clone(), "4", json!({ "msgtype": "m.text", "body": "le budget est prêt" })).await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 3);

    // Reading up to the latest event clears the counts.
    let latest = send(c.clone(), "5", json!({ "msgtype": "m.text", "body": "fin" })).await;
    post(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{latest}"), json!({})).await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(counts["notification_count"], 0, "{counts}");
    assert_eq!(counts["highlight_count"], 0);
    let highlights = get(&server, &a, "/_matrix/client/v3/notifications?only=highlight").await;
    let list = highlights["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{highlights}");
    assert_eq!(list[0]["event"]["content"]["body"], "alice ?");
    assert_eq!(list[0]["read"], true, "read since the receipt");
    assert_eq!(list[0]["room_id"], room.as_str());
    let all = get(&server, &a, "/_matrix/client/v3/notifications").await;
    assert_eq!(
        all["notifications"].as_array().unwrap().len(),
        3,
        "the first message, the mention and the keyword (not the plain message sent after disabling)"
    );

    let status = |method: reqwest::Method, path: &str| {
        let request = server.http().request(method, format!("{}{path}", server.url)).bearer_auth(&a);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(reqwest::Method::DELETE, "/_matrix/client/v3/pushrules/global/content/budget").await, 200);
    assert_eq!(status(reqwest::Method::GET, "/_matrix/client/v3/pushrules/global/content/budget").await, 404);
    assert_eq!(
        status(reqwest::Method::DELETE, "/_matrix/client/v3/pushrules/global/override/.m.rule.master").await,
        400,
        "server-default rules cannot be deleted"
    );
}

/// Counts are exact past any window (800 unread, not a capped 500), read without walking the
/// backlog, and survive kill -9 of the server (they are derived from what is durable).
/// `/notifications` lists the notifications of every room newest first, interleaved by when
/// they happened, and pages through them with `next_token` without repeating or skipping one.
#[tokio::test]
async fn notifications_of_several_rooms_come_newest_first_page_by_page() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let first = create_room(&server, &b, json!({ "preset": "public_chat" })).await;
    let second = create_room(&server, &b, json!({ "preset": "public_chat" })).await;
    let third = create_room(&server, &b, json!({ "preset": "public_chat" })).await;
    for room in [&first, &second, &third] {
        post(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    }
    let order = [(&first, "m1"), (&second, "m2"), (&first, "m3"), (&second, "m4"), (&second, "m5"), (&third, "m6")];
    for (room, body) in order {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}");
        put(&server, &b, &path, json!({ "msgtype": "m.text", "body": body })).await;
    }
    // A sync waits for the push rules to have run on everything before it.
    get(&server, &a, "/_matrix/client/v3/sync").await;
    let mut seen = Vec::new();
    let mut from = None::<String>;
    loop {
        let path = match &from {
            Some(token) => format!("/_matrix/client/v3/notifications?limit=4&from={}", urlencode(token)),
            None => "/_matrix/client/v3/notifications?limit=4".to_owned(),
        };
        let page = get(&server, &a, &path).await;
        let list = page["notifications"].as_array().unwrap();
        assert!(list.len() <= 4, "{page}");
        for n in list {
            seen.push((
                n["room_id"].as_str().unwrap().to_owned(),
                n["event"]["content"]["body"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_token"].as_str() {
            Some(token) => from = Some(token.to_owned()),
            None => break,
        }
    }
    let expected: Vec<(String, String)> =
        order.iter().rev().map(|(room, body)| ((*room).clone(), (*body).to_owned())).collect();
    assert_eq!(seen, expected, "newest first across the rooms, each once");
}

#[tokio::test]
async fn unread_counts_are_exact_and_survive_a_kill() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let path = |n: u32| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
    futures::future::join_all((0..800).map(|n| {
        let (server, b, path) = (&server, &b, path(n));
        async move { put(server, b, &path, json!({ "msgtype": "m.text", "body": format!("message {n}") })).await }
    }))
    .await;
    let counts = |sync: &Value| sync["rooms"]["join"][&room]["unread_notifications"].clone();
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(counts(&sync)["notification_count"], 800, "{}", counts(&sync));
    assert_eq!(counts(&sync)["highlight_count"], 0);

    server.kill();
    server.restart();
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(counts(&sync)["notification_count"], 800, "after kill -9");
    let sent = put(
        &server,
        &b,
        &path(800),
        json!({ "msgtype": "m.text", "body": "alice ?", "m.mentions": { "user_ids": ["@alice:localhost"] } }),
    )
    .await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let sync = get(&server, &a, &format!("/_matrix/client/v3/sync?since={since}&timeout=5000")).await;
    assert_eq!(counts(&sync)["notification_count"], 801, "one more, counted once after the restart");
    assert_eq!(counts(&sync)["highlight_count"], 1, "the mention highlights");

    // A receipt in the middle leaves what comes after it.
    let messages = get(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=101")).await;
    let hundredth = messages["chunk"][100]["event_id"].as_str().unwrap().to_owned();
    post(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{hundredth}"), json!({})).await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(counts(&sync)["notification_count"], 100, "{}", counts(&sync));
    assert_eq!(counts(&sync)["highlight_count"], 1);
    post(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", sent["event_id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let sync = get(&server, &a, "/_matrix/client/v3/sync").await;
    assert_eq!(counts(&sync)["notification_count"], 0);
    assert_eq!(counts(&sync)["highlight_count"], 0);
}

#[tokio::test]
async fn sync_filters_select_rooms_and_event_types() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let a = alice.access_token().unwrap();
    let one = create_room(&server, &a, json!({ "name": "un" })).await;
    let two = create_room(&server, &a, json!({ "name": "deux" })).await;
    put(&server, &a, &format!("/_matrix/client/v3/rooms/{one}/send/org.example.note/1"), json!({ "x": 1 })).await;
    put(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{one}/send/m.room.message/2"),
        json!({ "msgtype": "m.text", "body": "b" }),
    )
    .await;
    put(&server, &a, "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.keep", json!({ "k": 1 })).await;
    put(&server, &a, "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.drop", json!({ "k": 2 })).await;

    let filter = json!({
        "room": { "rooms": [one], "timeline": { "types": ["m.room.message"], "limit": 5 }, "state": { "types": ["m.room.name"] } },
        "account_data": { "types": ["org.example.keep"] },
    });
    // Stored filters and inline ones behave alike.
    let id = post(&server, &a, "/_matrix/client/v3/user/@alice:localhost/filter", filter.clone()).await["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for filter_param in [id, urlencode(&filter.to_string())] {
        let sync = get(&server, &a, &format!("/_matrix/client/v3/sync?filter={filter_param}")).await;
        let joined = sync["rooms"]["join"].as_object().unwrap();
        assert!(joined.contains_key(&one) && !joined.contains_key(&two), "only the filtered room");
        let timeline = joined[&one]["timeline"]["events"].as_array().unwrap();
        assert!(timeline.iter().all(|e| e["type"] == "m.room.message"), "{timeline:?}");
        assert_eq!(timeline.len(), 1);
        let state = joined[&one]["state"]["events"].as_array().map(|s| s.as_slice()).unwrap_or_default();
        assert!(state.iter().all(|e| e["type"] == "m.room.name"), "{state:?}");
        let account: Vec<&str> =
            sync["account_data"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(account, vec!["org.example.keep"]);
    }
}

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

#[tokio::test]
async fn sliding_sync_orders_rooms_by_recency_and_follows_new_messages() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let a = alice.access_token().unwrap();
    let versions = get(&server, &a, "/_matrix/client/versions").await;
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);

    let mut rooms = Vec::new();
    for name in ["ancienne", "moyenne", "récente"] {
        let room = create_room(&server, &a, json!({ "name": name })).await;
        put(
            &server,
            &a,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{name}"),
            json!({ "msgtype": "m.text", "body": name }),
        )
        .await;
        rooms.push(room);
    }
    // `pos` and `timeout` are query parameters; the lists and extensions are the body.
    let request = |ranges: Value| {
        json!({
            "lists": { "all": { "ranges": ranges, "timeline_limit": 1, "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]] } },
            "extensions": { "to_device": { "enabled": true } },
        })
    };
    let top = post(&server, &a, SLIDING, request(json!([[0, 0]]))).await;
    assert_eq!(top["lists"]["all"]["count"], 3);
    let listed = top["rooms"].as_object().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&rooms[2]], "range [0,0] is the most recent room");
    let room = &listed[&rooms[2]];
    assert_eq!(room["name"], "récente");
    assert_eq!(room["initial"], true);
    assert_eq!(room["timeline"].as_array().unwrap().len(), 1);
    assert_eq!(room["timeline"][0]["content"]["body"], "récente");
    let required: Vec<&str> =
        room["required_state"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(required.contains(&"m.room.name") && required.contains(&"m.room.member"), "{required:?}");
    assert_eq!(required.len(), 2, "only what was asked: {required:?}");

    let all = post(&server, &a, SLIDING, request(json!([[0, 9]]))).await;
    let mut by_recency: Vec<(u64, String)> = all["rooms"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, r)| (r["bump_stamp"].as_u64().unwrap(), id.clone()))
        .collect();
    by_recency.sort_by_key(|x| std::cmp::Reverse(x.0));
    let order: Vec<&String> = by_recency.iter().map(|(_, id)| id).collect();
    assert_eq!(order, vec![&rooms[2], &rooms[1], &rooms[0]]);

    // Long-poll from this position: a message in the oldest room brings it back, now the most recent.
    let pos = all["pos"].as_str().unwrap().to_owned();
    let poll = {
        let url = format!("{}{SLIDING}?pos={pos}&timeout=60000", server.url);
        let (http, a, body) = (server.http(), a.clone(), request(json!([[0, 0]])));
        tokio::spawn(async move {
            http.post(url).bearer_auth(a).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    server.wait_for_waiting("syncs", 1).await;
    assert!(!poll.is_finished(), "nothing new yet: the sliding sync waits");
    put(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/again", rooms[0]),
        json!({ "msgtype": "m.text", "body": "de retour" }),
    )
    .await;
    let update = poll.await.unwrap();
    let updated = &update["rooms"][&rooms[0]];
    assert_eq!(updated["timeline"][0]["content"]["body"], "de retour");
    assert!(updated["bump_stamp"].as_u64().unwrap() > all["rooms"][&rooms[2]]["bump_stamp"].as_u64().unwrap());
    assert!(update["rooms"].get(&rooms[2]).is_none(), "rooms without news are not resent");

    // A room subscription brings a room outside the list's range, with its own timeline limit.
    let mut body = request(json!([[0, 0]]));
    body["room_subscriptions"] =
        json!({ rooms[1].clone(): { "timeline_limit": 5, "required_state": [["m.room.create", ""]] } });
    let subscribed = post(&server, &a, SLIDING, body).await;
    let middle = &subscribed["rooms"][&rooms[1]];
    assert_eq!(middle["name"], "moyenne");
    assert_eq!(middle["timeline"].as_array().unwrap().len(), 5);
    assert_eq!(middle["required_state"][0]["type"], "m.room.create");

    // Scrolling: a new connection saw only the top room; asking for the next range sends those
    // rooms whole although nothing happened in them since.
    let mut first = request(json!([[0, 0]]));
    first["conn_id"] = json!("phone");
    let top = post(&server, &a, SLIDING, first).await;
    assert_eq!(top["rooms"].as_object().unwrap().len(), 1);
    let pos = top["pos"].as_str().unwrap().to_owned();
    let mut scroll = request(json!([[1, 2]]));
    scroll["conn_id"] = json!("phone");
    let scrolled = post(&server, &a, &format!("{SLIDING}?pos={pos}"), scroll).await;
    let seen = scrolled["rooms"].as_object().unwrap();
    assert_eq!(seen.len(), 2, "{scrolled}");
    assert!(seen.values().all(|r| r["initial"] == true && r["timeline"].as_array().is_some_and(|t| !t.is_empty())));

    // The to-device extension delivers messages for this device.
    let device = alice.device_id().unwrap().to_string();
    put(
        &server,
        &a,
        "/_matrix/client/v3/sendToDevice/org.example.ping/x1",
        json!({ "messages": { "@alice:localhost": { device: { "n": 7 } } } }),
    )
    .await;
    let pos = update["pos"].as_str().unwrap().to_owned();
    let next = post(&server, &a, &format!("{SLIDING}?pos={pos}"), request(json!([[0, 0]]))).await;
    assert_eq!(next["extensions"]["to_device"]["events"][0]["content"]["n"], 7);
}

#[tokio::test]
async fn matrix_sdk_sync_sees_typing_and_receipts() {
    use matrix_sdk::ruma::{
        api::client::receipt::create_receipt::v3::ReceiptType,
        events::{
            receipt::{ReceiptEventContent, ReceiptThread},
            typing::TypingEventContent,
            SyncEphemeralRoomEvent,
        },
    };
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let room_id = alice.create_room(request).await.unwrap().room_id().to_owned();
    bob.sync_once(SyncSettings::default()).await.unwrap();
    bob.get_room(&room_id).unwrap().join().await.unwrap();

    let typing: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let receipts: Arc<Mutex<Vec<String>>> = Arc::default();
    let (t, r) = (typing.clone(), receipts.clone());
    alice.add_event_handler(move |event: SyncEphemeralRoomEvent<TypingEventContent>| {
        let t = t.clone();
        async move {
            t.lock().unwrap().push(event.content.user_ids.iter().map(|u| u.to_string()).collect());
        }
    });
    alice.add_event_handler(move |event: SyncEphemeralRoomEvent<ReceiptEventContent>| {
        let r = r.clone();
        async move {
            for (event_id, receipts) in event.content.iter() {
                for users in receipts.values() {
                    for user in users.keys() {
                        r.lock().unwrap().push(format!("{user}:{event_id}"));
                    }
                }
            }
        }
    });
    let response = alice.sync_once(SyncSettings::default()).await.unwrap();
    let alice_room = alice.get_room(&room_id).unwrap();
    let sent = alice_room.send(RoomMessageEventContent::text_plain("lu ?")).await.unwrap().response.event_id;

    bob.sync_once(SyncSettings::default()).await.unwrap();
    let bob_room = bob.get_room(&room_id).unwrap();
    bob_room.typing_notice(true).await.unwrap();
    bob_room.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, sent.clone()).await.unwrap();

    alice.sync_once(SyncSettings::default().token(response.next_batch)).await.unwrap();
    assert!(typing.lock().unwrap().iter().any(|users| users == &vec!["@bob:localhost".to_owned()]), "{typing:?}");
    assert!(receipts.lock().unwrap().contains(&format!("@bob:localhost:{sent}")), "{receipts:?}");
}

/// The sliding sync extensions for account data, receipts and typing: each delivers what changed,
/// once, and nothing when it is not enabled.
#[tokio::test]
async fn sliding_sync_account_data_receipts_and_typing_extensions() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    post(&server, &b, &format!("/_matrix/client/v3/join/{room}"), json!({})).await;
    let sent = put(
        &server,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x1"),
        json!({ "msgtype": "m.text", "body": "hello" }),
    )
    .await;
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let body = |enabled: bool| {
        json!({
            "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
            "extensions": {
                "account_data": { "enabled": enabled },
                "receipts": { "enabled": enabled },
                "typing": { "enabled": enabled },
            },
        })
    };
    let first = post(&server, &a, SLIDING, body(true)).await;
    let pos = first["pos"].as_str().unwrap().to_owned();

    put(
        &server,
        &a,
        "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.pref",
        json!({ "theme": "dark" }),
    )
    .await;
    put(
        &server,
        &a,
        &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/account_data/org.example.room"),
        json!({ "pinned": true }),
    )
    .await;
    post(&server, &b, &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"), json!({})).await;
    put(
        &server,
        &b,
        &format!("/_matrix/client/v3/rooms/{room}/typing/@bob:localhost"),
        json!({ "typing": true, "timeout": 30000 }),
    )
    .await;

    let next = post(&server, &a, &format!("{SLIDING}?pos={pos}&timeout=0"), body(true)).await;
    let ext = &next["extensions"];
    let global: Vec<&Value> = ext["account_data"]["global"].as_array().unwrap().iter().collect();
    assert!(global.iter().any(|e| e["type"] == "org.example.pref" && e["content"]["theme"] == "dark"), "{ext}");
    let per_room = &ext["account_data"]["rooms"][&room];
    assert!(
        per_room.as_array().unwrap().iter().any(|e| e["type"] == "org.example.room" && e["content"]["pinned"] == true),
        "{ext}"
    );
    let receipt = &ext["receipts"]["rooms"][&room];
    assert_eq!(receipt["type"], "m.receipt", "{ext}");
    assert!(receipt["content"][&event]["m.read"]["@bob:localhost"]["ts"].is_u64(), "{receipt}");
    let typing = &ext["typing"]["rooms"][&room];
    assert_eq!(typing["content"]["user_ids"], json!(["@bob:localhost"]), "{ext}");

    // Delivered once: the next response (nothing new) carries none of it again.
    let pos = next["pos"].as_str().unwrap().to_owned();
    let after = post(&server, &a, &format!("{SLIDING}?pos={pos}&timeout=0"), body(true)).await;
    let ext = &after["extensions"];
    assert!(ext["account_data"]["global"].as_array().is_none_or(|g| g.is_empty()), "{ext}");
    assert!(ext["receipts"]["rooms"].as_object().is_none_or(|r| r.is_empty()), "{ext}");
    assert!(ext["typing"]["rooms"].as_object().is_none_or(|r| r.is_empty()), "{ext}");

    // Not enabled: not sent, even on a fresh connection where everything is new.
    let off = post(&server, &a, SLIDING, body(false)).await;
    let ext = &off["extensions"];
    assert!(ext["account_data"]["global"].as_array().is_none_or(|g| g.is_empty()), "{ext}");
    assert!(ext["receipts"]["rooms"].as_object().is_none_or(|r| r.is_empty()), "{ext}");
    assert!(ext["typing"]["rooms"].as_object().is_none_or(|r| r.is_empty()), "{ext}");
}

/// `use_state_after` (v1.16): `state_after` holds the state up to the timeline's end, including
/// the timeline's own state events; state events carry `replaces_state` and, for a reader who may
/// see the replaced event, `prev_content` and `prev_sender`. `/versions` lists exactly the
/// versions implemented.
#[tokio::test]
async fn state_after_and_replaced_state() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let room = create_room(&server, &token, json!({ "name": "Premier nom" })).await;
    let first = get(&server, &token, "/_matrix/client/v3/sync?use_state_after=true").await;
    let joined = &first["rooms"]["join"][&room];
    assert!(joined.get("state").is_none(), "state_after replaces state: {joined}");
    let names: Vec<&Value> =
        joined["state_after"]["events"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.name").collect();
    assert_eq!(names.len(), 1, "the state at the end of the timeline, timeline state included: {joined}");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let name_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", urlencode(&room));
    let old_name = names[0]["event_id"].as_str().unwrap().to_owned();
    let new_name = put(&server, &token, &name_path, json!({ "name": "Second nom" })).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = get(&server, &token, &format!("/_matrix/client/v3/sync?use_state_after=true&since={since}")).await;
    let joined = &next["rooms"]["join"][&room];
    let after: Vec<&str> =
        joined["state_after"]["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(after, vec![new_name.as_str()], "only what changed: {joined}");
    let in_timeline = &joined["timeline"]["events"][0];
    assert_eq!(in_timeline["unsigned"]["replaces_state"], old_name.as_str(), "{in_timeline}");
    assert_eq!(in_timeline["unsigned"]["prev_content"]["name"], "Premier nom", "{in_timeline}");
    assert_eq!(in_timeline["unsigned"]["prev_sender"], "@alice:localhost");
    // Without the flag: `state` as before, the timeline's state events not repeated in it.
    let plain = get(&server, &token, &format!("/_matrix/client/v3/sync?since={since}")).await;
    let joined = &plain["rooms"]["join"][&room];
    assert!(joined.get("state_after").is_none(), "{joined}");
    assert!(joined["state"]["events"].as_array().is_none_or(|e| e.is_empty()), "{joined}");
    let event =
        get(&server, &token, &format!("/_matrix/client/v3/rooms/{}/event/{}", urlencode(&room), urlencode(&new_name)))
            .await;
    assert_eq!(event["unsigned"]["prev_content"]["name"], "Premier nom", "{event}");

    let versions = get(&server, &token, "/_matrix/client/versions").await;
    let versions: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions.contains(&"v1.16"), "{versions:?}");
    assert!(versions.contains(&"v1.17"), "appservice device management (v1.17): {versions:?}");
    assert!(!versions.contains(&"v1.18"), "no OAuth 2.0 awareness (v1.18) yet: {versions:?}");
}

/// The sending device's copy of its own event carries `unsigned.transaction_id` (matrix-sdk
/// matches its local echo by it); another device's copy does not.
#[tokio::test]
async fn own_events_carry_their_transaction_id_for_the_sending_device_only() {
    let server = TestServer::start();
    let (_, first) = crate::common::register_raw(&server, "alice").await;
    let room = create_room(&server, &first, json!({ "preset": "private_chat" })).await;
    let login =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "pw" });
    let response =
        server.http().post(format!("{}/_matrix/client/v3/login", server.url)).json(&login).send().await.unwrap();
    let logged_in: Value = response.json().await.unwrap();
    let second = logged_in["access_token"].as_str().expect("a second device").to_owned();
    let room_path = urlencode(&room);
    let sent = put(
        &server,
        &first,
        &format!("/_matrix/client/v3/rooms/{room_path}/send/m.room.message/echo-42"),
        json!({ "msgtype": "m.text", "body": "écho" }),
    )
    .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let find = |sync: &Value| -> Value {
        sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["event_id"] == sent.as_str()).cloned())
            .unwrap_or_else(|| panic!("the event is in the sync: {sync}"))
    };
    let mine = find(&get(&server, &first, "/_matrix/client/v3/sync").await);
    assert_eq!(mine["unsigned"]["transaction_id"], "echo-42", "{mine}");
    let other = find(&get(&server, &second, "/_matrix/client/v3/sync").await);
    assert!(other["unsigned"].get("transaction_id").is_none(), "{other}");
}

/// After the user's own read receipt, sliding sync sends the room again with its new (zero)
/// notification count, as regular `/sync` does; Element X would otherwise keep a stale badge.
#[tokio::test]
async fn sliding_sync_resends_a_room_after_the_users_own_read_receipt() {
    let server = TestServer::start();
    let (alice, a) = crate::common::register_raw(&server, "alice").await;
    let (_, b) = crate::common::register_raw(&server, "bob").await;
    let room = create_room(&server, &a, json!({ "preset": "public_chat" })).await;
    let room_path = urlencode(&room);
    post(&server, &b, &format!("/_matrix/client/v3/join/{room_path}"), json!({})).await;
    let mut last = String::new();
    for n in 0..2 {
        let path = format!("/_matrix/client/v3/rooms/{room_path}/send/m.room.message/unread-{n}");
        last = put(&server, &b, &path, json!({ "msgtype": "m.text", "body": format!("message {n}") })).await
            ["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let body = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } } });
    let first = post(&server, &a, SLIDING, body.clone()).await;
    assert_eq!(first["rooms"][&room]["notification_count"], 2, "{first}");
    let pos = first["pos"].as_str().unwrap().to_owned();
    post(&server, &a, &format!("/_matrix/client/v3/rooms/{room_path}/receipt/m.read/{}", urlencode(&last)), json!({}))
        .await;
    let next = post(&server, &a, &format!("{SLIDING}?pos={}&timeout=0", urlencode(&pos)), body).await;
    assert_eq!(
        next["rooms"][&room]["notification_count"], 0,
        "the room comes again with its new count: {next} ({alice})"
    );
}
