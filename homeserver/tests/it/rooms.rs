//! Rooms through matrix-sdk clients (requests sent with `Client::send`) and raw HTTP for errors.

use std::collections::HashSet;

use matrix_sdk::{
    ruma::{
        api::{
            client::{
                alias::{create_alias, get_alias},
                directory::{get_public_rooms_filtered, set_room_visibility},
                membership::{invite_user, join_room_by_id, join_room_by_id_or_alias, joined_rooms, leave_room},
                message::{get_message_events, send_message_event},
                redact::redact_event,
                room::{create_room, get_room_event, Visibility},
                state::{get_state_events, send_state_event},
                user_directory::search_users,
            },
            Direction,
        },
        events::{room::message::RoomMessageEventContent, AnyStateEvent},
        serde::Raw,
        OwnedRoomId, RoomAliasId, RoomVersionId, TransactionId, UInt,
    },
    Client,
};
use serde_json::{json, Value};

use crate::common::{urlencode, TestServer};

fn token(client: &Client) -> String {
    client.access_token().unwrap()
}

async fn raw(
    server: &TestServer,
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.http().request(method, format!("{}{}", server.url, path)).bearer_auth(token(client));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(client: &Client, configure: impl FnOnce(&mut create_room::v3::Request)) -> OwnedRoomId {
    let mut request = create_room::v3::Request::new();
    configure(&mut request);
    client.send(request).await.unwrap().room_id
}

async fn say(client: &Client, room: &OwnedRoomId, text: &str) -> matrix_sdk::ruma::OwnedEventId {
    let content = RoomMessageEventContent::text_plain(text);
    client
        .send(send_message_event::v3::Request::new(room.clone(), TransactionId::new(), &content).unwrap())
        .await
        .unwrap()
        .event_id
}

async fn state(client: &Client, room: &OwnedRoomId) -> Vec<Value> {
    let events = client.send(get_state_events::v3::Request::new(room.clone())).await.unwrap().room_state;
    events.iter().map(|e: &Raw<AnyStateEvent>| e.deserialize_as::<Value>().unwrap()).collect()
}

fn find<'a>(state: &'a [Value], kind: &str, key: &str) -> Option<&'a Value> {
    state.iter().find(|e| e["type"] == kind && e["state_key"] == key)
}

async fn messages(
    client: &Client,
    room: &OwnedRoomId,
    dir: Direction,
    from: Option<String>,
    limit: u32,
) -> (Vec<Value>, Option<String>) {
    let mut request = get_message_events::v3::Request::new(room.clone(), dir);
    request.from = from;
    request.limit = UInt::from(limit);
    let response = client.send(request).await.unwrap();
    (response.chunk.iter().map(|e| e.deserialize_as::<Value>().unwrap()).collect(), response.end)
}

