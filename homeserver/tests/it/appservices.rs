//! The Application Service API against an appservice stub the test serves itself (axum on
//! loopback: it records what the homeserver sends and answers queries; it is no real appservice,
//! those are `hemicycle-workspace` in federation-tests/tests/workspace.rs): registration files,
//! `as_token` masquerading, exclusive namespaces, transactions that survive a failing appservice
//! and a kill -9 of the server, pings and alias queries.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, register_raw, urlencode, TestServer, BIN};

const AS_TOKEN: &str = "as-secret-token";
const HS_TOKEN: &str = "hs-secret-token";

/// What the appservice stub received: every transaction attempt it accepted (id, events), and
/// pings.
#[derive(Default)]
struct Received {
    transactions: Vec<(String, Vec<Value>)>,
    /// The `ephemeral` lists of accepted transactions (typing, receipts).
    ephemeral: Vec<Value>,
    /// The `de.sorunome.msc2409.to_device` lists (MSC4203).
    to_device: Vec<Value>,
    pings: Vec<Value>,
    bad_tokens: usize,
    /// Transactions answered 503 while the appservice was made to fail.
    refused: usize,
    /// Every attempt, refused or accepted: (transaction id, whole body, accepted).
    attempts: Vec<(String, Value, bool)>,
}

/// An appservice stub served by the test on loopback: it records what the homeserver sends and,
/// when asked for an alias in its namespace, creates that room through the homeserver's client
/// API with its `as_token`.
struct AppserviceStub {
    url: String,
    received: Arc<Mutex<Received>>,
    failing: Arc<AtomicBool>,
    homeserver: Arc<Mutex<String>>,
}

async fn appservice_stub() -> AppserviceStub {
    use axum::{
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        routing::{get, post, put},
        Json,
    };
    #[derive(Clone)]
    struct St {
        received: Arc<Mutex<Received>>,
        failing: Arc<AtomicBool>,
        homeserver: Arc<Mutex<String>>,
    }
    fn authorized(headers: &HeaderMap, st: &St) -> bool {
        let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {HS_TOKEN}"));
        if !ok {
            st.received.lock().unwrap().bad_tokens += 1;
        }
        ok
    }
    let st = St {
        received: Arc::default(),
        failing: Arc::new(AtomicBool::new(false)),
        homeserver: Arc::new(Mutex::new(String::new())),
    };
    let app = axum::Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn}",
            put(|State(st): State<St>, Path(txn): Path<String>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorized(&headers, &st) {
                    return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
                }
                if st.failing.load(Ordering::SeqCst) {
                    let mut received = st.received.lock().unwrap();
                    received.refused += 1;
                    received.attempts.push((txn, body, false));
                    return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
                }
                let events = body["events"].as_array().cloned().unwrap_or_default();
                let ephemeral = body["ephemeral"].as_array().cloned().unwrap_or_default();
                let mut received = st.received.lock().unwrap();
                received.attempts.push((txn.clone(), body.clone(), true));
                received.transactions.push((txn, events));
                received.ephemeral.extend(ephemeral);
                received.to_device.extend(body["de.sorunome.msc2409.to_device"].as_array().cloned().unwrap_or_default());
                (StatusCode::OK, Json(json!({})))
            }),
        )
        .route(
            "/_matrix/app/v1/ping",
            post(|State(st): State<St>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorized(&headers, &st) {
                    return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
                }
                st.received.lock().unwrap().pings.push(body);
                (StatusCode::OK, Json(json!({})))
            }),
        )
        .route(
            "/_matrix/app/v1/thirdparty/protocol/{protocol}",
            get(|Path(protocol): Path<String>| async move {
                if protocol != "gouv" {
                    return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
                }
                (StatusCode::OK, Json(json!({
                    "user_fields": ["name"], "location_fields": ["service"], "icon": "mxc://localhost/icon",
                    "field_types": { "name": { "regexp": ".*", "placeholder": "agent" },
                                     "service": { "regexp": ".*", "placeholder": "dgfip" } },
                    "instances": [{ "desc": "Annuaire", "network_id": "annuaire", "fields": {} }],
                })))
            }),
        )
        .route(
            "/_matrix/app/v1/thirdparty/location/{protocol}",
            get(|Path(protocol): Path<String>, axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                let service = q.get("service").cloned().unwrap_or_default();
                Json(json!([{ "alias": format!("#ws_{service}:localhost"), "protocol": protocol, "fields": { "service": service } }]))
            }),
        )
        .route(
            "/_matrix/app/v1/users/{user}",
            get(|State(st): State<St>, Path(user): Path<String>, headers: HeaderMap| async move {
                if !authorized(&headers, &st) || user.starts_with("@ws_unknown") {
                    return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
                }
                let local = user.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
                let hs = st.homeserver.lock().unwrap().clone();
                let created = reqwest::Client::new()
                    .post(format!("{hs}/_matrix/client/v3/register"))
                    .bearer_auth(AS_TOKEN)
                    .json(&json!({ "type": "m.login.application_service", "username": local, "inhibit_login": true }))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                let status = if created { StatusCode::OK } else { StatusCode::NOT_FOUND };
                (status, Json(json!({})))
            }),
        )
        .route(
            "/_matrix/app/v1/rooms/{alias}",
            get(|State(st): State<St>, Path(alias): Path<String>, headers: HeaderMap| async move {
                if !authorized(&headers, &st) {
                    return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
                }
                let local = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
                let hs = st.homeserver.lock().unwrap().clone();
                let created = reqwest::Client::new()
                    .post(format!("{hs}/_matrix/client/v3/createRoom"))
                    .bearer_auth(AS_TOKEN)
                    .json(&json!({ "room_alias_name": local, "name": "made on demand" }))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if created {
                    (StatusCode::OK, Json(json!({})))
                } else {
                    (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })))
                }
            }),
        )
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    AppserviceStub { url, received: st.received, failing: st.failing, homeserver: st.homeserver }
}

