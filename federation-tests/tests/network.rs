//! A ministry network of three nodes (docs/network.md): two ministries and the externals' node.
//! The room access rules hold for events received over federation as for local ones: a node
//! that lets through what the network refuses (here a ministry whose rules are off) does not get
//! it into the rooms of the nodes that keep them.

use hemicycle_federation_tests::{enc, Node, SYNC_WAIT};
use reqwest::Method;
use serde_json::{json, Value};

/// Writes `[network]` into a node's configuration and restarts it (a node's name is known only
/// once it runs, so the network's list of names is set afterwards).
async fn join_network(node: &mut Node, settings: &[(&str, toml::Value)]) {
    let text = std::fs::read_to_string(node.config_path()).expect("read the node's config");
    let mut root: toml::Table = toml::from_str(&text).expect("the node's config");
    let mut network = toml::Table::new();
    for (key, value) in settings {
        network.insert((*key).to_owned(), value.clone());
    }
    root.insert("network".into(), toml::Value::Table(network));
    std::fs::write(node.config_path(), toml::to_string(&root).expect("serialize")).expect("write the config");
    node.restart().await;
}

async fn membership_on(node: &Node, token: &str, room: &str, user: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    let (status, content) = node.call(Method::GET, Some(token), &path, None).await;
    (status == 200).then(|| content["membership"].as_str().unwrap_or_default().to_owned())
}

fn refused(answer: &(u16, Value)) {
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert_eq!(answer.1["errcode"], "M_FORBIDDEN", "{}", answer.1);
    assert_eq!(answer.1["error"], "This event is not allowed in this context", "{}", answer.1);
}

