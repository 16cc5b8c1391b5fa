//! A hostile peer against a real node. The peer is a real HTTPS server on loopback with its own
//! signing key: it answers the node's requests as each test scripts (forged templates, a room
//! whose state it made up, redirects to addresses the node must not reach, huge answers) and
//! signs its own requests and events. Every rule of "what a peer is trusted with"
//! (docs/architecture.md) has its test here, each written to fail without its check.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use hemicycle_federation_tests::{enc, free_port, Node, Rng, SYNC_WAIT};
use reqwest::Method;
use ruma::{
    serde::Base64,
    signatures::{hash_and_sign_event, reference_hash, sign_json, Ed25519KeyPair},
    CanonicalJsonObject, RoomVersionId,
};
use serde_json::{json, Value};

/// What the peer answers to one request.
enum Reply {
    Json(u16, Value),
    /// A redirect to somewhere else.
    Redirect(String),
    /// A raw body with its content type.
    Raw(u16, String, Vec<u8>),
}

/// A request the peer received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    /// The request's body, as text.
    body: String,
}

type Answer = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// The peer's signing keys: the one it signs with, and those it retired.
struct Keys {
    current: Ed25519KeyPair,
    /// (key id, public key, expired_ts)
    old: Vec<(String, String, u64)>,
}

fn key_id(pair: &Ed25519KeyPair) -> String {
    format!("ed25519:{}", pair.version())
}

fn new_key(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).expect("a key pair")
}

fn public_b64(pair: &Ed25519KeyPair) -> String {
    Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64
}

