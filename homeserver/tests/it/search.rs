//! `POST /search`: full text over room events, French accents folded and words stemmed, only in
//! rooms the searcher is in and only what history visibility lets them see; through raw HTTP and
//! through matrix-sdk's client.

use matrix_sdk::ruma::{
    api::client::search::search_events::v3 as search_events, assign, events::AnyTimelineEvent, UInt,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, urlencode, TestServer};

async fn ok(server: &TestServer, method: Method, token: &str, path: &str, body: Value) -> Value {
    let (status, value) = api(server, method, Some(token), path, Some(body)).await;
    assert_eq!(status, 200, "{path}: {value}");
    value
}

async fn say(server: &TestServer, token: &str, room: &str, txn: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", urlencode(room));
    ok(server, Method::PUT, token, &path, json!({ "msgtype": "m.text", "body": body })).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn search(server: &TestServer, token: &str, criteria: Value) -> Value {
    let (status, value) = search_raw(server, token, "", criteria).await;
    assert_eq!(status, 200, "{value}");
    value["search_categories"]["room_events"].clone()
}

async fn search_raw(server: &TestServer, token: &str, query: &str, criteria: Value) -> (u16, Value) {
    let body = json!({ "search_categories": { "room_events": criteria } });
    api(server, Method::POST, Some(token), &format!("/_matrix/client/v3/search{query}"), Some(body)).await
}

fn bodies(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results list: {results}"))
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn search_finds_french_words_in_rooms_the_user_may_see() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let (a, b, c) = (alice.access_token().unwrap(), bob.access_token().unwrap(), carol.access_token().unwrap());
    let create =
        |name: &str| json!({ "preset": "public_chat", "name": name, "topic": "Suivi des dossiers prioritaires" });
    let room = ok(&server, Method::POST, &a, "/_matrix/client/v3/createRoom", create("Cellule de crise")).await
        ["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&server, Method::POST, &b, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    let first = say(&server, &a, &room, "1", "Réunion de service lundi à 9h").await;
    say(&server, &b, &room, "2", "Ordre du jour envoyé").await;
    let third = say(&server, &a, &room, "3", "Les réunions du mardi sont annulées").await;
    say(&server, &b, &room, "4", "Le café est prêt").await;

    // Accents folded and French stems: "reunion" finds "Réunion" and "réunions".
    let found = search(&server, &b, json!({ "search_term": "reunion" })).await;
    let mut got = bodies(&found);
    got.sort();
    assert_eq!(got, vec!["Les réunions du mardi sont annulées", "Réunion de service lundi à 9h"], "{found}");
    assert_eq!(found["count"], 2);
    assert!(found["highlights"].as_array().unwrap().contains(&json!("reunion")), "{found}");
    assert!(found["results"][0]["rank"].as_f64().unwrap() > 0.0);
    // A word's beginning finds it; every word of the term must match.
    assert_eq!(bodies(&search(&server, &b, json!({ "search_term": "annul" })).await).len(), 1);
    assert_eq!(bodies(&search(&server, &b, json!({ "search_term": "réunion lundi" })).await).len(), 1);
    assert!(bodies(&search(&server, &b, json!({ "search_term": "réunion vendredi" })).await).is_empty());

    // Newest first when asked, one per page, pages neither repeat nor skip.
    let recent = json!({ "search_term": "réunion", "order_by": "recent", "filter": { "limit": 1 } });
    let page1 = search(&server, &b, recent.clone()).await;
    assert_eq!(page1["results"][0]["result"]["event_id"], third.as_str(), "{page1}");
    let token = page1["next_batch"].as_str().expect("a second page").to_owned();
    let (status, page2) = search_raw(&server, &b, &format!("?next_batch={}", urlencode(&token)), recent.clone()).await;
    assert_eq!(status, 200, "{page2}");
    let page2 = &page2["search_categories"]["room_events"];
    assert_eq!(page2["results"][0]["result"]["event_id"], first.as_str(), "{page2}");
    assert!(page2["next_batch"].is_null(), "nothing after the last: {page2}");
    let ranked = json!({ "search_term": "réunion", "filter": { "limit": 1 } });
    let r1 = search(&server, &b, ranked.clone()).await;
    let token = r1["next_batch"].as_str().unwrap().to_owned();
    let (_, r2) = search_raw(&server, &b, &format!("?next_batch={}", urlencode(&token)), ranked).await;
    let (one, two) = (
        &r1["results"][0]["result"]["event_id"],
        &r2["search_categories"]["room_events"]["results"][0]["result"]["event_id"],
    );
    assert!(one.is_string() && two.is_string() && one != two, "{r1} {r2}");

    // Room names and topics by key; a sender filter; a room filter.
    let named = search(&server, &b, json!({ "search_term": "crise", "keys": ["content.name"] })).await;
    assert_eq!(named["results"][0]["result"]["type"], "m.room.name", "{named}");
    let topic = search(&server, &b, json!({ "search_term": "prioritaire", "keys": ["content.topic"] })).await;
    assert_eq!(topic["results"][0]["result"]["type"], "m.room.topic", "{topic}");
    assert!(search(&server, &b, json!({ "search_term": "crise", "keys": ["content.body"] })).await["results"]
        .as_array()
        .unwrap()
        .is_empty());
    let by_bob =
        search(&server, &a, json!({ "search_term": "ordre", "filter": { "senders": ["@bob:localhost"] } })).await;
    assert_eq!(bodies(&by_bob), vec!["Ordre du jour envoyé"], "{by_bob}");
    let not_bob =
        search(&server, &a, json!({ "search_term": "ordre", "filter": { "not_senders": ["@bob:localhost"] } })).await;
    assert!(bodies(&not_bob).is_empty());
    let elsewhere =
        search(&server, &a, json!({ "search_term": "ordre", "filter": { "rooms": ["!other:localhost"] } })).await;
    assert!(bodies(&elsewhere).is_empty());

    // Context, profiles, groups and state, as Element asks for them.
    let full = search(
        &server,
        &b,
        json!({
            "search_term": "ordre",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "groupings": { "group_by": [{ "key": "room_id" }] },
            "include_state": true,
        }),
    )
    .await;
    let context = &full["results"][0]["context"];
    assert_eq!(context["events_before"][0]["event_id"], first.as_str(), "{context}");
    assert_eq!(context["events_after"][0]["event_id"], third.as_str(), "{context}");
    assert!(context["profile_info"]["@bob:localhost"].is_object(), "{context}");
    assert!(context["profile_info"]["@alice:localhost"].is_object(), "{context}");
    assert_eq!(full["groups"]["room_id"][&room]["results"][0], full["results"][0]["result"]["event_id"], "{full}");
    assert!(full["state"][&room].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"), "{full}");

    // Someone outside the room finds nothing; a later joiner finds what was said while history
    // was `shared`, not what was said under `joined` before they came.
    assert!(bodies(&search(&server, &c, json!({ "search_term": "réunion" })).await).is_empty());
    let state_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/");
    ok(&server, Method::PUT, &a, &state_path, json!({ "history_visibility": "joined" })).await;
    say(&server, &a, &room, "5", "Réunion secrète avant l'arrivée de Carol").await;
    ok(&server, Method::POST, &c, &format!("/_matrix/client/v3/rooms/{room}/join"), json!({})).await;
    say(&server, &a, &room, "6", "Réunion après l'arrivée de Carol").await;
    let mut seen_by_carol = bodies(&search(&server, &c, json!({ "search_term": "réunion" })).await);
    seen_by_carol.sort();
    assert_eq!(
        seen_by_carol,
        vec![
            "Les réunions du mardi sont annulées",
            "Réunion après l'arrivée de Carol",
            "Réunion de service lundi à 9h"
        ]
    );

    // A redacted message is no longer found.
    let redact = format!("/_matrix/client/v3/rooms/{room}/redact/{}/r1", urlencode(&first));
    ok(&server, Method::PUT, &a, &redact, json!({})).await;
    let after_redaction = bodies(&search(&server, &b, json!({ "search_term": "lundi" })).await);
    assert!(after_redaction.is_empty(), "{after_redaction:?}");

    // Bad requests change nothing and say why.
    let (status, error) = search_raw(&server, &b, "?next_batch=nonsense", json!({ "search_term": "x" })).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{error}");
    let (status, error) = search_raw(&server, &b, "", json!({ "search_term": 5 })).await;
    assert_eq!((status, error["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{error}");

    // The index survives kill -9 and keeps indexing afterwards.
    server.kill();
    server.restart();
    assert_eq!(bodies(&search(&server, &b, json!({ "search_term": "annulées" })).await).len(), 1);
    say(&server, &a, &room, "7", "Nouvelle réunion après le redémarrage").await;
    let restarted = bodies(&search(&server, &b, json!({ "search_term": "redemarrage" })).await);
    assert_eq!(restarted, vec!["Nouvelle réunion après le redémarrage"]);

    // An index of another schema (an earlier release's) is rebuilt from the stream at start-up.
    server.stop();
    let index = server.config_path.parent().expect("data dir").join("db").join("search");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir_all(&index).unwrap();
    let mut other = tantivy::schema::Schema::builder();
    other.add_text_field("event_id", tantivy::schema::STRING | tantivy::schema::STORED);
    tantivy::Index::create_in_dir(&index, other.build()).unwrap();
    server.restart();
    let rebuilt = bodies(&search(&server, &b, json!({ "search_term": "redemarrage" })).await);
    assert_eq!(rebuilt, vec!["Nouvelle réunion après le redémarrage"]);

    // matrix-sdk sends the same request and reads the answer.
    let bob = server.client().await;
    bob.matrix_auth().login_username("bob", "pw").send().await.unwrap();
    let request = search_events::Request::new(assign!(search_events::Categories::new(), {
        room_events: Some(search_events::Criteria::new("café".to_owned())),
    }));
    let response = bob.send(request).await.expect("matrix-sdk search");
    let results = response.search_categories.room_events.results;
    assert_eq!(results.len(), 1);
    let event = results[0].result.as_ref().unwrap().deserialize().unwrap();
    assert!(matches!(event, AnyTimelineEvent::MessageLike(_)));
    assert_eq!(response.search_categories.room_events.count, UInt::new(1));
}
