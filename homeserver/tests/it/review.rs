//! Defects found by a security review, each with the behaviour that proves it fixed: sessions and
//! password guessing, client addresses behind a proxy, what other members see, resource bounds,
//! client tokens and error codes.

use serde_json::{json, Value};

use crate::common::{register_raw, urlencode, TestServer};

struct Api<'a> {
    server: &'a TestServer,
    url: String,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(server: &'a TestServer) -> Self {
        Self { server, url: server.url.clone(), http: server.http() }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        crate::common::api(self.server, method, token, path, body).await
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    async fn ok(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self.send(method.clone(), path, Some(token), Some(body)).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// Registers `name` (password "pw") and returns (user id, access token).
    async fn register(&self, name: &str) -> (String, String) {
        register_raw(self.server, name).await
    }

    /// `GET /devices` as a client behind a proxy that names it `forwarded_for`.
    async fn devices_from(&self, token: &str, forwarded_for: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/_matrix/client/v3/devices", self.url))
            .bearer_auth(token)
            .header("X-Forwarded-For", forwarded_for)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn login(&self, name: &str, password: &str, device: Option<&str>) -> (u16, Value) {
        let mut body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name },
                               "password": password });
        if let Some(device) = device {
            body["device_id"] = json!(device);
        }
        self.send(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(body)).await
    }

    async fn whoami(&self, token: &str) -> u16 {
        self.get("/_matrix/client/v3/account/whoami", token).await.0
    }
}

fn assert_error(answer: &(u16, Value), status: u16, errcode: &str, what: &str) {
    assert_eq!((answer.0, answer.1["errcode"].as_str()), (status, Some(errcode)), "{what}: {}", answer.1);
}

/// Concurrent logins with one device id leave exactly one working token, and logging out ends it:
/// no orphan token survives.
#[tokio::test]
async fn concurrent_logins_on_one_device_leave_no_orphan_token() {
    let server = TestServer::start();
    let api = Api::new(&server);
    api.register("alice").await;
    let logins = (0..12).map(|_| api.login("alice", "pw", Some("SHARED")));
    let tokens: Vec<String> = futures::future::join_all(logins)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut working = Vec::new();
    for token in &tokens {
        if api.whoami(token).await == 200 {
            working.push(token.clone());
        }
    }
    assert_eq!(working.len(), 1, "one device, one live token");
    api.ok(reqwest::Method::POST, "/_matrix/client/v3/logout", &working[0], json!({})).await;
    for token in &tokens {
        assert_eq!(api.whoami(token).await, 401, "after logout no token of the device works");
    }
}

/// Wrong passwords: the same answer for an unknown user, a deactivated one and a wrong password;
/// after five failures further attempts on the account wait (429), through the UIA stage too.
#[tokio::test]
async fn password_guessing_is_slowed_and_answers_reveal_nothing() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, token) = api.register("alice").await;
    let (_, gone_token) = api.register("gone").await;
    let (status, challenge) = api
        .send(reqwest::Method::POST, "/_matrix/client/v3/account/deactivate", Some(&gone_token), Some(json!({})))
        .await;
    assert_eq!(status, 401);
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "gone" },
                       "password": "pw", "session": challenge["session"] });
    api.ok(reqwest::Method::POST, "/_matrix/client/v3/account/deactivate", &gone_token, json!({ "auth": auth })).await;

    let unknown = api.login("nobody", "pw", None).await;
    let deactivated = api.login("gone", "pw", None).await;
    let wrong = api.login("alice", "wrong", None).await;
    for answer in [&unknown, &deactivated, &wrong] {
        assert_error(answer, 403, "M_FORBIDDEN", "a failed login");
    }
    assert_eq!(unknown.1["error"], wrong.1["error"]);
    assert_eq!(deactivated.1["error"], wrong.1["error"]);

    // Four more wrong passwords through the UIA stage of a password change: five failures.
    let path = "/_matrix/client/v3/account/password";
    for _ in 0..4 {
        let (_, challenge) =
            api.send(reqwest::Method::POST, path, Some(&token), Some(json!({ "new_password": "new" }))).await;
        let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                           "password": "wrong", "session": challenge["session"] });
        let (status, body) = api
            .send(reqwest::Method::POST, path, Some(&token), Some(json!({ "new_password": "new", "auth": auth })))
            .await;
        assert_eq!(status, 401, "a wrong password is a failed stage: {body}");
    }
    let limited = api.login("alice", "pw", None).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED", "the sixth attempt waits, even with the right password");
    assert!(limited.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", limited.1);
}

