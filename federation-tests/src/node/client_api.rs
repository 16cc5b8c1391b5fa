//! The client API of a node as the scenarios use it: raw HTTP calls, the matrix-sdk client,
//! room actions and the waits that long-poll `/sync`.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use matrix_sdk::{
    ruma::api::client::{
        account::register,
        uiaa::{AuthData, Dummy},
    },
    Client,
};
use reqwest::Method;
use serde_json::{json, Value};

use super::Node;
use crate::*;

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.client_url)
    }

    // ---- raw client API -------------------------------------------------------------------

    /// One client-API request; answers the status and the JSON body (`Value::String` of the text
    /// when the body is not JSON, `Null` when empty).
    pub async fn call(&self, method: Method, token: Option<&str>, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method.clone(), self.url(path)).timeout(REQUEST_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// [`Node::call`] that must answer 200; returns the body.
    pub async fn ok(&self, method: Method, token: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.call(method.clone(), Some(token), path, body).await;
        assert_eq!(status, 200, "{}: {method} {path} answered {status}: {value}", self.label);
        value
    }

    pub async fn get(&self, token: &str, path: &str) -> Value {
        self.ok(Method::GET, token, path, None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        self.ok(Method::POST, token, path, Some(&body)).await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> Value {
        self.ok(Method::PUT, token, path, Some(&body)).await
    }

    /// Creates a server admin `root` with the operator's command (`hemicycle user create
    /// --admin`); answers their access token (which the console also takes as its session).
    pub async fn admin_token(&self) -> String {
        let file = self.dir().join("root-password");
        std::fs::write(&file, "root-pw").expect("write the password file");
        let out = std::process::Command::new(hemicycle_bin())
            .arg("--config")
            .arg(self.config_path())
            .args(["user", "create", "root", "--admin", "--password-file"])
            .arg(&file)
            .output()
            .expect("run hemicycle user create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
        let (status, body) = self.call(Method::POST, None, "/_matrix/client/v3/login", Some(&body)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("an access token").to_owned()
    }

    /// Registers `localpart` (password [`PASSWORD`]) through the two-step UIA dummy flow over
    /// raw HTTP; returns (user id, access token).
    pub async fn register(&self, localpart: &str) -> (String, String) {
        let path = "/_matrix/client/v3/register";
        let body = json!({ "username": localpart, "password": PASSWORD });
        let (_, first) = self.call(Method::POST, None, path, Some(&body)).await;
        let session =
            first["session"].as_str().unwrap_or_else(|| panic!("{}: no UIA session in {first}", self.label)).to_owned();
        let body = json!({ "username": localpart, "password": PASSWORD,
                           "auth": { "type": "m.login.dummy", "session": session } });
        let (status, done) = self.call(Method::POST, None, path, Some(&body)).await;
        assert_eq!(status, 200, "{}: registration of {localpart}: {done}", self.label);
        let user_id = done["user_id"].as_str().expect("user_id").to_owned();
        assert_eq!(user_id, self.user_id(localpart), "{}: the user id carries the server name", self.label);
        (user_id, done["access_token"].as_str().expect("access_token").to_owned())
    }

    /// A matrix-sdk client (encryption on, sqlite store in the node's temp folder) for a new
    /// account `localpart`, registered through the UIA dummy flow and logged in. Build clients
    /// after any restart of this node: they keep the client URL they were built with.
    pub async fn client(&self, localpart: &str) -> Client {
        let n = self.sdk_stores.fetch_add(1, Ordering::Relaxed);
        let store = self.dir.path().join(format!("sdk-{localpart}-{n}"));
        let client = Client::builder()
            .homeserver_url(&self.client_url)
            .sqlite_store(store, None)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: build a matrix-sdk client: {e}", self.label));
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.password = Some(PASSWORD.to_owned());
        let err = client.matrix_auth().register(request.clone()).await.expect_err("first round asks for auth");
        let info = err.as_uiaa_response().expect("UIA challenge");
        let mut dummy = Dummy::new();
        dummy.session = info.session.clone();
        request.auth = Some(AuthData::Dummy(dummy));
        client
            .matrix_auth()
            .register(request)
            .await
            .unwrap_or_else(|e| panic!("{}: registration of {localpart}: {e}", self.label));
        client
    }

    /// Another matrix-sdk client (a new device, encryption on) for the existing account
    /// `localpart`, logged in with [`PASSWORD`].
    pub async fn login_client(&self, localpart: &str) -> Client {
        let n = self.sdk_stores.fetch_add(1, Ordering::Relaxed);
        let store = self.dir.path().join(format!("sdk-{localpart}-{n}"));
        let client = Client::builder()
            .homeserver_url(&self.client_url)
            .sqlite_store(store, None)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: build a matrix-sdk client: {e}", self.label));
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: login of {localpart}: {e}", self.label));
        client
    }

    /// `POST /createRoom`; returns the room id.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let created = self.post(token, "/_matrix/client/v3/createRoom", body).await;
        created["room_id"].as_str().expect("room_id").to_owned()
    }

    /// `POST /join/{roomIdOrAlias}?server_name=…`, status and body.
    pub async fn try_join(&self, token: &str, room_or_alias: &str, via: &[String]) -> (u16, Value) {
        self.call(Method::POST, Some(token), &join_path(room_or_alias, via), Some(&json!({}))).await
    }

    /// [`Node::try_join`] that must succeed; returns the joined room's id.
    pub async fn join(&self, token: &str, room_or_alias: &str, via: &[String]) -> String {
        let (status, value) = self.try_join(token, room_or_alias, via).await;
        assert_eq!(status, 200, "{}: join {room_or_alias} via {via:?}: {value}", self.label);
        value["room_id"].as_str().expect("room_id").to_owned()
    }

    /// `POST /rooms/{room}/{action}` (invite, kick, ban, unban, leave, forget), status and body.
    pub async fn room_action(&self, token: &str, room: &str, action: &str, body: Value) -> (u16, Value) {
        let path = format!("/_matrix/client/v3/rooms/{}/{action}", enc(room));
        self.call(Method::POST, Some(token), &path, Some(&body)).await
    }

    async fn room_action_ok(&self, token: &str, room: &str, action: &str, body: Value) {
        let (status, value) = self.room_action(token, room, action, body.clone()).await;
        assert_eq!(status, 200, "{}: {action} {body} in {room}: {value}", self.label);
    }

    pub async fn invite(&self, token: &str, room: &str, user: &str) {
        self.room_action_ok(token, room, "invite", json!({ "user_id": user })).await;
    }

    pub async fn kick(&self, token: &str, room: &str, user: &str, reason: &str) {
        self.room_action_ok(token, room, "kick", json!({ "user_id": user, "reason": reason })).await;
    }

    pub async fn ban(&self, token: &str, room: &str, user: &str, reason: &str) {
        self.room_action_ok(token, room, "ban", json!({ "user_id": user, "reason": reason })).await;
    }

    /// Leaves a room, or rejects an invite.
    pub async fn leave(&self, token: &str, room: &str) {
        self.room_action_ok(token, room, "leave", json!({})).await;
    }

    /// Sends an `m.text` message; returns its event id.
    pub async fn send_text(&self, token: &str, room: &str, text: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), next_txn());
        let sent = self.put(token, &path, json!({ "msgtype": "m.text", "body": text })).await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `PUT /rooms/{room}/state/{type}/{state_key}`; returns the event id.
    pub async fn put_state(
        &self,
        token: &str,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(event_type), enc(state_key));
        let sent = self.put(token, &path, content).await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`: the content, which must exist.
    pub async fn state_event(&self, token: &str, room: &str, event_type: &str, state_key: &str) -> Value {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(event_type), enc(state_key));
        self.get(token, &path).await
    }

    /// `GET /rooms/{room}/state`: every current state event.
    pub async fn get_state(&self, token: &str, room: &str) -> Vec<Value> {
        let state = self.get(token, &format!("/_matrix/client/v3/rooms/{}/state", enc(room))).await;
        state.as_array().unwrap_or_else(|| panic!("{}: /state is not a list: {state}", self.label)).clone()
    }

    /// `GET /rooms/{room}/messages?dir=…&from=…&limit=…`.
    pub async fn messages(&self, token: &str, room: &str, dir: &str, from: Option<&str>, limit: u32) -> Value {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir={dir}&limit={limit}", enc(room));
        if let Some(from) = from {
            let _ = write!(path, "&from={}", enc(from));
        }
        self.get(token, &path).await
    }

    /// The user ids of `GET /rooms/{room}/joined_members`.
    pub async fn joined_members(&self, token: &str, room: &str) -> BTreeSet<String> {
        let members = self.get(token, &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room))).await;
        members["joined"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no joined map in {members}", self.label))
            .keys()
            .cloned()
            .collect()
    }

    /// `GET /joined_rooms`.
    pub async fn joined_rooms(&self, token: &str) -> Vec<String> {
        let rooms = self.get(token, "/_matrix/client/v3/joined_rooms").await;
        let list =
            rooms["joined_rooms"].as_array().unwrap_or_else(|| panic!("{}: no joined_rooms in {rooms}", self.label));
        list.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect()
    }

    pub async fn set_displayname(&self, token: &str, user: &str, name: &str) {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(user));
        self.put(token, &path, json!({ "displayname": name })).await;
    }

    pub async fn typing(&self, token: &str, room: &str, user: &str, typing: bool) {
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(user));
        self.put(token, &path, json!({ "typing": typing, "timeout": 30_000 })).await;
    }

    /// A public `m.read` receipt.
    pub async fn read_receipt(&self, token: &str, room: &str, event_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event_id));
        self.post(token, &path, json!({})).await;
    }

    /// `POST /_matrix/media/v3/upload`; returns the `mxc://` URI.
    pub async fn upload(&self, token: &str, bytes: Vec<u8>, content_type: &str, filename: &str) -> String {
        let url = self.url(&format!("/_matrix/media/v3/upload?filename={}", enc(filename)));
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: upload: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: upload answered {status}: {text}", self.label);
        let value: Value = serde_json::from_str(&text).expect("upload answer is JSON");
        value["content_uri"].as_str().expect("content_uri").to_owned()
    }

    /// A GET answering bytes (media): status, content type, body.
    pub async fn get_bytes(&self, token: &str, path: &str) -> (u16, String, Vec<u8>) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.label));
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("<missing>").to_owned();
        let bytes = response.bytes().await.unwrap_or_else(|e| panic!("{}: body of {path}: {e}", self.label));
        (status, content_type, bytes.to_vec())
    }

    // ---- sync and waits ---------------------------------------------------------------------

    /// `GET /sync` with the harness filter (timeline limit 100), long-polling `timeout_ms`.
    pub async fn sync(&self, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
        self.sync_with_filter(token, since, timeout_ms, TIMELINE_FILTER).await
    }

    /// Makes every later sync of the harness on this node send `set_presence=<presence>`. A sync
    /// that repeats a user's presence (other than `online`, which it refreshes now and then)
    /// writes nothing, so the node tells no other server anything: a node that must not speak
    /// first after a restart.
    pub fn set_sync_presence(&self, presence: Option<&str>) {
        *self.sync_presence.lock().expect("sync presence") = presence.map(str::to_owned);
    }

    /// `GET /sync` with an inline JSON filter.
    pub async fn sync_with_filter(&self, token: &str, since: Option<&str>, timeout_ms: u64, filter: &str) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(filter));
        if let Some(since) = since {
            let _ = write!(path, "&since={}", enc(since));
        }
        if let Some(presence) = self.sync_presence.lock().expect("sync presence").as_deref() {
            let _ = write!(path, "&set_presence={}", enc(presence));
        }
        let response = self
            .http
            .get(self.url(&path))
            .bearer_auth(token)
            .timeout(Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: sync: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: sync answered {status}: {text}", self.label);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: sync answer is not JSON ({e}): {text}", self.label))
    }

    /// The `next_batch` of an immediate sync: a position to wait from.
    pub async fn sync_token(&self, token: &str) -> String {
        next_batch(&self.sync(token, None, 0).await)
    }

    /// Long-polls `/sync` from `since` until `done` holds for one response, which it returns.
    /// Panics after `timeout`, naming `what` and showing the last response.
    pub async fn wait_sync(
        &self,
        token: &str,
        since: Option<&str>,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut since = since.map(str::to_owned);
        loop {
            let poll = deadline.saturating_duration_since(Instant::now()).min(LONG_POLL);
            let response = self.sync(token, since.as_deref(), poll.as_millis() as u64).await;
            if done(&response) {
                return response;
            }
            if Instant::now() >= deadline {
                let mut last = response.to_string();
                last.truncate(4000);
                panic!("{}: {what}: not seen in sync within {timeout:?}; last response: {last}", self.label);
            }
            since = Some(next_batch(&response));
        }
    }

    /// Long-polls `/sync` from `since` (`None`: an initial sync first), gathering the events of
    /// `room`'s timeline (joined or left section) in the order they come, until `done` holds for
    /// everything gathered so far. Panics after `timeout` with what it saw.
    pub async fn wait_timeline_until(
        &self,
        token: &str,
        room: &str,
        since: Option<&str>,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Timeline {
        let deadline = Instant::now() + timeout;
        let mut since = since.map(str::to_owned);
        let mut events = Vec::new();
        let mut gaps = 0;
        loop {
            let poll = deadline.saturating_duration_since(Instant::now()).min(LONG_POLL);
            let incremental = since.is_some();
            let response = self.sync(token, since.as_deref(), poll.as_millis() as u64).await;
            for section in ["join", "leave"] {
                let timeline = &response["rooms"][section][room]["timeline"];
                if incremental && timeline["limited"] == true {
                    gaps += 1;
                }
                if let Some(list) = timeline["events"].as_array() {
                    events.extend(list.iter().cloned());
                }
            }
            let next = next_batch(&response);
            if done(events.as_slice()) {
                return Timeline { events, next_batch: next };
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: the awaited events did not reach {room}'s timeline within {timeout:?} \
                     ({gaps} limited incremental timelines); saw:\n{}",
                    self.label,
                    describe_all(&events)
                );
            }
            since = Some(next);
        }
    }

    /// Waits until an event matching `predicate` shows up in `room`'s timeline (from `since`).
    pub async fn wait_for_timeline(
        &self,
        token: &str,
        room: &str,
        since: Option<&str>,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Timeline {
        self.wait_timeline_until(token, room, since, timeout, |events| events.iter().any(&predicate)).await
    }

    /// Waits until every one of `expected` is the body of an `m.room.message` in `room`'s
    /// timeline (from `since`); returns everything gathered.
    pub async fn wait_for_bodies(&self, token: &str, room: &str, since: &str, expected: &[String]) -> Timeline {
        self.wait_timeline_until(token, room, Some(since), SYNC_WAIT, |events| {
            let seen: BTreeSet<&str> = events.iter().filter_map(body).collect();
            expected.iter().all(|e| seen.contains(e.as_str()))
        })
        .await
    }
}
