//! History visibility and departed accounts: what a reader may see of a room follows the room's
//! `m.room.history_visibility` at each event and the periods the reader was actually in the room.
//! Every reading endpoint is checked with raw HTTP, so the exact status and errcode are asserted.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::common::{register_raw, urlencode, TestServer};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A registered user talking raw HTTP to one server.
struct User {
    id: String,
    token: String,
    url: String,
    http: reqwest::Client,
}

async fn register(server: &TestServer, name: &str) -> User {
    let (id, token) = register_raw(server, name).await;
    User { id, token, url: server.url.clone(), http: server.http() }
}

impl User {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.url, path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A GET that must succeed.
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path} as {}: {body}", self.id);
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 200, "POST {path} as {}: {answer}", self.id);
        answer
    }

    async fn put(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(reqwest::Method::PUT, path, Some(body)).await;
        assert_eq!(status, 200, "PUT {path} as {}: {answer}", self.id);
        answer
    }

    async fn create_room(&self, body: Value) -> String {
        self.post("/_matrix/client/v3/createRoom", body).await["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends a text message and returns its event id. Each send has a transaction id of its own
    /// (a counter): a repeated one would be answered with the first send's event, nothing sent.
    async fn say(&self, room: &str, text: &str) -> String {
        static TXN: AtomicU64 = AtomicU64::new(0);
        static SENT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let txn = format!("say{}", TXN.fetch_add(1, Ordering::Relaxed));
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let event = self.put(&path, json!({ "msgtype": "m.text", "body": text })).await["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            SENT.lock().unwrap().insert(event.clone()),
            "{text:?} in {room} was not sent: {event} is an earlier send"
        );
        event
    }

    async fn set_state(&self, room: &str, kind: &str, key: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}");
        self.put(&path, content).await["event_id"].as_str().unwrap().to_owned()
    }

    async fn membership(&self, room: &str, action: &str, body: Value) {
        self.post(&format!("/_matrix/client/v3/rooms/{room}/{action}"), body).await;
    }

    async fn join(&self, room: &str) {
        self.post(&format!("/_matrix/client/v3/join/{room}"), json!({})).await;
    }

    /// Message bodies of `/messages` backwards from the end (all pages).
    async fn message_bodies(&self, room: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut from = String::new();
        loop {
            let page = self.ok(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=7{from}")).await;
            out.extend(texts(&page["chunk"]));
            match page["end"].as_str() {
                Some(end) => from = format!("&from={end}"),
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// Event types and state keys of `/messages` backwards from the end (one large page).
    async fn message_events(&self, room: &str) -> Vec<Value> {
        let page = self.ok(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000")).await;
        page["chunk"].as_array().unwrap().clone()
    }
}

fn texts(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn assert_error(answer: &(u16, Value), status: u16, errcode: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{what}: {}", answer.1);
}

/// A room created by `owner` with the given history visibility and join rule, `before` said in it
/// before anyone else arrives.
async fn room_with(owner: &User, visibility: &str, join_rule: &str, before: &[&str]) -> String {
    let room = owner
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": visibility } },
                { "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": join_rule } },
            ],
        }))
        .await;
    for text in before {
        owner.say(&room, text).await;
    }
    room
}

#[tokio::test]
async fn joined_visibility_hides_history_from_every_reading_endpoint() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let room = room_with(&alice, "joined", "public", &[]).await;
    let secret = alice.say(&room, "secret before bob").await;
    // A reply in a thread of the secret, also before Bob arrives.
    let reply = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/thread1"),
            json!({ "msgtype": "m.text", "body": "secret thread reply",
                    "m.relates_to": { "rel_type": "m.thread", "event_id": secret } }),
        )
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.join(&room).await;
    let after = alice.say(&room, "after bob joined").await;

    // /messages: only what came after the join.
    assert_eq!(bob.message_bodies(&room).await, ["after bob joined"]);
    assert_eq!(alice.message_bodies(&room).await, ["secret before bob", "secret thread reply", "after bob joined"]);

    // /event: 404 for the past, 200 for the present.
    for hidden in [&secret, &reply] {
        let answer = bob.get(&format!("/_matrix/client/v3/rooms/{room}/event/{hidden}")).await;
        assert_error(&answer, 404, "M_NOT_FOUND", "an event from before the join");
    }
    let seen = bob.ok(&format!("/_matrix/client/v3/rooms/{room}/event/{after}")).await;
    assert_eq!(seen["content"]["body"], "after bob joined");

    // /context: not of a hidden event, and never reaching back into the hidden past.
    let answer = bob.get(&format!("/_matrix/client/v3/rooms/{room}/context/{secret}")).await;
    assert_error(&answer, 404, "M_NOT_FOUND", "context of a hidden event");
    let context = bob.ok(&format!("/_matrix/client/v3/rooms/{room}/context/{after}?limit=20")).await;
    assert!(texts(&context["events_before"]).is_empty(), "{}", context["events_before"]);
    let alice_context = alice.ok(&format!("/_matrix/client/v3/rooms/{room}/context/{after}?limit=20")).await;
    assert_eq!(texts(&alice_context["events_before"]), ["secret thread reply", "secret before bob"]);

    // /relations: not of a hidden parent.
    let answer = bob.get(&format!("/_matrix/client/v1/rooms/{room}/relations/{secret}")).await;
    assert_error(&answer, 404, "M_NOT_FOUND", "relations of a hidden event");
    let relations = alice.ok(&format!("/_matrix/client/v1/rooms/{room}/relations/{secret}")).await;
    assert_eq!(texts(&relations["chunk"]), ["secret thread reply"]);

    // /sync and sliding sync: the newly joined room's first timeline starts at the join.
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 30 } } }).to_string());
    let sync = bob.ok(&format!("/_matrix/client/v3/sync?filter={filter}")).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(texts(&timeline["events"]), ["after bob joined"]);
    assert_ne!(timeline["limited"], true, "nothing more that Bob may read: {timeline}");
    let state_types: Vec<&str> = sync["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(timeline["events"].as_array().into_iter().flatten())
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(state_types.contains(&"m.room.join_rules"), "the current state stays visible: {state_types:?}");
    let sliding = bob
        .post(
            SLIDING,
            json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 20, "required_state": [] } } }),
        )
        .await;
    assert_eq!(texts(&sliding["rooms"][&room]["timeline"]), ["after bob joined"]);

    // /notifications and unread counts: the hidden past does not notify.
    let notifications = bob.ok("/_matrix/client/v3/notifications").await;
    let notified: Vec<String> = notifications["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"]["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(notified, ["after bob joined"]);
    assert_eq!(sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1);
}