/// Behind a trusted proxy the client's address comes from X-Forwarded-For: rate limits are per
/// client, and the device list shows the client's address and its latest use.
#[tokio::test]
async fn client_address_comes_from_a_trusted_proxy_only() {
    let limited = toml::Value::try_from(json!({ "per_second": 0.001, "burst": 2 })).unwrap();
    let server = TestServer::start_with(&[
        ("listen.trusted_proxies", toml::Value::Array(vec!["127.0.0.0/8".into()])),
        ("rate_limits.enabled", true.into()),
        ("rate_limits.login", limited),
    ]);
    let api = Api::new(&server);
    api.register("alice").await;
    api.register("bob").await;
    let login_from = |user: &'static str, ip: &'static str| {
        let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user },
                           "password": "pw" });
        api.http
            .post(format!("{}/_matrix/client/v3/login", api.url))
            .header("X-Forwarded-For", format!("198.51.100.99, {ip}"))
            .json(&body)
            .send()
    };
    // Buckets of 2 per address and per account: the first client uses up its address's bucket…
    let first = login_from("alice", "203.0.113.7").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(login_from("bob", "203.0.113.7").await.unwrap().status(), 200);
    assert_eq!(login_from("alice", "203.0.113.7").await.unwrap().status(), 429, "this client's bucket is empty");
    // …and a second client behind the same proxy is not locked out by it.
    assert_eq!(login_from("bob", "203.0.113.8").await.unwrap().status(), 200, "another client has its own bucket");

    let login: Value = first.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let device_id = login["device_id"].as_str().unwrap().to_owned();
    let this_device = |devices: &Value| -> Value {
        devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == device_id.as_str()).unwrap().clone()
    };
    let devices = api.devices_from(&token, "203.0.113.7").await;
    assert_eq!(this_device(&devices)["last_seen_ip"], "203.0.113.7", "{devices}");

    // A request from another client address updates the device's last use.
    let before = this_device(&devices)["last_seen_ts"].as_u64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let devices = api.devices_from(&token, "192.0.2.44").await;
    assert_eq!(this_device(&devices)["last_seen_ip"], "192.0.2.44", "{devices}");
    assert!(this_device(&devices)["last_seen_ts"].as_u64().unwrap() > before, "{devices}");
}

/// Without a trusted proxy configured, a forged X-Forwarded-For changes nothing.
#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, token) = api.register("alice").await;
    let devices = api.devices_from(&token, "203.0.113.7").await;
    assert_eq!(devices["devices"][0]["last_seen_ip"], "127.0.0.1", "{devices}");
}

/// A display name change reaches the member event of every joined room and the user directory.
#[tokio::test]
async fn profile_changes_update_member_events() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let room = api
            .ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &b, json!({ "preset": "public_chat" }))
            .await;
        let room = room["room_id"].as_str().unwrap().to_owned();
        api.ok(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), &a, json!({})).await;
        rooms.push(room);
    }
    let hello = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/hello", rooms[0]);
    api.ok(reqwest::Method::PUT, &hello, &b, json!({ "msgtype": "m.text", "body": "hello alice" })).await;
    api.ok(
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/profile/{alice}/displayname"),
        &a,
        json!({ "displayname": "Alice Martin" }),
    )
    .await;
    // The rename is a new member event, not a new membership: what Bob said still counts unread.
    let sync = api.get("/_matrix/client/v3/sync", &a).await.1;
    assert_eq!(sync["rooms"]["join"][&rooms[0]]["unread_notifications"]["notification_count"], 1, "{sync}");
    for room in &rooms {
        let (status, member) =
            api.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice}"), &b).await;
        assert_eq!(status, 200, "{member}");
        assert_eq!(member["displayname"], "Alice Martin");
        assert_eq!(member["membership"], "join");
    }
    let found = api
        .ok(reqwest::Method::POST, "/_matrix/client/v3/user_directory/search", &b, json!({ "search_term": "martin" }))
        .await;
    assert_eq!(found["results"][0]["user_id"], alice.as_str(), "{found}");
}

/// A relation from another room is not a relation: it is neither indexed nor returned.
#[tokio::test]
async fn relations_do_not_cross_rooms() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let mut created = Vec::new();
    for _ in 0..2 {
        let room = api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await;
        created.push(room["room_id"].as_str().unwrap().to_owned());
    }
    let (room_a, room_b) = (&created[0], &created[1]);
    let send = |room: &str, txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let parent =
        api.ok(reqwest::Method::PUT, &send(room_a, "p"), &a, json!({ "msgtype": "m.text", "body": "parent" })).await;
    let parent = parent["event_id"].as_str().unwrap().to_owned();
    let edit = |body: &str| {
        json!({ "msgtype": "m.text", "body": body,
                "m.new_content": { "msgtype": "m.text", "body": body },
                "m.relates_to": { "rel_type": "m.replace", "event_id": parent } })
    };
    api.ok(reqwest::Method::PUT, &send(room_b, "elsewhere"), &a, edit("from room B")).await;
    api.ok(reqwest::Method::PUT, &send(room_a, "here"), &a, edit("from room A")).await;
    let (status, relations) = api.get(&format!("/_matrix/client/v1/rooms/{room_a}/relations/{parent}"), &a).await;
    assert_eq!(status, 200, "{relations}");
    let bodies: Vec<&str> =
        relations["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["from room A"]);
}

