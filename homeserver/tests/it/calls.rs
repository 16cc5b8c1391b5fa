//! Calls with Element Call (docs/calls.md): delayed events (MSC4140) — scheduling, the limits,
//! restart / cancel / send with the delay id alone, cancellation by another user's state, firing
//! after a crash — and the MatrixRTC transports (MSC4143) in their endpoint and the well-known.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, register_raw, TestServer};

const DELAYED: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

fn with_delayed_events(max_delay_ms: i64, max_per_user: i64) -> Vec<(&'static str, toml::Value)> {
    vec![
        ("delayed_events.max_delay_ms", toml::Value::Integer(max_delay_ms)),
        ("delayed_events.max_per_user", toml::Value::Integer(max_per_user)),
    ]
}

async fn create_room(server: &TestServer, token: &str, body: Value) -> String {
    let (status, room) = api(server, Method::POST, Some(token), "/_matrix/client/v3/createRoom", Some(body)).await;
    assert_eq!(status, 200, "{room}");
    room["room_id"].as_str().unwrap().to_owned()
}

fn enc(s: &str) -> String {
    crate::common::urlencode(s)
}

/// Schedules a message; answers (status, body).
async fn delayed_message(server: &TestServer, token: &str, room: &str, body: &str, delay: u64) -> (u16, Value) {
    let txn = format!("t{}", rand_suffix());
    let path =
        format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}?org.matrix.msc4140.delay={delay}", enc(room));
    api(server, Method::PUT, Some(token), &path, Some(json!({ "msgtype": "m.text", "body": body }))).await
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The room's timeline, oldest first.
async fn timeline(server: &TestServer, token: &str, room: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200", enc(room));
    let (status, page) = api(server, Method::GET, Some(token), &path, None).await;
    assert_eq!(status, 200, "{page}");
    let mut events = page["chunk"].as_array().unwrap().clone();
    events.reverse();
    events
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits until a message with `body` is in the room (the timer is observed, not slept past).
async fn wait_for_message(server: &TestServer, token: &str, room: &str, body: &str, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let events = timeline(server, token, room).await;
        if bodies(&events).iter().any(|b| b == body) {
            return events;
        }
        assert!(Instant::now() < deadline, "{body:?} never sent: {:?}", bodies(&events));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, body) = api(server, Method::GET, Some(token), DELAYED, None).await;
    assert_eq!(status, 200, "{body}");
    body["delayed_events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn delayed_events_are_off_unless_configured() {
    let server = TestServer::start();
    let (_, token) = register_raw(&server, "alice").await;
    let room = create_room(&server, &token, json!({})).await;
    let (status, body) = delayed_message(&server, &token, &room, "later", 1000).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (_, versions) = api(&server, Method::GET, None, "/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], false);
    let (_, caps) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/capabilities", None).await;
    assert!(caps["capabilities"].get("org.matrix.msc4140.delayed_events").is_none(), "{caps}");
    assert!(list(&server, &token).await.is_empty());
}

#[tokio::test]
async fn a_delayed_message_is_listed_then_sent_once_after_its_delay() {
    let server = TestServer::start_with(&with_delayed_events(60_000, 2));
    let (user, token) = register_raw(&server, "alice").await;
    let room = create_room(&server, &token, json!({})).await;

    let (_, versions) = api(&server, Method::GET, None, "/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], true);
    let (_, caps) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/capabilities", None).await;
    assert_eq!(
        caps["capabilities"]["org.matrix.msc4140.delayed_events"],
        json!({ "max_delay_ms": 60_000, "max_scheduled": 2 })
    );

    // Over the maximum: Synapse's refusal, with the maximum for clients to retry with.
    let (status, body) = delayed_message(&server, &token, &room, "too late", 60_001).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE");
    assert_eq!(body["error"], "The requested delay (60001ms) exceeds the allowed maximum (60000ms)");
    assert_eq!(body["org.matrix.msc4140.errcode"], "M_MAX_DELAY_EXCEEDED");
    assert_eq!(body["org.matrix.msc4140.max_delay"], 60_000);
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/x?org.matrix.msc4140.delay=soon", enc(&room));
    let (status, body) = api(&server, Method::PUT, Some(&token), &path, Some(json!({ "body": "x" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    assert!(list(&server, &token).await.is_empty(), "a refused request schedules nothing");

    let (status, body) = delayed_message(&server, &token, &room, "later", 1500).await;
    assert_eq!(status, 200, "{body}");
    let delay_id = body["delay_id"].as_str().expect("a delay id").to_owned();
    assert!(!bodies(&timeline(&server, &token, &room).await).contains(&"later".to_owned()));

    let listed = list(&server, &token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["delay_id"], delay_id.as_str());
    assert_eq!(listed[0]["room_id"], room.as_str());
    assert_eq!(listed[0]["type"], "m.room.message");
    assert_eq!(listed[0]["delay_ms"], 1500);
    assert_eq!(listed[0]["content"]["body"], "later");
    let (status, one) = api(&server, Method::GET, Some(&token), &format!("{DELAYED}/{delay_id}"), None).await;
    assert_eq!((status, &one["content"]["body"]), (200, &json!("later")));
    // Another user neither sees it in their list nor by its id.
    let (_, bob) = register_raw(&server, "bob").await;
    assert!(list(&server, &bob).await.is_empty());
    let (status, _) = api(&server, Method::GET, Some(&bob), &format!("{DELAYED}/{delay_id}"), None).await;
    assert_eq!(status, 404);

    let events = wait_for_message(&server, &token, &room, "later", Duration::from_secs(20)).await;
    let sent: Vec<&Value> = events.iter().filter(|e| e["content"]["body"] == "later").collect();
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0]["sender"], user.as_str());
    assert!(list(&server, &token).await.is_empty(), "forgotten once sent");
    let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/{delay_id}/restart"), None).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

    // The per-user limit: Synapse's 429 M_LIMIT_EXCEEDED.
    for body in ["one", "two"] {
        assert_eq!(delayed_message(&server, &token, &room, body, 50_000).await.0, 200);
    }
    let (status, body) = delayed_message(&server, &token, &room, "three", 50_000).await;
    assert_eq!((status, body["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{body}");
    assert_eq!(list(&server, &token).await.len(), 2);
}

#[tokio::test]
async fn restart_cancel_and_send_need_only_the_delay_id() {
    let server = TestServer::start_with(&with_delayed_events(60_000, 100));
    let (_, token) = register_raw(&server, "alice").await;
    let room = create_room(&server, &token, json!({})).await;
    let schedule = |body: &'static str, delay: u64| {
        let (server, token, room) = (&server, token.clone(), room.clone());
        async move {
            let (status, answer) = delayed_message(server, &token, &room, body, delay).await;
            assert_eq!(status, 200, "{answer}");
            answer["delay_id"].as_str().unwrap().to_owned()
        }
    };

    // A heartbeat: restarted (without any access token) faster than its delay, it is not sent;
    // once the restarts stop, it is.
    let heartbeat = schedule("left the call", 1500).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/{heartbeat}/restart"), None).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!bodies(&timeline(&server, &token, &room).await).contains(&"left the call".to_owned()));
    wait_for_message(&server, &token, &room, "left the call", Duration::from_secs(20)).await;

    // Cancelled (the older `{"action"}` form): never sent, though due before one that is.
    let cancelled = schedule("cancelled", 1000).await;
    let (status, body) =
        api(&server, Method::POST, None, &format!("{DELAYED}/{cancelled}"), Some(json!({ "action": "cancel" }))).await;
    assert_eq!(status, 200, "{body}");
    let _after = schedule("due after the cancelled one", 1500).await;
    let events = wait_for_message(&server, &token, &room, "due after the cancelled one", Duration::from_secs(20)).await;
    assert!(!bodies(&events).contains(&"cancelled".to_owned()));
    let (status, _) = api(&server, Method::POST, None, &format!("{DELAYED}/{cancelled}/cancel"), None).await;
    assert_eq!(status, 404, "cancelled once");

    // Sent now, by both forms.
    for (body, old_form) in [("sent now", false), ("sent now, older form", true)] {
        let id = schedule(body, 50_000).await;
        let (status, answer) = if old_form {
            api(&server, Method::POST, None, &format!("{DELAYED}/{id}"), Some(json!({ "action": "send" }))).await
        } else {
            api(&server, Method::POST, None, &format!("{DELAYED}/{id}/send"), None).await
        };
        assert_eq!(status, 200, "{answer}");
        let events = timeline(&server, &token, &room).await;
        assert_eq!(bodies(&events).iter().filter(|b| *b == body).count(), 1, "sent by the time it answers");
    }
    assert!(list(&server, &token).await.is_empty());

    // Bad requests change nothing.
    let id = schedule("still pending", 50_000).await;
    let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/{id}"), Some(json!({}))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");
    let (status, body) =
        api(&server, Method::POST, None, &format!("{DELAYED}/{id}"), Some(json!({ "action": "later" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/hcd_unknown/send"), None).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    assert_eq!(list(&server, &token).await.len(), 1);
    // Listing is the owner's: it needs a token.
    let (status, body) = api(&server, Method::GET, None, DELAYED, None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{body}");
}

#[tokio::test]
async fn another_users_state_cancels_a_pending_delayed_state_event_but_its_senders_own_does_not() {
    let server = TestServer::start_with(&with_delayed_events(600_000, 100));
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } }),
    )
    .await;
    let (status, body) =
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{}", enc(&room)), Some(json!({})))
            .await;
    assert_eq!(status, 200, "{body}");
    let state = |key: &str| format!("/_matrix/client/v3/rooms/{}/state/m.test.call/{key}", enc(&room));
    let delayed_state = |key: &str| format!("{}?org.matrix.msc4140.delay=600000", state(key));

    let (status, body) = api(&server, Method::PUT, Some(&alice), &delayed_state("shared"), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(&server, Method::PUT, Some(&alice), &delayed_state("other"), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&server, &alice).await.len(), 2);

    // Alice's own update of the state (her call membership's heartbeat) keeps her pending leave.
    let (status, _) = api(&server, Method::PUT, Some(&alice), &state("shared"), Some(json!({ "by": "alice" }))).await;
    assert_eq!(status, 200);
    // Bob's state of another key changes nothing either; his state of the same key cancels it.
    let (status, _) = api(&server, Method::PUT, Some(&bob), &state("unrelated"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = api(&server, Method::PUT, Some(&bob), &state("shared"), Some(json!({ "by": bob_id }))).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = list(&server, &alice).await;
        let keys: Vec<&str> = pending.iter().map(|p| p["state_key"].as_str().unwrap()).collect();
        if keys == ["other"] {
            break;
        }
        assert!(keys.contains(&"other"), "the other key stays pending: {keys:?}");
        assert!(Instant::now() < deadline, "never cancelled: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Element Call's membership of a call, as it keeps it (matrix-js-sdk's MatrixRTC membership
/// manager, in its MSC3401 form): its delayed leave (the same state with empty content) is
/// scheduled first, then the membership sent; the delayed leave is restarted as a heartbeat,
/// with its delay id alone, as long as the client runs. Once the restarts stop the leave is sent,
/// a delay after the last restart, and the member is out of the call.
#[tokio::test]
async fn a_call_membership_ends_with_its_delayed_leave_once_the_client_stops_restarting_it() {
    const DELAY_MS: u64 = 4000;
    let server = TestServer::start_with(&with_delayed_events(600_000, 100));
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (status, body) =
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{}", enc(&room)), Some(json!({})))
            .await;
    assert_eq!(status, 200, "{body}");
    // Bob, a plain member, is in the call from his device BOBDEVICE.
    let member = format!(
        "/_matrix/client/v3/rooms/{}/state/org.matrix.msc3401.call.member/{}",
        enc(&room),
        enc(&format!("_{bob_id}_BOBDEVICE"))
    );
    let membership = json!({
        "application": "m.call", "call_id": "", "scope": "m.room", "device_id": "BOBDEVICE",
        "focus_active": { "type": "livekit", "focus_selection": "oldest_membership" },
        "foci_preferred": [{ "type": "livekit", "livekit_service_url": "https://sfu-auth.example" }],
    });
    let (status, body) = api(
        &server,
        Method::PUT,
        Some(&bob),
        &format!("{member}?org.matrix.msc4140.delay={DELAY_MS}"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let leave = body["delay_id"].as_str().expect("a delay id").to_owned();
    let (status, body) = api(&server, Method::PUT, Some(&bob), &member, Some(membership.clone())).await;
    assert_eq!(status, 200, "{body}");
    let (_, sync) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/sync?timeout=0", None).await;
    let mut since = sync["next_batch"].as_str().expect("a sync token").to_owned();

    // The heartbeat, token-less, past the leave's first send time: bob stays in the call, his own
    // membership update did not cancel his leave, and each restart moves its time.
    let first = list(&server, &bob).await;
    assert_eq!(first.len(), 1, "his own membership leaves the leave pending: {first:?}");
    let first_due = first[0]["delayed_since_ts"].as_u64().unwrap() + DELAY_MS;
    let mut last_start = 0;
    loop {
        let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/{leave}/restart"), None).await;
        assert_eq!(status, 200, "{body}");
        let pending = list(&server, &bob).await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        let start = pending[0]["delayed_since_ts"].as_u64().unwrap();
        assert!(start > last_start, "restarted");
        last_start = start;
        let (_, current) = api(&server, Method::GET, Some(&bob), &member, None).await;
        assert_eq!(current, membership, "still in the call");
        if start > first_due {
            break;
        }
        tokio::time::sleep(Duration::from_millis(DELAY_MS / 4)).await;
    }

    // The client is gone: no more restarts. The leave arrives (waited for with /sync).
    let sent = loop {
        let path = format!("/_matrix/client/v3/sync?timeout=30000&since={}", enc(&since));
        let (status, sync) = api(&server, Method::GET, Some(&bob), &path, None).await;
        assert_eq!(status, 200, "{sync}");
        since = sync["next_batch"].as_str().unwrap().to_owned();
        let events = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        if let Some(event) = events.into_iter().find(|e| e["type"] == "org.matrix.msc3401.call.member") {
            break event;
        }
    };
    assert_eq!(sent["content"], json!({}), "{sent}");
    assert_eq!(sent["sender"], bob_id.as_str());
    assert!(sent["origin_server_ts"].as_u64().unwrap() >= last_start + DELAY_MS, "not before its time: {sent}");
    let (_, current) = api(&server, Method::GET, Some(&bob), &member, None).await;
    assert_eq!(current, json!({}), "out of the call");
    assert!(list(&server, &bob).await.is_empty());
    let (status, _) = api(&server, Method::POST, None, &format!("{DELAYED}/{leave}/restart"), None).await;
    assert_eq!(status, 404, "nothing left to restart");
}

#[tokio::test]
async fn a_pending_delayed_event_is_sent_after_a_crash_and_a_restart() {
    let mut server = TestServer::start_with(&with_delayed_events(60_000, 100));
    let (_, token) = register_raw(&server, "alice").await;
    let room = create_room(&server, &token, json!({})).await;
    let (status, body) = delayed_message(&server, &token, &room, "after the crash", 2000).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = delayed_message(&server, &token, &room, "cancelled before the crash", 2500).await;
    assert_eq!(status, 200, "{body}");
    let cancelled = body["delay_id"].as_str().unwrap().to_owned();
    let (status, _) = api(&server, Method::POST, None, &format!("{DELAYED}/{cancelled}/cancel"), None).await;
    assert_eq!(status, 200);
    server.kill();
    // Down past the send time: the event is due when the server comes back.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    server.restart();
    let events = wait_for_message(&server, &token, &room, "after the crash", Duration::from_secs(20)).await;
    assert_eq!(bodies(&events).iter().filter(|b| *b == "after the crash").count(), 1);
    assert!(!bodies(&events).contains(&"cancelled before the crash".to_owned()));
    assert!(list(&server, &token).await.is_empty());

    // A graceful restart keeps a pending event too, with its time.
    let (status, _) = delayed_message(&server, &token, &room, "after the restart", 3000).await;
    assert_eq!(status, 200);
    server.restart();
    assert_eq!(list(&server, &token).await.len(), 1);
    wait_for_message(&server, &token, &room, "after the restart", Duration::from_secs(20)).await;
    // Sent once, however many restarts follow.
    server.restart();
    let events = timeline(&server, &token, &room).await;
    assert_eq!(bodies(&events).iter().filter(|b| *b == "after the restart").count(), 1);
    assert_eq!(bodies(&events).iter().filter(|b| *b == "after the crash").count(), 1);
}

#[tokio::test]
async fn rtc_transports_are_announced_at_their_endpoint_and_in_the_well_known() {
    let livekit = json!({ "type": "livekit", "livekit_service_url": "https://sfu-auth.ministry.example" });
    let mut transport = toml::Table::new();
    transport.insert("type".into(), "livekit".into());
    transport.insert("livekit_service_url".into(), "https://sfu-auth.ministry.example".into());
    let server =
        TestServer::start_with(&[("matrix_rtc.transports", toml::Value::Array(vec![toml::Value::Table(transport)]))]);
    let (_, token) = register_raw(&server, "alice").await;
    for path in ["/_matrix/client/v1/rtc/transports", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"] {
        let (status, body) = api(&server, Method::GET, Some(&token), path, None).await;
        // Under `rtc_transports`, which matrix-js-sdk reads (Element Call's first look).
        assert_eq!((status, &body), (200, &json!({ "rtc_transports": [livekit] })), "{path}");
        let (status, body) = api(&server, Method::GET, None, path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{path}");
    }
    let (status, body) = api(&server, Method::GET, None, "/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["m.homeserver"]["base_url"], server.url.trim_end_matches('/'));
    assert_eq!(body["org.matrix.msc4143.rtc_foci"], json!([livekit]));

    // None configured: no foci, and the endpoint is unrecognised (as Synapse without MSC4143),
    // so that Element Call goes on to the well-known file at the server name.
    let bare = TestServer::start();
    let (_, token) = register_raw(&bare, "alice").await;
    for path in ["/_matrix/client/v1/rtc/transports", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"] {
        let (status, body) = api(&bare, Method::GET, Some(&token), path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")), "{path}: {body}");
    }
    let (_, body) = api(&bare, Method::GET, None, "/.well-known/matrix/client", None).await;
    assert!(body.get("org.matrix.msc4143.rtc_foci").is_none(), "{body}");
    assert!(body["m.homeserver"]["base_url"].is_string());
}

#[tokio::test]
async fn a_transport_without_its_url_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut transport = toml::Table::new();
    transport.insert("type".into(), "livekit".into());
    let config = crate::common::write_config(
        dir.path(),
        &[("matrix_rtc.transports", toml::Value::Array(vec![toml::Value::Table(transport)]))],
    );
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts anyway is stopped, and the test fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server started with a transport it cannot announce");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("matrix_rtc.transports"), "{stderr}");
}

#[tokio::test]
async fn members_may_publish_their_call_membership_in_rooms_created_here() {
    let server = TestServer::start();
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (status, _) =
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{}", enc(&room)), Some(json!({})))
            .await;
    assert_eq!(status, 200);
    let (_, power) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room)),
        None,
    )
    .await;
    for kind in ["m.call.member", "org.matrix.msc3401.call.member", "m.rtc.member"] {
        assert_eq!(power["events"][kind], power["users_default"], "{kind} at the members' level: {power}");
        // Bob, a plain member, publishes his membership of the room's call (Element Call's
        // state key: `_` + user id + `_` + device).
        let path =
            format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(&room), enc(&format!("_{bob_id}_BOBDEVICE")));
        let (status, body) =
            api(&server, Method::PUT, Some(&bob), &path, Some(json!({ "application": "m.call" }))).await;
        assert_eq!(status, 200, "{kind}: {body}");
    }
    // Other state stays at the moderators' level.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
    let (status, _) = api(&server, Method::PUT, Some(&bob), &path, Some(json!({ "topic": "no" }))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn delay_ids_cannot_be_guessed_fast() {
    let mut settings = with_delayed_events(60_000, 100);
    let mut limit = toml::Table::new();
    limit.insert("per_second".into(), toml::Value::Float(0.01));
    limit.insert("burst".into(), toml::Value::Integer(3));
    settings.push(("rate_limits.enabled", toml::Value::Boolean(true)));
    settings.push(("rate_limits.delayed_event_action", toml::Value::Table(limit)));
    let server = TestServer::start_with(&settings);
    let (_, token) = register_raw(&server, "alice").await;
    let room = create_room(&server, &token, json!({})).await;
    let (status, answer) = delayed_message(&server, &token, &room, "pending", 50_000).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["delay_id"].as_str().unwrap().to_owned();

    // Three guesses spend the address's burst…
    for guess in 0..3 {
        let (status, body) =
            api(&server, Method::POST, None, &format!("{DELAYED}/hcd_guess{guess}/restart"), None).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    }
    // …then even the right id is refused, in both forms, and nothing is sent.
    let (status, body) = api(&server, Method::POST, None, &format!("{DELAYED}/{id}/send"), None).await;
    assert_eq!((status, body["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{body}");
    assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{body}");
    let (status, body) =
        api(&server, Method::POST, None, &format!("{DELAYED}/{id}"), Some(json!({ "action": "send" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{body}");
    assert_eq!(list(&server, &token).await.len(), 1, "still pending");
    assert!(!bodies(&timeline(&server, &token, &room).await).contains(&"pending".to_owned()));
}