struct Hostile {
    name: String,
    keys: Arc<Mutex<Keys>>,
    script: Arc<Mutex<Vec<(String, Answer)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Told of every request as it is recorded.
    arrived: Arc<tokio::sync::Notify>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hostile {
    async fn start() -> Hostile {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("self-signed certificate");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let acceptor = hemicycle::server::tls_acceptor(&cert, &key).expect("TLS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let name = format!("127.0.0.1:{}", listener.local_addr().expect("address").port());
        let keys = Arc::new(Mutex::new(Keys { current: new_key("k1"), old: Vec::new() }));
        let script: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let state = (name.clone(), keys.clone(), script.clone(), seen.clone(), arrived.clone());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let (name, keys, script, seen, arrived) = state.clone();
            async move {
                let request = Seen {
                    path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                seen.lock().expect("seen").push(request.clone());
                arrived.notify_waiters();
                let answer = script
                    .lock()
                    .expect("script")
                    .iter()
                    .rev()
                    .find(|(prefix, _)| request.path.starts_with(prefix.as_str()))
                    .map(|(_, a)| a.clone());
                let reply = match answer {
                    Some(answer) => answer(&request),
                    None if request.path.starts_with("/_matrix/key/v2/server") => {
                        Reply::Json(200, key_document(&name, &keys.lock().expect("keys")))
                    }
                    None => Reply::Json(404, json!({ "errcode": "M_NOT_FOUND", "error": "nothing here" })),
                };
                respond(reply)
            }
        });
        let server = hemicycle::server::serve_https(listener, acceptor, app);
        let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");
        Hostile { name, keys, script, seen, arrived, http, server, _dir: dir }
    }

    fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// Answers requests whose path starts with `prefix` (the latest scripted answer wins).
    fn on(&self, prefix: &str, answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) {
        self.script.lock().expect("script").push((prefix.to_owned(), Arc::new(answer)));
    }

    fn requests(&self, prefix: &str) -> Vec<Seen> {
        self.seen.lock().expect("seen").iter().filter(|s| s.path.starts_with(prefix)).cloned().collect()
    }

    /// Waits (up to [`SYNC_WAIT`]) for a request under `prefix` that `wanted` accepts.
    async fn wait_for(&self, prefix: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + SYNC_WAIT;
        loop {
            let arrived = self.arrived.notified();
            if let Some(found) = self.requests(prefix).into_iter().find(|s| wanted(s)) {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no such request under {prefix} in {:?}", self.requests(prefix));
            }
        }
    }

    /// Retires the current key (`expired_ts`) and signs with a new one from now on.
    fn rotate(&self, version: &str, expired_ts: u64) -> Ed25519KeyPair {
        let mut keys = self.keys.lock().expect("keys");
        let old = std::mem::replace(&mut keys.current, new_key(version));
        keys.old.push((key_id(&old), public_b64(&old), expired_ts));
        old
    }

    /// A request to `node` signed with the current key (or `with`).
    async fn request(
        &self,
        node: &Node,
        method: Method,
        uri: &str,
        body: Option<Value>,
        with: Option<&Ed25519KeyPair>,
    ) -> (u16, Value) {
        let mut object = json!({
            "method": method.as_str(), "uri": uri, "origin": self.name, "destination": node.server_name(),
        });
        if let Some(body) = &body {
            object["content"] = body.clone();
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(object).expect("canonical JSON");
        let header = {
            let keys = self.keys.lock().expect("keys");
            let pair = with.unwrap_or(&keys.current);
            sign_json(&self.name, pair, &mut object).expect("sign");
            let signature = serde_json::to_value(&object["signatures"]).expect("signatures");
            let sig = signature[&self.name][key_id(pair)].as_str().expect("signature").to_owned();
            format!(
                "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{sig}\"",
                self.name,
                node.server_name(),
                key_id(pair)
            )
        };
        let mut request =
            self.http.request(method, format!("{}{uri}", node.federation_url())).header("Authorization", header);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Hashes and signs an event with the current key; returns its id (room version 3 and later).
    fn event(&self, version: &RoomVersionId, event: Value) -> (String, Value) {
        let mut object: CanonicalJsonObject = serde_json::from_value(event).expect("canonical JSON");
        let rules = version.rules().expect("rules");
        let keys = self.keys.lock().expect("keys");
        hash_and_sign_event(&self.name, &keys.current, &mut object, &rules.redaction).expect("sign the event");
        let id = format!("${}", reference_hash(&object, &rules).expect("reference hash"));
        (id, serde_json::to_value(&object).expect("JSON"))
    }

    /// Joins a room of `node` as `user` (make_join, then send_join); returns the join's id and
    /// the room version.
    async fn join(&self, node: &Node, room: &str, user: &str) -> (String, RoomVersionId) {
        let uri = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", enc(room), enc(user));
        let (status, made) = self.request(node, Method::GET, &uri, None, None).await;
        assert_eq!(status, 200, "make_join: {made}");
        let version = RoomVersionId::try_from(made["room_version"].as_str().expect("room version")).expect("version");
        let mut template = made["event"].clone();
        template["origin"] = json!(self.name);
        template["origin_server_ts"] = json!(now_ms());
        let (id, event) = self.event(&version, template);
        let uri = format!("/_matrix/federation/v2/send_join/{}/{}", enc(room), enc(&id));
        let (status, joined) = self.request(node, Method::PUT, &uri, Some(event), None).await;
        assert_eq!(status, 200, "send_join: {joined}");
        (id, version)
    }

    /// Sends PDUs in a transaction; returns the per-PDU results.
    async fn send(&self, node: &Node, txn: &str, pdus: Vec<Value>) -> Value {
        let uri = format!("/_matrix/federation/v1/send/{txn}");
        let body = json!({ "origin": self.name, "origin_server_ts": now_ms(), "pdus": pdus });
        let (status, answer) = self.request(node, Method::PUT, &uri, Some(body), None).await;
        assert_eq!(status, 200, "send: {answer}");
        answer["pdus"].clone()
    }
}

fn key_document(name: &str, keys: &Keys) -> Value {
    let mut old = serde_json::Map::new();
    for (id, key, expired) in &keys.old {
        old.insert(id.clone(), json!({ "key": key, "expired_ts": expired }));
    }
    let document = json!({
        "server_name": name,
        "valid_until_ts": now_ms() + 3_600_000,
        "verify_keys": { key_id(&keys.current): { "key": public_b64(&keys.current) } },
        "old_verify_keys": old,
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(document).expect("canonical JSON");
    sign_json(name, &keys.current, &mut object).expect("sign the key document");
    serde_json::to_value(&object).expect("JSON")
}

fn respond(reply: Reply) -> axum::response::Response {
    use axum::response::IntoResponse;
    match reply {
        Reply::Json(status, value) => {
            (axum::http::StatusCode::from_u16(status).expect("status"), axum::Json(value)).into_response()
        }
        Reply::Redirect(location) => {
            (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, location)]).into_response()
        }
        Reply::Raw(status, content_type, body) => (
            axum::http::StatusCode::from_u16(status).expect("status"),
            [(axum::http::header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response(),
    }
}

/// A listener on an address the node must never connect to (127.0.0.2: loopback, outside the
/// test nodes' `federation.allow_ranges`); counts the connections it gets.
struct Trap {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Trap {
    async fn start() -> Trap {
        let listener = tokio::net::TcpListener::bind(("127.0.0.2", free_port())).await.expect("listen on 127.0.0.2");
        let addr = listener.local_addr().expect("address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Trap { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The id of the event of `kind` (with `state_key`) in a client's view of a room's state.
fn state_id(state: &[Value], kind: &str, state_key: &str) -> String {
    let event = state.iter().find(|e| e["type"] == kind && e["state_key"] == state_key);
    event.and_then(|e| e["event_id"].as_str()).unwrap_or_else(|| panic!("no {kind} in {state:?}")).to_owned()
}

/// The newest event of a room as a member sees it.
async fn newest(node: &Node, token: &str, room: &str) -> String {
    let page = node.messages(token, room, "b", None, 1).await;
    page["chunk"][0]["event_id"].as_str().expect("an event").to_owned()
}

#[tokio::test]
async fn a_server_without_a_member_reads_nothing_of_a_private_room() {
    let (node, peer) = tokio::join!(Node::start("private", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let private = node.create_room(&at, json!({ "preset": "private_chat" })).await;
    node.send_text(&at, &private, "confidentiel").await;
    let last = newest(&node, &at, &private).await;

    // `shared` history (every preset's) opens history to servers in the room, not to one that
    // only knows the room's id.
    let reads = [
        (Method::GET, format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&private), enc(&last)), None),
        (Method::GET, format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&private), enc(&last)), None),
        (Method::GET, format!("/_matrix/federation/v1/state/{}?event_id={}", enc(&private), enc(&last)), None),
        (Method::GET, format!("/_matrix/federation/v1/event/{}", enc(&last)), None),
        (Method::GET, format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&private), enc(&last)), None),
        (
            Method::POST,
            format!("/_matrix/federation/v1/get_missing_events/{}", enc(&private)),
            Some(json!({ "earliest_events": [], "latest_events": [last], "limit": 10 })),
        ),
    ];
    for (method, uri, body) in reads {
        let (status, answer) = peer.request(&node, method, &uri, body, None).await;
        assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{uri}: {answer}");
    }

    // In a public room it joined, the peer cannot start a backfill from the private room's event.
    let public = node.create_room(&at, json!({ "preset": "public_chat" })).await;
    node.send_text(&at, &public, "bonjour").await;
    peer.join(&node, &public, &peer.user("mallory")).await;
    let uri = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&public), enc(&last));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"], json!([]), "a backfill from another room's event gives nothing: {answer}");
    // The control: from the public room's own newest event, its history comes.
    let own = newest(&node, &at, &public).await;
    let uri = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&public), enc(&own));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "{answer}");
    let pdus = answer["pdus"].as_array().expect("pdus");
    // (A room version 12 create event names no room: its id is the room's.)
    let of_the_room = |p: &Value| p["room_id"] == public.as_str() || p["type"] == "m.room.create";
    assert!(!pdus.is_empty() && pdus.iter().all(of_the_room), "{answer}");
    assert!(!answer.to_string().contains("confidentiel"), "{answer}");
}

/// Events go to the servers in the room when they are sent. A server whose queue is behind
/// (its transactions failed, so it is in backoff) and that joins a room meanwhile must not be
/// sent what came before its join when the queue moves on: with `joined` history, that is
/// history its members may not read (the room's `/backfill` would refuse it the same events).
#[tokio::test]
async fn a_server_that_joins_late_is_not_sent_what_came_before() {
    let (node, peer) = tokio::join!(Node::start("sender", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = open.clone();
    peer.on("/_matrix/federation/v1/send/", move |_| {
        if accepting.load(Ordering::SeqCst) {
            Reply::Json(200, json!({ "pdus": {} }))
        } else {
            Reply::Json(500, json!({ "errcode": "M_UNKNOWN", "error": "not now" }))
        }
    });
    // The peer is in a first room and refuses what the node sends it there: its queue stops.
    let first = node.create_room(&at, json!({ "preset": "public_chat" })).await;
    peer.join(&node, &first, &peer.user("mallory")).await;
    node.send_text(&at, &first, "bonjour").await;
    peer.wait_for("/_matrix/federation/v1/send/", |s| s.body.contains("bonjour")).await;
    // A room whose history is for its members of the moment; what is said before the peer joins.
    let joined = json!({ "type": "m.room.history_visibility", "state_key": "",
                         "content": { "history_visibility": "joined" } });
    let room = node.create_room(&at, json!({ "preset": "public_chat", "initial_state": [joined] })).await;
    for i in 0..3 {
        node.send_text(&at, &room, &format!("avant {i}")).await;
    }
    peer.join(&node, &room, &peer.user("mallory")).await;
    node.send_text(&at, &room, "après").await;
    open.store(true, Ordering::SeqCst);
    // The queue moves on once the backoff ends: what was said after the join arrives...
    peer.wait_for("/_matrix/federation/v1/send/", |s| s.body.contains("après")).await;
    // ...and the earlier room's message with it, but nothing of before the join.
    let sent: Vec<String> = peer.requests("/_matrix/federation/v1/send/").into_iter().map(|s| s.body).collect();
    assert!(sent.iter().any(|b| b.contains("bonjour")), "{sent:?}");
    assert!(!sent.iter().any(|b| b.contains("avant")), "history before the join was pushed: {sent:?}");
}

#[tokio::test]
async fn a_restricted_room_is_not_joined_with_a_forged_authoriser() {
    let (node, peer) = tokio::join!(Node::start("restricted", &[]), Hostile::start());
    let (alice, at) = node.register("alice").await;
    let space = node.create_room(&at, json!({ "preset": "private_chat" })).await;
    let room = node
        .create_room(
            &at,
            json!({ "preset": "private_chat", "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
            }] }),
        )
        .await;
    let state = node.get_state(&at, &room).await;
    let auth = vec![
        state_id(&state, "m.room.power_levels", ""),
        state_id(&state, "m.room.join_rules", ""),
        state_id(&state, "m.room.member", &alice),
    ];
    let last = newest(&node, &at, &room).await;
    let mallory = peer.user("mallory");
    // The peer builds the join itself, naming alice as the member who vouches for it.
    let (id, join) = peer.event(
        &RoomVersionId::V12,
        json!({
            "room_id": room, "sender": mallory, "state_key": mallory, "type": "m.room.member",
            "content": { "membership": "join", "join_authorised_via_users_server": alice },
            "prev_events": [last], "auth_events": auth, "depth": 20, "origin_server_ts": now_ms(), "origin": peer.name,
        }),
    );
    let uri = format!("/_matrix/federation/v2/send_join/{}/{}", enc(&room), enc(&id));
    let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(join), None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    let members = node.joined_members(&at, &room).await;
    assert!(!members.contains(&mallory), "mallory is not in the room: {members:?}");
}

#[tokio::test]
async fn an_event_at_the_largest_depth_does_not_lock_the_room() {
    let (node, peer) = tokio::join!(Node::start("depth", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let room = node.create_room(&at, json!({ "preset": "public_chat" })).await;
    let mallory = peer.user("mallory");
    let (join, version) = peer.join(&node, &room, &mallory).await;
    let state = node.get_state(&at, &room).await;
    let (id, pdu) = peer.event(
        &version,
        json!({
            "room_id": room, "sender": mallory, "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": "tout au fond" },
            "prev_events": [join], "auth_events": [state_id(&state, "m.room.power_levels", ""), join],
            "depth": 9_007_199_254_740_991u64, "origin_server_ts": now_ms(), "origin": peer.name,
        }),
    );
    let results = peer.send(&node, "deep", vec![pdu]).await;
    assert_eq!(results[&id], json!({}), "the PDU itself is valid: {results}");
    let since = node.sync_token(&at).await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/after-deep", enc(&room));
    let (status, sent) =
        node.call(Method::PUT, Some(&at), &path, Some(&json!({ "msgtype": "m.text", "body": "encore là" }))).await;
    assert_eq!(status, 200, "a local user still sends: {sent}");
    let sent = sent["event_id"].as_str().expect("event id").to_owned();
    node.wait_for_timeline(&at, &room, Some(&since), |e| e["event_id"] == sent.as_str(), SYNC_WAIT).await;
}

/// A room the peer made up (room version 10), with one state event that its own auth rules
/// refuse: a topic set by a user who never joined.
struct MadeUpRoom {
    id: String,
    create: String,
    creator_join: String,
    power: String,
    rules: String,
    events: Vec<Value>,
    forged_topic: String,
}

fn made_up_room(peer: &Hostile) -> MadeUpRoom {
    let v = RoomVersionId::V10;
    let room = format!("!made-up:{}", peer.name);
    let (creator, stranger) = (peer.user("creator"), peer.user("stranger"));
    let base = |kind: &str, sender: &str, key: &str, content: Value, prev: Vec<&String>, auth: Vec<&String>, depth| {
        json!({ "room_id": room, "type": kind, "sender": sender, "state_key": key, "content": content,
                "prev_events": prev, "auth_events": auth, "depth": depth, "origin_server_ts": now_ms(),
                "origin": peer.name })
    };
    let (create, create_ev) = peer.event(
        &v,
        base("m.room.create", &creator, "", json!({ "creator": creator, "room_version": "10" }), vec![], vec![], 1),
    );
    let (join, join_ev) = peer.event(
        &v,
        base("m.room.member", &creator, &creator, json!({ "membership": "join" }), vec![&create], vec![&create], 2),
    );
    let power_content =
        json!({ "users": { creator.clone(): 100 }, "users_default": 0, "events_default": 0, "state_default": 50 });
    let (power, power_ev) =
        peer.event(&v, base("m.room.power_levels", &creator, "", power_content, vec![&join], vec![&create, &join], 3));
    let (rules, rules_ev) = peer.event(
        &v,
        base(
            "m.room.join_rules",
            &creator,
            "",
            json!({ "join_rule": "public" }),
            vec![&power],
            vec![&create, &join, &power],
            4,
        ),
    );
    let (topic, topic_ev) = peer.event(
        &v,
        base("m.room.topic", &stranger, "", json!({ "topic": "inventé" }), vec![&rules], vec![&create, &power], 5),
    );
    MadeUpRoom {
        id: room,
        create,
        creator_join: join,
        power,
        rules: rules.clone(),
        events: vec![create_ev, join_ev, power_ev, rules_ev, topic_ev],
        forged_topic: topic,
    }
}

#[tokio::test]
async fn the_state_a_resident_server_answers_is_checked_before_it_counts() {
    let (node, peer) = tokio::join!(Node::start("joiner", &[]), Hostile::start());
    let (alice, at) = node.register("alice").await;
    let room = made_up_room(&peer);
    let (rid, create, power, rules) = (room.id.clone(), room.create.clone(), room.power.clone(), room.rules.clone());
    let topic = room.forged_topic.clone();
    let user = alice.clone();
    peer.on("/_matrix/federation/v1/make_join/", move |_| {
        Reply::Json(
            200,
            json!({ "room_version": "10", "event": {
                "room_id": rid, "sender": user, "state_key": user, "type": "m.room.member",
                "content": { "membership": "join" }, "prev_events": [topic], "depth": 6,
                "auth_events": [create, power, rules], "origin_server_ts": now_ms(),
            } }),
        )
    });
    let events = room.events.clone();
    peer.on("/_matrix/federation/v2/send_join/", move |_| {
        Reply::Json(200, json!({ "state": events, "auth_chain": events, "origin": "", "members_omitted": false }))
    });
    // The history it answers holds a message of another branch, which nothing we hold leads to.
    let (stray_id, stray) = peer.event(
        &RoomVersionId::V10,
        json!({ "room_id": room.id, "type": "m.room.message", "sender": peer.user("creator"),
                "content": { "msgtype": "m.text", "body": "glissé dans l'historique" },
                "prev_events": [room.creator_join], "auth_events": [room.create, room.creator_join, room.power],
                "depth": 3, "origin_server_ts": now_ms(), "origin": peer.name }),
    );
    peer.on("/_matrix/federation/v1/backfill/", move |_| {
        Reply::Json(200, json!({ "origin": "x", "origin_server_ts": 0, "pdus": [stray] }))
    });
    node.join(&at, &room.id, std::slice::from_ref(&peer.name)).await;
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room.id), enc(&stray_id));
    let (status, stray) = node.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!(status, 404, "history no held event leads to is not taken: {stray}");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room.id));
    let (status, topic) = node.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!(status, 404, "the topic its own auth rules refuse is not state: {topic}");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.join_rules/", enc(&room.id));
    let (status, rules) = node.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!((status, rules["join_rule"].as_str()), (200, Some("public")), "valid state is kept: {rules}");
}

