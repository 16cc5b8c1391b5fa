//! End-to-end encryption and media across nodes: matrix-sdk clients on two nodes exchange
//! encrypted messages (keys queried and claimed through federation, room keys sent as to-device
//! messages), and a node serves another node's media to its users.

use hemicycle_federation_tests::{
    enc, png_size,
    scenarios::{encrypted_chat, remote_media, sas_verification, shared_history_on_invite},
    Node,
};
use serde_json::{json, Value};

async fn two_nodes() -> (Node, Node) {
    tokio::join!(Node::start("a", &[]), Node::start("b", &[]))
}

#[tokio::test]
async fn e2ee_across_nodes() {
    let (a, b) = two_nodes().await;
    encrypted_chat(&a, &b, "").await;
}

#[tokio::test]
async fn remote_media_download_and_thumbnail() {
    let (mut a, b) = two_nodes().await;
    let cached = remote_media(&a, &b, "").await;
    // The exact thumbnail B makes of A's 64×32 image: scaled into 32×32.
    let (_, bt) = b.register("carol").await;
    let thumb = cached[1].0.replace("/download/", "/thumbnail/") + "?width=32&height=32&method=scale";
    let (status, thumb_type, bytes) = b.get_bytes(&bt, &thumb).await;
    assert_eq!((status, thumb_type.as_str(), png_size(&bytes)), (200, "image/png", Some((32, 16))));
    // A gone: B still serves what it fetched, from its own cache under A's name.
    a.kill().await;
    for (path, bytes) in cached {
        let (status, _, got) = b.get_bytes(&bt, &path).await;
        assert_eq!((status, got), (200, bytes), "{path} served from B's cache while A is down");
    }
}

/// OpenID: a user's token, handed to a widget or integration manager, is checked by that third
/// party on the node's federation listener (`/openid/userinfo`, no server signature needed).
#[tokio::test]
async fn openid_tokens_identify_users_on_the_federation_listener() {
    let node = Node::start("a", &[]).await;
    let (alice, token) = node.register("alice").await;
    let (_, bob_token) = node.register("bob").await;
    let issued =
        node.post(&token, &format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice)), json!({})).await;
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["matrix_server_name"], node.server_name().as_str());
    assert_eq!(issued["expires_in"], 3600);
    let openid = issued["access_token"].as_str().unwrap();

    let manager = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().unwrap();
    let userinfo = |token: &str| {
        let url =
            format!("{}/_matrix/federation/v1/openid/userinfo?access_token={}", node.federation_url(), enc(token));
        let request = manager.get(url);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(userinfo(openid).await, (200, json!({ "sub": alice })));
    let (status, body) = userinfo("not-a-token").await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let (status, body) = userinfo(&token).await;
    assert_eq!(status, 401, "an access token is not an OpenID token: {body}");

    let (status, body) = node
        .call(
            reqwest::Method::POST,
            Some(&bob_token),
            &format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice)),
            Some(&json!({})),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only for oneself");
}

/// Item 1 of issue 35 end to end across nodes: history shared with an invite (MSC4268).
#[tokio::test]
async fn history_shared_with_an_invite_across_nodes() {
    let (a, b) = two_nodes().await;
    shared_history_on_invite(&a, &b, "").await;
}

/// Item 2 of issue 35 end to end across nodes: SAS verification ends with Bob verified.
#[tokio::test]
async fn sas_verification_across_nodes() {
    let (a, b) = two_nodes().await;
    sas_verification(&a, &b, "").await;
}
