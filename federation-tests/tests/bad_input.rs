//! What another server sends is checked before anything is stored. Node B joins a room of node
//! A (so A has B's signing keys), then stops; the test reads B's own key from B's database and
//! speaks to A as B: properly signed requests are served (the control), and forged signatures,
//! replayed or misaddressed requests, malformed bodies, oversized transactions and PDUs signed
//! by the wrong key are refused, with nothing of them kept.

use hemicycle::{db::Database, server_keys::ServerKeys};
use hemicycle_federation_tests::{enc, is_membership, Node, SYNC_WAIT};
use reqwest::Method;
use ruma::{
    signatures::{hash_and_sign_event, reference_hash, Ed25519KeyPair},
    CanonicalJsonObject, OwnedServerName, RoomVersionId,
};
use serde_json::{json, Value};

/// Speaks to A's federation API as B, with B's key (or with another key under B's key id).
struct Impostor {
    origin: String,
    destination: String,
    base: String,
    keys: ServerKeys,
    http: reqwest::Client,
}

impl Impostor {
    /// The `Authorization` header for a request, signed with `keypair` (B's by default).
    fn x_matrix(&self, method: &str, uri: &str, destination: &str, body: Option<&Value>, forged: bool) -> String {
        let mut request = json!({ "method": method, "uri": uri, "origin": self.origin, "destination": destination });
        if let Some(body) = body {
            request["content"] = body.clone();
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(request).expect("canonical JSON");
        if forged {
            let version = self.key_version();
            let other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version).expect("key");
            ruma::signatures::sign_json(&self.origin, &other, &mut object).expect("sign");
        } else {
            self.keys.sign_json(&mut object).expect("sign");
        }
        let signatures = serde_json::to_value(&object["signatures"]).expect("signatures");
        let sig = signatures[&self.origin][&self.keys.key_id()].as_str().expect("our signature").to_owned();
        format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"{}\",sig=\"{sig}\"",
            self.origin,
            self.keys.key_id()
        )
    }

    fn key_version(&self) -> String {
        self.keys.key_id().strip_prefix("ed25519:").expect("an ed25519 key").to_owned()
    }

    /// Sends a request with the given header (none when `None`) and raw body.
    async fn raw(&self, method: Method, uri: &str, auth: Option<String>, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{uri}", self.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body);
        }
        let response = request.send().await.expect("A answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A properly signed request.
    async fn signed(&self, method: Method, uri: &str, body: Option<Value>) -> (u16, Value) {
        let auth = self.x_matrix(method.as_str(), uri, &self.destination, body.as_ref(), false);
        self.raw(method, uri, Some(auth), body.map(|b| serde_json::to_vec(&b).expect("JSON"))).await
    }

    /// A PDU of B's user in `room`, hashed and signed by B's key (or by another under its id).
    fn pdu(&self, room: &str, sender: &str, body: &str, prev: &str, auth: &[String], forged: bool) -> (String, Value) {
        let event = json!({
            "room_id": room, "sender": sender, "type": "m.room.message", "origin_server_ts": 1_900_000_000_000u64,
            "content": { "msgtype": "m.text", "body": body }, "depth": 1000,
            "prev_events": [prev], "auth_events": auth,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(event).expect("canonical JSON");
        let rules = RoomVersionId::V12.rules().expect("v12 rules");
        let other;
        let keypair = if forged {
            other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), self.key_version()).expect("key");
            &other
        } else {
            self.keys.keypair()
        };
        hash_and_sign_event(&self.origin, keypair, &mut object, &rules.redaction).expect("sign the PDU");
        let id = format!("${}", reference_hash(&object, &rules).expect("reference hash"));
        (id, serde_json::to_value(&object).expect("JSON"))
    }
}

/// The id of the event of `kind` (with `state_key`) in A's current state of `room`.
fn state_id(state: &[Value], kind: &str, state_key: &str) -> String {
    let event = state.iter().find(|e| e["type"] == kind && e["state_key"] == state_key);
    event.and_then(|e| e["event_id"].as_str()).unwrap_or_else(|| panic!("no {kind} in {state:?}")).to_owned()
}