/// History a banned user's server wrote after the ban, its auth events pointing at the user's
/// old join: each event passes against its own auth events, and only the state before it
/// (where the user is banned) refuses it. The peer hands the history out in two parts, the
/// newest with the join and the rest when a client pages back, and gives the state before the
/// oldest event of each part through `/state_ids`, as a resident server does.
#[tokio::test]
async fn older_history_is_checked_against_the_state_before_it() {
    let (node, peer) = tokio::join!(Node::start("backfiller", &[]), Hostile::start());
    let (alice, at) = node.register("alice").await;
    let room = made_up_room(&peer);
    let v = RoomVersionId::V10;
    let (creator, mallory) = (peer.user("creator"), peer.user("mallory"));
    let pdu = |kind: &str, sender: &str, key: Option<&str>, content: Value, prev: &str, auth: Vec<&String>, depth| {
        let mut event = json!({ "room_id": room.id, "type": kind, "sender": sender, "content": content,
            "prev_events": [prev], "auth_events": auth, "depth": depth, "origin_server_ts": now_ms(),
            "origin": peer.name });
        if let Some(key) = key {
            event["state_key"] = json!(key);
        }
        peer.event(&v, event)
    };
    let (join, join_ev) = pdu(
        "m.room.member",
        &mallory,
        Some(&mallory),
        json!({ "membership": "join" }),
        &room.rules,
        vec![&room.create, &room.power, &room.rules],
        5,
    );
    let (ban, ban_ev) = pdu(
        "m.room.member",
        &creator,
        Some(&mallory),
        json!({ "membership": "ban" }),
        &join,
        vec![&room.create, &room.power, &room.creator_join, &join],
        6,
    );
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    let (forged, forged_ev) = pdu(
        "m.room.message",
        &mallory,
        None,
        text("écrit après le bannissement"),
        &ban,
        vec![&room.create, &room.power, &join],
        7,
    );
    let (after, after_ev) = pdu(
        "m.room.message",
        &creator,
        None,
        text("la suite"),
        &forged,
        vec![&room.create, &room.power, &room.creator_join],
        8,
    );
    // The valid room before the ban, without the forged topic.
    let mut base: Vec<Value> = room.events[..4].to_vec();
    base.push(join_ev.clone());
    let (rid, create, power, rules, user) =
        (room.id.clone(), room.create.clone(), room.power.clone(), room.rules.clone(), alice.clone());
    let prev = after.clone();
    peer.on("/_matrix/federation/v1/make_join/", move |_| {
        Reply::Json(
            200,
            json!({ "room_version": "10", "event": {
                "room_id": rid, "sender": user, "state_key": user, "type": "m.room.member",
                "content": { "membership": "join" }, "prev_events": [prev], "depth": 9,
                "auth_events": [create, power, rules], "origin_server_ts": now_ms(),
            } }),
        )
    });
    let mut state: Vec<Value> = room.events[..4].to_vec();
    state.push(ban_ev.clone());
    let mut chain = base.clone();
    chain.push(ban_ev.clone());
    peer.on("/_matrix/federation/v2/send_join/", move |_| {
        Reply::Json(200, json!({ "state": state, "auth_chain": chain, "origin": "", "members_omitted": false }))
    });
    // With the join: the newest message only (nothing older yet). Paging back later: the rest.
    let later = Arc::new(AtomicUsize::new(0));
    let (newest, asked) = (after.clone(), later.clone());
    let (older, newer) = (vec![forged_ev.clone(), ban_ev.clone()], vec![after_ev.clone()]);
    peer.on("/_matrix/federation/v1/backfill/", move |seen| {
        let pdus = if seen.path.contains(&enc(&newest)) {
            newer.clone()
        } else if asked.fetch_add(1, Ordering::SeqCst) == 0 {
            Vec::new()
        } else {
            older.clone()
        };
        Reply::Json(200, json!({ "origin": "x", "origin_server_ts": 0, "pdus": pdus }))
    });
    let ids = |events: &[Value]| events.iter().map(|e| peer_event_id(&v, e)).collect::<Vec<_>>();
    let (before_after, before_ban) = {
        let mut before_after = ids(&room.events[..4]);
        before_after.push(ban.clone());
        (before_after, ids(&base))
    };
    let (at_after, at_ban) = (after.clone(), ban.clone());
    peer.on("/_matrix/federation/v1/state_ids/", move |seen| {
        let pdu_ids = if seen.path.contains(&enc(&at_after)) {
            before_after.clone()
        } else if seen.path.contains(&enc(&at_ban)) {
            before_ban.clone()
        } else {
            return Reply::Json(404, json!({ "errcode": "M_NOT_FOUND", "error": "no such event" }));
        };
        Reply::Json(200, json!({ "pdu_ids": pdu_ids, "auth_chain_ids": pdu_ids }))
    });
    node.join(&at, &room.id, std::slice::from_ref(&peer.name)).await;

    let page = node.messages(&at, &room.id, "b", None, 50).await;
    let shown: Vec<&str> =
        page["chunk"].as_array().expect("chunk").iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert!(shown.contains(&after.as_str()), "the creator's message, checked with the state the peer gave: {page}");
    assert!(shown.contains(&ban.as_str()), "the ban, paged back: {page}");
    assert!(!shown.contains(&forged.as_str()), "the banned user's message is not history: {page}");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room.id), enc(&forged));
    let (status, event) = node.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!(status, 404, "the rejected event is served to nobody: {event}");
    assert!(!peer.requests("/_matrix/federation/v1/state_ids/").is_empty(), "the state before was asked for");
}

