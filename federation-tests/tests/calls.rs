//! The built-in LiveKit authorisation service (`[matrix_rtc.livekit]`, docs/calls.md) between two
//! nodes: a node's own users and another node's users get LiveKit tokens that LiveKit's own
//! verifier (the `livekit-api` package, in the venv `LIVEKIT_API_VENV` that `./scripts/test`
//! makes) accepts; OpenID tokens are checked with the caller's server; only users of full-access
//! servers make the SFU open a room.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hemicycle::rtc::{member_identity, room_alias};
use hemicycle_federation_tests::{enc, Node};
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "hemicycle-test-key";
const SECRET: &str = "the-secret-shared-with-the-sfu-of-this-test";
const PREFIX: &str = "/_hemicycle/livekit";

fn python() -> PathBuf {
    let venv = std::env::var("LIVEKIT_API_VENV").unwrap_or_else(|_| {
        panic!("LIVEKIT_API_VENV is not set: run the tests with ./scripts/test, which installs livekit-api into a venv")
    });
    let python = PathBuf::from(&venv).join("bin").join("python");
    assert!(python.exists(), "no Python in LIVEKIT_API_VENV={venv}: ./scripts/test installs livekit-api there");
    python
}

fn tool() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/livekit/livekit_tool.py")
}

/// The room API of the SFU (see `livekit/livekit_tool.py`), stopped when dropped.
struct RoomApi {
    child: Child,
    port: u16,
}

impl RoomApi {
    fn start() -> RoomApi {
        let mut child = Command::new(python())
            .args([tool(), "room-api", KEY, SECRET])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the room API");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("its port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the room API printed {line:?}, not its port"));
        RoomApi { child, port }
    }

    /// The rooms the SFU was asked to open, by name.
    async fn rooms(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/rooms", self.port);
        reqwest::get(&url).await.expect("list the rooms").json().await.expect("JSON")
    }
}

