//! Room previews (`GET /room_summary`, MSC3266): what a room shows to those not in it.

use serde_json::{json, Value};

use crate::common::{urlencode, TestServer};

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    token: Option<&str>,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut request = server.http().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn room_summaries_show_what_may_be_previewed() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (a, b) = (alice.access_token().unwrap(), bob.access_token().unwrap());
    let create = |body: Value| {
        let (server, a) = (&server, a.clone());
        async move {
            let (status, v) =
                call(server, reqwest::Method::POST, Some(&a), "/_matrix/client/v3/createRoom", body).await;
            assert_eq!(status, 200, "{v}");
            v["room_id"].as_str().unwrap().to_owned()
        }
    };
    let public = create(json!({ "preset": "public_chat", "name": "Annonces", "topic": "Les nouvelles du service",
                                "room_alias_name": "annonces" }))
    .await;
    let private = create(json!({ "preset": "private_chat", "name": "Direction" })).await;
    let summary = |token: Option<String>, target: String| {
        let server = &server;
        async move {
            call(
                server,
                reqwest::Method::GET,
                token.as_deref(),
                &format!("/_matrix/client/v1/room_summary/{}", urlencode(&target)),
                Value::Null,
            )
            .await
        }
    };

    let (status, seen) = summary(Some(b.clone()), public.clone()).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["room_id"], public.as_str());
    assert_eq!((seen["name"].as_str(), seen["topic"].as_str()), (Some("Annonces"), Some("Les nouvelles du service")));
    assert_eq!(seen["num_joined_members"], 1);
    assert_eq!(seen["canonical_alias"], "#annonces:localhost");
    // ruma (which serializes the answer) leaves the default `public` out.
    assert!(seen.get("join_rule").is_none_or(|r| r == "public"), "{seen}");
    assert_eq!(seen["guest_can_join"], false);
    assert!(seen.get("membership").is_none(), "bob is not in it: {seen}");
    let (status, by_alias) = summary(Some(b.clone()), "#annonces:localhost".into()).await;
    assert_eq!((status, by_alias["room_id"].as_str()), (200, Some(public.as_str())));
    let (status, anonymous) = summary(None, public.clone()).await;
    assert_eq!((status, anonymous["name"].as_str()), (200, Some("Annonces")), "no token needed for a public room");

    let (status, hidden) = summary(Some(b.clone()), private.clone()).await;
    assert_eq!((status, hidden["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "a private room is not shown");
    assert_eq!(summary(None, private.clone()).await.0, 404);
    let (status, own) = summary(Some(a.clone()), private.clone()).await;
    assert_eq!((status, own["membership"].as_str(), own["join_rule"].as_str()), (200, Some("join"), Some("invite")));
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        Some(&a),
        &format!("/_matrix/client/v3/rooms/{private}/invite"),
        json!({ "user_id": "@bob:localhost" }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, invited) = summary(Some(b.clone()), private.clone()).await;
    assert_eq!(
        (status, invited["membership"].as_str(), invited["name"].as_str()),
        (200, Some("invite"), Some("Direction"))
    );

    assert_eq!(summary(Some(b.clone()), "!nowhere:localhost".into()).await.0, 404);
    assert_eq!(summary(Some(b.clone()), "#nothing:localhost".into()).await.0, 404);
    assert_eq!(summary(Some(b), "not-a-room".into()).await.0, 400, "neither a room id nor an alias");
}

/// Without bridges: no third-party protocols, empty lookups, unknown named protocols; no policy
/// server named.
#[tokio::test]
async fn third_party_networks_and_policy_server_without_bridges() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let a = alice.access_token().unwrap();
    let get = |token: Option<String>, path: &'static str| {
        let server = &server;
        async move { call(server, reqwest::Method::GET, token.as_deref(), path, Value::Null).await }
    };
    assert_eq!(get(Some(a.clone()), "/_matrix/client/v3/thirdparty/protocols").await, (200, json!({})));
    assert_eq!(get(None, "/_matrix/client/v3/thirdparty/protocols").await.0, 401, "a token is required");
    for path in [
        "/_matrix/client/v3/thirdparty/protocol/irc",
        "/_matrix/client/v3/thirdparty/location/irc?server=irc.example",
        "/_matrix/client/v3/thirdparty/user/irc?nick=bob",
    ] {
        let (status, body) = get(Some(a.clone()), path).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{path}");
    }
    assert_eq!(
        get(Some(a.clone()), "/_matrix/client/v3/thirdparty/location?alias=%23irc_chan%3Alocalhost").await,
        (200, json!([]))
    );
    assert_eq!(
        get(Some(a.clone()), "/_matrix/client/v3/thirdparty/user?userid=%40bob%3Alocalhost").await,
        (200, json!([]))
    );
    assert_eq!(get(Some(a), "/_matrix/client/v3/thirdparty/user?userid=bob").await.0, 400, "not a user id");
    let (status, body) = get(None, "/.well-known/matrix/policy_server").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
}