#[tokio::test]
async fn create_rooms_of_each_preset_and_version() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let bob_id = bob.user_id().unwrap().to_owned();

    let private = create(&alice, |r| {
        r.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        r.room_version = Some(RoomVersionId::V10);
        r.name = Some("Cabinet".into());
        r.topic = Some("Budget".into());
    })
    .await;
    let s = state(&alice, &private).await;
    assert_eq!(find(&s, "m.room.create", "").unwrap()["content"]["room_version"], "10");
    assert_eq!(find(&s, "m.room.join_rules", "").unwrap()["content"]["join_rule"], "invite");
    assert_eq!(find(&s, "m.room.power_levels", "").unwrap()["content"]["users"]["@alice:localhost"], 100);
    assert_eq!(find(&s, "m.room.name", "").unwrap()["content"]["name"], "Cabinet");
    assert_eq!(find(&s, "m.room.topic", "").unwrap()["content"]["topic"], "Budget");
    assert!(private.as_str().ends_with(":localhost"), "v10 room ids carry the server name");

    let public = create(&alice, |r| {
        r.preset = Some(create_room::v3::RoomPreset::PublicChat);
        r.room_version = Some(RoomVersionId::V11);
        r.room_alias_name = Some("annonces".into());
    })
    .await;
    let s = state(&alice, &public).await;
    assert_eq!(find(&s, "m.room.join_rules", "").unwrap()["content"]["join_rule"], "public");
    assert_eq!(find(&s, "m.room.canonical_alias", "").unwrap()["content"]["alias"], "#annonces:localhost");
    let alias = RoomAliasId::parse("#annonces:localhost").unwrap();
    assert_eq!(bob.send(get_alias::v3::Request::new(alias.clone())).await.unwrap().room_id, public);
    bob.send(join_room_by_id_or_alias::v3::Request::new(alias.into())).await.unwrap();

    // Default version is 12; trusted_private_chat makes the invitee an additional creator.
    let trusted = create(&alice, |r| {
        r.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        r.invite = vec![bob_id.clone()];
        r.is_direct = true;
    })
    .await;
    assert!(!trusted.as_str().contains(':'), "v12 room ids are the create event's hash");
    let s = state(&alice, &trusted).await;
    let create_event = find(&s, "m.room.create", "").unwrap();
    assert_eq!(create_event["content"]["room_version"], "12");
    assert_eq!(create_event["content"]["additional_creators"], json!([bob_id.as_str()]));
    let invite = find(&s, "m.room.member", bob_id.as_str()).unwrap();
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    bob.send(join_room_by_id::v3::Request::new(trusted.clone())).await.unwrap();
    let joined = bob.send(joined_rooms::v3::Request::new()).await.unwrap().joined_rooms;
    assert_eq!(joined.len(), 2);
    assert!(joined.contains(&trusted) && joined.contains(&public));

    // Unsupported version and duplicate alias are refused before anything is created.
    let (status, v) = raw(
        &server,
        &alice,
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "room_version": "99" })),
    )
    .await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_UNSUPPORTED_ROOM_VERSION")));
    let (status, v) = raw(
        &server,
        &alice,
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "room_alias_name": "annonces" })),
    )
    .await;
    // createRoom answers 400 for a taken alias (the spec's code there; the alias API says 409).
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_ROOM_IN_USE")));
    assert_eq!(
        alice.send(joined_rooms::v3::Request::new()).await.unwrap().joined_rooms.len(),
        3,
        "nothing half-created"
    );
}