impl Drop for RoomApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The token's claims as LiveKit's `TokenVerifier` reads them, or why it refused the token.
fn verify(jwt: &str, secret: &str) -> Result<Value, Value> {
    let mut child = Command::new(python())
        .args([tool(), "verify", KEY, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the verifier");
    child.stdin.take().expect("stdin").write_all(jwt.as_bytes()).expect("write the token");
    let output = child.wait_with_output().expect("the verifier's answer");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("the verifier prints JSON");
    if output.status.success() {
        Ok(answer)
    } else {
        Err(answer)
    }
}

async fn openid_token(node: &Node, token: &str, user: &str) -> Value {
    node.post(token, &format!("/_matrix/client/v3/user/{}/openid/request_token", enc(user)), json!({})).await
}

/// Turns the service on in a node's configuration and restarts it (its name, needed for the
/// full-access list, is known only once it runs).
async fn serve_livekit(node: &mut Node, sfu_port: u16, full_access: &[String]) {
    let secret_file = node.dir().join("livekit.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write the secret");
    let text = std::fs::read_to_string(node.config_path()).expect("read the node's config");
    let mut root: toml::Table = toml::from_str(&text).expect("the node's config");
    let mut livekit = toml::Table::new();
    livekit.insert("url".into(), format!("ws://127.0.0.1:{sfu_port}").into());
    livekit.insert("key".into(), KEY.into());
    livekit.insert("secret_file".into(), secret_file.display().to_string().into());
    let full_access = full_access.iter().map(|s| toml::Value::from(s.as_str())).collect();
    livekit.insert("full_access_servers".into(), toml::Value::Array(full_access));
    let mut rtc = toml::Table::new();
    rtc.insert("livekit".into(), toml::Value::Table(livekit));
    root.insert("matrix_rtc".into(), toml::Value::Table(rtc));
    std::fs::write(node.config_path(), toml::to_string(&root).expect("serialize")).expect("write the config");
    node.restart().await;
}

fn unauthorised(answer: &(u16, Value)) {
    assert_eq!(answer.0, 401, "{}", answer.1);
    assert_eq!(answer.1, json!({ "errcode": "M_UNAUTHORIZED", "error": "The request could not be authorised." }));
}

#[tokio::test]
async fn livekit_tokens_for_local_and_remote_users() {
    let sfu = RoomApi::start();
    let mut hub = Node::start("livekit-hub", &[]).await;
    let other = Node::start("livekit-other", &[]).await;
    let (alice_id, alice) = hub.register("alice").await;
    let (bob_id, bob) = other.register("bob").await;
    let (_, before) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&json!({}))).await;
    assert_eq!(before["errcode"], "M_UNRECOGNIZED", "the service is off until configured: {before}");
    let hub_name = hub.server_name();
    serve_livekit(&mut hub, sfu.port, &[hub_name]).await;
    let sfu_url = format!("ws://127.0.0.1:{}", sfu.port);

    // A body missing a member's field, refused in lk-jwt-service's words, which differ between
    // its two endpoints taking this body.
    let no_device = json!({
        "room_id": "!call:example.org",
        "slot_id": "m.call#ROOM",
        "openid_token": { "access_token": "token", "matrix_server_name": hub.server_name() },
        "member": { "id": "member-a", "claimed_user_id": alice_id, "claimed_device_id": "" },
        "delay_id": "some-delay",
        "delay_timeout": 10_000,
    });
    for (endpoint, missing) in [
        ("get_token", "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`"),
        (
            "delegate_delayed_leave",
            "The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`",
        ),
    ] {
        let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/{endpoint}"), Some(&no_device)).await;
        assert_eq!((status, error), (400, json!({ "errcode": "M_BAD_JSON", "error": missing })), "{endpoint}");
    }

    // Clients find the service through the well-known file and the transports.
    let (_, well_known) = hub.call(Method::GET, None, "/.well-known/matrix/client", None).await;
    let focus = &well_known["org.matrix.msc4143.rtc_foci"][0];
    assert_eq!(focus["type"], "livekit", "{well_known}");
    assert!(focus["livekit_service_url"].as_str().unwrap().ends_with(PREFIX), "{well_known}");
    let transports = hub.get(&alice, "/_matrix/client/v1/rtc/transports").await;
    assert_eq!(transports["rtc_transports"], json!([focus]), "{transports}");

    // A user of the node itself, whose server has full access: the SFU opens the room.
    let room = "!call:example.org";
    let alias = room_alias(room, "m.call#ROOM");
    let token = openid_token(&hub, &alice, &alice_id).await;
    let request = json!({
        "room_id": room,
        "slot_id": "m.call#ROOM",
        "openid_token": token,
        "member": { "id": "member-a", "claimed_user_id": alice_id, "claimed_device_id": "ALICEDEV" },
    });
    let (status, grant) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&request)).await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["url"], sfu_url.as_str());
    let claims = verify(grant["jwt"].as_str().unwrap(), SECRET).expect("LiveKit accepts the token");
    assert_eq!(claims["identity"], member_identity(&alice_id, "ALICEDEV", "member-a").as_str(), "{claims}");
    let video = &claims["video"];
    assert_eq!(video["room"], alias.as_str(), "{claims}");
    for grant in ["room_join", "can_publish", "can_subscribe", "can_update_own_metadata"] {
        assert_eq!(video[grant], true, "{grant}: {claims}");
    }
    // lk-jwt-service's grant: no `roomCreate` even here (the service opened the room itself; with
    // it the client could delete any room of the SFU through its room API).
    assert_ne!(video["room_create"], true, "{claims}");
    assert!(sfu.rooms().await.get(&alias).is_some(), "the SFU was asked to open the room");
    let refused = verify(grant["jwt"].as_str().unwrap(), "another-secret").expect_err("signed with our secret only");
    assert!(refused["refused"].as_str().unwrap().contains("Signature"), "{refused}");

    // A user of another node, checked with that node over federation: a token to join only.
    let remote_room = "!remote-call:example.org";
    let token = openid_token(&other, &bob, &bob_id).await;
    let request = json!({
        "room_id": remote_room,
        "slot_id": "m.call#ROOM",
        "openid_token": token,
        "member": { "id": "member-b", "claimed_user_id": bob_id, "claimed_device_id": "BOBDEV" },
    });
    let (status, grant) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&request)).await;
    assert_eq!(status, 200, "{grant}");
    let claims = verify(grant["jwt"].as_str().unwrap(), SECRET).expect("LiveKit accepts the token");
    assert_eq!(claims["identity"], member_identity(&bob_id, "BOBDEV", "member-b").as_str(), "{claims}");
    assert_eq!(claims["video"]["room"], room_alias(remote_room, "m.call#ROOM").as_str());
    assert_eq!(claims["video"]["room_join"], true, "{claims}");
    assert_ne!(claims["video"]["room_create"], true, "not a full-access server: {claims}");
    assert!(sfu.rooms().await.get(room_alias(remote_room, "m.call#ROOM")).is_none(), "no room opened for bob");

    // The legacy endpoint, for the same remote user: `<user>:<device>` as identity.
    let legacy = json!({ "room": remote_room, "openid_token": token, "device_id": "BOBDEV" });
    let (status, grant) = hub.call(Method::POST, None, &format!("{PREFIX}/sfu/get"), Some(&legacy)).await;
    assert_eq!(status, 200, "{grant}");
    let claims = verify(grant["jwt"].as_str().unwrap(), SECRET).expect("LiveKit accepts the token");
    assert_eq!(claims["identity"], format!("{bob_id}:BOBDEV"));
    assert_eq!(claims["video"]["room"], room_alias(remote_room, "m.call#ROOM").as_str());

    // Refused: a token its server does not know (remote and local), a claim of someone else.
    for server in [other.server_name(), hub.server_name()] {
        let mut unknown = request.clone();
        unknown["openid_token"] = json!({ "access_token": "not-a-token", "matrix_server_name": server });
        unknown["member"]["claimed_user_id"] = json!(format!("@bob:{server}"));
        unauthorised(&hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&unknown)).await);
    }
    let mut impostor = request.clone();
    impostor["member"]["claimed_user_id"] = json!(alice_id);
    unauthorised(&hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&impostor)).await);
    // A remote token presented as the hub's own is not found in the hub's store.
    let mut misplaced = request.clone();
    misplaced["openid_token"]["matrix_server_name"] = json!(hub.server_name());
    unauthorised(&hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&misplaced)).await);

    // Malformed requests, answered as lk-jwt-service answers them.
    let mut no_slot = request.clone();
    no_slot["slot_id"] = json!("");
    let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&no_slot)).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{error}");
    // Bob's server has no full access: a delayed leave of his is refused, as lk-jwt-service
    // refuses it (400 with a token request, 403 at `/delegate_delayed_leave`).
    let mut delegated = request.clone();
    delegated["delay_id"] = json!("some-delay");
    delegated["delay_timeout"] = json!(10_000);
    let not_full_access = "Delegation of delayed events is only supported for full access users";
    let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&delegated)).await;
    assert_eq!((status, error), (400, json!({ "errcode": "M_BAD_JSON", "error": not_full_access })));
    let (status, error) =
        hub.call(Method::POST, None, &format!("{PREFIX}/delegate_delayed_leave"), Some(&delegated)).await;
    assert_eq!((status, error), (403, json!({ "errcode": "M_FORBIDDEN", "error": not_full_access })));
    let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&json!("text"))).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_NOT_JSON")), "{error}");
    // A field lk-jwt-service does not know is refused as it refuses it (its decoder disallows
    // unknown fields); the OpenID token's `token_type` and `expires_in` above were accepted.
    let mut unknown = request.clone();
    unknown["member"]["extra"] = json!(1);
    let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&unknown)).await;
    assert_eq!((status, error), (400, json!({ "errcode": "M_NOT_JSON", "error": "Error reading request" })));
    let (status, _) = hub.call(Method::GET, None, &format!("{PREFIX}/healthz"), None).await;
    assert_eq!(status, 200, "the health check load balancers use");
    let large = json!({ "room_id": "x".repeat(20_000) });
    let (status, error) = hub.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&large)).await;
    assert_eq!((status, error["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{error}");
}

/// The token LiveKit signs a webhook with (made by livekit-api's own `AccessToken`).
fn sign_webhook(body: &str, secret: &str) -> String {
    let mut child = Command::new(python())
        .args([tool(), "sign-webhook", KEY, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the signer");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write the body");
    let output = child.wait_with_output().expect("the signer's answer");
    assert!(output.status.success(), "the signer failed");
    String::from_utf8(output.stdout).expect("a token").trim().to_owned()
}

/// Posts a webhook of the SFU about one participant, signed with `secret`.
async fn webhook(node: &Node, event: &str, room: &str, identity: &str, secret: &str) -> (u16, String) {
    let body = json!({
        "event": event,
        "room": { "name": room },
        "participant": { "identity": identity, "disconnectReason": "CLIENT_INITIATED" },
    })
    .to_string();
    let answer = reqwest::Client::new()
        .post(format!("{}{PREFIX}/sfu_webhook", node.client_url()))
        .header("Authorization", sign_webhook(&body, secret))
        .header("Content-Type", "application/webhook+json")
        .body(body)
        .send()
        .await
        .expect("post the webhook");
    (answer.status().as_u16(), answer.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_delegated_delayed_leave_follows_the_sfus_webhooks() {
    let sfu = RoomApi::start();
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret_file = secrets.path().join("livekit.secret");
    std::fs::write(&secret_file, SECRET).expect("write the secret");
    let mut livekit = toml::Table::new();
    livekit.insert("url".into(), format!("ws://127.0.0.1:{}", sfu.port).into());
    livekit.insert("key".into(), KEY.into());
    livekit.insert("secret_file".into(), secret_file.display().to_string().into());
    livekit.insert("full_access_servers".into(), toml::Value::Array(vec!["*".into()]));
    let settings = [
        ("delayed_events.max_delay_ms", toml::Value::Integer(600_000)),
        ("matrix_rtc.livekit", toml::Value::Table(livekit)),
    ];
    let node = Node::start_with("livekit-delegation", None, &[], &settings).await;
    let (alice_id, alice) = node.register("alice").await;
    let room = node.create_room(&alice, json!({})).await;
    let member_path =
        format!("/_matrix/client/v3/rooms/{}/state/org.example.call.member/{}", enc(&room), enc(&alice_id));
    node.put(&alice, &member_path, json!({ "in_call": true })).await;
    // The leave, due in 10 s unless restarted.
    let scheduled = node.put(&alice, &format!("{member_path}?org.matrix.msc4140.delay=10000"), json!({})).await;
    let delay_id = scheduled["delay_id"].as_str().expect("a delay id").to_owned();

    let token = openid_token(&node, &alice, &alice_id).await;
    let mut request = json!({
        "room_id": room,
        "slot_id": "m.call#ROOM",
        "openid_token": token,
        "member": { "id": "member-a", "claimed_user_id": alice_id, "claimed_device_id": "ALICEDEV" },
        "delay_id": delay_id,
        "delay_timeout": 10_000,
    });
    // Only one's own delayed event can be handed over.
    request["delay_id"] = json!("not-a-delay-id");
    let (status, error) = node.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&request)).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{error}");
    request["delay_id"] = json!(delay_id);
    let (status, grant) = node.call(Method::POST, None, &format!("{PREFIX}/get_token"), Some(&request)).await;
    assert_eq!(status, 200, "{grant}");
    let (sfu_room, identity) = (room_alias(&room, "m.call#ROOM"), member_identity(&alice_id, "ALICEDEV", "member-a"));

    // Webhooks not signed with the SFU's secret are refused and change nothing.
    let (status, body) = webhook(&node, "participant_left", &sfu_room, &identity, "not-the-secret").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(webhook(&node, "participant_joined", &sfu_room, &identity, SECRET).await.0, 200);

    // On the SFU past the leave's delay: the service keeps restarting it.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    assert_eq!(node.get(&alice, &member_path).await, json!({ "in_call": true }), "the leave was kept pending");

    // The SFU says the participant left: the leave is sent at once (its own time is seconds away).
    let left = std::time::Instant::now();
    assert_eq!(webhook(&node, "participant_left", &sfu_room, &identity, SECRET).await.0, 200);
    loop {
        if node.get(&alice, &member_path).await == json!({}) {
            break;
        }
        assert!(left.elapsed() < std::time::Duration::from_secs(4), "the leave was not sent when the SFU said so");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pending = node.get(&alice, "/_matrix/client/unstable/org.matrix.msc4140/delayed_events").await;
    assert_eq!(pending["delayed_events"], json!([]), "{pending}");
}

/// Says on the SFU's room API who is connected (the test plays the clients).
async fn set_present(sfu: &RoomApi, room: &str, identity: &str, present: bool) {
    let url = format!("http://127.0.0.1:{}/participants", sfu.port);
    let body = json!({ "room": room, "identity": identity, "present": present });
    let answer = reqwest::Client::new().post(&url).json(&body).send().await.expect("tell the SFU");
    assert!(answer.status().is_success(), "the room API refused {body}");
}

const DELAYED: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/// When a pending delayed event was last (re)started (`running_since`); `None` once it is gone.
async fn running_since(node: &Node, token: &str, delay_id: &str) -> Option<u64> {
    let listed = node.get(token, DELAYED).await;
    listed["delayed_events"].as_array()?.iter().find(|e| e["delay_id"] == delay_id)?["running_since"].as_u64()
}

/// Waits until the event is restarted after `after` (ms); answers when.
async fn restarted_after(node: &Node, token: &str, delay_id: &str, after: u64, within: Duration) -> u64 {
    let start = Instant::now();
    loop {
        match running_since(node, token, delay_id).await {
            Some(since) if since > after => return since,
            Some(_) => {}
            None => panic!("the delayed leave was sent while its participant was on the SFU"),
        }
        assert!(start.elapsed() < within, "the delayed leave was not restarted within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_remote_users_delegated_leave_survives_a_restart_and_is_sent_when_the_sfu_loses_them() {
    let sfu = RoomApi::start();
    // Bob's own server holds his call membership and its delayed leave, due in 10 s.
    let other =
        Node::start_with("livekit-bobs", None, &[], &[("delayed_events.max_delay_ms", toml::Value::Integer(600_000))])
            .await;
    let (bob_id, bob) = other.register("bob").await;
    let room = other.create_room(&bob, json!({})).await;
    let member_path = format!("/_matrix/client/v3/rooms/{}/state/org.example.call.member/{}", enc(&room), enc(&bob_id));
    other.put(&bob, &member_path, json!({ "in_call": true })).await;
    let scheduled = other.put(&bob, &format!("{member_path}?org.matrix.msc4140.delay=10000"), json!({})).await;
    let delay_id = scheduled["delay_id"].as_str().expect("a delay id").to_owned();
    let scheduled_at = running_since(&other, &bob, &delay_id).await.expect("scheduled");

    // The hub's service gives bob's server full access, knows its client API, and asks the SFU
    // every second whether the participants it keeps a leave for are still there.
    let secrets = tempfile::tempdir().expect("temp dir");
    let secret_file = secrets.path().join("livekit.secret");
    std::fs::write(&secret_file, SECRET).expect("write the secret");
    let mut livekit = toml::Table::new();
    livekit.insert("url".into(), format!("ws://127.0.0.1:{}", sfu.port).into());
    livekit.insert("key".into(), KEY.into());
    livekit.insert("secret_file".into(), secret_file.display().to_string().into());
    livekit.insert("full_access_servers".into(), toml::Value::Array(vec![other.server_name().into()]));
    let mut client_apis = toml::Table::new();
    client_apis.insert(other.server_name(), other.client_url().into());
    livekit.insert("client_api_urls".into(), toml::Value::Table(client_apis));
    livekit.insert("participant_check_interval_s".into(), 1.into());
    let mut hub =
        Node::start_with("livekit-keeper", None, &[], &[("matrix_rtc.livekit", toml::Value::Table(livekit))]).await;

    // Bob, already on the SFU, hands his leave to the hub.
    let request = json!({
        "room_id": room,
        "slot_id": "m.call#ROOM",
        "openid_token": openid_token(&other, &bob, &bob_id).await,
        "member": { "id": "member-b", "claimed_user_id": bob_id, "claimed_device_id": "BOBDEV" },
        "delay_id": delay_id,
        "delay_timeout": 10_000,
    });
    let (sfu_room, identity) = (room_alias(&room, "m.call#ROOM"), member_identity(&bob_id, "BOBDEV", "member-b"));
    set_present(&sfu, &sfu_room, &identity, true).await;
    let path = format!("{PREFIX}/delegate_delayed_leave");
    let (status, answer) = hub.call(Method::POST, None, &path, Some(&request)).await;
    assert_eq!((status, answer), (200, json!({})));
    // No webhook: the hub finds bob on the SFU and restarts his leave on bob's server.
    let restarted = restarted_after(&other, &bob, &delay_id, scheduled_at, Duration::from_secs(5)).await;

    // Killed and started again, the hub takes the delegation up from its database and keeps
    // restarting the leave (left alone, it would be sent 10 s after `restarted`).
    hub.kill().await;
    hub.restart().await;
    let restarted = restarted_after(&other, &bob, &delay_id, restarted, Duration::from_secs(8)).await;

    // Bob's client vanishes from the SFU and no webhook says so: the hub's check of the SFU finds
    // him gone and sends the leave at once, seconds before its own time.
    set_present(&sfu, &sfu_room, &identity, false).await;
    let gone = Instant::now();
    loop {
        if other.get(&bob, &member_path).await == json!({}) {
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(5), "the leave was not sent when the SFU lost bob");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running_since(&other, &bob, &delay_id).await.is_none(), "sent once, nothing left pending");
    let own_time = restarted + 10_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(now + 3_000 < own_time, "sent by the hub, not at its own time ({now} vs {own_time})");
}