#[tokio::test]
async fn every_node_keeps_the_rules_on_what_it_receives() {
    let mut ministry = Node::start("ministry", &[]).await;
    // A ministry whose access rules are off: what it lets its users do, the others refuse.
    let lax = Node::start("lax-ministry", &[]).await;
    let mut externals = Node::start("externals", &[]).await;
    let external_servers = toml::Value::Array(vec![externals.server_name().into()]);
    join_network(&mut ministry, &[("external_servers", external_servers.clone())]).await;
    join_network(&mut externals, &[("role", "external".into()), ("external_servers", external_servers)]).await;

    let (_, agent) = ministry.register("agent").await;
    let (colleague_id, colleague) = lax.register("colleague").await;
    let (guest_id, guest) = externals.register("guest").await;

    let room = ministry.create_room(&agent, json!({ "room_version": "11" })).await;
    ministry.invite(&agent, &room, &colleague_id).await;
    assert_eq!(lax.try_join(&colleague, &room, &[ministry.server_name()]).await.0, 200);
    let mut power = ministry.state_event(&agent, &room, "m.room.power_levels", "").await;
    power["users"][&colleague_id] = json!(100);
    ministry.put_state(&agent, &room, "m.room.power_levels", "", power).await;

    // The ministry's own users cannot let an external user in.
    refused(&ministry.room_action(&agent, &room, "invite", json!({ "user_id": guest_id })).await);

    // The lax ministry can (it asks nobody), and the externals' node signs the invite: but the
    // ministry, receiving it, rejects it.
    let since = ministry.sync_token(&agent).await;
    let invited = lax.room_action(&colleague, &room, "invite", json!({ "user_id": guest_id })).await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    // What the rules allow goes in: restricted becomes unrestricted.
    lax.put_state(&colleague, &room, "im.vector.room.access_rules", "", json!({ "rule": "unrestricted" })).await;
    lax.send_text(&colleague, &room, "after the invite").await;
    ministry.wait_for_bodies(&agent, &room, &since, &["after the invite".to_owned()]).await;

    assert_eq!(membership_on(&lax, &colleague, &room, &guest_id).await.as_deref(), Some("invite"));
    assert_eq!(membership_on(&ministry, &agent, &room, &guest_id).await, None, "the ministry rejected the invite");
    let rule = ministry.state_event(&agent, &room, "im.vector.room.access_rules", "").await;
    assert_eq!(rule["rule"], "unrestricted");
    // The guest, invited as far as the lax node and the externals' node know, joins there; the
    // ministry, which saw no invite, rejects the join and what follows from it.
    let joined = externals.try_join(&guest, &room, &[lax.server_name()]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let since = ministry.sync_token(&agent).await;
    let lax_since = lax.sync_token(&colleague).await;
    externals.send_text(&guest, &room, "from the guest").await;
    lax.wait_for_bodies(&colleague, &room, &lax_since, &["from the guest".to_owned()]).await;
    lax.send_text(&colleague, &room, "after the guest").await;
    let timeline = ministry.wait_for_bodies(&agent, &room, &since, &["after the guest".to_owned()]).await;
    assert!(!timeline.bodies().contains(&"from the guest".to_owned()), "{:?}", timeline.bodies());
    assert_eq!(membership_on(&ministry, &agent, &room, &guest_id).await, None);

    // The externals' node keeps the rules on its own users: a join of a restricted room (the lax
    // node's rooms have no rule, so they are restricted) is refused there.
    let closed = lax.create_room(&colleague, json!({ "room_version": "11" })).await;
    lax.invite(&colleague, &closed, &guest_id).await;
    refused(&externals.try_join(&guest, &closed, &[lax.server_name()]).await);
}

/// The `homeserver.yaml` lines loading Tchap's `synapse-room-access-rules` (the PyPI release
/// `./scripts/test` installs into the Synapse venv) with `externals` as the forbidden server.
/// Its identity server is never asked here (only third-party invites into restricted rooms ask).
fn access_rules_module(externals: &str) -> String {
    format!(
        "\nmodules:\n  - module: room_access_rules.RoomAccessRules\n    config:\n      \
         id_server: \"127.0.0.1:9\"\n      domains_forbidden_when_restricted: [\"{externals}\"]\n"
    )
}

/// Waits until `event_id` reaches `room`'s timeline on `node`.
async fn wait_for_event(node: &Node, token: &str, room: &str, since: &str, event_id: &str) {
    node.wait_for_timeline(token, room, Some(since), |e| e["event_id"] == event_id, SYNC_WAIT).await;
}

/// `PUT /rooms/{room}/state/{type}/` as is: status and body.
async fn try_put_state(node: &Node, token: &str, room: &str, kind: &str, content: Value) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{}/", enc(room), enc(kind));
    node.call(Method::PUT, Some(token), &path, Some(&content)).await
}