/// The id of an event the peer made (room version 3 and later: its reference hash).
fn peer_event_id(version: &RoomVersionId, event: &Value) -> String {
    let object: CanonicalJsonObject = serde_json::from_value(event.clone()).expect("canonical JSON");
    format!("${}", reference_hash(&object, &version.rules().expect("rules")).expect("reference hash"))
}

/// A server the room's ACL shuts out gets no leave template and no signature on an invite, like
/// it gets no join: the ACL holds for every membership endpoint.
#[tokio::test]
async fn the_room_acl_holds_for_leaves_and_invites() {
    let (node, peer) = tokio::join!(Node::start("acl", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let (bob, _) = node.register("bob").await;
    let room = node
        .create_room(&at, json!({ "preset": "public_chat", "power_level_content_override": { "invite": 0 } }))
        .await;
    let mallory = peer.user("mallory");
    let (joined, version) = peer.join(&node, &room, &mallory).await;
    let invite = |peer: &Hostile, state: &[Value], prev: &str| {
        peer.event(
            &version,
            json!({ "room_id": room, "type": "m.room.member", "sender": mallory, "state_key": bob,
                    "content": { "membership": "invite" }, "prev_events": [prev], "depth": 20,
                    "auth_events": [state_id(state, "m.room.create", ""), state_id(state, "m.room.power_levels", ""),
                                    state_id(state, "m.room.join_rules", ""), joined],
                    "origin_server_ts": now_ms(), "origin": peer.name }),
        )
    };
    let state = node.get_state(&at, &room).await;
    let uri = format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room), enc(&mallory));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "a member's server gets a leave template while the ACL lets it in: {answer}");
    let (id, event) = invite(&peer, &state, &newest(&node, &at, &room).await);
    let uri = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room), enc(&id));
    let body = json!({ "room_version": version.as_str(), "event": event, "invite_room_state": [] });
    let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(body), None).await;
    assert_eq!(status, 200, "and its invites are signed: {answer}");

    // Servers named by an IP address are shut out.
    let acl = json!({ "allow": ["*"], "deny": [], "allow_ip_literals": false });
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room));
    node.put(&at, &path, acl).await;
    let uri = format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room), enc(&mallory));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "no leave template: {answer}");
    let (id, event) = invite(&peer, &state, &newest(&node, &at, &room).await);
    let uri = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room), enc(&id));
    let body = json!({ "room_version": version.as_str(), "event": event, "invite_room_state": [] });
    let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(body), None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "no signed invite: {answer}");
}

