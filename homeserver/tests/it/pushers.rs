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
    let body: Value = response.await.unwrap().json().await.unwrap();
    body["pushers"].as_array().cloned().unwrap_or_default()
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
    let anonymous = server.http().get(format!("{}/_matrix/client/v3/pushers", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