/// Threaded receipts name `main` or a real thread root; anything else would create a slot every
/// member's sync carries forever.
#[tokio::test]
async fn receipts_name_real_threads_only() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let room = api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let send = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let root = api.ok(reqwest::Method::PUT, &send("root"), &a, json!({ "msgtype": "m.text", "body": "root" })).await;
    let root = root["event_id"].as_str().unwrap().to_owned();
    let reply = api
        .ok(
            reqwest::Method::PUT,
            &send("reply"),
            &a,
            json!({ "msgtype": "m.text", "body": "reply", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        )
        .await;
    let reply = reply["event_id"].as_str().unwrap().to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{reply}");
    let bogus = api.send(reqwest::Method::POST, &receipt, Some(&a), Some(json!({ "thread_id": reply }))).await;
    assert_error(&bogus, 400, "M_INVALID_PARAM", "a thread id that is not a thread root");
    let invented = api.send(reqwest::Method::POST, &receipt, Some(&a), Some(json!({ "thread_id": "$nothing" }))).await;
    assert_error(&invented, 400, "M_INVALID_PARAM", "an unknown thread id");
    api.ok(reqwest::Method::POST, &receipt, &a, json!({ "thread_id": root })).await;
    api.ok(reqwest::Method::POST, &receipt, &a, json!({ "thread_id": "main" })).await;
}

/// Tokens from the future are refused, not trusted: sync would delete to-device messages up to
/// them, and `/keys/changes` would overflow.
#[tokio::test]
async fn tokens_beyond_the_stream_are_refused() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let now = api.get("/_matrix/client/v3/sync", &a).await.1["next_batch"].as_str().unwrap().to_owned();
    for path in [
        "/_matrix/client/v3/sync?since=s99999999999999_0&timeout=0".to_owned(),
        format!("/_matrix/client/v3/keys/changes?from=s18446744073709551615_0&to={now}"),
        format!("/_matrix/client/v3/keys/changes?from={now}&to=s18446744073709551615"),
    ] {
        assert_error(&api.get(&path, &a).await, 400, "M_INVALID_PARAM", &path);
    }
    let (status, _) = api.get(&format!("/_matrix/client/v3/sync?since={now}&timeout=0"), &a).await;
    assert_eq!(status, 200);
}

/// Error codes the spec names for three corner cases.
#[tokio::test]
async fn spec_error_codes_for_managed_account_data_login_types_and_stray_auth() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let managed = api
        .send(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/user/{alice}/account_data/m.push_rules"),
            Some(&a),
            Some(json!({})),
        )
        .await;
    assert_error(&managed, 405, "M_BAD_JSON", "server-managed account data");
    let unknown = api
        .send(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(json!({ "type": "org.example.login" })))
        .await;
    assert_error(&unknown, 400, "M_UNKNOWN", "an unknown login type");
    let versions = api
        .http
        .get(format!("{}/_matrix/client/versions", api.url))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.status(), 200, "an endpoint without auth ignores a stray Authorization header");
}

/// A `restricted` room admits members of the rooms it allows, vouched for by a local member who
/// may invite; anyone else is refused.
#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let create = "/_matrix/client/v3/createRoom";
    let space = api.ok(reqwest::Method::POST, create, &a, json!({ "preset": "public_chat" })).await;
    let space = space["room_id"].as_str().unwrap().to_owned();
    let restricted = api
        .ok(
            reqwest::Method::POST,
            create,
            &a,
            json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }] }),
        )
        .await;
    let restricted = restricted["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/join/{restricted}");
    let refused = api.send(reqwest::Method::POST, &join, Some(&b), Some(json!({}))).await;
    assert_error(&refused, 403, "M_FORBIDDEN", "not a member of the allowed room");
    api.ok(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{space}"), &b, json!({})).await;
    api.ok(reqwest::Method::POST, &join, &b, json!({})).await;
    let (_, bob_id) = (0, "@bob:localhost");
    let (status, member) =
        api.get(&format!("/_matrix/client/v3/rooms/{restricted}/state/m.room.member/{bob_id}"), &a).await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.as_str());
}

/// Lazy-loaded members: an incremental sync that is not limited still brings the member event of
/// a sender the client has not seen, and sliding sync sends state changes and new senders'
/// members to a room it already sent.
#[tokio::test]
async fn lazy_members_and_state_changes_reach_incremental_syncs() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let (carol, c) = api.register("carol").await;
    let room =
        api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({ "preset": "public_chat" })).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    for token in [&b, &c] {
        api.ok(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), token, json!({})).await;
    }
    let send = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    api.ok(reqwest::Method::PUT, &send("a1"), &a, json!({ "msgtype": "m.text", "body": "from alice" })).await;

    let filter = json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } }).to_string();
    let filter = urlencode(&filter);
    let first = api.get(&format!("/_matrix/client/v3/sync?filter={filter}"), &b).await.1;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let sliding_path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let sliding_body = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1,
        "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]] } } });
    let initial = api.ok(reqwest::Method::POST, sliding_path, &b, sliding_body.clone()).await;
    let pos = initial["pos"].as_str().unwrap().to_owned();

    api.ok(reqwest::Method::PUT, &send("c1"), &c, json!({ "msgtype": "m.text", "body": "from carol" })).await;
    api.ok(
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        &a,
        json!({ "name": "Renamed" }),
    )
    .await;

    let wide = json!({ "room": { "timeline": { "limit": 10 }, "state": { "lazy_load_members": true } } }).to_string();
    let wide = urlencode(&wide);
    let next = api.get(&format!("/_matrix/client/v3/sync?filter={wide}&since={since}&timeout=0"), &b).await.1;
    let joined = &next["rooms"]["join"][&room];
    assert_ne!(joined["timeline"]["limited"], true, "{joined}");
    let state_members: Vec<&str> = joined["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert!(state_members.contains(&carol.as_str()), "carol's member event: {joined}");

    let update = api.ok(reqwest::Method::POST, &format!("{sliding_path}?pos={pos}&timeout=0"), &b, sliding_body).await;
    let room_update = &update["rooms"][&room];
    assert_ne!(room_update["initial"], true, "{room_update}");
    let required: Vec<(String, String)> = room_update["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    let name = room_update["required_state"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.name");
    assert_eq!(name.map(|e| e["content"]["name"].clone()), Some(json!("Renamed")), "{room_update}");
    let carol_member = ("m.room.member".to_owned(), carol.clone());
    let timeline_senders: Vec<&str> =
        room_update["timeline"].as_array().unwrap().iter().filter_map(|e| e["sender"].as_str()).collect();
    if timeline_senders.contains(&carol.as_str()) {
        assert!(required.contains(&carol_member), "{required:?}");
    }
}