#[tokio::test]
async fn only_our_own_membership_of_the_room_asked_for_is_signed() {
    let (node, peer) = tokio::join!(Node::start("oracle", &[]), Hostile::start());
    let (alice, at) = node.register("alice").await;
    let kept = node.create_room(&at, json!({ "preset": "private_chat" })).await;

    // An invite into the peer's room, which alice then declines through the peer.
    let room = made_up_room(&peer);
    let creator = peer.user("creator");
    let (invite_id, invite) = peer.event(
        &RoomVersionId::V10,
        json!({ "room_id": room.id, "type": "m.room.member", "sender": creator, "state_key": alice,
                "content": { "membership": "invite" }, "prev_events": [room.rules],
                "auth_events": [room.create, room.power, room.creator_join, room.rules], "depth": 5,
                "origin_server_ts": now_ms(), "origin": peer.name }),
    );
    let uri = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room.id), enc(&invite_id));
    let body = json!({ "room_version": "10", "event": invite, "invite_room_state": [] });
    let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(body), None).await;
    assert_eq!(status, 200, "a real invite is signed: {answer}");

    // The peer hands out a leave template for alice's *other* room.
    let (user, target) = (alice.clone(), kept.clone());
    peer.on("/_matrix/federation/v1/make_leave/", move |_| {
        Reply::Json(
            200,
            json!({ "room_version": "10", "event": {
                "room_id": target, "sender": user, "state_key": user, "type": "m.room.member",
                "content": { "membership": "leave" }, "prev_events": [], "auth_events": [], "depth": 9,
                "origin_server_ts": now_ms(),
            } }),
        )
    });
    peer.on("/_matrix/federation/v2/send_leave/", |_| Reply::Json(200, json!({})));
    let (status, answer) = node.room_action(&at, &room.id, "leave", json!({})).await;
    assert_ne!(status, 200, "declining through a forged template fails: {answer}");
    let leaves = peer.requests("/_matrix/federation/v2/send_leave/");
    assert!(leaves.is_empty(), "the peer got no signed leave: {leaves:?}");
    assert!(node.joined_members(&at, &kept).await.contains(&alice), "alice is still in her room");

    // `/invite` signs only an invite: not a join of alice into the peer's room.
    let (join_id, join) = peer.event(
        &RoomVersionId::V10,
        json!({ "room_id": room.id, "type": "m.room.member", "sender": creator, "state_key": alice,
                "content": { "membership": "join" }, "prev_events": [room.rules],
                "auth_events": [room.create, room.power, room.rules], "depth": 5,
                "origin_server_ts": now_ms(), "origin": peer.name }),
    );
    let uri = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room.id), enc(&join_id));
    let body = json!({ "room_version": "10", "event": join, "invite_room_state": [] });
    let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(body), None).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
}

