//! Every node of a room agrees on its state once each has every event, without waiting for a
//! later event to merge the branches. Forks are made for certain (one node down while the other
//! changes state, then the other way round), not hoped for from timing.

use std::collections::BTreeMap;

use hemicycle_federation_tests::{shared_room, Node, SYNC_WAIT};
use serde_json::{json, Value};

/// A room's current state as `(type, state_key) → event id`.
fn state_map(events: &[Value]) -> BTreeMap<(String, String), String> {
    events
        .iter()
        .map(|e| {
            let key = (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
            );
            (key, e["event_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_fork_is_resolved_on_both_sides_without_a_later_event() {
    let (mut a, mut b) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]));
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;
    let (a_since, b_since) = (a.sync_token(&at).await, b.sync_token(&bt).await);

    // A changes the topic while B is down; then B renames bob while A is down: two branches.
    b.kill().await;
    let topic = a.put_state(&at, &room, "m.room.topic", "", json!({ "topic": "ordre du jour" })).await;
    a.kill().await;
    b.restart().await;
    let mut member = b.state_event(&bt, &room, "m.room.member", &bob).await;
    member["displayname"] = json!("Bob (DINUM)");
    let renamed = b.put_state(&bt, &room, "m.room.member", &bob, member).await;
    a.restart().await;

    // Each receives the other's branch; nothing else is sent.
    a.wait_for_timeline(&at, &room, Some(&a_since), |e| e["event_id"] == renamed.as_str(), SYNC_WAIT).await;
    b.wait_for_timeline(&bt, &room, Some(&b_since), |e| e["event_id"] == topic.as_str(), SYNC_WAIT).await;
    let state_a = state_map(&a.get_state(&at, &room).await);
    let state_b = state_map(&b.get_state(&bt, &room).await);
    let topic_key = ("m.room.topic".to_owned(), String::new());
    let member_key = ("m.room.member".to_owned(), bob.clone());
    assert_eq!(state_a.get(&topic_key), Some(&topic), "A keeps its topic: {state_a:?}");
    assert_eq!(state_a.get(&member_key), Some(&renamed), "A has bob's new name: {state_a:?}");
    assert_eq!(state_b.get(&topic_key), Some(&topic), "B has the topic: {state_b:?}");
    assert_eq!(state_b.get(&member_key), Some(&renamed), "B keeps bob's new name: {state_b:?}");
    assert_eq!(state_a, state_b, "the same state on both nodes");
}