/// Sliding sync remembers a bounded number of connections per device: the oldest of many is
/// forgotten, so its rooms are sent whole again.
#[tokio::test]
async fn sliding_sync_connections_are_bounded_per_device() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await;
    let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let body = |conn: &str| json!({ "conn_id": conn, "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } } });
    let first = api.ok(reqwest::Method::POST, path, &a, body("conn-0")).await;
    let pos = first["pos"].as_str().unwrap().to_owned();
    let again = |conn: &'static str, pos: String| {
        let body = body(conn);
        let path = format!("{path}?pos={pos}&timeout=0");
        let api = &api;
        let a = a.clone();
        async move { api.ok(reqwest::Method::POST, &path, &a, body).await }
    };
    // Remembered: a new message makes the room come back, but not as initial.
    let room_id = first["rooms"].as_object().unwrap().keys().next().unwrap().clone();
    let send = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/one");
    api.ok(reqwest::Method::PUT, &send, &a, json!({ "msgtype": "m.text", "body": "one" })).await;
    let known = again("conn-0", pos.clone()).await;
    assert_ne!(known["rooms"][&room_id]["initial"], true, "{known}");
    for n in 1..=20 {
        let conn = format!("conn-{n}");
        api.ok(reqwest::Method::POST, path, &a, body(&conn)).await;
    }
    let forgotten = again("conn-0", pos).await;
    assert_eq!(forgotten["rooms"][&room_id]["initial"], true, "the oldest connection was dropped: {forgotten}");
}

/// A bad `createRoom` is refused before the room exists: nothing is left behind to retry over.
#[tokio::test]
async fn create_room_validates_everything_first() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let create = "/_matrix/client/v3/createRoom";
    let cases = [
        (json!({ "invite": ["@nobody:localhost"] }), 404, "M_NOT_FOUND"),
        (json!({ "invite": ["@someone:other.example"] }), 502, "M_UNKNOWN"),
        (
            json!({ "initial_state": [{ "type": "org.example.profile", "state_key": "@bob:localhost", "content": {} }] }),
            403,
            "M_FORBIDDEN",
        ),
        (json!({ "power_level_content_override": { "ban": "fifty" } }), 400, "M_BAD_JSON"),
    ];
    for (body, status, errcode) in cases {
        let answer = api.send(reqwest::Method::POST, create, Some(&a), Some(body.clone())).await;
        assert_error(&answer, status, errcode, &body.to_string());
    }
    let (_, joined) = api.get("/_matrix/client/v3/joined_rooms", &a).await;
    assert_eq!(joined["joined_rooms"], json!([]), "no half-made room");
}

/// An invite needs the invitee's server to sign it: a server that cannot be reached is an
/// explicit 502, never a silent 200. To-device messages for other servers are accepted for the
/// federation sender (that the queue survives a kill is checked end to end in federation-tests,
/// `a_to_device_message_for_a_server_that_is_down_survives_a_kill`), except for servers outside
/// `federation.allow` (403).
#[tokio::test]
async fn remote_invites_need_the_remote_server_and_to_device_messages_follow_the_allow_list() {
    let server = TestServer::start_with(&[("federation.allow", toml::Value::Array(vec!["friend.example".into()]))]);
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let room = api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let invite = api
        .send(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&a),
            Some(json!({ "user_id": "@bob:other.example" })),
        )
        .await;
    assert_error(&invite, 403, "M_FORBIDDEN", "an invite to a server outside federation.allow");
    let invite = api
        .send(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&a),
            Some(json!({ "user_id": "@bob:friend.example" })),
        )
        .await;
    assert_error(&invite, 502, "M_UNKNOWN", "an invite to a server that cannot be reached");
    let to_device = api
        .send(
            reqwest::Method::PUT,
            "/_matrix/client/v3/sendToDevice/m.test/txn1",
            Some(&a),
            Some(json!({ "messages": { "@bob:other.example": { "*": { "hello": 1 } } } })),
        )
        .await;
    assert_error(&to_device, 403, "M_FORBIDDEN", "a to-device message for a server outside federation.allow");
    let queued = api
        .send(
            reqwest::Method::PUT,
            "/_matrix/client/v3/sendToDevice/m.test/txn2",
            Some(&a),
            Some(json!({ "messages": { "@bob:friend.example": { "*": { "hello": 1 } } } })),
        )
        .await;
    assert_eq!(queued.0, 200, "a to-device message for an allowed server is accepted: {queued:?}");
}