/// A Hemicycle ministry and a Synapse running Tchap's module, in the same rooms, refuse the same
/// events with the same errors, and take in each other's rule events: an external user is kept
/// out of a restricted room by both, the change to `unrestricted` made on one side holds on the
/// other, after which both refuse the way back and power for the external user, and a direct
/// chat gets no name on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_with_the_reference_module_enforces_the_same_rules() {
    let mut externals = Node::start("externals", &[]).await;
    let mut ministry = Node::start("ministry", &[]).await;
    let synapse = Node::start_synapse_with("rules", &access_rules_module(&externals.server_name())).await;
    let external_servers = toml::Value::Array(vec![externals.server_name().into()]);
    join_network(&mut ministry, &[("external_servers", external_servers.clone())]).await;
    join_network(&mut externals, &[("role", "external".into()), ("external_servers", external_servers)]).await;

    let (agent_id, agent) = ministry.register("agent").await;
    let (officer_id, officer) = synapse.register("officer").await;
    let (guest_id, guest) = externals.register("guest").await;

    // A room made on Synapse: the module gives it the restricted rule, which Hemicycle takes in.
    let room = synapse.create_room(&officer, json!({ "room_version": "11" })).await;
    synapse.invite(&officer, &room, &agent_id).await;
    ministry.join(&agent, &room, &[synapse.server_name()]).await;
    assert_eq!(ministry.state_event(&agent, &room, "im.vector.room.access_rules", "").await["rule"], "restricted");
    let since = ministry.sync_token(&agent).await;
    let mut power = synapse.state_event(&officer, &room, "m.room.power_levels", "").await;
    power["users"][&agent_id] = json!(100);
    let promoted = synapse.put_state(&officer, &room, "m.room.power_levels", "", power).await;
    wait_for_event(&ministry, &agent, &room, &since, &promoted).await;
    // Neither side lets the external user in.
    refused(&synapse.room_action(&officer, &room, "invite", json!({ "user_id": guest_id })).await);
    refused(&ministry.room_action(&agent, &room, "invite", json!({ "user_id": guest_id })).await);

    // A room made on Hemicycle: Synapse takes in its rule; the change to unrestricted made on
    // Synapse holds on Hemicycle.
    let room = ministry.create_room(&agent, json!({ "room_version": "11" })).await;
    ministry.invite(&agent, &room, &officer_id).await;
    synapse.join(&officer, &room, &[ministry.server_name()]).await;
    assert_eq!(synapse.state_event(&officer, &room, "im.vector.room.access_rules", "").await["rule"], "restricted");
    let since = synapse.sync_token(&officer).await;
    let mut power = ministry.state_event(&agent, &room, "m.room.power_levels", "").await;
    power["users"][&officer_id] = json!(100);
    let promoted = ministry.put_state(&agent, &room, "m.room.power_levels", "", power.clone()).await;
    wait_for_event(&synapse, &officer, &room, &since, &promoted).await;
    refused(&synapse.room_action(&officer, &room, "invite", json!({ "user_id": guest_id })).await);
    refused(&ministry.room_action(&agent, &room, "invite", json!({ "user_id": guest_id })).await);
    let since = ministry.sync_token(&agent).await;
    let opened =
        synapse.put_state(&officer, &room, "im.vector.room.access_rules", "", json!({ "rule": "unrestricted" })).await;
    wait_for_event(&ministry, &agent, &room, &since, &opened).await;
    assert_eq!(ministry.state_event(&agent, &room, "im.vector.room.access_rules", "").await["rule"], "unrestricted");
    // Now the external user may be invited and join; no way back to restricted on either side.
    ministry.invite(&agent, &room, &guest_id).await;
    let since = synapse.sync_token(&officer).await;
    externals.join(&guest, &room, &[ministry.server_name()]).await;
    let guest_joined = |e: &Value| e["state_key"] == guest_id.as_str() && e["content"]["membership"] == "join";
    synapse.wait_for_timeline(&officer, &room, Some(&since), guest_joined, SYNC_WAIT).await;
    for (node, token) in [(&synapse, &officer), (&ministry, &agent)] {
        refused(
            &try_put_state(node, token, &room, "im.vector.room.access_rules", json!({ "rule": "restricted" })).await,
        );
        let mut raised = power.clone();
        raised["users"][&guest_id] = json!(50);
        refused(&try_put_state(node, token, &room, "m.room.power_levels", raised).await);
        let mut everyone = power.clone();
        everyone["users_default"] = json!(50);
        refused(&try_put_state(node, token, &room, "m.room.power_levels", everyone).await);
    }

    // A direct chat made on Synapse: no name on either side.
    let direct =
        synapse.create_room(&officer, json!({ "room_version": "11", "is_direct": true, "invite": [agent_id] })).await;
    ministry.join(&agent, &direct, &[synapse.server_name()]).await;
    // Both at 100, so that only the access rule stands in the way.
    let since = ministry.sync_token(&agent).await;
    let mut power = synapse.state_event(&officer, &direct, "m.room.power_levels", "").await;
    power["users"][&agent_id] = json!(100);
    let promoted = synapse.put_state(&officer, &direct, "m.room.power_levels", "", power).await;
    wait_for_event(&ministry, &agent, &direct, &since, &promoted).await;
    assert_eq!(ministry.state_event(&agent, &direct, "im.vector.room.access_rules", "").await["rule"], "direct");
    refused(&try_put_state(&synapse, &officer, &direct, "m.room.name", json!({ "name": "ours" })).await);
    refused(&try_put_state(&ministry, &agent, &direct, "m.room.name", json!({ "name": "ours" })).await);
}