#[tokio::test]
async fn invite_join_chat_power_levels_and_moderation() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create(&alice, |r| r.preset = Some(create_room::v3::RoomPreset::PrivateChat)).await;
    let base = format!("/_matrix/client/v3/rooms/{room}");

    // Private room: no join without an invite, no reading without membership.
    let (status, v) = raw(&server, &bob, M::POST, &format!("{base}/join"), Some(json!({}))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) = raw(&server, &bob, M::GET, &format!("{base}/messages?dir=b"), None).await;
    assert_eq!(status, 403);
    let (status, _) = raw(
        &server,
        &bob,
        M::PUT,
        &format!("{base}/send/m.room.message/t1"),
        Some(json!({ "msgtype": "m.text", "body": "hi" })),
    )
    .await;
    assert_eq!(status, 403);

    alice
        .send(invite_user::v3::Request::new(
            room.clone(),
            invite_user::v3::InvitationRecipient::UserId(invite_user::v3::InviteUserId::new(
                bob.user_id().unwrap().to_owned(),
            )),
        ))
        .await
        .unwrap();
    bob.send(join_room_by_id::v3::Request::new(room.clone())).await.unwrap();
    say(&alice, &room, "bonjour").await;
    say(&bob, &room, "bonjour à vous").await;
    let (chunk, _) = messages(&alice, &room, Direction::Backward, None, 2).await;
    assert_eq!(chunk[0]["content"]["body"], "bonjour à vous");
    assert_eq!(chunk[0]["sender"], "@bob:localhost");
    assert_eq!(chunk[1]["content"]["body"], "bonjour");

    // Bob (power 0) may not rename the room (state_default 50) nor kick.
    let (status, v) =
        raw(&server, &bob, M::PUT, &format!("{base}/state/m.room.name/"), Some(json!({ "name": "Bob's" }))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) =
        raw(&server, &bob, M::POST, &format!("{base}/kick"), Some(json!({ "user_id": "@alice:localhost" }))).await;
    assert_eq!(status, 403);
    // Alice raises Bob to moderator; now he can.
    let (_, levels) = raw(&server, &alice, M::GET, &format!("{base}/state/m.room.power_levels/"), None).await;
    let mut levels = levels;
    levels["users"]["@bob:localhost"] = json!(50);
    alice
        .send(send_state_event::v3::Request::new_raw(
            room.clone(),
            "m.room.power_levels".into(),
            String::new(),
            Raw::new(&levels).unwrap().cast_unchecked(),
        ))
        .await
        .unwrap();
    let (status, _) =
        raw(&server, &bob, M::PUT, &format!("{base}/state/m.room.name/"), Some(json!({ "name": "Bob's" }))).await;
    assert_eq!(status, 200);
    let (_, name) = raw(&server, &carol, M::GET, &format!("{base}/state/m.room.name/"), None).await;
    assert_eq!(name["errcode"], "M_FORBIDDEN", "non-members cannot read state");

    // Ban, unban, kick, leave, forget.
    let (status, _) =
        raw(&server, &alice, M::POST, &format!("{base}/invite"), Some(json!({ "user_id": "@carol:localhost" }))).await;
    assert_eq!(status, 200);
    let (status, _) = raw(&server, &carol, M::POST, &format!("{base}/join"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = raw(
        &server,
        &bob,
        M::POST,
        &format!("{base}/ban"),
        Some(json!({ "user_id": "@carol:localhost", "reason": "spam" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw(
        &server,
        &carol,
        M::PUT,
        &format!("{base}/send/m.room.message/t2"),
        Some(json!({ "msgtype": "m.text", "body": "x" })),
    )
    .await;
    assert_eq!(status, 403, "banned users cannot send");
    let (status, _) = raw(&server, &carol, M::POST, &format!("{base}/join"), Some(json!({}))).await;
    assert_eq!(status, 403, "banned users cannot rejoin");
    let (status, _) =
        raw(&server, &bob, M::POST, &format!("{base}/unban"), Some(json!({ "user_id": "@carol:localhost" }))).await;
    assert_eq!(status, 200);
    let (status, _) =
        raw(&server, &bob, M::POST, &format!("{base}/unban"), Some(json!({ "user_id": "@carol:localhost" }))).await;
    assert_eq!(status, 403, "not banned any more");
    let (_, members) = raw(&server, &alice, M::GET, &format!("{base}/members?membership=join"), None).await;
    let joined: HashSet<&str> =
        members["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(joined, HashSet::from(["@alice:localhost", "@bob:localhost"]));
    let (_, jm) = raw(&server, &alice, M::GET, &format!("{base}/joined_members"), None).await;
    assert_eq!(jm["joined"]["@bob:localhost"]["display_name"], "bob");

    bob.send(leave_room::v3::Request::new(room.clone())).await.unwrap();
    let (status, _) = raw(&server, &bob, M::GET, &format!("{base}/messages?dir=b"), None).await;
    assert_eq!(status, 200, "history up to leaving stays readable");
    let (status, _) = raw(&server, &alice, M::POST, &format!("{base}/forget"), Some(json!({}))).await;
    assert_eq!(status, 400, "cannot forget a room you are in");
    let (status, _) = raw(&server, &bob, M::POST, &format!("{base}/forget"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = raw(&server, &bob, M::GET, &format!("{base}/messages?dir=b"), None).await;
    assert_eq!(status, 403, "a forgotten room is gone for the user");
}

#[tokio::test]
async fn redaction_follows_power_and_strips_content() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create(&alice, |r| r.preset = Some(create_room::v3::RoomPreset::PublicChat)).await;
    bob.send(join_room_by_id::v3::Request::new(room.clone())).await.unwrap();
    let secret = say(&alice, &room, "secret").await;
    let own = say(&bob, &room, "oops").await;

    let (status, v) =
        raw(&server, &bob, M::PUT, &format!("/_matrix/client/v3/rooms/{room}/redact/{secret}/r1"), Some(json!({})))
            .await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    bob.send(redact_event::v3::Request::new(room.clone(), own.clone(), TransactionId::new())).await.unwrap();
    let mut request = redact_event::v3::Request::new(room.clone(), secret.clone(), TransactionId::new());
    request.reason = Some("leak".into());
    let redaction = alice.send(request).await.unwrap().event_id;

    let event: Value = bob
        .send(get_room_event::v3::Request::new(room.clone(), secret.clone()))
        .await
        .unwrap()
        .event
        .deserialize_as()
        .unwrap();
    assert_eq!(event["content"], json!({}), "content removed by the v12 redaction algorithm");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction.as_str());
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "leak");
    let event: Value =
        alice.send(get_room_event::v3::Request::new(room.clone(), own)).await.unwrap().event.deserialize_as().unwrap();
    assert_eq!(event["content"], json!({}));
}

#[tokio::test]
async fn paginates_500_messages_in_order_both_ways() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let room = create(&alice, |_| {}).await;
    for i in 0..500 {
        say(&alice, &room, &format!("m{i}")).await;
    }
    let mut seen = Vec::new();
    let mut from = None;
    loop {
        let (chunk, end) = messages(&alice, &room, Direction::Backward, from, 100).await;
        seen.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned()),
        );
        match end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    let expected: Vec<String> = (0..500).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);

    let (forward, end) = messages(&alice, &room, Direction::Forward, None, 1000).await;
    assert!(end.is_none());
    let bodies: Vec<&str> = forward
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 500);
    assert_eq!(bodies[0], "m0");
    assert_eq!(bodies[499], "m499");
    assert_eq!(forward[0]["type"], "m.room.create", "forward from the start begins with the create event");
}

#[tokio::test]
async fn aliases_directory_and_user_search() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    alice.account().set_display_name(Some("Alice Préfète")).await.unwrap();
    let room = create(&alice, |r| {
        r.preset = Some(create_room::v3::RoomPreset::PublicChat);
        r.name = Some("Préfecture du Nord".into());
    })
    .await;
    let alias = RoomAliasId::parse("#nord:localhost").unwrap();
    alice.send(create_alias::v3::Request::new(alias.clone(), room.clone())).await.unwrap();
    let (status, v) = raw(
        &server,
        &bob,
        M::PUT,
        "/_matrix/client/v3/directory/room/%23nord:localhost",
        Some(json!({ "room_id": room })),
    )
    .await;
    assert_eq!((status, v["errcode"].as_str()), (409, Some("M_ROOM_IN_USE")));
    let (status, v) = raw(&server, &bob, M::DELETE, "/_matrix/client/v3/directory/room/%23nord:localhost", None).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, v) = raw(&server, &alice, M::GET, "/_matrix/client/v3/directory/room/%23nord:localhost", None).await;
    assert_eq!((status, v["room_id"].as_str()), (200, Some(room.as_str())));
    let (_, v) = raw(&server, &alice, M::GET, &format!("/_matrix/client/v3/rooms/{room}/aliases"), None).await;
    assert_eq!(v["aliases"], json!(["#nord:localhost"]));

    // Not published until asked; then listed and searchable.
    let (_, v) = raw(&server, &bob, M::GET, "/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(v["chunk"], json!([]));
    alice.send(set_room_visibility::v3::Request::new(room.clone(), Visibility::Public)).await.unwrap();
    let (status, _) = raw(
        &server,
        &bob,
        M::PUT,
        &format!("/_matrix/client/v3/directory/list/room/{room}"),
        Some(json!({ "visibility": "private" })),
    )
    .await;
    assert_eq!(status, 403, "only moderators change directory visibility");
    let mut request = get_public_rooms_filtered::v3::Request::new();
    request.filter.generic_search_term = Some("nord".into());
    let found = bob.send(request).await.unwrap();
    assert_eq!(found.chunk.len(), 1);
    assert_eq!(found.chunk[0].room_id, room);
    assert_eq!(found.chunk[0].name.as_deref(), Some("Préfecture du Nord"));
    let mut request = get_public_rooms_filtered::v3::Request::new();
    request.filter.generic_search_term = Some("sud".into());
    assert!(bob.send(request).await.unwrap().chunk.is_empty());

    // Bob finds Alice through the public room she is in, by display name.
    let results = bob.send(search_users::v3::Request::new("préfète".into())).await.unwrap().results;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].user_id, "@alice:localhost");
    assert_eq!(results[0].display_name.as_deref(), Some("Alice Préfète"));
    assert!(bob.send(search_users::v3::Request::new("nobody-like-this".into())).await.unwrap().results.is_empty());

    // Deleting an alias takes it out of the canonical alias (as Synapse does), and so out of
    // the directory's entry.
    let second = RoomAliasId::parse("#nord-bis:localhost").unwrap();
    alice.send(create_alias::v3::Request::new(second.clone(), room.clone())).await.unwrap();
    let canonical = json!({ "alias": "#nord:localhost", "alt_aliases": ["#nord-bis:localhost"] });
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/");
    let (status, v) = raw(&server, &alice, M::PUT, &path, Some(canonical)).await;
    assert_eq!(status, 200, "{v}");
    for alias in ["%23nord:localhost", "%23nord-bis:localhost"] {
        let (status, v) =
            raw(&server, &alice, M::DELETE, &format!("/_matrix/client/v3/directory/room/{alias}"), None).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = raw(&server, &alice, M::GET, &path, None).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("alias").is_none() && v["alt_aliases"] == json!([]), "no deleted alias is named: {v}");
    let (_, v) = raw(&server, &bob, M::GET, "/_matrix/client/v3/publicRooms", None).await;
    assert!(v["chunk"][0].get("canonical_alias").is_none(), "{v}");
}