#[tokio::test]
async fn shared_and_invited_visibility_and_a_change_mid_history() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;

    // shared: a later member reads everything said before, while the setting was `shared`.
    let room = room_with(&alice, "shared", "invite", &["shared one", "shared two"]).await;
    alice.set_state(&room, "m.room.history_visibility", "", json!({ "history_visibility": "joined" })).await;
    alice.say(&room, "joined-only").await;
    alice.set_state(&room, "m.room.history_visibility", "", json!({ "history_visibility": "invited" })).await;
    alice.membership(&room, "invite", json!({ "user_id": bob.id })).await;
    alice.say(&room, "after the invite").await;
    // An invitee may not read yet (they are not joined), however the room is set.
    let answer = bob.get(&format!("/_matrix/client/v3/rooms/{room}/state")).await;
    assert_error(&answer, 403, "M_FORBIDDEN", "state for an invitee");
    bob.join(&room).await;
    alice.say(&room, "after the join").await;
    assert_eq!(bob.message_bodies(&room).await, ["shared one", "shared two", "after the invite", "after the join"]);

    // Carol, never invited, of a room that is not world-readable: 403 everywhere.
    for path in [
        format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
        format!("/_matrix/client/v3/rooms/{room}/state"),
        format!("/_matrix/client/v3/rooms/{room}/members"),
        format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        format!("/_matrix/client/v3/rooms/{room}/aliases"),
    ] {
        assert_error(&carol.get(&path).await, 403, "M_FORBIDDEN", &path);
    }

    // world_readable: anyone may read without joining, but only from when it was set.
    alice.set_state(&room, "m.room.history_visibility", "", json!({ "history_visibility": "world_readable" })).await;
    let open = alice.say(&room, "for everyone").await;
    assert_eq!(carol.message_bodies(&room).await, ["for everyone"]);
    let seen = carol.ok(&format!("/_matrix/client/v3/rooms/{room}/event/{open}")).await;
    assert_eq!(seen["content"]["body"], "for everyone");
    carol.ok(&format!("/_matrix/client/v3/rooms/{room}/joined_members")).await;
}