#[tokio::test]
async fn forged_malformed_and_oversized_federation_input_is_refused() {
    let (a, mut b) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]));
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = a.create_room(&at, json!({ "preset": "public_chat" })).await;
    b.join(&bt, &room, &[a.server_name()]).await;
    let joined = a.wait_for_timeline(&at, &room, None, |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;

    // B stops; its key, read from its own database, now signs for the test.
    let b_name = b.server_name();
    b.stop().await;
    let db = std::sync::Arc::new(Database::open(&b.dir().join("db")).expect("B's database"));
    let name = OwnedServerName::try_from(b_name.as_str()).expect("B's name");
    let keys = ServerKeys::load_or_generate(&db, name).expect("B's signing key");
    let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("HTTP client");
    let me = Impostor {
        origin: b_name.clone(),
        destination: a.server_name(),
        base: a.federation_url().to_owned(),
        keys,
        http,
    };

    let state = a.get_state(&at, &room).await;
    let auth = vec![state_id(&state, "m.room.power_levels", ""), state_id(&state, "m.room.member", &bob)];
    let last = joined.events.last().and_then(|e| e["event_id"].as_str()).expect("the newest event").to_owned();

    // The control: a signed state query is served, and a PDU signed by B's key is taken in.
    let uri = format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&last));
    let (status, ids) = me.signed(Method::GET, &uri, None).await;
    assert_eq!(status, 200, "a signed request is served: {ids}");
    assert!(ids["pdu_ids"].as_array().is_some_and(|p| !p.is_empty()), "{ids}");
    let since = a.sync_token(&at).await;
    let (good_id, good) = me.pdu(&room, &bob, "signé par B", &last, &auth, false);
    let (status, answer) = me
        .signed(
            Method::PUT,
            "/_matrix/federation/v1/send/t1",
            Some(json!({
        "origin": b_name, "origin_server_ts": 1_900_000_000_000u64, "pdus": [good] })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][&good_id], json!({}), "the genuine PDU is accepted: {answer}");
    a.wait_for_timeline(&at, &room, Some(&since), |e| e["event_id"] == good_id.as_str(), SYNC_WAIT).await;

    // A PDU whose signature is not B's: refused in the answer, not stored.
    let (bad_id, bad) = me.pdu(&room, &bob, "contrefait", &good_id, &auth, true);
    let (status, answer) = me
        .signed(
            Method::PUT,
            "/_matrix/federation/v1/send/t2",
            Some(json!({
        "origin": b_name, "origin_server_ts": 1_900_000_000_000u64, "pdus": [bad] })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["pdus"][&bad_id]["error"].is_string(), "the forged PDU gets an error: {answer}");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&bad_id));
    let (status, error) = a.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "nothing kept of it: {error}");

    // Requests A must refuse before reading them as B's.
    let send = "/_matrix/federation/v1/send/t3";
    let txn = json!({ "origin": b_name, "origin_server_ts": 1_900_000_000_000u64, "pdus": [] });
    let body = serde_json::to_vec(&txn).expect("JSON");
    let cases = [
        ("no signature", None, Some(body.clone()), 401, "M_UNAUTHORIZED"),
        (
            "a signature by another key under B's key id",
            Some(me.x_matrix("PUT", send, &me.destination, Some(&txn), true)),
            Some(body.clone()),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a signature made for another request",
            Some(me.x_matrix("PUT", "/_matrix/federation/v1/send/other", &me.destination, Some(&txn), false)),
            Some(body.clone()),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a request addressed to another server",
            Some(me.x_matrix("PUT", send, "elsewhere.example", Some(&txn), false)),
            Some(body.clone()),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a body that is not JSON",
            Some(me.x_matrix("PUT", send, &me.destination, None, false)),
            Some(b"{not json".to_vec()),
            400,
            "M_NOT_JSON",
        ),
    ];
    for (what, auth, body, status, errcode) in cases {
        let (got, error) = me.raw(Method::PUT, send, auth, body).await;
        assert_eq!((got, error["errcode"].as_str()), (status, Some(errcode)), "{what}: {error}");
    }

    // Transactions over the spec's limits, and bodies of the wrong shape or size.
    let pdus: Vec<Value> = (0..51).map(|_| json!({})).collect();
    let (status, error) = me
        .signed(
            Method::PUT,
            "/_matrix/federation/v1/send/t4",
            Some(json!({
        "origin": b_name, "origin_server_ts": 1, "pdus": pdus })),
        )
        .await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "51 PDUs: {error}");
    let edus: Vec<Value> = (0..101).map(|_| json!({ "edu_type": "m.typing", "content": {} })).collect();
    let (status, error) = me
        .signed(
            Method::PUT,
            "/_matrix/federation/v1/send/t5",
            Some(json!({
        "origin": b_name, "origin_server_ts": 1, "pdus": [], "edus": edus })),
        )
        .await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "101 EDUs: {error}");
    let (status, error) = me
        .signed(
            Method::PUT,
            "/_matrix/federation/v1/send/t6",
            Some(json!({
        "origin": b_name, "origin_server_ts": "hier", "pdus": "aucun" })),
        )
        .await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "wrong types: {error}");
    let huge = vec![b' '; 6 * 1024 * 1024];
    let (status, error) = me.raw(Method::PUT, "/_matrix/federation/v1/send/t7", None, Some(huge)).await;
    assert_eq!((status, error["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "a 6 MB body: {error}");

    // Nothing of all that reached the room: alice's timeline holds the genuine message only.
    let after = a.messages(&at, &room, "b", None, 5).await;
    let bodies: Vec<&str> = after["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["signé par B"], "only the genuine message is in {alice}'s room");
}
