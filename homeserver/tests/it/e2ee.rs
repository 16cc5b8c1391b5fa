//! End-to-end encryption as real matrix-sdk clients (with `e2e-encryption`) use it, plus the key
//! server's checks seen through raw HTTP.

use std::time::Duration;

use matrix_sdk::{
    config::SyncSettings,
    encryption::CrossSigningResetAuthType,
    ruma::{
        api::client::{
            room::create_room::v3::Request as CreateRoom,
            uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier},
        },
        events::{
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
            InitialStateEvent,
        },
        EventId, OwnedEventId, OwnedRoomId, RoomId,
    },
    Client,
};
use ruma::{
    signatures::{sign_json, Ed25519KeyPair},
    CanonicalJsonValue,
};
use serde_json::{json, Value};

use crate::common::{urlencode, TestServer};

async fn sync(client: &Client) {
    client.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.unwrap();
}

async fn login(server: &TestServer, name: &str, password: &str) -> Client {
    let client = server.client().await;
    client.matrix_auth().login_username(name, password).send().await.unwrap();
    sync(&client).await;
    client
}

async fn encrypted_room(owner: &Client, invite: &[&Client]) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.invite = invite.iter().map(|c| c.user_id().unwrap().to_owned()).collect();
    request.initial_state =
        vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any()];
    owner.create_room(request).await.unwrap().room_id().to_owned()
}

async fn join(client: &Client, room: &RoomId) {
    sync(client).await;
    client.get_room(room).expect("invited room known after sync").join().await.unwrap();
    sync(client).await;
}

async fn send(client: &Client, room: &RoomId, body: &str) -> OwnedEventId {
    let room = client.get_room(room).unwrap();
    room.send(RoomMessageEventContent::text_plain(body)).await.unwrap().response.event_id
}

/// The body of an event as the client decrypted it; `None` when it could not decrypt.
async fn decrypted_body(client: &Client, room: &RoomId, event: &EventId) -> Option<String> {
    let event = client.get_room(room).unwrap().event(event, None).await.unwrap();
    event.encryption_info()?;
    let content: Value = event.raw().get_field("content").ok()??;
    content["body"].as_str().map(str::to_owned)
}

/// A server with Alice and Bob, keys uploaded, both joined to an encrypted room.
async fn alice_and_bob_in_an_encrypted_room() -> (TestServer, Client, Client, OwnedRoomId) {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    sync(&alice).await;
    sync(&bob).await;
    let room = encrypted_room(&alice, &[&bob]).await;
    join(&bob, &room).await;
    sync(&alice).await;
    (server, alice, bob, room)
}

fn password(user: &str, pw: &str, session: Option<String>) -> AuthData {
    let mut p = Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new(user.to_owned())), pw.to_owned());
    p.session = session;
    AuthData::Password(p)
}