#[tokio::test]
async fn federation_never_connects_where_it_is_told_to() {
    let (node, peer, trap) = tokio::join!(Node::start("ssrf", &[]), Hostile::start(), Trap::start());
    let (_, at) = node.register("alice").await;
    let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");

    // The unauthenticated notary does not fetch keys of a server it is merely given.
    let url = format!("{}/_matrix/key/v2/query/{}", node.federation_url(), trap.addr);
    let answer: Value = http.get(&url).send().await.expect("notary").json().await.expect("JSON");
    assert_eq!(answer["server_keys"], json!([]), "{answer}");

    // A media answer that points elsewhere: neither its `Location` nor a redirect is followed.
    let location = format!("https://{}/secret", trap.addr);
    let multipart = format!(
        "--b\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--b\r\nLocation: {location}\r\n\r\n\r\n--b--\r\n"
    );
    peer.on("/_matrix/federation/v1/media/download/located", move |_| {
        Reply::Raw(200, "multipart/mixed; boundary=b".into(), multipart.clone().into_bytes())
    });
    let target = format!("https://{}/redirected", trap.addr);
    peer.on("/_matrix/federation/v1/media/download/redirected", move |_| Reply::Redirect(target.clone()));
    for media in ["located", "redirected"] {
        let path = format!("/_matrix/client/v1/media/download/{}/{media}", enc(&peer.name));
        let (status, _, _) = node.get_bytes(&at, &path).await;
        assert_ne!(status, 200, "{media}: no file from elsewhere");
        assert_eq!(peer.requests(&format!("/_matrix/federation/v1/media/download/{media}")).len(), 1, "{media} asked");
    }
    assert_eq!(trap.hits(), 0, "nothing connected to {}", trap.addr);
}

#[tokio::test]
async fn a_retired_key_signs_no_request() {
    let (node, peer) = tokio::join!(Node::start("keys", &[]), Hostile::start());
    let (alice, _) = node.register("alice").await;
    let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&alice));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "the first key is fetched and works: {answer}");
    let old = peer.rotate("k2", now_ms());
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "the new key is fetched and works: {answer}");
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, Some(&old)).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{answer}");
}

#[tokio::test]
async fn a_huge_state_answer_is_refused_without_fetching_it() {
    let (node, peer) = tokio::join!(Node::start("bounded", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let room = node.create_room(&at, json!({ "preset": "public_chat" })).await;
    let mallory = peer.user("mallory");
    let (join, version) = peer.join(&node, &room, &mallory).await;
    let state = node.get_state(&at, &room).await;
    peer.on("/_matrix/federation/v1/get_missing_events/", |_| Reply::Json(200, json!({ "events": [] })));
    let ids: Vec<String> = (0..150_000).map(|i| format!("$made-up-{i}")).collect();
    peer.on("/_matrix/federation/v1/state_ids/", move |_| {
        Reply::Json(200, json!({ "pdu_ids": ids, "auth_chain_ids": [] }))
    });
    let (id, pdu) = peer.event(
        &version,
        json!({
            "room_id": room, "sender": mallory, "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": "après un trou" },
            "prev_events": ["$nowhere-to-be-found"], "auth_events": [state_id(&state, "m.room.power_levels", ""), join],
            "depth": 50, "origin_server_ts": now_ms(), "origin": peer.name,
        }),
    );
    let results = peer.send(&node, "gap", vec![pdu]).await;
    assert!(results[&id]["error"].is_string(), "{results}");
    assert_eq!(peer.requests("/_matrix/federation/v1/state_ids/").len(), 1, "the state was asked once");
    assert!(peer.requests("/_matrix/federation/v1/event/").is_empty(), "no event of it was fetched");
}

#[tokio::test]
async fn pinned_keys_are_the_only_keys() {
    let peer = Hostile::start().await;
    let pinned_key = public_b64(&peer.keys.lock().expect("keys").current);
    let mut pinned = toml::Table::new();
    let mut entry = toml::Table::new();
    let mut keys = toml::Table::new();
    keys.insert("ed25519:k1".into(), pinned_key.into());
    entry.insert("verify_keys".into(), keys.into());
    pinned.insert(peer.name.clone(), entry.into());
    let node = Node::start_with("pinned", None, &[], &[("federation.pinned", pinned.into())]).await;
    let (alice, _) = node.register("alice").await;
    let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&alice));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "the pinned key works: {answer}");
    peer.rotate("k2", now_ms());
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{answer}");
    assert!(peer.requests("/_matrix/key/v2/").is_empty(), "no key was fetched from the peer");
    let stranger = Hostile::start().await;
    let (status, answer) = stranger.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "an unpinned server: {answer}");
}