#[tokio::test]
async fn bad_input_is_refused_and_sends_are_idempotent() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let room = create(&alice, |_| {}).await;
    let (status, v) = raw(&server, &alice, M::GET, "/_matrix/client/v3/rooms/not-a-room/messages?dir=b", None).await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, _) =
        raw(&server, &alice, M::GET, "/_matrix/client/v3/rooms/!unknown:localhost/messages?dir=b", None).await;
    assert_eq!(status, 403);
    let big = "x".repeat(70_000);
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/big");
    let (status, v) = raw(&server, &alice, M::PUT, &path, Some(json!({ "msgtype": "m.text", "body": big }))).await;
    assert_eq!((status, v["errcode"].as_str()), (413, Some("M_TOO_LARGE")));
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/same-txn");
    let (_, first) = raw(&server, &alice, M::PUT, &path, Some(json!({ "msgtype": "m.text", "body": "once" }))).await;
    let (_, second) = raw(&server, &alice, M::PUT, &path, Some(json!({ "msgtype": "m.text", "body": "once" }))).await;
    assert_eq!(first["event_id"], second["event_id"]);
    // A transaction id is scoped to the device and the endpoint: the same id to another room,
    // as another event type, or for a redaction is a new request, not a retry of the first.
    let other_room = create(&alice, |_| {}).await;
    let path = format!("/_matrix/client/v3/rooms/{other_room}/send/m.room.message/same-txn");
    let (status, elsewhere) =
        raw(&server, &alice, M::PUT, &path, Some(json!({ "msgtype": "m.text", "body": "elsewhere" }))).await;
    assert_eq!(status, 200);
    assert_ne!(elsewhere["event_id"], first["event_id"], "another room, another event");
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/same-txn");
    let reaction =
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": first["event_id"], "key": "👍" } });
    let (status, reacted) = raw(&server, &alice, M::PUT, &path, Some(reaction)).await;
    assert_eq!(status, 200);
    assert_ne!(reacted["event_id"], first["event_id"], "another event type, another event");
    let (chunk, _) = messages(&alice, &other_room, Direction::Backward, None, 50).await;
    assert_eq!(chunk.iter().filter(|e| e["content"]["body"] == "elsewhere").count(), 1);
    let (chunk, _) = messages(&alice, &room, Direction::Backward, None, 50).await;
    assert_eq!(chunk.iter().filter(|e| e["content"]["body"] == "once").count(), 1);
    assert_eq!(chunk.iter().filter(|e| e["type"] == "m.reaction").count(), 1);
    assert!(chunk.iter().all(|e| e["content"]["body"] != json!(big)), "nothing stored for the refused event");
}