/// Someone who was never joined — a withdrawn knock, a rejected invite, a ban before joining —
/// reads nothing of the room but their own membership events, and none of its state.
#[tokio::test]
async fn never_joined_users_read_nothing() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let knocker = register(&server, "knocker").await;
    let rejecter = register(&server, "rejecter").await;
    let banned = register(&server, "banned").await;
    let room = room_with(&alice, "shared", "knock", &["old secret"]).await;
    alice.set_state(&room, "m.room.topic", "", json!({ "topic": "secret topic" })).await;

    knocker.post(&format!("/_matrix/client/v3/knock/{room}"), json!({})).await;
    knocker.membership(&room, "leave", json!({})).await;
    alice.membership(&room, "invite", json!({ "user_id": rejecter.id })).await;
    rejecter.membership(&room, "leave", json!({})).await;
    alice.membership(&room, "ban", json!({ "user_id": banned.id })).await;
    alice.say(&room, "newer secret").await;

    for user in [&knocker, &rejecter, &banned] {
        let events = user.message_events(&room).await;
        assert!(
            events.iter().all(|e| e["type"] == "m.room.member" && e["state_key"] == user.id.as_str()),
            "{} sees only their own membership: {events:?}",
            user.id
        );
        assert!(!events.is_empty(), "{} sees their own membership", user.id);
        for path in [
            format!("/_matrix/client/v3/rooms/{room}/state"),
            format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            format!("/_matrix/client/v3/rooms/{room}/members"),
            format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            format!("/_matrix/client/v3/rooms/{room}/aliases"),
        ] {
            assert_error(&user.get(&path).await, 403, "M_FORBIDDEN", &format!("{path} as {}", user.id));
        }
        let create = alice.ok(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/?format=event")).await;
        let create_id = create["event_id"].as_str().unwrap();
        let answer = user.get(&format!("/_matrix/client/v3/rooms/{room}/context/{create_id}")).await;
        assert_error(&answer, 404, "M_NOT_FOUND", "context of the room's creation");

        // The leave section of sync: their own membership, no messages, no state.
        let filter = urlencode(&json!({ "room": { "include_leave": true } }).to_string());
        let sync = user.ok(&format!("/_matrix/client/v3/sync?filter={filter}")).await;
        let left = &sync["rooms"]["leave"][&room];
        assert!(left.is_object(), "{} has the room in leave: {sync}", user.id);
        let everything: Vec<&Value> = left["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(left["state"]["events"].as_array().into_iter().flatten())
            .collect();
        assert!(
            everything.iter().all(|e| e["type"] == "m.room.member" && e["state_key"] == user.id.as_str()),
            "{}: {everything:?}",
            user.id
        );
    }
}

/// A member who left (or was kicked) reads up to their departure: messages, state, members.
#[tokio::test]
async fn departed_members_read_up_to_their_departure() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let kicked = register(&server, "kicked").await;
    let dave = register(&server, "dave").await;
    let room = room_with(&alice, "shared", "public", &["before"]).await;
    alice.set_state(&room, "m.room.topic", "", json!({ "topic": "first topic" })).await;
    bob.join(&room).await;
    kicked.join(&room).await;
    alice.say(&room, "while there").await;
    bob.membership(&room, "leave", json!({})).await;
    alice.membership(&room, "kick", json!({ "user_id": kicked.id })).await;
    alice.say(&room, "after they left").await;
    alice.set_state(&room, "m.room.topic", "", json!({ "topic": "later topic" })).await;
    dave.join(&room).await;
    let now = bob.ok("/_matrix/client/v3/sync").await["next_batch"].as_str().unwrap().to_owned();

    for user in [&bob, &kicked] {
        assert_eq!(user.message_bodies(&room).await, ["before", "while there"], "{}", user.id);
        let topic = user.ok(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/")).await;
        assert_eq!(topic["topic"], "first topic", "{}: the state as they left it", user.id);
        let members = user.ok(&format!("/_matrix/client/v3/rooms/{room}/members?at={now}")).await;
        let ids: Vec<&str> =
            members["chunk"].as_array().unwrap().iter().filter_map(|e| e["state_key"].as_str()).collect();
        assert!(!ids.contains(&dave.id.as_str()), "{}: a member who came later is not shown: {ids:?}", user.id);
        assert!(ids.contains(&alice.id.as_str()), "{ids:?}");
        let answer = user.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members")).await;
        assert_error(&answer, 403, "M_FORBIDDEN", "joined_members after leaving");
    }
    // A current member's /members?at= takes a sync token too (as Element Web sends it).
    let members = dave.ok(&format!("/_matrix/client/v3/rooms/{room}/members?at={now}")).await;
    let ids: Vec<&str> = members["chunk"].as_array().unwrap().iter().filter_map(|e| e["state_key"].as_str()).collect();
    assert!(ids.contains(&dave.id.as_str()), "{ids:?}");
}

/// Deactivation leaves every room and rejects invites; with `erase`, a newcomer sees the messages
/// pruned while members who were there still read them.
#[tokio::test]
async fn deactivation_leaves_every_room_and_erases_for_newcomers() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let newcomer = register(&server, "newcomer").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let room = room_with(&alice, "shared", "public", &[]).await;
        bob.join(&room).await;
        bob.say(&room, "bob was here").await;
        rooms.push(room);
    }
    let invited_to = room_with(&alice, "shared", "invite", &[]).await;
    alice.membership(&invited_to, "invite", json!({ "user_id": bob.id })).await;
    let found = alice.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "bob" })).await;
    assert_eq!(found["results"].as_array().unwrap().len(), 1, "bob is in the directory: {found}");

    let path = "/_matrix/client/v3/account/deactivate";
    let (status, challenge) = bob.call(reqwest::Method::POST, path, Some(json!({ "erase": true }))).await;
    assert_eq!(status, 401, "{challenge}");
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
                       "password": "pw", "session": challenge["session"] });
    bob.post(path, json!({ "erase": true, "auth": auth })).await;

    for room in rooms.iter().chain([&invited_to]) {
        let members = alice.ok(&format!("/_matrix/client/v3/rooms/{room}/members")).await;
        let bob_member = members["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == bob.id.as_str())
            .unwrap_or_else(|| panic!("bob's membership in {room}: {members}"))
            .clone();
        assert_eq!(bob_member["content"]["membership"], "leave", "{room}");
        assert_eq!(bob_member["sender"], bob.id.as_str());
    }
    let found = alice.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "bob" })).await;
    assert!(found["results"].as_array().unwrap().is_empty(), "bob left the directory: {found}");
    assert_error(&alice.get(&format!("/_matrix/client/v3/profile/{}", bob.id)).await, 404, "M_NOT_FOUND", "profile");

    // Erasure: Alice was there and still reads Bob's words; a newcomer sees them pruned.
    assert_eq!(alice.message_bodies(&rooms[0]).await, ["bob was here"]);
    newcomer.join(&rooms[0]).await;
    let events = newcomer.message_events(&rooms[0]).await;
    let bobs: Vec<&Value> =
        events.iter().filter(|e| e["sender"] == bob.id.as_str() && e["type"] == "m.room.message").collect();
    assert_eq!(bobs.len(), 1, "the message is still there, pruned: {events:?}");
    assert_eq!(bobs[0]["content"], json!({}), "pruned content");
}

