//! Pushers: `GET /pushers` and `POST /pushers/set` (matrix-sdk and raw HTTP): created, replaced,
//! appended, moved between users, removed; bad pushers refused with nothing stored.

use matrix_sdk::ruma::{
    api::client::push::{Pusher, PusherIds, PusherInit, PusherKind},
    push::HttpPusherData,
};
use serde_json::{json, Value};

use crate::common::TestServer;

fn pusher(pushkey: &str, url: &str) -> Pusher {
    PusherInit {
        ids: PusherIds::new(pushkey.to_owned(), "fr.gouv.tchap".to_owned()),
        kind: PusherKind::Http(HttpPusherData::new(url.to_owned())),
        app_display_name: "Tchap".to_owned(),
        device_display_name: "Téléphone".to_owned(),
        profile_tag: None,
        lang: "fr".to_owned(),
    }
    .into()
}

async fn listed(server: &TestServer, token: &str) -> Vec<Value> {
    let response = server.http().get(format!("{}/_matrix/client/v3/pushers", server.url)).bearer_auth(token).send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    // ruma leaves an empty list out.
    match body.get("pushers") {
        Some(list) => list.as_array().expect("pushers is a list").clone(),
        None => Vec::new(),
    }
}

#[tokio::test]
async fn pushers_are_set_listed_moved_and_removed() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let gateway = "https://push.example.gouv.fr/_matrix/push/v1/notify";
    assert!(listed(&server, &a).await.is_empty());

    alice.pusher().set(pusher("key-1", gateway), false).await.unwrap();
    let list = listed(&server, &a).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["pushkey"], "key-1");
    assert_eq!(list[0]["app_id"], "fr.gouv.tchap");
    assert_eq!(list[0]["kind"], "http");
    assert_eq!(list[0]["data"]["url"], gateway);
    assert_eq!((list[0]["lang"].as_str(), list[0]["device_display_name"].as_str()), (Some("fr"), Some("Téléphone")));

    // The same ids again replace the pusher; another pushkey adds one.
    let mut renamed = pusher("key-1", gateway);
    renamed.device_display_name = "Poste".to_owned();
    alice.pusher().set(renamed, false).await.unwrap();
    alice.pusher().set(pusher("key-2", gateway), false).await.unwrap();
    let list = listed(&server, &a).await;
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|p| p["pushkey"] == "key-1" && p["device_display_name"] == "Poste"));

    // Bob registers key-1 too: with append it stays Alice's as well, without it moves to Bob.
    bob.pusher().set(pusher("key-1", gateway), true).await.unwrap();
    assert_eq!(listed(&server, &a).await.len(), 2, "append keeps the other users' pusher");
    bob.pusher().set(pusher("key-1", gateway), false).await.unwrap();
    let alices: Vec<Value> = listed(&server, &a).await;
    assert_eq!(alices.iter().map(|p| p["pushkey"].clone()).collect::<Vec<_>>(), vec![json!("key-2")]);
    assert_eq!(listed(&server, &b).await.len(), 1);

    alice.pusher().delete(PusherIds::new("key-2".to_owned(), "fr.gouv.tchap".to_owned())).await.unwrap();
    assert!(listed(&server, &a).await.is_empty());
    // Removing a pusher that does not exist is not an error.
    let gone = json!({ "app_id": "fr.gouv.tchap", "pushkey": "nothing", "kind": null });
    let response =
        server.http().post(format!("{}/_matrix/client/v3/pushers/set", server.url)).bearer_auth(&a).json(&gone);
    assert_eq!(response.send().await.unwrap().status(), 200);

    // Refused, with nothing stored.
    let base = json!({ "app_id": "fr.gouv.tchap", "pushkey": "bad", "kind": "http", "app_display_name": "Tchap",
                       "device_display_name": "x", "lang": "fr", "data": { "url": gateway } });
    let mut cases = Vec::new();
    let mut wrong_path = base.clone();
    wrong_path["data"]["url"] = json!("https://push.example.gouv.fr/notify");
    cases.push((wrong_path, "M_INVALID_PARAM"));
    let mut not_url = base.clone();
    not_url["data"]["url"] = json!("not a url");
    cases.push((not_url, "M_INVALID_PARAM"));
    let mut email = base.clone();
    email["kind"] = json!("email");
    email["pushkey"] = json!("alice@example.gouv.fr");
    cases.push((email, "M_INVALID_PARAM"));
    let mut no_url = base.clone();
    no_url["data"] = json!({});
    cases.push((no_url, "M_BAD_JSON"));
    let mut long_app = base.clone();
    long_app["app_id"] = json!("a".repeat(65));
    cases.push((long_app, "M_INVALID_PARAM"));
    for (body, errcode) in cases {
        let response =
            server.http().post(format!("{}/_matrix/client/v3/pushers/set", server.url)).bearer_auth(&a).json(&body);
        let response = response.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!((status, answer["errcode"].as_str()), (400, Some(errcode)), "{body}: {answer}");
    }
    assert!(listed(&server, &a).await.is_empty(), "nothing stored by refused requests");

    // Logging a device out removes its pushers.
    assert_eq!(listed(&server, &b).await.len(), 1);
    let logout = server.http().post(format!("{}/_matrix/client/v3/logout", server.url)).bearer_auth(&b);
    assert_eq!(logout.json(&json!({})).send().await.unwrap().status(), 200);
    let bob_again = server.client().await;
    bob_again.matrix_auth().login_username("bob", "pw").send().await.unwrap();
    assert!(listed(&server, &bob_again.access_token().unwrap()).await.is_empty(), "gone with the device");
    let anonymous = server.http().get(format!("{}/_matrix/client/v3/pushers", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// A push gateway stub served by the test on loopback (no real gateway such as Sygnal): records
/// the notifications it accepts; can be made to fail or to reject a pushkey.
struct GatewayStub {
    url: String,
    accepted: tokio::sync::mpsc::UnboundedReceiver<Value>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rejecting: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn gateway_stub() -> GatewayStub {
    use std::sync::{atomic::Ordering, Arc};
    let (tx, accepted) = tokio::sync::mpsc::unbounded_channel();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rejecting: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (f, r, a) = (failing.clone(), rejecting.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (tx, f, r, a) = (tx.clone(), f.clone(), r.clone(), a.clone());
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
                }
                let rejected = r.lock().unwrap().clone();
                tx.send(body).expect("the test still listens");
                (axum::http::StatusCode::OK, axum::Json(json!({ "rejected": rejected })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    GatewayStub { url, accepted, failing, rejecting, attempts }
}

impl GatewayStub {
    async fn next(&mut self) -> Value {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.accepted.recv())
            .await
            .expect("the gateway is notified")
            .expect("gateway running")
    }
}

async fn send_text(server: &TestServer, token: &str, room: &str, txn: &str, body: &str) -> String {
    let path = format!("{}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}", server.url);
    let response = server.http().put(path).bearer_auth(token).json(&json!({ "msgtype": "m.text", "body": body }));
    let v: Value = response.send().await.unwrap().json().await.unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

/// Notifications reach a push gateway (a stub recording them) with the spec's body; a failing
/// gateway gets them after it recovers — across a kill -9 of the server — each once; a rejected
/// pushkey loses its pusher.
#[tokio::test]
async fn notifications_reach_the_push_gateway_once_across_failures_and_restarts() {
    use std::sync::atomic::Ordering;
    let mut gw = gateway_stub().await;
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let room = {
        let body = json!({ "preset": "public_chat", "name": "Cabinet" });
        let response = server.http().post(format!("{}/_matrix/client/v3/createRoom", server.url)).bearer_auth(&a);
        let v: Value = response.json(&body).send().await.unwrap().json().await.unwrap();
        v["room_id"].as_str().unwrap().to_owned()
    };
    let join = server.http().post(format!("{}/_matrix/client/v3/rooms/{room}/join", server.url)).bearer_auth(&b);
    assert_eq!(join.json(&json!({})).send().await.unwrap().status(), 200);
    alice.pusher().set(pusher("key-1", &gw.url), false).await.unwrap();

    send_text(&server, &a, &room, "own", "my own message").await;
    let first = send_text(&server, &b, &room, "1", "bonjour").await;
    let pushed = gw.next().await;
    let n = &pushed["notification"];
    assert_eq!(n["event_id"], first.as_str(), "alice's own message is not pushed: {pushed}");
    assert_eq!((n["room_id"].as_str(), n["type"].as_str()), (Some(room.as_str()), Some("m.room.message")));
    assert_eq!((n["sender"].as_str(), n["content"]["body"].as_str()), (Some("@bob:localhost"), Some("bonjour")));
    assert_eq!(n["room_name"], "Cabinet");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["devices"][0]["pushkey"], "key-1");
    assert_eq!(n["devices"][0]["app_id"], "fr.gouv.tchap");
    assert!(n["devices"][0]["data"].get("url").is_none(), "the url is not sent back: {pushed}");

    // The gateway fails: the notification waits, through a kill -9, and is sent once it is back.
    gw.failing.store(true, Ordering::SeqCst);
    let before = gw.attempts.load(Ordering::SeqCst);
    let second = send_text(&server, &b, &room, "2", "un").await;
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while gw.attempts.load(Ordering::SeqCst) == before {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sender tried the failing gateway");
    server.kill();
    gw.failing.store(false, Ordering::SeqCst);
    server.restart();
    let pushed = gw.next().await;
    assert_eq!(pushed["notification"]["event_id"], second.as_str(), "delivered after the restart");
    assert_eq!(pushed["notification"]["counts"]["unread"], 2);
    let third = send_text(&server, &b, &room, "3", "deux").await;
    let pushed = gw.next().await;
    assert_eq!(pushed["notification"]["event_id"], third.as_str(), "the second one was delivered once, then this");

    // The gateway rejects the pushkey: the pusher is removed.
    gw.rejecting.lock().unwrap().push("key-1".to_owned());
    let fourth = send_text(&server, &b, &room, "4", "trois").await;
    assert_eq!(gw.next().await["notification"]["event_id"], fourth.as_str());
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !listed(&server, &a).await.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the rejected pusher is removed");
}
