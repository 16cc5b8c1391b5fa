//! Threads and bundled aggregations: `/threads` (also through matrix-sdk's `list_threads`),
//! thread summaries, the latest edit and references bundled on the events they relate to.

use std::time::Duration;

use matrix_sdk::{config::SyncSettings, room::ListThreadsOptions};
use serde_json::{json, Value};

use crate::common::{urlencode, TestServer};

async fn call(server: &TestServer, method: reqwest::Method, token: &str, path: &str, body: Option<Value>) -> Value {
    let mut request = server.http().request(method, format!("{}{path}", server.url)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn get(server: &TestServer, token: &str, path: &str) -> Value {
    call(server, reqwest::Method::GET, token, path, None).await
}

async fn send(server: &TestServer, token: &str, room: &str, txn: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", urlencode(room));
    call(server, reqwest::Method::PUT, token, &path, Some(content)).await["event_id"].as_str().unwrap().to_owned()
}

fn reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    })
}

fn edit(of: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": of },
    })
}

fn ids(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn threads_and_bundled_aggregations() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let room = call(
        &server,
        reqwest::Method::POST,
        &a,
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "public_chat" })),
    )
    .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(&server, reqwest::Method::POST, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), Some(json!({}))).await;

    let root = send(&server, &a, &room, "1", json!({ "msgtype": "m.text", "body": "root A" })).await;
    let root2 = send(&server, &a, &room, "2", json!({ "msgtype": "m.text", "body": "root B" })).await;
    send(&server, &b, &room, "3", reply(&root, "reply 1")).await;
    send(&server, &a, &room, "4", reply(&root2, "reply 2")).await;
    let latest = send(&server, &b, &room, "5", reply(&root, "reply 3")).await;
    let good_edit = send(&server, &a, &room, "6", edit(&root2, "root B edited")).await;
    // An edit by someone else is not an edit of the event.
    send(&server, &b, &room, "7", edit(&root2, "hijacked")).await;
    let reference = send(
        &server,
        &b,
        &room,
        "8",
        json!({ "msgtype": "m.text", "body": "see above", "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    )
    .await;

    // /threads: newest activity first, each root with its summary.
    let threads = get(&server, &a, &format!("/_matrix/client/v1/rooms/{room}/threads")).await;
    assert_eq!(ids(&threads["chunk"]), vec![root.clone(), root2.clone()], "{threads}");
    let summary = &threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2, "{summary}");
    assert_eq!(summary["latest_event"]["event_id"], latest.as_str());
    assert_eq!(summary["current_user_participated"], true, "alice sent the root");
    let participated = get(&server, &b, &format!("/_matrix/client/v1/rooms/{room}/threads?include=participated")).await;
    assert_eq!(ids(&participated["chunk"]), vec![root.clone()], "bob only replied in the first thread");
    let first = get(&server, &a, &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1")).await;
    assert_eq!(ids(&first["chunk"]), vec![root.clone()]);
    let token = first["next_batch"].as_str().expect("a next page").to_owned();
    let second = get(&server, &a, &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1&from={token}")).await;
    assert_eq!(ids(&second["chunk"]), vec![root2.clone()], "{second}");
    let bad = server
        .http()
        .get(format!("{}/_matrix/client/v1/rooms/{room}/threads?include=mine", server.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The latest edit by the original sender, bundled wherever the event is served.
    let event = get(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/event/{root2}")).await;
    let replace = &event["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], good_edit.as_str(), "{event}");
    assert_eq!(replace["content"]["m.new_content"]["body"], "root B edited");
    let messages = get(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50")).await;
    let find = |id: &str| messages["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == id).unwrap().clone();
    assert_eq!(find(&root2)["unsigned"]["m.relations"]["m.replace"]["event_id"], good_edit.as_str());
    let references = &find(&root)["unsigned"]["m.relations"]["m.reference"]["chunk"];
    assert_eq!(references, &json!([{ "event_id": reference }]));
    assert_eq!(find(&root)["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let context = get(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/context/{root2}?limit=2")).await;
    assert_eq!(context["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"], good_edit.as_str());
    let sync = get(&server, &b, "/_matrix/client/v3/sync").await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    let synced = timeline.as_array().unwrap().iter().find(|e| e["event_id"] == root.as_str()).expect("root in sync");
    assert_eq!(synced["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true);

    // matrix-sdk lists the same threads.
    alice.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.unwrap();
    let joined = alice.get_room(<&matrix_sdk::ruma::RoomId>::try_from(room.as_str()).unwrap()).unwrap();
    let listed = joined.list_threads(ListThreadsOptions::default()).await.unwrap();
    let listed: Vec<String> =
        listed.chunk.iter().map(|e| e.event_id().map(|id| id.to_string()).unwrap_or_default()).collect();
    assert_eq!(listed, vec![root.clone(), root2.clone()]);

    // A redacted event carries no aggregations.
    call(
        &server,
        reqwest::Method::PUT,
        &a,
        &format!("/_matrix/client/v3/rooms/{room}/redact/{root2}/r1"),
        Some(json!({})),
    )
    .await;
    let event = get(&server, &a, &format!("/_matrix/client/v3/rooms/{room}/event/{root2}")).await;
    assert!(event["unsigned"]["m.relations"].is_null(), "{event}");
}

#[tokio::test]
async fn mutual_rooms_lists_the_rooms_both_users_are_in() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let create = |token: String| {
        let server = &server;
        async move {
            let body = json!({ "preset": "public_chat" });
            call(server, reqwest::Method::POST, &token, "/_matrix/client/v3/createRoom", Some(body)).await["room_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let shared = create(a.clone()).await;
    let _alone = create(a.clone()).await;
    call(&server, reqwest::Method::POST, &b, &format!("/_matrix/client/v3/rooms/{shared}/join"), Some(json!({}))).await;
    let left = create(a.clone()).await;
    call(&server, reqwest::Method::POST, &b, &format!("/_matrix/client/v3/rooms/{left}/join"), Some(json!({}))).await;
    call(&server, reqwest::Method::POST, &b, &format!("/_matrix/client/v3/rooms/{left}/leave"), Some(json!({}))).await;

    let mutual = get(&server, &a, "/_matrix/client/v1/mutual_rooms?user_id=%40bob%3Alocalhost").await;
    assert_eq!(mutual["joined"], json!([shared]), "{mutual}");
    assert_eq!(mutual["count"], 1);
    assert!(mutual.get("next_batch").is_none());
    let unknown = get(&server, &a, "/_matrix/client/v1/mutual_rooms?user_id=%40nobody%3Alocalhost").await;
    assert_eq!(unknown["joined"], json!([]));
    let status = |path: &'static str| {
        let request = server.http().get(format!("{}{path}", server.url)).bearer_auth(&a);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap()["errcode"].clone())
        }
    };
    assert_eq!(
        status("/_matrix/client/v1/mutual_rooms?user_id=%40alice%3Alocalhost").await,
        (400, json!("M_INVALID_PARAM")),
        "one's own id"
    );
    assert_eq!(status("/_matrix/client/v1/mutual_rooms?user_id=nobody").await.0, 400, "not a user id");
    assert_eq!(status("/_matrix/client/v1/mutual_rooms").await.0, 400, "user_id is required");
}