#[tokio::test]
async fn concurrent_senders_leave_one_extremity_and_every_event_once() {
    let server = TestServer::start();
    let owner = server.register("owner", "pw").await;
    let room = create(&owner, |r| r.preset = Some(create_room::v3::RoomPreset::PublicChat)).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let c = server.register(&format!("agent{i}"), "pw").await;
        c.send(join_room_by_id::v3::Request::new(room.clone())).await.unwrap();
        clients.push(c);
    }
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                say(&c, &room, &format!("{i}-{j}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (chunk, end) = messages(&owner, &room, Direction::Forward, None, 1000).await;
    assert!(end.is_none());
    let bodies: Vec<&str> = chunk
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 100);
    assert_eq!(bodies.iter().collect::<HashSet<_>>().len(), 100, "every event exactly once");
    for i in 0..20 {
        let mine: Vec<&&str> = bodies.iter().filter(|b| b.starts_with(&format!("{i}-"))).collect();
        assert_eq!(
            mine,
            (0..5).map(|j| format!("{i}-{j}")).collect::<Vec<_>>().iter().collect::<Vec<_>>(),
            "each sender's order kept"
        );
    }
    let info = server.cli(&["room", "info", room.as_str()]);
    let info = String::from_utf8(info.stdout).unwrap();
    assert!(info.contains("forward_extremities: 1"), "{info}");
    assert!(info.contains("joined_members: 21"), "{info}");
}