#[tokio::test]
async fn device_names_and_the_room_directory_stay_home_by_default() {
    let extra = [("federation.public_rooms", false.into())];
    let (node, peer) = tokio::join!(Node::start_with("private-directory", None, &[], &extra), Hostile::start());
    let (alice, at) = node.register("alice").await;
    let devices = node.get(&at, "/_matrix/client/v3/devices").await;
    let device = devices["devices"][0]["device_id"].as_str().expect("a device").to_owned();
    node.put(&at, &format!("/_matrix/client/v3/devices/{}", enc(&device)), json!({ "display_name": "Bureau 312" }))
        .await;
    let pair = new_key(&device);
    let device_keys = json!({ "user_id": alice, "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                              "keys": { format!("ed25519:{device}"): public_b64(&pair),
                                        format!("curve25519:{device}"): "cGFzIHVuZSBjbMOp" } });
    let mut device_keys: CanonicalJsonObject = serde_json::from_value(device_keys).expect("canonical JSON");
    sign_json(&alice, &pair, &mut device_keys).expect("sign the device keys");
    node.post(&at, "/_matrix/client/v3/keys/upload", json!({ "device_keys": device_keys })).await;
    let uri = format!("/_matrix/federation/v1/user/devices/{}", enc(&alice));
    let (status, answer) = peer.request(&node, Method::GET, &uri, None, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["devices"].as_array().map(Vec::len), Some(1), "{answer}");
    assert!(answer["devices"][0].get("device_display_name").is_none(), "{answer}");
    let (status, answer) = peer
        .request(
            &node,
            Method::POST,
            "/_matrix/federation/v1/user/keys/query",
            Some(json!({ "device_keys": { alice.clone(): [] } })),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["device_keys"][&alice][&device]["unsigned"].get("device_display_name").is_none(), "{answer}");
    let (status, answer) = peer.request(&node, Method::GET, "/_matrix/federation/v1/publicRooms", None, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
}

/// Random inputs for the property test: values canonical JSON has and has not, mutated PDUs.
trait Fuzz {
    fn value(&mut self, depth: usize) -> Value;
    fn mutate_canonical(&mut self, pdu: &Value) -> Value;
    fn mutate(&mut self, pdu: Value) -> Value;
}