/// A deactivation that dies half-way finishes at the next start.
#[tokio::test]
async fn interrupted_deactivation_finishes_at_the_next_start() {
    let mut server = TestServer::start_with_env(&[], &[("FAULT_HEMICYCLE_ABORT_DEACTIVATION_AFTER", "2")]);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let mut rooms = Vec::new();
    for _ in 0..5 {
        let room = room_with(&alice, "shared", "public", &[]).await;
        bob.join(&room).await;
        rooms.push(room);
    }
    let (status, challenge) =
        bob.call(reqwest::Method::POST, "/_matrix/client/v3/account/deactivate", Some(json!({}))).await;
    assert_eq!(status, 401);
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
                       "password": "pw", "session": challenge["session"] });
    let result = bob
        .http
        .post(format!("{}/_matrix/client/v3/account/deactivate", server.url))
        .bearer_auth(&bob.token)
        .json(&json!({ "auth": auth }))
        .send()
        .await;
    assert!(result.is_err(), "the server died mid-deactivation: {result:?}");
    assert!(!server.wait_exit().success(), "aborted");

    let bob_id = bob.id.clone();
    let bob_membership = |members: &Value| -> String {
        members["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == bob_id.as_str())
            .map(|e| e["content"]["membership"].as_str().unwrap().to_owned())
            .unwrap()
    };
    server.set_env(&[]);
    server.restart();
    let alice = User { url: server.url.clone(), ..alice };
    let bob = User { url: server.url.clone(), ..bob };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for room in &rooms {
            let members = alice.ok(&format!("/_matrix/client/v3/rooms/{room}/members")).await;
            if bob_membership(&members) == "leave" {
                left += 1;
            }
        }
        if left == rooms.len() {
            break;
        }
        assert!(left >= 2, "the rooms left before the crash stay left");
        assert!(Instant::now() < deadline, "the deactivation was not finished after a restart ({left} of 5 left)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = bob.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{body}");
}