#[tokio::test]
async fn restart_keeps_rooms_state_and_order() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let room = create(&alice, |r| r.name = Some("Persistante".into())).await;
    for i in 0..10 {
        say(&alice, &room, &format!("n{i}")).await;
    }
    server.restart();
    // The restarted server listens on a new port: a fresh client, same account.
    let alice = server.client().await;
    alice.matrix_auth().login_username("alice", "pw").await.unwrap();
    let (chunk, _) = messages(&alice, &room, Direction::Backward, None, 10).await;
    let bodies: Vec<&str> = chunk.iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, (0..10).rev().map(|i| format!("n{i}")).collect::<Vec<_>>());
    let s = state(&alice, &room).await;
    assert_eq!(find(&s, "m.room.name", "").unwrap()["content"]["name"], "Persistante");
    // The room still accepts events after restart (extremities and state were persisted).
    say(&alice, &room, "after").await;
    let (chunk, _) = messages(&alice, &room, Direction::Backward, None, 1).await;
    assert_eq!(chunk[0]["content"]["body"], "after");
}

#[tokio::test]
async fn upgrade_creates_successor_and_tombstones_old_room() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let old = create(&alice, |r| {
        r.preset = Some(create_room::v3::RoomPreset::PublicChat);
        r.room_version = Some(RoomVersionId::V10);
        r.name = Some("Ancienne".into());
        r.room_alias_name = Some("migration".into());
    })
    .await;
    bob.send(join_room_by_id::v3::Request::new(old.clone())).await.unwrap();
    let path = format!("/_matrix/client/v3/rooms/{old}/upgrade");
    let (status, v) = raw(&server, &bob, M::POST, &path, Some(json!({ "new_version": "12" }))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only those who may tombstone");
    let (status, v) = raw(&server, &alice, M::POST, &path, Some(json!({ "new_version": "7" }))).await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_UNSUPPORTED_ROOM_VERSION")));
    let (status, v) = raw(&server, &alice, M::POST, &path, Some(json!({ "new_version": "12" }))).await;
    assert_eq!(status, 200, "{v}");
    let new: OwnedRoomId = v["replacement_room"].as_str().unwrap().try_into().unwrap();

    let old_state = state(&alice, &old).await;
    assert_eq!(find(&old_state, "m.room.tombstone", "").unwrap()["content"]["replacement_room"], new.as_str());
    let new_state = state(&alice, &new).await;
    let create_event = find(&new_state, "m.room.create", "").unwrap();
    assert_eq!(create_event["content"]["room_version"], "12");
    assert_eq!(create_event["content"]["predecessor"]["room_id"], old.as_str());
    assert_eq!(find(&new_state, "m.room.name", "").unwrap()["content"]["name"], "Ancienne");
    assert_eq!(find(&new_state, "m.room.join_rules", "").unwrap()["content"]["join_rule"], "public");
    let alias = RoomAliasId::parse("#migration:localhost").unwrap();
    assert_eq!(alice.send(get_alias::v3::Request::new(alias)).await.unwrap().room_id, new, "alias follows the room");
    // The old room is read-only for ordinary members; Bob can follow to the new one.
    let (status, _) = raw(
        &server,
        &bob,
        M::PUT,
        &format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/x"),
        Some(json!({ "msgtype": "m.text", "body": "?" })),
    )
    .await;
    assert_eq!(status, 403);
    bob.send(join_room_by_id::v3::Request::new(new.clone())).await.unwrap();
}