/// Member counts and heroes come with an initial sync and when membership changes, not with
/// every message (which would mean reading every member of the room at each wake-up).
#[tokio::test]
async fn room_summaries_come_when_membership_changes() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let room =
        api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({ "preset": "public_chat" })).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let first = api.get("/_matrix/client/v3/sync", &a).await.1;
    assert_eq!(first["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 1, "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let send = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m1");
    api.ok(reqwest::Method::PUT, &send, &a, json!({ "msgtype": "m.text", "body": "hello" })).await;
    let after_message = api.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"), &a).await.1;
    let joined = &after_message["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 1, "{joined}");
    assert!(joined["summary"].get("m.joined_member_count").is_none(), "no summary for a message: {joined}");
    let since = after_message["next_batch"].as_str().unwrap().to_owned();

    api.ok(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), &b, json!({})).await;
    let after_join = api.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"), &a).await.1;
    let summary = &after_join["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{after_join}");
    assert_eq!(summary["m.heroes"], json!(["@bob:localhost"]));
}

/// A `/messages` filter that matches nothing reads a bounded stretch and answers with a token to
/// go on, instead of reading the whole room in one request.
#[tokio::test]
async fn messages_with_a_filter_matching_nothing_is_bounded() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let room = api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    use futures::StreamExt;
    futures::stream::iter(0..1100)
        .for_each_concurrent(50, |n| {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/n{n}");
            let (api, token) = (&api, a.clone());
            async move {
                api.ok(reqwest::Method::PUT, &path, &token, json!({ "msgtype": "m.text", "body": "x" })).await;
            }
        })
        .await;
    let filter = urlencode(&json!({ "types": ["org.example.none"] }).to_string());
    let (status, page) =
        api.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={filter}"), &a).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"], json!([]));
    let end = page["end"].as_str().expect("a token to go on: the room was not read to its start");
    let (status, rest) = api
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={filter}&from={end}"), &a)
        .await;
    assert_eq!(status, 200, "{rest}");
    assert!(rest["end"].is_null(), "the second page reaches the start: {rest}");
}

/// Room version 12 derives the room id from the create event: identical rooms created by one
/// user at the same moment still get distinct ids.
#[tokio::test]
async fn identical_rooms_created_at_once_get_distinct_ids() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let creations =
        (0..20).map(|_| api.send(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&a), Some(json!({}))));
    let mut ids = std::collections::BTreeSet::new();
    for (status, body) in futures::future::join_all(creations).await {
        assert_eq!(status, 200, "{body}");
        ids.insert(body["room_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 20);
}

/// Two rooms created at once with one alias: one gets it, the other is refused before it exists.
#[tokio::test]
async fn concurrent_creations_with_one_alias_leave_no_orphan() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let body = json!({ "room_alias_name": "cabinet" });
    let creations =
        (0..8).map(|_| api.send(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&a), Some(body.clone())));
    let answers = futures::future::join_all(creations).await;
    let won = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(won, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!((*status, body["errcode"].as_str()), (400, Some("M_ROOM_IN_USE")), "{body}");
    }
    let (_, joined) = api.get("/_matrix/client/v3/joined_rooms", &a).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 1, "no orphan rooms: {joined}");
}

