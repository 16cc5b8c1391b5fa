//! The admin API's view of federation (`/_synapse/admin/v1/federation/destinations`) between two
//! real nodes: destinations and their health, rooms shared, a connection reset after an outage.

use std::time::{Duration, Instant};

use hemicycle_federation_tests::Node;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn admins_see_destinations_and_reset_a_connection() {
    let (a, mut b) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]));
    let root = a.admin_token().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    b.join(&bob, &room, &[a.server_name()]).await;
    let since = b.sync_token(&bob).await;
    a.send_text(&alice, &room, "bonjour").await;
    b.wait_for_bodies(&bob, &room, &since, &["bonjour".to_owned()]).await;

    let base = "/_synapse/admin/v1/federation/destinations";
    let list = a.get(&root, base).await;
    let theirs = list["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == b.server_name())
        .unwrap_or_else(|| panic!("{} in {list}", b.server_name()))
        .clone();
    assert_eq!(theirs["failures"], 0, "{theirs}");
    assert!(theirs["last_success_ts"].as_u64().is_some(), "{theirs}");
    let path = format!("{base}/{}", b.server_name());
    let rooms = a.get(&root, &format!("{path}/rooms")).await;
    assert_eq!(rooms["total"], 1, "{rooms}");
    assert_eq!(rooms["rooms"][0]["room_id"], room.as_str());
    let (status, body) = a.call(Method::GET, Some(&alice), base, None).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) = a.call(Method::GET, Some(&root), &format!("{base}/nowhere.example"), None).await;
    assert_eq!(status, 404);

    // B goes down: A's sends fail and back off, which the admin sees.
    let since = b.sync_token(&bob).await;
    b.kill().await;
    a.send_text(&alice, &room, "pendant la panne").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let details = a.get(&root, &path).await;
        if details["failures"].as_u64().unwrap_or(0) >= 2 {
            assert!(details["retry_interval"].as_u64().unwrap() >= 2000, "{details}");
            assert!(details["failure_ts"].as_u64().is_some(), "{details}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {details}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // B is back; the admin resets the connection: the backoff is gone and the message arrives.
    b.restart().await;
    let (status, body) = a.call(Method::POST, Some(&root), &format!("{path}/reset_connection"), Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let details = a.get(&root, &path).await;
    assert_eq!((details["failures"].clone(), details["retry_interval"].clone()), (json!(0), json!(0)), "{details}");
    b.wait_for_bodies(&bob, &room, &since, &["pendant la panne".to_owned()]).await;
    let audit = a.get(&root, "/_synapse/admin/v1/audit").await;
    assert_eq!(audit["entries"][0]["action"], "destination.reset_connection");
    assert_eq!(audit["entries"][0]["target"], b.server_name());
}