#[tokio::test]
async fn context_relations_lazy_members_and_members_at() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create(&alice, |r| r.preset = Some(create_room::v3::RoomPreset::PublicChat)).await;
    let before_bob = say(&alice, &room, "avant").await;
    bob.send(join_room_by_id::v3::Request::new(room.clone())).await.unwrap();
    let target = say(&bob, &room, "cible").await;
    say(&alice, &room, "après").await;
    let base = format!("/_matrix/client/v3/rooms/{room}");
    let v1 = format!("/_matrix/client/v1/rooms/{room}");

    let (status, v) = raw(&server, &alice, M::GET, &format!("{base}/context/{target}?limit=2"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["event"]["event_id"], target.as_str());
    assert_eq!(v["events_before"][0]["content"]["membership"], "join", "bob's join precedes his message");
    assert_eq!(v["events_after"][0]["content"]["body"], "après");
    assert!(v["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    // limit=0 is valid: the event alone, with tokens either side (Element X asks for it).
    let (status, v) = raw(&server, &alice, M::GET, &format!("{base}/context/{target}?limit=0"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["event"]["event_id"], target.as_str());
    let count = |key: &str| v[key].as_array().map_or(0, Vec::len);
    assert_eq!((count("events_before"), count("events_after")), (0, 0), "{v}");
    assert!(v["start"].is_string() && v["end"].is_string(), "{v}");

    // A reaction and an edit relate to the target.
    let reaction = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": "👍" } });
    raw(&server, &alice, M::PUT, &format!("{base}/send/m.reaction/r1"), Some(reaction)).await;
    let edit = json!({ "msgtype": "m.text", "body": "* cible!", "m.new_content": { "msgtype": "m.text", "body": "cible!" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": target } });
    raw(&server, &bob, M::PUT, &format!("{base}/send/m.room.message/e1"), Some(edit)).await;
    let (_, all) = raw(&server, &alice, M::GET, &format!("{v1}/relations/{target}"), None).await;
    assert_eq!(all["chunk"].as_array().unwrap().len(), 2);
    let (_, edits) = raw(&server, &alice, M::GET, &format!("{v1}/relations/{target}/m.replace"), None).await;
    assert_eq!(edits["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(edits["chunk"][0]["content"]["m.new_content"]["body"], "cible!");
    let (_, reactions) =
        raw(&server, &alice, M::GET, &format!("{v1}/relations/{target}/m.annotation/m.reaction"), None).await;
    assert_eq!(reactions["chunk"].as_array().unwrap().len(), 1);

    // Lazy-loaded members: only the senders of the returned events.
    let filter = json!({ "lazy_load_members": true, "types": ["m.room.message"] }).to_string();
    let (_, page) =
        raw(&server, &alice, M::GET, &format!("{base}/messages?dir=b&limit=1&filter={}", urlencode(&filter)), None)
            .await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1);
    let senders: Vec<&str> =
        page["state"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(senders, vec![page["chunk"][0]["sender"].as_str().unwrap()]);

    // Members as they were before Bob joined.
    let meta = alice.send(get_room_event::v3::Request::new(room.clone(), before_bob)).await.unwrap();
    assert_eq!(meta.event.deserialize_as::<Value>().unwrap()["content"]["body"], "avant");
    let (_, page) = raw(&server, &alice, M::GET, &format!("{base}/messages?dir=b&limit=100"), None).await;
    let avant = page["chunk"].as_array().unwrap().iter().position(|e| e["content"]["body"] == "avant").unwrap();
    // A token just after "avant": paginate forward from the start up to it.
    let (_, early) = raw(
        &server,
        &alice,
        M::GET,
        &format!("{base}/messages?dir=f&limit={}", page["chunk"].as_array().unwrap().len() - avant),
        None,
    )
    .await;
    let at = early["end"].as_str().unwrap().to_owned();
    let (_, members) = raw(&server, &alice, M::GET, &format!("{base}/members?at={at}"), None).await;
    let ids: Vec<&str> =
        members["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["@alice:localhost"]);
    let (_, now) = raw(&server, &alice, M::GET, &format!("{base}/members"), None).await;
    assert_eq!(now["chunk"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn knock_then_invite_then_join() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (_, v) = raw(
        &server,
        &alice,
        M::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] })),
    )
    .await;
    let room = v["room_id"].as_str().unwrap().to_owned();
    let (status, _) =
        raw(&server, &bob, M::POST, &format!("/_matrix/client/v3/rooms/{room}/join"), Some(json!({}))).await;
    assert_eq!(status, 403, "a knock room needs an invite to join");
    let (status, v) =
        raw(&server, &bob, M::POST, &format!("/_matrix/client/v3/knock/{room}"), Some(json!({ "reason": "équipe" })))
            .await;
    assert_eq!((status, v["room_id"].as_str()), (200, Some(room.as_str())));
    let (_, knock) = raw(
        &server,
        &alice,
        M::GET,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
        None,
    )
    .await;
    assert_eq!(knock["membership"], "knock");
    assert_eq!(knock["reason"], "équipe");
    let (status, _) = raw(
        &server,
        &alice,
        M::POST,
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(json!({ "user_id": "@bob:localhost" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) =
        raw(&server, &bob, M::POST, &format!("/_matrix/client/v3/rooms/{room}/join"), Some(json!({}))).await;
    assert_eq!(status, 200);
}