/// Every token the server hands out is taken where the spec takes a token of that kind:
/// `/messages` (and `/relations`) page from a `/sync` `next_batch`, as several client libraries
/// do, in both directions.
#[tokio::test]
async fn messages_page_from_a_sync_next_batch() {
    use reqwest::Method;
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let room = api.ok(Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let send = |n: usize, text: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
        let api = &api;
        let a = a.clone();
        async move { api.ok(Method::PUT, &path, &a, json!({ "msgtype": "m.text", "body": text })).await }
    };
    let first = send(1, "un").await["event_id"].as_str().expect("event id").to_owned();
    send(2, "deux").await;
    let next = api.get("/_matrix/client/v3/sync?timeout=0", &a).await.1["next_batch"].as_str().unwrap().to_owned();
    send(3, "après").await;
    let bodies = |page: &Value| -> Vec<String> {
        page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let (status, back) =
        api.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={next}&limit=5"), &a).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(bodies(&back)[..2], ["deux".to_owned(), "un".to_owned()], "back from the sync position: {back}");
    let (status, forward) = api.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&from={next}"), &a).await;
    assert_eq!((status, bodies(&forward)), (200, vec!["après".to_owned()]), "forward from it: {forward}");
    let relations = format!("/_matrix/client/v1/rooms/{room}/relations/{}?from={next}", urlencode(&first));
    let (status, related) = api.get(&relations, &a).await;
    assert_eq!((status, &related["chunk"]), (200, &json!([])), "relations take the sync token too: {related}");
}

/// The spec's size limits hold for local events before anything is built (other servers would
/// refuse the PDU), and profile fields are capped as Synapse caps them.
#[tokio::test]
async fn oversized_event_fields_and_display_names_are_refused() {
    use reqwest::Method;
    let server = TestServer::start();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let room = api.ok(Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let long = "x".repeat(256);
    let send = api
        .send(Method::PUT, &format!("/_matrix/client/v3/rooms/{room}/send/{long}/t1"), Some(&a), Some(json!({})))
        .await;
    assert_error(&send, 413, "M_TOO_LARGE", "an event type of 256 bytes");
    let state = api
        .send(Method::PUT, &format!("/_matrix/client/v3/rooms/{room}/state/m.custom/{long}"), Some(&a), Some(json!({})))
        .await;
    assert_error(&state, 413, "M_TOO_LARGE", "a state key of 256 bytes");
    let (status, _) = api.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.custom/{long}"), &a).await;
    assert_eq!(status, 404, "nothing was stored");
    let fits = "é".repeat(255);
    let ok = api
        .send(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.custom/{}", "k".repeat(255)),
            Some(&a),
            Some(json!({ "v": fits })),
        )
        .await;
    assert_eq!(ok.0, 200, "255 bytes fit: {}", ok.1);

    let path = format!("/_matrix/client/v3/profile/{alice}/displayname");
    let too_long = api.send(Method::PUT, &path, Some(&a), Some(json!({ "displayname": "n".repeat(10_000) }))).await;
    assert_error(&too_long, 400, "M_INVALID_PARAM", "a 10,000-character display name");
    let longest = "ñ".repeat(256);
    let fine = api.send(Method::PUT, &path, Some(&a), Some(json!({ "displayname": longest }))).await;
    assert_eq!(fine.0, 200, "256 characters are allowed: {}", fine.1);
    let member = api.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice}"), &a).await.1;
    assert_eq!(member["displayname"].as_str().map(|n| n.chars().count()), Some(256), "{member}");
}

/// Room version 12 derives the room id from the create event: one user creating rooms in a batch
/// with one request body gets distinct rooms, never a 500.
#[tokio::test]
async fn identical_create_room_requests_at_once_make_distinct_rooms() {
    use reqwest::Method;
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("bot").await;
    let body = json!({ "room_version": "12", "name": "Lot", "preset": "private_chat" });
    let creations =
        (0..6).map(|_| api.send(Method::POST, "/_matrix/client/v3/createRoom", Some(&a), Some(body.clone())));
    let answers = futures::future::join_all(creations).await;
    let mut rooms = std::collections::BTreeSet::new();
    for (status, value) in &answers {
        assert_eq!(*status, 200, "{value}");
        rooms.insert(value["room_id"].as_str().expect("room id").to_owned());
    }
    assert_eq!(rooms.len(), 6, "six distinct rooms: {rooms:?}");
}

/// `/voip/turnServer` hands out coturn shared-secret credentials; `/.well-known/matrix/support`
/// publishes the configured contacts; both are 404 on a server without them.
#[tokio::test]
async fn turn_credentials_and_support_contacts_come_from_the_config() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let bare = TestServer::start();
    let api = Api::new(&bare);
    let (_, a) = api.register("alice").await;
    assert_error(&api.get("/_matrix/client/v3/voip/turnServer", &a).await, 404, "M_NOT_FOUND", "no TURN configured");
    let (status, _) = api.send(reqwest::Method::GET, "/.well-known/matrix/support", None, None).await;
    assert_eq!(status, 404, "no support information configured");

    let mut contact = toml::Table::new();
    contact.insert("role".into(), "m.role.admin".into());
    contact.insert("matrix_id".into(), "@admin:localhost".into());
    contact.insert("email_address".into(), "admin@ministere.gouv.fr".into());
    let server = TestServer::start_with(&[
        ("voip.turn_uris", toml::Value::Array(vec!["turn:turn.ministere.gouv.fr:3478?transport=udp".into()])),
        ("voip.turn_shared_secret", "secret-partage".into()),
        ("voip.turn_user_lifetime_s", 3600.into()),
        ("support.page", "https://support.ministere.gouv.fr".into()),
        ("support.contacts", toml::Value::Array(vec![toml::Value::Table(contact)])),
    ]);
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (status, turn) = api.get("/_matrix/client/v3/voip/turnServer", &a).await;
    assert_eq!(status, 200, "{turn}");
    assert_eq!(turn["uris"], json!(["turn:turn.ministere.gouv.fr:3478?transport=udp"]));
    assert_eq!(turn["ttl"], 3600);
    let username = turn["username"].as_str().expect("username");
    let (expiry, who) = username.split_once(':').expect("<expiry>:<user id>");
    assert_eq!(who, alice);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().expect("a timestamp");
    assert!(expiry > now + 3500 && expiry <= now + 3601, "valid for the configured hour: {expiry} vs {now}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"secret-partage").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(turn["password"], expected.as_str(), "the password coturn expects");
    let (status, support) = api.send(reqwest::Method::GET, "/.well-known/matrix/support", None, None).await;
    assert_eq!(status, 200, "{support}");
    assert_eq!(support["support_page"], "https://support.ministere.gouv.fr");
    assert_eq!(
        support["contacts"],
        json!([{ "role": "m.role.admin", "matrix_id": "@admin:localhost", "email_address": "admin@ministere.gouv.fr" }])
    );
}

/// `timestamp_to_event` jumps to the nearest visible event in the direction asked.
#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_event() {
    use reqwest::Method;
    let server = TestServer::start();
    let api = Api::new(&server);
    let (_, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let room = api.ok(Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/last");
    let last = api.ok(Method::PUT, &path, &a, json!({ "msgtype": "m.text", "body": "dernier" })).await;
    let jump = |ts: u64, dir: &str| format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}");
    let far = 4_000_000_000_000u64;
    let (status, newest) = api.get(&jump(far, "b"), &a).await;
    assert_eq!((status, &newest["event_id"]), (200, &last["event_id"]), "backwards from the future: {newest}");
    let (status, oldest) = api.get(&jump(0, "f"), &a).await;
    assert_eq!(status, 200, "{oldest}");
    let (_, create) = api.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"), &a).await;
    let (_, first) =
        api.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", oldest["event_id"].as_str().unwrap()), &a).await;
    assert_eq!(first["type"], "m.room.create", "forwards from 1970 is the room's creation: {first} ({create})");
    assert!(oldest["origin_server_ts"].as_u64().is_some_and(|t| t <= newest["origin_server_ts"].as_u64().unwrap()));
    assert_error(&api.get(&jump(0, "b"), &a).await, 404, "M_NOT_FOUND", "nothing before 1970");
    assert_error(&api.get(&jump(far, "f"), &a).await, 404, "M_NOT_FOUND", "nothing after the future");
    assert_error(&api.get(&jump(far, "b"), &b).await, 403, "M_FORBIDDEN", "bob is not in the room");
}

/// Reports of events, rooms and users are stored for the admins; what the reporter may not see,
/// or what does not exist, is 404 and stores nothing.
#[tokio::test]
async fn reports_of_events_rooms_and_users_are_kept() {
    use reqwest::Method;
    let mut server = TestServer::start();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let room = api.ok(Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let event = api.ok(Method::PUT, &path, &a, json!({ "msgtype": "m.text", "body": "indésirable" })).await["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    let report = |path: String, token: String, body: Value| {
        let api = &api;
        async move { api.send(Method::POST, &path, Some(&token), Some(body)).await }
    };
    let event_path = format!("/_matrix/client/v3/rooms/{room}/report/{event}");
    assert_eq!(report(event_path.clone(), a.clone(), json!({ "reason": "spam" })).await.0, 200);
    let hidden = report(event_path, b.clone(), json!({ "reason": "curieux" })).await;
    assert_error(&hidden, 404, "M_NOT_FOUND", "an event bob may not see");
    let room_path = format!("/_matrix/client/v3/rooms/{room}/report");
    assert_eq!(report(room_path, b.clone(), json!({ "reason": "salon douteux" })).await.0, 200);
    let unknown_room =
        report("/_matrix/client/v3/rooms/!inconnu:localhost/report".into(), b.clone(), json!({ "reason": "?" }));
    assert_error(&unknown_room.await, 404, "M_NOT_FOUND", "an unknown room");
    let user_path = format!("/_matrix/client/v3/users/{alice}/report");
    assert_eq!(report(user_path, b.clone(), json!({ "reason": "harcèlement" })).await.0, 200);
    let nobody =
        report("/_matrix/client/v3/users/@personne:localhost/report".into(), b.clone(), json!({ "reason": "?" }));
    assert_error(&nobody.await, 404, "M_NOT_FOUND", "an unknown user");
    let long =
        report(format!("/_matrix/client/v3/users/{alice}/report"), b.clone(), json!({ "reason": "x".repeat(10_001) }));
    assert_error(&long.await, 400, "M_INVALID_PARAM", "a reason over 10,000 characters");

    // What the admins will read: exactly the three accepted reports.
    server.stop();
    let db =
        std::sync::Arc::new(hemicycle::db::Database::open(&server.config_path.parent().unwrap().join("db")).unwrap());
    let kept: Vec<_> = hemicycle::reports::Reports::new(db).list().unwrap().into_iter().map(|(_, r)| r).collect();
    let reasons: Vec<Option<&str>> = kept.iter().map(|r| r.reason.as_deref()).collect();
    assert_eq!(reasons, [Some("spam"), Some("salon douteux"), Some("harcèlement")]);
    assert!(
        matches!(&kept[0].subject, hemicycle::reports::Subject::Event { event_id, .. } if event_id.as_str() == event)
    );
}

/// A server whose `chef` account (password `chef-pass`) is an admin, made with the CLI.
fn server_with_admin_chef() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_config(dir.path(), &[]);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "chef-pass\n").unwrap();
    let made = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&config)
        .args(["user", "create", "chef", "--admin", "--password-file", pw.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = TestServer::start_on_config(&config);
    (dir, server)
}

/// `/admin/whois`: an admin sees any user's devices with their last address and time; a user
/// sees only themselves.
#[tokio::test]
async fn whois_is_for_admins_and_for_oneself() {
    let (_dir, server) = server_with_admin_chef();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (bob, _) = api.register("bob").await;
    let (status, login) = api.login("chef", "chef-pass", None).await;
    assert_eq!(status, 200, "{login}");
    let chef = login["access_token"].as_str().unwrap().to_owned();
    // Alice's device has been seen (whoami), so it has an address and a time.
    assert_eq!(api.whoami(&a).await, 200);

    let (status, seen) = api.get(&format!("/_matrix/client/v3/admin/whois/{alice}"), &chef).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["user_id"], alice.as_str());
    let devices = seen["devices"].as_object().expect("devices");
    assert_eq!(devices.len(), 1, "{seen}");
    let connection = &devices.values().next().unwrap()["sessions"][0]["connections"][0];
    assert_eq!(connection["ip"], "127.0.0.1", "{seen}");
    assert!(connection["last_seen"].as_u64().is_some_and(|t| t > 0), "{seen}");
    let (status, own) = api.get(&format!("/_matrix/client/v3/admin/whois/{alice}"), &a).await;
    assert_eq!((status, own["user_id"].as_str()), (200, Some(alice.as_str())), "alice about herself");
    let other = api.get(&format!("/_matrix/client/v3/admin/whois/{bob}"), &a).await;
    assert_error(&other, 403, "M_FORBIDDEN", "alice about bob");
    let nobody = api.get("/_matrix/client/v3/admin/whois/@personne:localhost", &chef).await;
    assert_error(&nobody, 404, "M_NOT_FOUND", "no such user");
}