impl Fuzz for Rng {
    /// A random JSON value of the kinds canonical JSON has and has not.
    fn value(&mut self, depth: usize) -> Value {
        match self.below(if depth > 3 { 7 } else { 9 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next_u64() as i64),
            3 => json!(9_007_199_254_740_993u64),
            4 => json!(-1.5),
            5 => json!(""),
            6 => json!("\u{0}\u{202e}é$@!:\r\n".repeat(self.below(4) + 1)),
            7 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let mut map = serde_json::Map::new();
                for i in 0..self.below(4) {
                    map.insert(format!("k{i}"), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }

    /// [`Rng::mutate`] until the result is canonical JSON (so the request carrying it can be
    /// signed: floats and out-of-range numbers are sent raw, in the bodies part).
    fn mutate_canonical(&mut self, pdu: &Value) -> Value {
        loop {
            let mutated = self.mutate(pdu.clone());
            if ruma::CanonicalJsonValue::try_from(mutated.clone()).is_ok() {
                return mutated;
            }
        }
    }

    /// `pdu` with one to three fields changed, removed or added.
    fn mutate(&mut self, mut pdu: Value) -> Value {
        const FIELDS: [&str; 11] = [
            "room_id",
            "sender",
            "type",
            "content",
            "prev_events",
            "auth_events",
            "depth",
            "origin_server_ts",
            "hashes",
            "signatures",
            "state_key",
        ];
        for _ in 0..=self.below(3) {
            let field = FIELDS[self.below(FIELDS.len())];
            match self.below(3) {
                0 => {
                    pdu.as_object_mut().expect("an object").remove(field);
                }
                1 => pdu[field] = self.value(0),
                _ => {
                    let key = format!("x{}", self.below(100));
                    let value = self.value(0);
                    if let Some(content) = pdu.get_mut("content").and_then(Value::as_object_mut) {
                        content.insert(key, value);
                    }
                }
            }
        }
        pdu
    }
}

#[tokio::test]
async fn random_and_mutated_federation_input_changes_nothing() {
    let seed = std::env::var("HOSTILE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(now_ms);
    println!("HOSTILE_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let (node, peer) = tokio::join!(Node::start("fuzz", &[]), Hostile::start());
    let (_, at) = node.register("alice").await;
    let room = node.create_room(&at, json!({ "preset": "public_chat" })).await;
    let mallory = peer.user("mallory");
    let (join, version) = peer.join(&node, &room, &mallory).await;
    let state = node.get_state(&at, &room).await;
    let auth = vec![state_id(&state, "m.room.power_levels", ""), join.clone()];
    let mut refused: Vec<String> = Vec::new();

    // Mutated PDUs, re-signed after the change (so they reach the checks past the signature) or
    // left with the signature of the original: none may enter the timeline.
    for round in 0..20 {
        let mut pdus = Vec::new();
        for i in 0..10 {
            let original = json!({
                "room_id": room, "sender": mallory, "type": "m.room.message",
                "content": { "msgtype": "m.text", "body": format!("{round}-{i}") },
                "prev_events": [join], "auth_events": auth, "depth": 10, "origin_server_ts": now_ms(),
                "origin": peer.name,
            });
            let mutated = rng.mutate_canonical(&original);
            let pdu = if rng.below(2) == 0 {
                match serde_json::from_value::<CanonicalJsonObject>(mutated.clone()) {
                    Ok(_) if mutated.is_object() => {
                        let mut unsigned = mutated;
                        if let Some(o) = unsigned.as_object_mut() {
                            o.remove("hashes");
                            o.remove("signatures");
                        }
                        let mut object: CanonicalJsonObject =
                            serde_json::from_value(unsigned.clone()).expect("canonical JSON");
                        let rules = version.rules().expect("rules");
                        let keys = peer.keys.lock().expect("keys");
                        match hash_and_sign_event(&peer.name, &keys.current, &mut object, &rules.redaction) {
                            Ok(()) => serde_json::to_value(&object).expect("JSON"),
                            Err(_) => unsigned,
                        }
                    }
                    _ => mutated,
                }
            } else {
                let (_, signed) = peer.event(&version, original);
                rng.mutate_canonical(&signed)
            };
            pdus.push(pdu);
        }
        let uri = format!("/_matrix/federation/v1/send/fuzz-{seed}-{round}");
        let body = json!({ "origin": peer.name, "origin_server_ts": now_ms(), "pdus": pdus });
        let (status, answer) = peer.request(&node, Method::PUT, &uri, Some(body), None).await;
        assert!(status == 200 || (400..500).contains(&status), "seed {seed}, round {round}: {status} {answer}");
        if status != 200 {
            assert!(answer["errcode"].is_string(), "seed {seed}, round {round}: a Matrix error: {answer}");
        }
        for (id, result) in answer["pdus"].as_object().into_iter().flatten() {
            if result.get("error").is_some() {
                refused.push(id.clone());
            }
        }
    }

    // Broken X-Matrix headers and bodies: a Matrix error each, never a server error.
    let uri = "/_matrix/federation/v1/send/fuzz-headers";
    for round in 0..40 {
        let header = match rng.below(4) {
            0 => format!("X-Matrix origin=\"{}\",key=\"ed25519:k1\",sig=\"{}\"", peer.name, rng.next_u64()),
            1 => format!("X-Matrix {}", "=,\"".repeat(rng.below(50))),
            2 => String::from_utf8_lossy(&rng.next_u64().to_le_bytes()).into_owned(),
            _ => format!("X-Matrix origin={},destination=\"{}\"", rng.value(0), node.server_name()),
        };
        let body = match rng.below(3) {
            0 => b"{\"pdus\": [1e999]}".to_vec(),
            1 => serde_json::to_vec(&rng.value(0)).expect("JSON"),
            _ => format!("{{\"pdus\":{}}}", "[".repeat(rng.below(2000))).into_bytes(),
        };
        let response = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("client")
            .put(format!("{}{uri}", node.federation_url()))
            .header(
                "Authorization",
                header.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect::<String>(),
            )
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the node answers");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "seed {seed}, header round {round}: {status} {answer}");
        assert!(answer["errcode"].is_string(), "seed {seed}, header round {round}: {answer}");
    }

    // Nothing refused is stored, and the node still serves.
    assert!(!refused.is_empty(), "seed {seed}: mutations are refused");
    for id in &refused {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
        let (status, event) = node.call(Method::GET, Some(&at), &path, None).await;
        assert_eq!(status, 404, "seed {seed}: refused {id} is not served: {event}");
    }
    let sent = node.send_text(&at, &room, "toujours là").await;
    assert!(sent.starts_with('$'), "seed {seed}: the room still takes events");
}

/// The email lookup of the user directory (`org.hemicycle.email_lookup`) answers only nodes the
/// network's domain map names, only for addresses the map sends to this node, within a rate per
/// asking node, and says the same of an address bound to a hidden agent as of one bound to no
/// one: a peer learns nothing of accounts a search would not show.
#[tokio::test]
async fn email_lookups_answer_only_the_network_and_tell_nothing_of_hidden_agents() {
    let (peer, stranger) = tokio::join!(Hostile::start(), Hostile::start());
    let dir = tempfile::tempdir().expect("temp dir");
    let map = dir.path().join("domains.toml");
    std::fs::write(&map, "[domains]\n").unwrap();
    let extra = [
        ("network.domains_file", toml::Value::from(map.to_string_lossy().into_owned())),
        ("rate_limits.enabled", true.into()),
        ("rate_limits.federation_email_lookup.per_second", 0.001.into()),
        ("rate_limits.federation_email_lookup.burst", 10.into()),
    ];
    let node = Node::start_with("lookup", None, &[], &extra).await;
    std::fs::write(
        &map,
        format!(
            "[domains]\n\"ministere.gouv.fr\" = \"{}\"\n\"pair.gouv.fr\" = \"{}\"\n",
            node.server_name(),
            peer.name
        ),
    )
    .unwrap();
    let root = node.admin_token().await;
    let (agent, agent_token) = node.register("agent").await;
    node.set_displayname(&agent_token, &agent, "Agent Public").await;
    crate::accounts::bind(&node, &root, &agent, "agent@ministere.gouv.fr").await;
    let (hidden, hidden_token) = node.register("discret").await;
    crate::accounts::bind(&node, &root, &hidden, "discret@ministere.gouv.fr").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/im.vector.hide_profile", enc(&hidden));
    node.put(&hidden_token, &path, json!({ "hide_profile": true })).await;

    let ask = |who: &'static str, address: &str| {
        let uri = format!("/_matrix/federation/v1/query/org.hemicycle.email_lookup?address={}", enc(address));
        let (peer, stranger, node) = (&peer, &stranger, &node);
        async move {
            let asker = if who == "peer" { peer } else { stranger };
            asker.request(node, Method::GET, &uri, None, None).await
        }
    };

    let (status, found) = ask("peer", "Agent@Ministere.gouv.fr").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found, json!({ "user_id": agent, "displayname": "Agent Public" }));

    // Hidden, bound to no one, or not this node's: one and the same answer.
    let (status, unknown) = ask("peer", "personne@ministere.gouv.fr").await;
    assert_eq!((status, unknown["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{unknown}");
    assert_eq!(ask("peer", "discret@ministere.gouv.fr").await, (404, unknown.clone()));
    assert_eq!(ask("peer", "agent@pair.gouv.fr").await, (404, unknown));
    let (status, refused) = ask("peer", "not an address").await;
    assert_eq!((status, refused["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{refused}");

    // A server the map does not name is refused, whatever it asks.
    let (status, refused) = ask("stranger", "agent@ministere.gouv.fr").await;
    assert_eq!((status, refused["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{refused}");

    // A node of the network asking without end is slowed down.
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(ask("peer", "agent@ministere.gouv.fr").await);
    }
    let limited = answers.iter().find(|(status, _)| *status != 200).expect("the rate is bounded");
    assert_eq!((limited.0, limited.1["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{answers:?}");
}

/// Each status document is built and signed anew for its asker: a peer asking in a loop is slowed
/// down with the spec's 429, and a signed document is what it gets until then.
#[tokio::test]
async fn status_documents_are_rate_limited_per_asking_server() {
    let peer = Hostile::start().await;
    let extra = [
        ("rate_limits.enabled", true.into()),
        ("rate_limits.federation_status.per_second", 0.001.into()),
        ("rate_limits.federation_status.burst", 3.into()),
    ];
    let node = Node::start_with("status", None, &[], &extra).await;
    let uri = "/_matrix/federation/unstable/org.hemicycle.status";
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(peer.request(&node, Method::GET, uri, None, None).await);
    }
    let (status, first) = &answers[0];
    assert_eq!(*status, 200, "{first}");
    assert!(first.to_string().contains(&node.server_name()), "{first}");
    let limited = answers.iter().find(|(status, _)| *status != 200).expect("the rate is bounded");
    assert_eq!((limited.0, limited.1["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{answers:?}");
}