async fn call(server: &TestServer, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{}", server.url, path);
    let http = server.http();
    let builder = match method {
        "GET" => http.get(url),
        "PUT" => http.put(url),
        "DELETE" => http.delete(url),
        _ => http.post(url),
    };
    let builder = builder.bearer_auth(token);
    let builder = match body {
        Some(b) => builder.json(&b),
        None => builder,
    };
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn encrypted_messages_flow_both_ways_and_reach_a_device_added_later() {
    let (server, alice, bob, room) = alice_and_bob_in_an_encrypted_room().await;

    let hello = send(&alice, &room, "bonjour Bob").await;
    // The server only ever holds ciphertext.
    let token = alice.access_token().unwrap();
    let (status, stored) =
        call(&server, "GET", &token, &format!("/_matrix/client/v3/rooms/{room}/event/{hello}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(stored["type"], "m.room.encrypted");
    assert!(!stored.to_string().contains("bonjour"));

    sync(&bob).await;
    assert_eq!(decrypted_body(&bob, &room, &hello).await.as_deref(), Some("bonjour Bob"));
    let reply = send(&bob, &room, "salut Alice").await;
    sync(&alice).await;
    assert_eq!(decrypted_body(&alice, &room, &reply).await.as_deref(), Some("salut Alice"));

    // Bob signs in on another device; Alice's client hears of it through device_lists and shares
    // the room key with it for the next message.
    let bob_laptop = login(&server, "bob", "pw").await;
    sync(&alice).await;
    let later = send(&alice, &room, "pour tous tes appareils").await;
    sync(&bob_laptop).await;
    assert_eq!(decrypted_body(&bob_laptop, &room, &later).await.as_deref(), Some("pour tous tes appareils"));
    sync(&bob).await;
    assert_eq!(decrypted_body(&bob, &room, &later).await.as_deref(), Some("pour tous tes appareils"));
}

#[tokio::test]
async fn cross_signing_bootstrap_is_seen_by_others_and_a_reset_needs_authentication() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    sync(&alice).await;
    sync(&bob).await;
    let alice_id = alice.user_id().unwrap().to_owned();

    // The first master key needs no authentication (spec v1.11).
    alice.encryption().bootstrap_cross_signing(None).await.unwrap();
    let status = alice.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete());

    let identity = bob.encryption().request_user_identity(&alice_id).await.unwrap().expect("Bob sees Alice's identity");
    let first_master = identity.master_key().get_first_key().unwrap().to_base64();
    // The device signature Alice's client uploaded is checked and served to Bob.
    let device_id = alice.device_id().unwrap();
    let device = bob.encryption().get_device(&alice_id, device_id).await.unwrap().expect("Alice's device");
    assert!(device.is_cross_signed_by_owner());

    // Replacing the identity needs the password.
    let handle = alice.encryption().recovery().reset_identity().await.unwrap().expect("a reset asks for auth");
    let CrossSigningResetAuthType::Uiaa(uiaa) = handle.auth_type() else { panic!("expected UIA") };
    assert!(uiaa.flows.iter().any(|f| f.stages.iter().any(|s| s.as_str() == "m.login.password")));
    let session = uiaa.session.clone();
    handle.reset(Some(password("alice", "pw", session))).await.unwrap();

    let identity = bob.encryption().request_user_identity(&alice_id).await.unwrap().unwrap();
    let second_master = identity.master_key().get_first_key().unwrap().to_base64();
    assert_ne!(second_master, first_master);

    // An admin lets Alice replace her identity without her password for ten minutes (MSC3967's
    // admin API, for an agent who lost every device); only admins may.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = login(&server, "root", "root-pw").await.access_token().unwrap();
    let path = format!("/_synapse/admin/v1/users/{alice_id}/_allow_cross_signing_replacement_without_uia");
    let bob_token = bob.access_token().unwrap();
    let (status, _) = call(&server, "POST", &bob_token, &path, None).await;
    assert_eq!(status, 403);
    let (status, allowed) = call(&server, "POST", &root, &path, None).await;
    assert_eq!(status, 200, "{allowed}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let until = allowed["updatable_without_uia_before_ms"].as_u64().unwrap();
    assert!(until > now + 9 * 60 * 1000 && until <= now + 10 * 60 * 1000 + 1000, "{allowed}");
    let handle = alice.encryption().recovery().reset_identity().await.unwrap();
    assert!(handle.is_none(), "the reset went through without asking for auth");
    let identity = bob.encryption().request_user_identity(&alice_id).await.unwrap().unwrap();
    assert_ne!(identity.master_key().get_first_key().unwrap().to_base64(), second_master);
}

#[tokio::test]
async fn key_backup_lets_a_new_device_read_old_history() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    sync(&alice).await;
    let recovery_key = alice.encryption().recovery().enable().await.unwrap();
    let room = encrypted_room(&alice, &[]).await;
    sync(&alice).await;
    let secret = send(&alice, &room, "compte rendu du conseil").await;
    alice.encryption().backups().wait_for_steady_state().await.unwrap();

    let token = alice.access_token().unwrap();
    let (status, latest) = call(&server, "GET", &token, "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(latest["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2");
    assert!(latest["count"].as_u64().unwrap() >= 1, "{latest}");

    let phone = login(&server, "alice", "pw").await;
    assert_eq!(decrypted_body(&phone, &room, &secret).await, None, "no keys before restoring");
    phone.encryption().recovery().recover(&recovery_key).await.unwrap();
    phone.encryption().backups().download_room_keys_for_room(&room).await.unwrap();
    assert_eq!(decrypted_body(&phone, &room, &secret).await.as_deref(), Some("compte rendu du conseil"));
}

#[tokio::test]
async fn when_one_time_keys_run_out_the_fallback_key_is_claimed() {
    let (server, alice, bob, room) = alice_and_bob_in_an_encrypted_room().await;

    let bob_id = bob.user_id().unwrap().to_string();
    let bob_device = bob.device_id().unwrap().to_string();
    let bob_token = bob.access_token().unwrap();
    let (_, counts) = call(&server, "POST", &bob_token, "/_matrix/client/v3/keys/upload", Some(json!({}))).await;
    let available = counts["one_time_key_counts"]["signed_curve25519"].as_u64().unwrap();
    assert!(available > 0);
    let (_, sync_before) = call(&server, "GET", &bob_token, "/_matrix/client/v3/sync?timeout=0", None).await;
    assert_eq!(sync_before["device_unused_fallback_key_types"], json!(["signed_curve25519"]));

    // Someone else (not Alice's client) drains Bob's one-time keys.
    let carol = server.register("carol", "pw").await;
    let carol_token = carol.access_token().unwrap();
    let claim = json!({ "one_time_keys": { &bob_id: { &bob_device: "signed_curve25519" } } });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..available {
        let (status, claimed) =
            call(&server, "POST", &carol_token, "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
        assert_eq!(status, 200);
        let keys = claimed["one_time_keys"][&bob_id][&bob_device].as_object().unwrap().clone();
        let (id, key) = keys.into_iter().next().unwrap();
        assert!(key.get("fallback").is_none(), "a one-time key before they run out");
        assert!(seen.insert(id), "every one-time key is handed out once");
    }
    let (_, claimed) = call(&server, "POST", &carol_token, "/_matrix/client/v3/keys/claim", Some(claim.clone())).await;
    let fallback = claimed["one_time_keys"][&bob_id][&bob_device].as_object().unwrap().clone();
    assert_eq!(fallback.values().next().unwrap()["fallback"], true);
    let (_, counts) = call(&server, "POST", &bob_token, "/_matrix/client/v3/keys/upload", Some(json!({}))).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 0);
    let (_, sync_after) = call(&server, "GET", &bob_token, "/_matrix/client/v3/sync?timeout=0", None).await;
    assert_eq!(sync_after["device_unused_fallback_key_types"], json!([]));
    assert_eq!(sync_after["device_one_time_keys_count"]["signed_curve25519"], 0);

    // Alice's client now gets Bob's fallback key, and Bob still decrypts.
    let message = send(&alice, &room, "via la clé de secours").await;
    sync(&bob).await;
    assert_eq!(decrypted_body(&bob, &room, &message).await.as_deref(), Some("via la clé de secours"));
}

/// A device identity made in the test, to upload keys without a client library.
pub(crate) struct TestDevice {
    user: String,
    device: String,
    pair: Ed25519KeyPair,
}

impl TestDevice {
    pub(crate) fn new(user: &str, device: &str) -> Self {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, device.to_owned()).unwrap();
        Self { user: user.to_owned(), device: device.to_owned(), pair }
    }

    pub(crate) fn public(&self) -> String {
        ruma::serde::Base64::<ruma::serde::base64::Standard>::new(self.pair.public_key().to_vec()).encode()
    }

    pub(crate) fn sign(&self, value: Value) -> Value {
        let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(value).unwrap() else { panic!() };
        sign_json(&self.user, &self.pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    pub(crate) fn device_keys(&self) -> Value {
        self.sign(json!({
            "user_id": self.user,
            "device_id": self.device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device): "dGVzdGN1cnZla2V5dGVzdGN1cnZla2V5dGVzdGN1cnY",
                format!("ed25519:{}", self.device): self.public(),
            },
        }))
    }
}

#[tokio::test]
async fn keys_are_checked_before_anything_is_stored() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let user = alice.user_id().unwrap().to_string();
    let device_id = alice.device_id().unwrap().to_string();
    let device = TestDevice::new(&user, &device_id);
    let upload = "/_matrix/client/v3/keys/upload";
    let query = json!({ "device_keys": { &user: [] } });
    let remote = json!({ "device_keys": { "@agent:interieur.example": [] } });
    let (status, keys) = call(&server, "POST", &token, "/_matrix/client/v3/keys/query", Some(remote)).await;
    assert_eq!(status, 200);
    assert_eq!(keys["failures"]["interieur.example"]["status"], 503, "{keys}");

    // Forged: the keys are signed by another key than the one they publish.
    let impostor = TestDevice::new(&user, &device_id);
    let mut forged = impostor.device_keys();
    forged["keys"][format!("ed25519:{device_id}")] = json!(device.public());
    let otk = device.sign(json!({ "key": "b25ldGltZWtleW9uZXRpbWVrZXlvbmV0aW1la2V5b24" }));
    let cases = [
        json!({ "device_keys": forged }),
        json!({ "device_keys": { "user_id": user, "device_id": device_id } }),
        json!({ "device_keys": TestDevice::new(&user, "OTHERDEVICE").device_keys() }),
        json!({ "device_keys": TestDevice::new("@mallory:localhost", &device_id).device_keys() }),
        json!({ "device_keys": "not an object" }),
        // A valid identity with one badly signed one-time key: nothing of the request is kept.
        json!({ "device_keys": device.device_keys(), "one_time_keys": {
            "signed_curve25519:AAAAAQ": otk,
            "signed_curve25519:AAAAAg": impostor.sign(json!({ "key": "b3RoZXJrZXlvdGhlcmtleW90aGVya2V5b3RoZXJrZXk" })),
        }}),
    ];
    for body in cases {
        let (status, error) = call(&server, "POST", &token, upload, Some(body.clone())).await;
        assert_eq!((status, error["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
        let (_, keys) = call(&server, "POST", &token, "/_matrix/client/v3/keys/query", Some(query.clone())).await;
        assert_eq!(keys["device_keys"][&user], json!({}), "nothing stored after {body}");
    }

    let body = json!({
        "device_keys": device.device_keys(),
        "one_time_keys": { "signed_curve25519:AAAAAQ": otk },
        "fallback_keys": { "signed_curve25519:AAAAAw": device.sign(json!({ "key": "ZmFsbGJhY2trZXlmYWxsYmFja2tleWZhbGxiYWNra2U", "fallback": true })) },
    });
    let (status, counts) = call(&server, "POST", &token, upload, Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1);
    let (_, keys) = call(&server, "POST", &token, "/_matrix/client/v3/keys/query", Some(query.clone())).await;
    let served = &keys["device_keys"][&user][&device_id];
    assert_eq!(served["keys"][format!("ed25519:{device_id}")], json!(device.public()));
    assert!(served["unsigned"].is_object());

    // A one-time key id cannot be reused for another key.
    let clash = json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": device.sign(json!({ "key": "Y2xhc2hjbGFzaGNsYXNoY2xhc2hjbGFzaGNsYXNoY2w" })) } });
    let (status, error) = call(&server, "POST", &token, upload, Some(clash)).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    // A signature upload with a bad signature is reported as a failure and not stored.
    let mut bad = device.device_keys();
    bad["signatures"][&user]["ed25519:NOTAKEY"] = json!("c2lnbmF0dXJl");
    let (status, result) = call(
        &server,
        "POST",
        &token,
        "/_matrix/client/v3/keys/signatures/upload",
        Some(json!({ &user: { &device_id: bad } })),
    )
    .await;
    assert_eq!(status, 200);
    assert!(result["failures"][&user][&device_id]["errcode"].is_string(), "{result}");
    let (status, keys) = call(&server, "POST", &token, "/_matrix/client/v3/keys/query", Some(query)).await;
    assert_eq!(status, 200, "{keys}");
    let signatures = &keys["device_keys"][&user][&device_id]["signatures"][&user];
    assert!(signatures.is_object(), "the device's own signatures are there: {keys}");
    assert!(signatures.get("ed25519:NOTAKEY").is_none());
}

#[tokio::test]
async fn device_list_changes_reach_room_members_and_deleting_a_device_removes_its_keys() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = encrypted_room(&alice, &[&bob]).await;
    join(&bob, &room).await;
    let alice_token = alice.access_token().unwrap();
    let bob_id = bob.user_id().unwrap().to_string();
    let sync_path = |since: &str| format!("/_matrix/client/v3/sync?timeout=0&since={}", urlencode(since));
    let (_, first) = call(&server, "GET", &alice_token, "/_matrix/client/v3/sync?timeout=0", None).await;
    let mut since = first["next_batch"].as_str().unwrap().to_owned();
    let sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0";
    let e2ee = json!({ "extensions": { "e2ee": { "enabled": true } } });
    let (_, sliding_first) = call(&server, "POST", &alice_token, sliding, Some(e2ee.clone())).await;
    assert_eq!(sliding_first["extensions"]["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 0);
    let sliding_pos = sliding_first["pos"].as_str().unwrap().to_owned();

    // A new device of Bob uploads keys: Alice's next sync lists Bob as changed.
    let laptop = login(&server, "bob", "pw").await;
    let laptop_id = laptop.device_id().unwrap().to_string();
    let (_, next) = call(&server, "GET", &alice_token, &sync_path(&since), None).await;
    assert_eq!(next["device_lists"]["changed"], json!([bob_id]), "{next}");
    let (_, changes) = call(
        &server,
        "GET",
        &alice_token,
        &format!(
            "/_matrix/client/v3/keys/changes?from={}&to={}",
            urlencode(&since),
            urlencode(next["next_batch"].as_str().unwrap())
        ),
        None,
    )
    .await;
    assert_eq!(changes["changed"], json!([bob_id]));
    let (_, sliding_next) =
        call(&server, "POST", &alice_token, &format!("{sliding}&pos={}", urlencode(&sliding_pos)), Some(e2ee)).await;
    assert_eq!(sliding_next["extensions"]["e2ee"]["device_lists"]["changed"], json!([bob_id]), "{sliding_next}");
    since = next["next_batch"].as_str().unwrap().to_owned();
    let query = json!({ "device_keys": { &bob_id: [] } });
    let (_, keys) = call(&server, "POST", &alice_token, "/_matrix/client/v3/keys/query", Some(query.clone())).await;
    assert!(keys["device_keys"][&bob_id].get(&laptop_id).is_some());

    // A to-device message waiting in the laptop's inbox goes with the device.
    let to_laptop = |n: u32| json!({ "messages": { &bob_id: { &laptop_id: { "n": n } } } });
    let send_path = |txn: &str| format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
    assert_eq!(call(&server, "PUT", &alice_token, &send_path("t1"), Some(to_laptop(1))).await.0, 200);

    // Deleting the device removes its keys and tells Alice.
    let bob_token = bob.access_token().unwrap();
    let path = format!("/_matrix/client/v3/devices/{laptop_id}");
    let (status, challenge) = call(&server, "DELETE", &bob_token, &path, Some(json!({}))).await;
    assert_eq!(status, 401);
    let auth = json!({ "auth": { "type": "m.login.password", "session": challenge["session"], "password": "pw",
        "identifier": { "type": "m.id.user", "user": "bob" } } });
    let (status, _) = call(&server, "DELETE", &bob_token, &path, Some(auth)).await;
    assert_eq!(status, 200);
    let (status, next) = call(&server, "GET", &alice_token, &sync_path(&since), None).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["device_lists"]["changed"], json!([bob_id]));
    since = next["next_batch"].as_str().unwrap().to_owned();
    let (status, keys) = call(&server, "POST", &alice_token, "/_matrix/client/v3/keys/query", Some(query)).await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys["device_keys"][&bob_id].is_object(), "bob's other devices are listed: {keys}");
    assert!(keys["device_keys"][&bob_id].get(&laptop_id).is_none(), "{keys}");
    // Nothing is queued for a device that no longer exists, and a device signing in again under
    // the same id finds an empty inbox.
    assert_eq!(call(&server, "PUT", &alice_token, &send_path("t2"), Some(to_laptop(2))).await.0, 200);
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
        "password": "pw", "device_id": laptop_id });
    let response =
        server.http().post(format!("{}/_matrix/client/v3/login", server.url)).json(&login).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.unwrap();
    let (status, inbox) =
        call(&server, "GET", again["access_token"].as_str().unwrap(), "/_matrix/client/v3/sync?timeout=0", None).await;
    assert_eq!(status, 200, "{inbox}");
    assert!(inbox["next_batch"].is_string(), "a real sync answer: {inbox}");
    assert!(inbox["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()), "{inbox}");
    let (_, next) = call(&server, "GET", &alice_token, &sync_path(&since), None).await;
    since = next["next_batch"].as_str().unwrap().to_owned();

    let claim = json!({ "one_time_keys": { &bob_id: { &laptop_id: "signed_curve25519" } } });
    let (_, claimed) = call(&server, "POST", &alice_token, "/_matrix/client/v3/keys/claim", Some(claim)).await;
    assert_eq!(claimed["one_time_keys"], json!({}));

    // Someone joining a room Alice is in is a device list change for her.
    let carol = server.register("carol", "pw").await;
    alice.get_room(&room).unwrap().invite_user_by_id(carol.user_id().unwrap()).await.unwrap();
    join(&carol, &room).await;
    let (_, next) = call(&server, "GET", &alice_token, &sync_path(&since), None).await;
    assert_eq!(next["device_lists"]["changed"], json!([carol.user_id().unwrap()]), "{next}");
    since = next["next_batch"].as_str().unwrap().to_owned();

    // Bob leaves the only room they share: Alice's sync says so in device_lists.left.
    bob.get_room(&room).unwrap().leave().await.unwrap();
    let (_, next) = call(&server, "GET", &alice_token, &sync_path(&since), None).await;
    assert_eq!(next["device_lists"]["left"], json!([bob_id]), "{next}");
}

#[tokio::test]
async fn key_backup_keeps_the_better_key_and_guards_the_version() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let algorithm = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": "cHVibGlja2V5cHVibGlja2V5cHVibGlja2V5cHVibGk" } });
    let (status, error) = call(&server, "GET", &token, "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, created) =
        call(&server, "POST", &token, "/_matrix/client/v3/room_keys/version", Some(algorithm.clone())).await;
    assert_eq!(status, 200);
    let version = created["version"].as_str().unwrap().to_owned();

    let room = "!room:localhost";
    let key = |index: u64, verified: bool, marker: &str| {
        json!({ "first_message_index": index, "forwarded_count": 0, "is_verified": verified,
            "session_data": { "ephemeral": marker, "ciphertext": "Y2lwaGVy", "mac": "bWFj" } })
    };
    let session_path = format!("/_matrix/client/v3/room_keys/keys/{}/sess1?version={version}", urlencode(room));
    let (status, put) = call(&server, "PUT", &token, &session_path, Some(key(5, false, "first"))).await;
    assert_eq!((status, put["count"].as_u64()), (200, Some(1)));
    let etag = put["etag"].clone();
    // A worse copy (later first index) is ignored and the etag does not move.
    let (status, put) = call(&server, "PUT", &token, &session_path, Some(key(9, false, "worse"))).await;
    assert_eq!(status, 200);
    assert_eq!(put["etag"], etag);
    let (status, stored) = call(&server, "GET", &token, &session_path, None).await;
    assert_eq!(
        (status, stored["session_data"]["ephemeral"].as_str()),
        (200, Some("first")),
        "the worse copy was ignored"
    );
    // A better one (earlier first index) replaces it; a verified one beats any unverified one.
    let (status, _) = call(&server, "PUT", &token, &session_path, Some(key(1, false, "better"))).await;
    assert_eq!(status, 200);
    let (status, stored) = call(&server, "GET", &token, &session_path, None).await;
    assert_eq!(
        (status, stored["session_data"]["ephemeral"].as_str()),
        (200, Some("better")),
        "the better copy replaced it"
    );
    let (status, put) = call(&server, "PUT", &token, &session_path, Some(key(3, true, "verified"))).await;
    assert_eq!(status, 200);
    assert_ne!(put["etag"], etag);
    let (status, stored) = call(&server, "GET", &token, &session_path, None).await;
    assert_eq!(status, 200);
    assert_eq!(stored["session_data"]["ephemeral"], "verified");
    let (status, error) =
        call(&server, "PUT", &token, &session_path, Some(json!({ "first_message_index": "x" }))).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    // A newer version makes the old one read-only for uploads.
    let (_, newer) = call(&server, "POST", &token, "/_matrix/client/v3/room_keys/version", Some(algorithm)).await;
    let newer = newer["version"].as_str().unwrap().to_owned();
    let (status, error) = call(&server, "PUT", &token, &session_path, Some(key(0, true, "late"))).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_WRONG_ROOM_KEYS_VERSION")));
    assert_eq!(error["current_version"], json!(newer));
    let (_, latest) = call(&server, "GET", &token, "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!((latest["version"].as_str(), latest["count"].as_u64()), (Some(newer.as_str()), Some(0)));
    let (_, all) =
        call(&server, "GET", &token, &format!("/_matrix/client/v3/room_keys/keys?version={version}"), None).await;
    assert_eq!(all["rooms"][room]["sessions"]["sess1"]["session_data"]["ephemeral"], "verified");

    let (status, deleted) = call(&server, "DELETE", &token, &session_path, None).await;
    assert_eq!((status, deleted["count"].as_u64()), (200, Some(0)));
    let (status, _) =
        call(&server, "DELETE", &token, &format!("/_matrix/client/v3/room_keys/version/{version}"), None).await;
    assert_eq!(status, 200);
    let (status, _) =
        call(&server, "GET", &token, &format!("/_matrix/client/v3/room_keys/version/{version}"), None).await;
    assert_eq!(status, 404);
}

/// Alice verifying Bob (her user-signing key signs his master key) lists *Bob* as changed in her
/// next sync, so her client fetches his keys again and shows him verified (issue 35 item 2).
#[tokio::test]
async fn signing_another_users_master_key_lists_that_user_as_changed() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = encrypted_room(&alice, &[&bob]).await;
    join(&bob, &room).await;
    sync(&alice).await;
    sync(&bob).await;
    alice.encryption().bootstrap_cross_signing(None).await.unwrap();
    bob.encryption().bootstrap_cross_signing(None).await.unwrap();
    let bob_id = bob.user_id().unwrap().to_owned();
    let alice_token = alice.access_token().unwrap();
    let (_, first) = call(&server, "GET", &alice_token, "/_matrix/client/v3/sync?timeout=0", None).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let identity = alice.encryption().request_user_identity(&bob_id).await.unwrap().expect("Bob's identity");
    identity.verify().await.unwrap();

    let path = format!("/_matrix/client/v3/sync?timeout=0&since={}", urlencode(&since));
    let (_, next) = call(&server, "GET", &alice_token, &path, None).await;
    let changed = next["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(changed.contains(&json!(bob_id.as_str())), "Bob's keys changed for Alice: {next}");
}