fn registration(url: &str) -> String {
    format!(
        "id: workspace\nurl: \"{url}\"\nas_token: {AS_TOKEN}\nhs_token: {HS_TOKEN}\nsender_localpart: workspace\n\
         rate_limited: false\nreceive_ephemeral: true\nprotocols: [gouv]\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@ws_.*:localhost\"\n  \
         aliases:\n    - exclusive: true\n      regex: \"#ws_.*:localhost\"\n  rooms: []\n"
    )
}

impl AppserviceStub {
    /// The message bodies received, once per transaction id (as an appservice dedupes them),
    /// after checking that a transaction sent twice had the same events both times.
    fn bodies(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        let mut seen: std::collections::HashMap<&str, &Vec<Value>> = Default::default();
        let mut out = Vec::new();
        for (txn, events) in &received.transactions {
            if let Some(first) = seen.get(txn.as_str()) {
                assert_eq!(*first, events, "transaction {txn} was re-sent with other events");
                continue;
            }
            seen.insert(txn, events);
            out.extend(
                events
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned()),
            );
        }
        out
    }

    async fn wait_for_bodies(&self, expected: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bodies = self.bodies();
            if bodies.len() >= expected.len() || tokio::time::Instant::now() > deadline {
                assert_eq!(bodies, expected, "the appservice got each message once, in order");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl AppserviceStub {
    /// The bodies of the transactions accepted, once per id, after checking that every attempt
    /// with one id — refused or accepted, before or after a restart — carried the same body.
    fn accepted_once(&self) -> Vec<(String, Value)> {
        let received = self.received.lock().unwrap();
        let mut first: std::collections::HashMap<&str, &Value> = Default::default();
        let mut out = Vec::new();
        for (txn, body, accepted) in &received.attempts {
            match first.get(txn.as_str()) {
                Some(earlier) => assert_eq!(*earlier, body, "transaction {txn} was sent again with another body"),
                None => {
                    first.insert(txn, body);
                }
            }
            if *accepted && !out.iter().any(|(t, _): &(String, Value)| t == txn) {
                out.push((txn.clone(), body.clone()));
            }
        }
        out
    }

    /// Waits for an accepted transaction, past the first `after` ones, whose body `wanted`
    /// accepts; returns its (id, body).
    async fn wait_for_transaction(&self, what: &str, after: usize, wanted: impl Fn(&Value) -> bool) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.accepted_once().into_iter().skip(after).find(|(_, body)| wanted(body)) {
                return found;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {:#?}", self.accepted_once());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The latest key counts (MSC3202) the appservice was told for one device:
    /// (one-time key counts, unused fallback key types).
    fn latest_counts(&self, user: &str, device: &str) -> Option<(Value, Value)> {
        self.accepted_once().iter().rev().find_map(|(_, body)| {
            let counts = body["org.matrix.msc3202.device_one_time_keys_count"][user].get(device)?.clone();
            assert_eq!(
                body["org.matrix.msc3202.device_one_time_key_counts"][user][device], counts,
                "both of Synapse's names"
            );
            Some((counts, body["org.matrix.msc3202.device_unused_fallback_key_types"][user][device].clone()))
        })
    }

    async fn wait_for_counts(&self, user: &str, device: &str, one_time: u64, fallback: Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let latest = self.latest_counts(user, device);
            if latest.as_ref().is_some_and(|(c, f)| c["signed_curve25519"] == one_time && *f == fallback) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "counts {one_time}, {fallback}: got {latest:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn listed(body: &Value, list: &str, user: &str) -> bool {
    body["org.matrix.msc3202.device_lists"][list].as_array().is_some_and(|users| users.iter().any(|u| u == user))
}

async fn send(server: &TestServer, token: &str, room: &str, txn: &str, body: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let (status, _) =
        api(server, Method::PUT, Some(token), &path, Some(json!({ "msgtype": "m.text", "body": body }))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appservice_registers_masquerades_and_gets_every_event_once() {
    let service = appservice_stub().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workspace.yaml");
    std::fs::write(&file, registration(&service.url)).unwrap();
    // Two more appservices: one whose process is not running, one that takes no traffic.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = dir.path().join("dead.yaml");
    std::fs::write(
        &dead,
        format!(
            "id: dead\nurl: \"http://127.0.0.1:{closed_port}\"\nas_token: dead-as\nhs_token: dead-hs\n\
             sender_localpart: deadbot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@dead_.*:localhost\"\n"
        ),
    )
    .unwrap();
    let silent = dir.path().join("silent.yaml");
    std::fs::write(
        &silent,
        "id: silent\nurl: null\nas_token: silent-as\nhs_token: silent-hs\nsender_localpart: silentbot\n",
    )
    .unwrap();
    let files =
        toml::Value::Array([&file, &dead, &silent].iter().map(|f| f.to_string_lossy().into_owned().into()).collect());
    let mut server = TestServer::start_with(&[("appservices.registrations", files)]);
    *service.homeserver.lock().unwrap() = server.url.clone();

    // Exclusive namespace: refused to everyone else.
    let (status, body) = api(
        &server,
        Method::POST,
        None,
        "/_matrix/client/v3/register",
        Some(json!({ "username": "ws_alice", "password": "pw" })),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_EXCLUSIVE")));
    let (status, body) =
        api(&server, Method::GET, None, "/_matrix/client/v3/register/available?username=ws_alice", None).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_EXCLUSIVE")));

    // The appservice registers its user, not one outside its namespace.
    let as_register = |name: &str| json!({ "type": "m.login.application_service", "username": name });
    let (status, body) =
        api(&server, Method::POST, Some(AS_TOKEN), "/_matrix/client/v3/register", Some(as_register("ws_alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@ws_alice:localhost");
    let (status, body) =
        api(&server, Method::POST, Some(AS_TOKEN), "/_matrix/client/v3/register", Some(as_register("bob"))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_EXCLUSIVE")));
    let (_, human) = register_raw(&server, "agent").await;
    let (status, body) =
        api(&server, Method::POST, Some(&human), "/_matrix/client/v3/register", Some(as_register("ws_other"))).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));

    // as_token: the sender, or a registered user of the namespace.
    let whoami = |q: &str| format!("/_matrix/client/v3/account/whoami{q}");
    let (status, body) = api(&server, Method::GET, Some(AS_TOKEN), &whoami(""), None).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@workspace:localhost")));
    let (status, body) = api(
        &server,
        Method::GET,
        Some(AS_TOKEN),
        &whoami(&format!("?user_id={}", urlencode("@ws_alice:localhost"))),
        None,
    )
    .await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@ws_alice:localhost")));
    for outsider in ["@agent:localhost", "@ws_ghost:localhost"] {
        let (status, body) =
            api(&server, Method::GET, Some(AS_TOKEN), &whoami(&format!("?user_id={}", urlencode(outsider))), None)
                .await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{outsider}");
    }
    let (status, body) = api(&server, Method::GET, Some("not-a-token"), &whoami(""), None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let login =
        json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "ws_alice" } });
    let (status, body) =
        api(&server, Method::POST, Some(AS_TOKEN), "/_matrix/client/v3/login", Some(login.clone())).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@ws_alice:localhost")));
    let (status, _) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(login)).await;
    assert_eq!(status, 403, "m.login.application_service without the as_token");

    // Devices of its users (spec v1.17): created with 201, renamed with 200, used with
    // `device_id`, deleted without UIA; a regular client cannot create one.
    let alice_q = format!("user_id={}", urlencode("@ws_alice:localhost"));
    let device = format!("/_matrix/client/v3/devices/BRIDGEDEV?{alice_q}");
    let (status, _) =
        api(&server, Method::PUT, Some(AS_TOKEN), &device, Some(json!({ "display_name": "bridge" }))).await;
    assert_eq!(status, 201);
    let (status, _) =
        api(&server, Method::PUT, Some(AS_TOKEN), &device, Some(json!({ "display_name": "bridge 2" }))).await;
    assert_eq!(status, 200);
    let (status, body) = api(&server, Method::GET, Some(AS_TOKEN), &device, None).await;
    assert_eq!((status, body["display_name"].as_str()), (200, Some("bridge 2")));
    let (status, body) = api(&server, Method::PUT, Some(AS_TOKEN), &device, Some(json!({ "display_name": 5 }))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let raw = server
        .http()
        .put(format!("{}{device}", server.url))
        .bearer_auth(AS_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(raw.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
    let (_, body) = api(&server, Method::GET, Some(AS_TOKEN), &device, None).await;
    assert_eq!(body["display_name"], "bridge 2", "bad input changed nothing");
    let (status, body) =
        api(&server, Method::GET, Some(AS_TOKEN), &whoami(&format!("?{alice_q}&device_id=BRIDGEDEV")), None).await;
    assert_eq!((status, body["device_id"].as_str()), (200, Some("BRIDGEDEV")));
    let (status, body) =
        api(&server, Method::GET, Some(AS_TOKEN), &whoami(&format!("?{alice_q}&device_id=NOPE")), None).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN_DEVICE")));
    assert_eq!(api(&server, Method::DELETE, Some(AS_TOKEN), &device, Some(json!({}))).await.0, 200);
    assert_eq!(api(&server, Method::GET, Some(AS_TOKEN), &device, None).await.0, 404);
    let (status, _) =
        api(&server, Method::PUT, Some(&human), "/_matrix/client/v3/devices/MADEUP", Some(json!({}))).await;
    assert_eq!(status, 404, "a regular client only renames its existing devices");

    // A room with the appservice's user in it: its events reach the appservice, in order.
    let (_, room) = api(
        &server,
        Method::POST,
        Some(&human),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "invite": ["@ws_alice:localhost"] })),
    )
    .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join?user_id={}", urlencode("@ws_alice:localhost"));
    assert_eq!(api(&server, Method::POST, Some(AS_TOKEN), &join, Some(json!({}))).await.0, 200);
    let (_, quiet) = api(&server, Method::POST, Some(&human), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let quiet = quiet["room_id"].as_str().unwrap().to_owned();
    send(&server, &human, &quiet, "q1", "not for the appservice").await;
    for n in 1..=3 {
        send(&server, &human, &room, &format!("t{n}"), &format!("message {n}")).await;
    }
    service.wait_for_bodies(&["message 1", "message 2", "message 3"]).await;
    assert_eq!(service.received.lock().unwrap().bad_tokens, 0, "every call carried the hs_token");

    // Ephemeral data of the room (receive_ephemeral): typing and public read receipts.
    let last = service
        .received
        .lock()
        .unwrap()
        .transactions
        .iter()
        .flat_map(|(_, e)| e.clone())
        .filter(|e| e["content"]["body"] == "message 3")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .next()
        .unwrap();
    let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{}", urlencode("@agent:localhost"));
    assert_eq!(
        api(&server, Method::PUT, Some(&human), &typing, Some(json!({ "typing": true, "timeout": 10000 }))).await.0,
        200
    );
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", urlencode(&last));
    assert_eq!(api(&server, Method::POST, Some(&human), &receipt, Some(json!({}))).await.0, 200);
    let quiet_typing = format!("/_matrix/client/v3/rooms/{quiet}/typing/{}", urlencode("@agent:localhost"));
    assert_eq!(
        api(&server, Method::PUT, Some(&human), &quiet_typing, Some(json!({ "typing": true, "timeout": 10000 })))
            .await
            .0,
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ephemeral = service.received.lock().unwrap().ephemeral.clone();
        let typed = ephemeral.iter().any(|e| {
            e["type"] == "m.typing"
                && e["room_id"] == room.as_str()
                && e["content"]["user_ids"] == json!(["@agent:localhost"])
        });
        let read = ephemeral.iter().any(|e| {
            e["type"] == "m.receipt"
                && e["room_id"] == room.as_str()
                && e["content"][&last]["m.read"]["@agent:localhost"]["ts"].is_u64()
        });
        if typed && read {
            assert!(
                ephemeral.iter().all(|e| e["room_id"] == room.as_str()),
                "only the appservice's rooms: {ephemeral:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "typing and receipt reach the appservice: {ephemeral:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Presence of a user sharing a room with the appservice's users, and to-device messages to
    // its users' devices (MSC4203), which travel apart from the EDUs.
    let presence = format!("/_matrix/client/v3/presence/{}/status", urlencode("@agent:localhost"));
    let body = json!({ "presence": "online", "status_msg": "en réunion" });
    assert_eq!(api(&server, Method::PUT, Some(&human), &presence, Some(body)).await.0, 200);
    let to_device = "/_matrix/client/v3/sendToDevice/m.room_key_request/td1";
    let body = json!({ "messages": { "@ws_alice:localhost": { "*": { "action": "request", "request_id": "r1" } } } });
    let (status, body) = api(&server, Method::PUT, Some(&human), to_device, Some(body)).await;
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ephemeral, to_device) = {
            let received = service.received.lock().unwrap();
            (received.ephemeral.clone(), received.to_device.clone())
        };
        let present = ephemeral.iter().any(|e| {
            e["type"] == "m.presence" && e["sender"] == "@agent:localhost" && e["content"]["status_msg"] == "en réunion"
        });
        let delivered = to_device.iter().any(|e| {
            e["type"] == "m.room_key_request"
                && e["sender"] == "@agent:localhost"
                && e["to_user_id"] == "@ws_alice:localhost"
                && e["to_device_id"].is_string()
                && e["content"]["request_id"] == "r1"
        });
        if present && delivered {
            assert!(ephemeral.iter().all(|e| e.get("to_device_id").is_none()), "to-device apart: {ephemeral:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence and to-device reach the appservice: {ephemeral:?} {to_device:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Ping: only the appservice itself; the homeserver calls it with the transaction id.
    let ping = "/_matrix/client/v1/appservice/workspace/ping";
    let (status, body) =
        api(&server, Method::POST, Some(AS_TOKEN), ping, Some(json!({ "transaction_id": "ping-1" }))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["duration_ms"].is_u64(), "{body}");
    assert_eq!(service.received.lock().unwrap().pings, vec![json!({ "transaction_id": "ping-1" })]);
    let (status, _) = api(&server, Method::POST, Some(&human), ping, Some(json!({}))).await;
    assert_eq!(status, 403);
    let (status, _) =
        api(&server, Method::POST, Some(AS_TOKEN), "/_matrix/client/v1/appservice/other/ping", Some(json!({}))).await;
    assert_eq!(status, 403);
    let (status, body) =
        api(&server, Method::POST, Some("dead-as"), "/_matrix/client/v1/appservice/dead/ping", Some(json!({}))).await;
    assert_eq!((status, body["errcode"].as_str()), (502, Some("M_CONNECTION_FAILED")), "{body}");
    let (status, body) =
        api(&server, Method::POST, Some("silent-as"), "/_matrix/client/v1/appservice/silent/ping", Some(json!({})))
            .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_URL_NOT_SET")), "{body}");
    let (status, body) = api(&server, Method::GET, Some("silent-as"), &whoami(""), None).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@silentbot:localhost")), "each sender exists");

    // The appservice down, then the server killed: nothing is lost or doubled.
    service.failing.store(true, Ordering::SeqCst);
    send(&server, &human, &room, "t4", "message 4").await;
    send(&server, &human, &room, "t5", "message 5").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while service.received.lock().unwrap().refused == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.received.lock().unwrap().refused > 0, "the server tried while the appservice was down");
    server.kill();
    server.restart();
    *service.homeserver.lock().unwrap() = server.url.clone();
    send(&server, &human, &room, "t6", "message 6").await;
    service.failing.store(false, Ordering::SeqCst);
    let (status, _) = api(&server, Method::POST, Some(AS_TOKEN), ping, Some(json!({}))).await;
    assert_eq!(status, 200, "a ping makes a backing-off sender retry at once");
    service.wait_for_bodies(&["message 1", "message 2", "message 3", "message 4", "message 5", "message 6"]).await;

    // Aliases: the namespace is the appservice's; an unknown alias in it is asked for.
    let (status, body) = api(
        &server,
        Method::PUT,
        Some(&human),
        &format!("/_matrix/client/v3/directory/room/{}", urlencode("#ws_mine:localhost")),
        Some(json!({ "room_id": quiet })),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_EXCLUSIVE")));
    let (status, body) = api(
        &server,
        Method::GET,
        None,
        &format!("/_matrix/client/v3/directory/room/{}", urlencode("#ws_made:localhost")),
        None,
    )
    .await;
    assert_eq!(status, 200, "the appservice created the room when asked: {body}");
    assert!(body["room_id"].as_str().is_some_and(|r| r.starts_with('!')));
    let (status, _) = api(
        &server,
        Method::GET,
        None,
        &format!("/_matrix/client/v3/directory/room/{}", urlencode("#other:localhost")),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Users: an unknown user of the namespace is asked for, and exists once the appservice made it.
    let profile = |user: &str| format!("/_matrix/client/v3/profile/{}", urlencode(user));
    let (status, body) = api(&server, Method::GET, Some(&human), &profile("@ws_lazy:localhost"), None).await;
    assert_eq!(status, 200, "{body}");
    let lazy = format!("?user_id={}", urlencode("@ws_lazy:localhost"));
    let (status, body) = api(&server, Method::GET, Some(AS_TOKEN), &whoami(&lazy), None).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@ws_lazy:localhost")));
    let (status, _) = api(&server, Method::GET, Some(&human), &profile("@ws_unknown:localhost"), None).await;
    assert_eq!(status, 404);

    // Third-party networks: the protocol the appservice registered, as it describes it.
    let (status, body) = api(&server, Method::GET, Some(&human), "/_matrix/client/v3/thirdparty/protocols", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["gouv"]["instances"][0]["instance_id"], "workspace|annuaire", "{body}");
    assert_eq!(body["gouv"]["location_fields"], json!(["service"]));
    let (status, body) =
        api(&server, Method::GET, Some(&human), "/_matrix/client/v3/thirdparty/location/gouv?service=dgfip", None)
            .await;
    assert_eq!((status, body[0]["alias"].as_str()), (200, Some("#ws_dgfip:localhost")), "{body}");
    let (status, _) = api(&server, Method::GET, Some(&human), "/_matrix/client/v3/thirdparty/protocol/irc", None).await;
    assert_eq!(status, 404, "a protocol no appservice offers");

    // A room the appservice lists for its network: in that network's listing, not the server's.
    let (_, created) = api(
        &server,
        Method::POST,
        Some(&human),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "name": "Annuaire DGFiP" })),
    )
    .await;
    let bridged = created["room_id"].as_str().unwrap().to_owned();
    let listing = format!("/_matrix/client/v3/directory/list/appservice/annuaire/{}", urlencode(&bridged));
    let (status, body) =
        api(&server, Method::PUT, Some(&human), &listing, Some(json!({ "visibility": "public" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only an appservice: {body}");
    let (status, _) =
        api(&server, Method::PUT, Some(AS_TOKEN), &listing, Some(json!({ "visibility": "public" }))).await;
    assert_eq!(status, 200);
    let rooms = |filter: Value| {
        let server = &server;
        let human = human.clone();
        async move { api(server, Method::POST, Some(&human), "/_matrix/client/v3/publicRooms", Some(filter)).await }
    };
    let ids = |body: &Value| -> Vec<String> {
        body["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, own) = rooms(json!({})).await;
    assert!(!ids(&own).contains(&bridged), "not in the server's own listing: {own}");
    let (status, network) = rooms(json!({ "third_party_instance_id": "workspace|annuaire" })).await;
    assert_eq!(status, 200, "{network}");
    assert_eq!(ids(&network), vec![bridged.clone()]);
    let (_, all) = rooms(json!({ "include_all_networks": true })).await;
    assert!(ids(&all).contains(&bridged));
    let (status, body) = rooms(json!({ "third_party_instance_id": "nobody|irc" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let (status, _) =
        api(&server, Method::PUT, Some(AS_TOKEN), &listing, Some(json!({ "visibility": "private" }))).await;
    assert_eq!(status, 200);
    let (_, network) = rooms(json!({ "third_party_instance_id": "workspace|annuaire" })).await;
    assert!(ids(&network).is_empty(), "hidden again: {network}");
}

#[test]
fn a_bad_registration_file_stops_the_start_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "id: broken\nurl: null\nas_token: a\nsender_localpart: bot\nnamespaces: {}\n").unwrap();
    let clash = dir.path().join("clash.yaml");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, registration("http://127.0.0.1:9")).unwrap();
    std::fs::write(
        &clash,
        registration("http://127.0.0.1:9")
            .replace("id: workspace", "id: other")
            .replace(AS_TOKEN, "x")
            .replace(HS_TOKEN, "y")
            .replace("sender_localpart: workspace", "sender_localpart: other"),
    )
    .unwrap();
    for (files, expected) in [(vec![&file], "hs_token"), (vec![&good, &clash], "namespaces.users")] {
        let list = toml::Value::Array(files.iter().map(|f| f.to_string_lossy().into_owned().into()).collect());
        let config = crate::common::write_config(dir.path(), &[("appservices.registrations", list)]);
        let output = std::process::Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
        assert!(!output.status.success(), "the server refused to start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let named = files.last().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(stderr.contains(&named) && stderr.contains(expected), "{stderr}");
    }
}

/// MSC3202 for an appservice that holds its users' devices and syncs for none of them
/// (`org.matrix.msc3202: true`): the device list changes of the users it shares rooms with
/// (`changed`, and `left` once they share none), and the one-time key counts and unused fallback
/// key types of its users' devices when they change (upload, claims, the fallback key used).
/// Then, the appservice down and the server killed in between, every transaction is sent again
/// with the same id and the same body, and nothing is lost or told twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypting_appservice_hears_of_device_lists_and_key_counts_once_across_restarts() {
    use crate::e2ee::TestDevice;
    let service = appservice_stub().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workspace.yaml");
    std::fs::write(&file, format!("{}org.matrix.msc3202: true\n", registration(&service.url))).unwrap();
    let files = toml::Value::Array(vec![file.to_string_lossy().into_owned().into()]);
    let mut server = TestServer::start_with(&[("appservices.registrations", files)]);
    *service.homeserver.lock().unwrap() = server.url.clone();

    // The appservice's user and its device; an agent, a colleague in the agent's room, and a
    // stranger who shares no room with the appservice.
    let bot = "@ws_bot:localhost";
    let register = json!({ "type": "m.login.application_service", "username": "ws_bot" });
    assert_eq!(api(&server, Method::POST, Some(AS_TOKEN), "/_matrix/client/v3/register", Some(register)).await.0, 200);
    let as_bot = |path: &str| format!("{path}?user_id={}&org.matrix.msc3202.device_id=BOTDEV", urlencode(bot));
    let device = format!("/_matrix/client/v3/devices/BOTDEV?user_id={}", urlencode(bot));
    assert_eq!(api(&server, Method::PUT, Some(AS_TOKEN), &device, Some(json!({}))).await.0, 201);
    let (agent, agent_token) = register_raw(&server, "agent").await;
    let (colleague, colleague_token) = register_raw(&server, "colleague").await;
    let (stranger, stranger_token) = register_raw(&server, "stranger").await;
    let (_, room) = api(
        &server,
        Method::POST,
        Some(&agent_token),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "invite": [bot, &colleague] })),
    )
    .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join?user_id={}", urlencode(bot));
    assert_eq!(api(&server, Method::POST, Some(AS_TOKEN), &join, Some(json!({}))).await.0, 200);
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    assert_eq!(api(&server, Method::POST, Some(&colleague_token), &join, Some(json!({}))).await.0, 200);
    let device_of = |token: &str| {
        let server = &server;
        let token = token.to_owned();
        async move {
            let (_, me) = api(server, Method::GET, Some(&token), "/_matrix/client/v3/account/whoami", None).await;
            me["device_id"].as_str().unwrap().to_owned()
        }
    };
    let upload = "/_matrix/client/v3/keys/upload";

    // A member who joined is in `changed`, and again once their device keys changed; the
    // stranger's are none of its business.
    service.wait_for_transaction("the colleague joined", 0, |b| listed(b, "changed", &colleague)).await;
    let seen = service.accepted_once().len();
    let stranger_device = TestDevice::new(&stranger, &device_of(&stranger_token).await);
    let keys = json!({ "device_keys": stranger_device.device_keys() });
    assert_eq!(api(&server, Method::POST, Some(&stranger_token), upload, Some(keys)).await.0, 200);
    let colleague_device = TestDevice::new(&colleague, &device_of(&colleague_token).await);
    let keys = json!({ "device_keys": colleague_device.device_keys() });
    assert_eq!(api(&server, Method::POST, Some(&colleague_token), upload, Some(keys)).await.0, 200);
    service.wait_for_transaction("the colleague's keys changed", seen, |b| listed(b, "changed", &colleague)).await;
    assert!(
        service.accepted_once().iter().all(|(_, b)| !listed(b, "changed", &stranger)),
        "a user sharing no room with the appservice is not listed"
    );

    // Its device's keys (uploaded as the device, `org.matrix.msc3202.device_id`): counted.
    let bot_device = TestDevice::new(bot, "BOTDEV");
    let otk = |key: &str| bot_device.sign(json!({ "key": key }));
    let keys = json!({
        "device_keys": bot_device.device_keys(),
        "one_time_keys": {
            "signed_curve25519:AAAAAQ": otk("b25ldGltZWtleW9uZXRpbWVrZXlvbmV0aW1la2V5b24"),
            "signed_curve25519:AAAAAg": otk("dHdvdGltZWtleXR3b3RpbWVrZXl0d290aW1la2V5dHc"),
        },
        "fallback_keys": { "signed_curve25519:AAAAAw":
            bot_device.sign(json!({ "key": "ZmFsbGJhY2trZXlmYWxsYmFja2tleWZhbGxiYWNra2U", "fallback": true })) },
    });
    let (status, counts) = api(&server, Method::POST, Some(AS_TOKEN), &as_bot(upload), Some(keys)).await;
    assert_eq!((status, counts["one_time_key_counts"]["signed_curve25519"].as_u64()), (200, Some(2)), "{counts}");
    service.wait_for_counts(bot, "BOTDEV", 2, json!(["signed_curve25519"])).await;

    // Claimed by the agent: one, the other, then the fallback key (used, so no longer unused).
    let claim = json!({ "one_time_keys": { bot: { "BOTDEV": "signed_curve25519" } } });
    for expected in ["signed_curve25519:AAAAAQ", "signed_curve25519:AAAAAg", "signed_curve25519:AAAAAw"] {
        let (status, claimed) =
            api(&server, Method::POST, Some(&agent_token), "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
        assert_eq!(status, 200);
        assert!(claimed["one_time_keys"][bot]["BOTDEV"].get(expected).is_some(), "{claimed}");
    }
    service.wait_for_counts(bot, "BOTDEV", 0, json!([])).await;

    // The colleague leaves the only room they shared: in `left`.
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    assert_eq!(api(&server, Method::POST, Some(&colleague_token), &leave, Some(json!({}))).await.0, 200);
    service.wait_for_transaction("the colleague left", 0, |b| listed(b, "left", &colleague)).await;

    // The appservice down: a to-device message to its device, then a message, new keys of
    // the agent and a new one-time key of its device, all while it refuses.
    let before_outage = service.accepted_once().len();
    service.failing.store(true, Ordering::SeqCst);
    let to_device = "/_matrix/client/v3/sendToDevice/m.room_key_request/outage";
    let message = json!({ "messages": { bot: { "BOTDEV": { "action": "request", "request_id": "outage" } } } });
    assert_eq!(api(&server, Method::PUT, Some(&agent_token), to_device, Some(message)).await.0, 200);
    let carries_request = |b: &Value| {
        as_array(&b["de.sorunome.msc2409.to_device"]).iter().any(|m| m["content"]["request_id"] == "outage")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (in_flight, in_flight_body) = loop {
        let refused =
            service.received.lock().unwrap().attempts.iter().find(|(_, b, ok)| !ok && carries_request(b)).cloned();
        if let Some((txn, body, _)) = refused {
            break (txn, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "the to-device message was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    send(&server, &agent_token, &room, "outage", "pendant la panne").await;
    let agent_device = TestDevice::new(&agent, &device_of(&agent_token).await);
    let keys = json!({ "device_keys": agent_device.device_keys() });
    assert_eq!(api(&server, Method::POST, Some(&agent_token), upload, Some(keys)).await.0, 200);
    let keys =
        json!({ "one_time_keys": { "signed_curve25519:AAAABA": otk("bm91dmVsbGVjbGVub3V2ZWxsZWNsZW5vdXZlbGxlY2w") } });
    assert_eq!(api(&server, Method::POST, Some(AS_TOKEN), &as_bot(upload), Some(keys)).await.0, 200);

    // Killed and started again while the appservice still refuses: the same transaction again.
    let refused_before = service.received.lock().unwrap().refused;
    server.kill();
    server.restart();
    *service.homeserver.lock().unwrap() = server.url.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while service.received.lock().unwrap().refused == refused_before {
        assert!(tokio::time::Instant::now() < deadline, "the server tried again after its restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retried = service.received.lock().unwrap().attempts.last().cloned().unwrap();
    assert_eq!((&retried.0, &retried.1), (&in_flight, &in_flight_body), "the same transaction after the restart");

    // Back up: everything arrives, each once.
    service.failing.store(false, Ordering::SeqCst);
    let ping = "/_matrix/client/v1/appservice/workspace/ping";
    assert_eq!(api(&server, Method::POST, Some(AS_TOKEN), ping, Some(json!({}))).await.0, 200);
    let (txn, body) = service.wait_for_transaction("the transaction in flight", 0, carries_request).await;
    assert_eq!((txn, body), (in_flight, in_flight_body));
    service.wait_for_transaction("the agent's keys changed", before_outage, |b| listed(b, "changed", &agent)).await;
    service.wait_for_counts(bot, "BOTDEV", 1, json!([])).await;
    service.wait_for_bodies(&["pendant la panne"]).await;
    let accepted = service.accepted_once();
    let requests: usize = accepted
        .iter()
        .map(|(_, b)| {
            as_array(&b["de.sorunome.msc2409.to_device"])
                .iter()
                .filter(|m| m["content"]["request_id"] == "outage")
                .count()
        })
        .sum();
    assert_eq!(requests, 1, "the to-device message once");
}

fn as_array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}
