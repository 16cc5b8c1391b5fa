//! A ministry network of three nodes (docs/network.md): two ministries and the externals' node.
//! The room access rules hold for events received over federation as for local ones: a node
//! that lets through what the network refuses (here a ministry whose rules are off) does not get
//! it into the rooms of the nodes that keep them.

use hemicycle_federation_tests::{
    dns::{DnsServer, Srv},
    enc, next_batch,
    relay::Relay,
    Node, SYNC_WAIT,
};
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
    let lax_since = lax.sync_token(&colleague).await;
    ministry.put_state(&agent, &room, "m.room.power_levels", "", power).await;
    // The lax node must have the new power levels before its user acts on them: a message sent
    // after them is only accepted there with them (they are among its ancestors).
    ministry.send_text(&agent, &room, "you are an admin").await;
    lax.wait_for_bodies(&colleague, &room, &lax_since, &["you are an admin".to_owned()]).await;

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

/// What a node's `internal-info` says of `address` (`invited`, as the other nodes ask it).
async fn invited_on(node: &Node, address: &str) -> bool {
    let path = format!("/_matrix/identity/api/v1/internal-info?medium=email&address={}", enc(address));
    let (status, body) = node.call(Method::GET, None, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["invited"].as_bool().expect("invited")
}

/// Waits until `node` says `address` is (or is not) invited: the nodes tell each other in
/// transactions, which nothing on the answering node's client API shows otherwise.
async fn wait_invited(node: &Node, address: &str, wanted: bool) {
    let deadline = std::time::Instant::now() + SYNC_WAIT;
    while invited_on(node, address).await != wanted {
        assert!(std::time::Instant::now() < deadline, "{address}: invited never became {wanted}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The operator binds `address` to `user` with the admin API (one of the ways an address gets
/// bound, as the LDAP directory and `/account/3pid/add` are others).
async fn bind_by_admin(node: &Node, admin: &str, user: &str, address: &str) {
    let path = format!("/_synapse/admin/v2/users/{}", enc(user));
    node.put(admin, &path, json!({ "threepids": [{ "medium": "email", "address": address }] })).await;
}

/// Waits for `room` among `user`'s invites on their node; returns the content of the invite.
async fn wait_for_invite(node: &Node, token: &str, user: &str, room: &str) -> Value {
    let own = |sync: &Value| {
        sync["rooms"]["invite"][room]["invite_state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
            .map(|e| e["content"].clone())
    };
    let sync = node.wait_sync(token, None, SYNC_WAIT, "the third-party invite taken up", |s| own(s).is_some()).await;
    own(&sync).expect("the invite")
}

/// `/invite` with an email address.
async fn invite_email(node: &Node, token: &str, room: &str, address: &str) -> (u16, Value) {
    let body = json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email", "address": address });
    node.room_action(token, room, "invite", body).await
}

/// The room's third-party invites on `node`: (token, content).
async fn third_party_invites(node: &Node, token: &str, room: &str) -> Vec<(String, Value)> {
    node.get_state(token, room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.third_party_invite")
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"].clone()))
        .collect()
}

async fn key_valid(node: &Node, public_key: &str) -> bool {
    let path = format!("/_matrix/identity/v2/pubkey/ephemeral/isvalid?public_key={}", enc(public_key));
    let (status, body) = node.call(Method::GET, None, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["valid"].as_bool().expect("valid")
}

/// Email invites across the network: a ministry's user invites addresses whose home is another
/// node (the externals' node, another ministry). That node learns the address is invited (so
/// the externals' node lets it be bound), and once it is bound there, whichever way, the
/// spec's onbind and exchange make the account invited into the room, where it joins. An
/// address bound before the invite is taken up as soon as its node hears of the invite. A
/// revoked invite no longer counts anywhere, nor does its key.
#[tokio::test]
async fn email_invites_across_the_network() {
    let mut ministry = Node::start("ministry", &[]).await;
    let mut interior = Node::start("interior", &[]).await;
    let mut externals = Node::start("externals", &[]).await;
    let domains = ministry.dir().join("domains.toml");
    std::fs::write(
        &domains,
        format!(
            "[domains]\n\"ministere.gouv.fr\" = \"{}\"\n\"interieur.gouv.fr\" = \"{}\"\n[fallback]\nserver = \"{}\"\n",
            ministry.server_name(),
            interior.server_name(),
            externals.server_name()
        ),
    )
    .unwrap();
    let external_servers = toml::Value::Array(vec![externals.server_name().into()]);
    let file = ("domains_file", toml::Value::from(domains.to_string_lossy().into_owned()));
    join_network(&mut ministry, &[("external_servers", external_servers.clone()), file.clone()]).await;
    join_network(&mut interior, &[("external_servers", external_servers.clone()), file.clone()]).await;
    join_network(&mut externals, &[("role", "external".into()), ("external_servers", external_servers), file]).await;
    let interior_admin = interior.admin_token().await;
    let externals_admin = externals.admin_token().await;

    let (_, agent) = ministry.register("agent").await;
    let (guest_id, guest) = externals.register("guest").await;
    let (jean_id, jean) = interior.register("jean").await;
    let (paul_id, paul) = interior.register("paul").await;
    bind_by_admin(&interior, &interior_admin, &paul_id, "paul@interieur.gouv.fr").await;

    let room = ministry.create_room(&agent, json!({ "room_version": "11" })).await;
    ministry.put_state(&agent, &room, "im.vector.room.access_rules", "", json!({ "rule": "unrestricted" })).await;

    // Nobody invited the guest's address yet: the externals' node refuses to bind it.
    assert!(!invited_on(&externals, "guest@gmail.example").await);
    let request = json!({ "client_secret": "secret", "email": "guest@gmail.example", "send_attempt": 1 });
    let path = "/_matrix/client/v3/account/3pid/email/requestToken";
    let (status, body) = externals.call(Method::POST, Some(&guest), path, Some(&request)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Your email domain is not authorized on this server")));

    for address in ["guest@gmail.example", "jean@interieur.gouv.fr", "paul@interieur.gouv.fr"] {
        let answer = invite_email(&ministry, &agent, &room, address).await;
        assert_eq!(answer.0, 200, "{address}: {}", answer.1);
    }
    let invites = third_party_invites(&ministry, &agent, &room).await;
    assert_eq!(invites.len(), 3, "{invites:?}");
    for (_, content) in &invites {
        let key = content["public_keys"][0]["public_key"].as_str().unwrap();
        assert!(key_valid(&ministry, key).await, "{content}");
    }

    // The addresses' homes learn of the invites: the externals' node now lets the guest bind it.
    wait_invited(&externals, "guest@gmail.example", true).await;
    wait_invited(&interior, "jean@interieur.gouv.fr", true).await;
    let (_, body) = externals.call(Method::POST, Some(&guest), path, Some(&request)).await;
    assert_ne!(body["error"], "Your email domain is not authorized on this server", "{body}");

    // Paul's address was bound before the invite: his node takes it up as soon as it hears.
    let mut members = vec![wait_for_invite(&interior, &paul, &paul_id, &room).await];
    // The guest's and Jean's get bound now: the invites become theirs, signed with their tokens.
    bind_by_admin(&externals, &externals_admin, &guest_id, "guest@gmail.example").await;
    bind_by_admin(&interior, &interior_admin, &jean_id, "jean@interieur.gouv.fr").await;
    members.push(wait_for_invite(&externals, &guest, &guest_id, &room).await);
    members.push(wait_for_invite(&interior, &jean, &jean_id, &room).await);
    for member in &members {
        assert_eq!(member["membership"], "invite", "{member}");
        let signed = &member["third_party_invite"]["signed"];
        assert!(invites.iter().any(|(t, _)| signed["token"] == t.as_str()), "{member}");
    }
    let since = ministry.sync_token(&agent).await;
    externals.join(&guest, &room, &[ministry.server_name()]).await;
    interior.join(&jean, &room, &[ministry.server_name()]).await;
    interior.join(&paul, &room, &[ministry.server_name()]).await;
    let joined = [&guest_id, &jean_id, &paul_id];
    ministry
        .wait_timeline_until(&agent, &room, Some(&since), SYNC_WAIT, |events| {
            joined.iter().all(|user| {
                events.iter().any(|e| e["state_key"] == user.as_str() && e["content"]["membership"] == "join")
            })
        })
        .await;
    // Taken up, the invites are done with: their keys are no longer valid.
    for (_, content) in &invites {
        assert!(!key_valid(&ministry, content["public_key"].as_str().unwrap()).await, "{content}");
    }

    // A revoked invite (its event emptied) no longer counts, on the inviter's node or the home.
    invite_email(&ministry, &agent, &room, "other@gmail.example").await;
    wait_invited(&externals, "other@gmail.example", true).await;
    let (token, content) = third_party_invites(&ministry, &agent, &room)
        .await
        .into_iter()
        .find(|(_, c)| c["display_name"] == "oth…@gmail.example")
        .expect("the new invite");
    ministry.put_state(&agent, &room, "m.room.third_party_invite", &token, json!({})).await;
    wait_invited(&externals, "other@gmail.example", false).await;
    assert!(!invited_on(&ministry, "other@gmail.example").await);
    assert!(!key_valid(&ministry, content["public_key"].as_str().unwrap()).await);
}

/// Sends `text` as a to-device message from `token`'s user to every device of `to`.
async fn send_note(node: &Node, token: &str, to: &str, text: &str) {
    let path = format!("/_matrix/client/v3/sendToDevice/org.example.note/{}", enc(text));
    node.put(token, &path, json!({ "messages": { to: { "*": { "texte": text } } } })).await;
}

/// Waits until `token`'s user gets the to-device message `text`; answers where to go on from.
async fn wait_note(node: &Node, token: &str, since: &str, text: &str) -> String {
    let seen = node
        .wait_sync(token, Some(since), SYNC_WAIT, &format!("the to-device message {text:?}"), |s| {
            s["to_device"]["events"].as_array().into_iter().flatten().any(|e| e["content"]["texte"] == text)
        })
        .await;
    next_batch(&seen)
}

/// The steps of an email invite across the network that are requests (the inviter's node
/// calling the home's `onbind`, the home asking the inviter's node to exchange the invite) are
/// kept and tried again when the other node cannot be reached: the ministry (the inviter's node)
/// and the externals' node (the address's home) find each other through DNS servers of their
/// own, each direction of the pair through a relay that can be cut. The ministry hears the
/// address is bound while it cannot reach the externals' node, and is restarted: its onbind goes
/// once it is back up. Then the externals' node cannot reach the ministry when the onbind asks
/// it to exchange the invite: it tries again on its timer once the way is open, and the guest
/// gets the invite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_invites_across_the_network_are_retried_after_a_cut() {
    let names = ["m.reseau.test", "e.reseau.test"];
    // What the ministry sends the externals' node goes through one relay, the way back through
    // the other; each node's DNS server sends the other's name to its relay.
    let (to_externals, to_ministry) = (Relay::start().await, Relay::start().await);
    let mut dns = Vec::new();
    for (relay, to) in [(&to_externals, names[1]), (&to_ministry, names[0])] {
        let srv = Srv { priority: 0, weight: 0, port: relay.port, target: "relay.reseau.test".into() };
        let name = format!("_matrix-fed._tcp.{to}");
        dns.push(
            DnsServer::start(&[(name.as_str(), srv)], &[("relay.reseau.test", std::net::Ipv4Addr::LOCALHOST)]).await,
        );
    }
    let nameservers = |i: usize| [("federation.nameservers", toml::Value::Array(vec![dns[i].addr.to_string().into()]))];
    let mut ministry = Node::start_with("ministry", Some(names[0]), &[], &nameservers(0)).await;
    let mut externals = Node::start_with("externals", Some(names[1]), &[], &nameservers(1)).await;
    to_externals.set_target(externals.federation_port());
    to_ministry.set_target(ministry.federation_port());
    let domains = ministry.dir().join("domains.toml");
    std::fs::write(
        &domains,
        format!("[domains]\n\"ministere.gouv.fr\" = \"{}\"\n[fallback]\nserver = \"{}\"\n", names[0], names[1]),
    )
    .unwrap();
    let external_servers = toml::Value::Array(vec![names[1].into()]);
    let file = ("domains_file", toml::Value::from(domains.to_string_lossy().into_owned()));
    // Status documents only at start: nothing else goes from one node to the other unasked.
    let quiet = ("status_interval", toml::Value::from("1h"));
    join_network(&mut ministry, &[("external_servers", external_servers.clone()), file.clone(), quiet.clone()]).await;
    join_network(&mut externals, &[("role", "external".into()), ("external_servers", external_servers), file, quiet])
        .await;
    let externals_admin = externals.admin_token().await;
    let (agent_id, agent) = ministry.register("agent").await;
    let (guest_id, guest) = externals.register("guest").await;
    let room = ministry.create_room(&agent, json!({ "room_version": "11" })).await;
    ministry.put_state(&agent, &room, "im.vector.room.access_rules", "", json!({ "rule": "unrestricted" })).await;
    let answer = invite_email(&ministry, &agent, &room, "guest@gmail.example").await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    wait_invited(&externals, "guest@gmail.example", true).await;
    // The ministry has the externals' node's key (its transactions verify while it is cut off).
    let since = ministry.sync_token(&agent).await;
    send_note(&externals, &guest, &agent_id, "avant").await;
    let since = wait_note(&ministry, &agent, &since, "avant").await;

    // The ministry cannot reach the externals' node; the address gets bound there, which the
    // ministry hears (the note sent after it comes in the same queue): its onbind fails.
    to_externals.set_cut(true);
    bind_by_admin(&externals, &externals_admin, &guest_id, "guest@gmail.example").await;
    send_note(&externals, &guest, &agent_id, "lié").await;
    wait_note(&ministry, &agent, &since, "lié").await;
    // Restarted, the ministry still has the onbind to do, and does it once it can. Now the
    // externals' node cannot reach the ministry: the exchange the onbind asks for fails.
    ministry.stop().await;
    to_ministry.set_cut(true);
    to_externals.set_cut(false);
    let refused = to_ministry.refused();
    ministry.restart().await;
    to_ministry.wait_refused_more_than(refused, SYNC_WAIT).await;
    // The way open again, the externals' node exchanges the invite on its own: the guest is
    // invited, with the signed token of the invite, and joins.
    to_ministry.set_cut(false);
    let member = wait_for_invite(&externals, &guest, &guest_id, &room).await;
    assert_eq!(member["third_party_invite"]["signed"]["mxid"], guest_id.as_str(), "{member}");
    externals.join(&guest, &room, &[names[0].to_owned()]).await;
}