/// `/admin/lock` and `/admin/suspend`: for admins only; a locked account's requests answer 401
/// `M_USER_LOCKED` (soft logout) until unlocked; a suspended one may read and leave, not act.
#[tokio::test]
async fn admins_lock_and_suspend_accounts() {
    let (_dir, server) = server_with_admin_chef();
    let api = Api::new(&server);
    let (alice, a) = api.register("alice").await;
    let (_, b) = api.register("bob").await;
    let (_, login) = api.login("chef", "chef-pass", None).await;
    let chef = login["access_token"].as_str().unwrap().to_owned();
    let put = |token: String, path: String, body: Value| {
        let api = &api;
        async move { api.send(reqwest::Method::PUT, &path, Some(&token), Some(body)).await }
    };
    let lock = format!("/_matrix/client/v1/admin/lock/{alice}");
    let suspend = format!("/_matrix/client/v1/admin/suspend/{alice}");

    assert_eq!(api.get(&lock, &chef).await, (200, json!({ "locked": false })));
    let (status, body) = api.get(&lock, &b).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "not for non-admins");
    let (status, _) = put(b.clone(), lock.clone(), json!({ "locked": true })).await;
    assert_eq!(status, 403);
    assert_eq!(api.get("/_matrix/client/v1/admin/lock/@personne:localhost", &chef).await.0, 404);
    assert_eq!(api.get("/_matrix/client/v1/admin/lock/@someone:elsewhere.example", &chef).await.0, 400);

    let (status, body) = put(chef.clone(), lock.clone(), json!({ "locked": "yes" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    assert_eq!(api.get(&lock, &chef).await, (200, json!({ "locked": false })), "a refused request changes nothing");
    assert_eq!(put(chef.clone(), lock.clone(), json!({ "locked": true })).await, (200, json!({ "locked": true })));
    let (status, body) = api.get("/_matrix/client/v3/account/whoami", &a).await;
    assert_eq!(status, 401);
    assert_eq!((body["errcode"].as_str(), body["soft_logout"].as_bool()), (Some("M_USER_LOCKED"), Some(true)));
    assert_eq!(put(chef.clone(), lock.clone(), json!({ "locked": false })).await.0, 200);
    assert_eq!(api.whoami(&a).await, 200, "unlocked: the same token works again");

    let room = api.ok(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &a, json!({})).await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        put(chef.clone(), suspend.clone(), json!({ "suspended": true })).await,
        (200, json!({ "suspended": true }))
    );
    assert_eq!(api.get(&suspend, &chef).await, (200, json!({ "suspended": true })));
    let (status, body) = put(
        a.clone(),
        format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
        json!({ "body": "x", "msgtype": "m.text" }),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_USER_SUSPENDED")), "{body}");
    let (status, _) = api.send(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&a), Some(json!({}))).await;
    assert_eq!(status, 403, "no new rooms");
    assert_eq!(api.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), &a).await.0, 200, "reading works");
    assert_eq!(
        api.send(reqwest::Method::POST, &format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&a), Some(json!({})))
            .await
            .0,
        200,
        "leaving works"
    );
    assert_eq!(put(chef.clone(), suspend.clone(), json!({ "suspended": false })).await.0, 200);
    let (status, _) = api.send(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&a), Some(json!({}))).await;
    assert_eq!(status, 200, "lifted");
}
