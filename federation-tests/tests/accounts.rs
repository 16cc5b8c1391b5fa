//! An agent's account across the nodes of a network (docs/accounts.md). The user directory: every
//! agent of every node joins one discovery room — Hemicycle nodes through
//! `directory.discovery_room`, a Synapse node through its `auto_join_rooms` — so each node's
//! directory finds the agents of the others; an agent who hides (`im.vector.hide_profile`) leaves
//! the room and is found on no node. Expiry: an expired account is refused on its own node's
//! client API only; federation keeps delivering to it. By email address: the address's node, as
//! the network's domain map names it, is asked for its agent.

use std::time::{Duration, Instant};

use hemicycle_federation_tests::{enc, Node, SYNC_WAIT};
use reqwest::Method;
use serde_json::{json, Value};

/// Writes a section into a Hemicycle node's configuration and restarts it.
async fn set_section(node: &mut Node, name: &str, settings: &[(&str, toml::Value)]) {
    let text = std::fs::read_to_string(node.config_path()).expect("read the node's config");
    let mut root: toml::Table = toml::from_str(&text).expect("the node's config");
    let mut section = toml::Table::new();
    for (key, value) in settings {
        section.insert((*key).to_owned(), value.clone());
    }
    root.insert(name.to_owned(), toml::Value::Table(section));
    std::fs::write(node.config_path(), toml::to_string(&root).expect("serialize")).expect("write the config");
    node.restart().await;
}

async fn set_discovery_room(node: &mut Node, room: &str) {
    set_section(node, "directory", &[("discovery_room", room.into())]).await;
}

/// The user ids `node`'s directory answers `token`'s search for `term` with.
async fn search(node: &Node, token: &str, term: &str) -> Vec<String> {
    let body = json!({ "search_term": term, "limit": 50 });
    let (status, found) =
        node.call(Method::POST, Some(token), "/_matrix/client/v3/user_directory/search", Some(&body)).await;
    assert_eq!(status, 200, "{}", found);
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["user_id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `user` is (or is no longer) among the results of `term` on `node`. Directories
/// take in another node's membership change when its event arrives, and Synapse's indexes it a
/// moment later, with nothing a client can wait on: the search is asked again until it says so.
async fn wait_found(node: &Node, token: &str, term: &str, user: &str, found: bool) {
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        let results = search(node, token, term).await;
        if results.iter().any(|u| u == user) == found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: searching {term:?}, {user} {} found: {results:?}",
            node.server_name(),
            if found { "never" } else { "still" }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn hide(node: &Node, token: &str, user: &str, hidden: bool) {
    let path = format!("/_matrix/client/v3/user/{}/account_data/im.vector.hide_profile", enc(user));
    node.put(token, &path, json!({ "hide_profile": hidden })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colleague_of_another_node_is_found_until_they_hide() {
    let mut interior = Node::start("interior", &[]).await;
    let mut finances = Node::start("finances", &[]).await;
    // The network's discovery room, made by the operator of one node, open to every agent.
    let (_, operator) = interior.register("operator").await;
    let created: Value = interior
        .post(
            &operator,
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat", "room_alias_name": "discovery", "room_version": "11" }),
        )
        .await;
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    let alias = format!("#discovery:{}", interior.server_name());
    let synapse = Node::start_synapse_with(
        "directory",
        &format!("\nauto_join_rooms: [\"{alias}\"]\nautocreate_auto_join_rooms: false\n"),
    )
    .await;
    set_discovery_room(&mut interior, &room).await;
    set_discovery_room(&mut finances, &alias).await;

    let (alice_id, alice) = finances.register("alice").await;
    finances.set_displayname(&alice, &alice_id, "Alice Martin").await;
    let (_, dave) = finances.register("dave").await;
    let (_, bob) = interior.register("bob").await;
    let (carol_id, carol) = synapse.register("carol").await;

    // Found from the other Hemicycle node and from Synapse, by name and by id; and the Synapse
    // agent found from Hemicycle (its own node joined it to the room).
    wait_found(&interior, &bob, "martin", &alice_id, true).await;
    wait_found(&synapse, &carol, "alice", &alice_id, true).await;
    wait_found(&finances, &alice, "carol", &carol_id, true).await;
    wait_found(&finances, &dave, "martin", &alice_id, true).await;

    // The room is the directory's: no client is shown it.
    for (node, token) in [(&interior, &bob), (&finances, &alice), (&interior, &operator)] {
        assert!(
            !node.joined_rooms(token).await.contains(&room),
            "{}: /joined_rooms lists the room",
            node.server_name()
        );
        let synced = node.sync(token, None, 0).await;
        assert!(synced["rooms"]["join"].get(&room).is_none(), "{}: sync shows the room: {synced}", node.server_name());
    }

    // Hidden: out of the room, so found on no node.
    hide(&finances, &alice, &alice_id, true).await;
    wait_found(&interior, &bob, "martin", &alice_id, false).await;
    wait_found(&synapse, &carol, "alice", &alice_id, false).await;
    wait_found(&finances, &dave, "martin", &alice_id, false).await;
    let members = interior.joined_members(&operator, &room).await;
    assert!(!members.contains(&alice_id), "alice left the room: {members:?}");
    assert!(members.contains(&carol_id), "carol is still in it: {members:?}");

    // Shown again: back in the room, found again.
    hide(&finances, &alice, &alice_id, false).await;
    wait_found(&interior, &bob, "martin", &alice_id, true).await;
    wait_found(&synapse, &carol, "alice", &alice_id, true).await;

    // Restarted while the alias's node is away, the node knows the room from the alias's last
    // resolution: its clients are not shown the room while the alias cannot be resolved again.
    interior.stop().await;
    finances.restart().await;
    assert!(!finances.joined_rooms(&alice).await.contains(&room), "/joined_rooms lists the room after a restart");
    let synced = finances.sync(&alice, None, 0).await;
    assert!(synced["rooms"]["join"].get(&room).is_none(), "sync shows the room after a restart: {synced}");
}

/// An expired account is refused on its own node's client API, but its node keeps taking in what
/// other nodes send it: a message in its room and an invite made while it is expired are there
/// once it is renewed.
#[tokio::test]
async fn federation_keeps_delivering_to_an_expired_account() {
    let (interior, mut finances) = tokio::join!(Node::start("interior", &[]), Node::start("finances", &[]));
    let period = [("period", "30d".into()), ("exclude", toml::Value::Array(vec!["@root:.*".into()]))];
    set_section(&mut finances, "account_validity", &period).await;
    let root = finances.admin_token().await;
    let (alice_id, alice) = finances.register("alice").await;
    let (_, bob) = interior.register("bob").await;
    let room = interior.create_room(&bob, json!({ "preset": "private_chat", "invite": [alice_id] })).await;
    finances.join(&alice, &room, &[interior.server_name()]).await;
    let since = finances.sync_token(&alice).await;

    let validity = "/_synapse/admin/v1/account_validity/validity";
    finances.post(&root, validity, json!({ "user_id": alice_id, "expiration_ts": 1000 })).await;
    let (status, refused) = finances.call(Method::GET, Some(&alice), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, refused["errcode"].as_str()), (403, Some("ORG_MATRIX_EXPIRED_ACCOUNT")), "{refused}");

    interior.send_text(&bob, &room, "pendant l'expiration").await;
    let (status, invited) = interior
        .call(Method::POST, Some(&bob), "/_matrix/client/v3/createRoom", Some(&json!({ "invite": [alice_id] })))
        .await;
    assert_eq!(status, 200, "the expired account's node signs its invite: {invited}");
    let second = invited["room_id"].as_str().unwrap().to_owned();

    finances.post(&root, validity, json!({ "user_id": alice_id })).await;
    finances.wait_for_bodies(&alice, &room, &since, &["pendant l'expiration".to_owned()]).await;
    let synced = finances.sync(&alice, Some(&since), 0).await;
    assert!(synced["rooms"]["invite"].get(&second).is_some(), "the invite made while expired: {synced}");
}

/// Binds an email address to a user with the admin API (no validation mail).
pub(crate) async fn bind(node: &Node, admin: &str, user: &str, address: &str) {
    let path = format!("/_synapse/admin/v2/users/{}", enc(user));
    node.put(admin, &path, json!({ "threepids": [{ "medium": "email", "address": address }] })).await;
}

/// An agent types a colleague's address and finds them though the colleague is on another node
/// and shares no room with them: the domain map names the colleague's node, which is asked.
/// Agents who hide, expired accounts and addresses bound to no one are found nowhere, and a
/// Synapse node of the network, which does not know the query, makes the search find nothing
/// rather than fail.
#[tokio::test]
async fn a_colleague_of_another_node_is_found_by_email_address() {
    let domains = tempfile::tempdir().expect("temp dir");
    let map = domains.path().join("domains.toml");
    std::fs::write(&map, "[domains]\n").unwrap();
    let network = ("network.domains_file", toml::Value::from(map.to_string_lossy().into_owned()));
    let interior_settings = [network.clone()];
    let validity = [
        network.clone(),
        ("account_validity.period", "30d".into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:.*".into()])),
    ];
    let (interior, finances, synapse) = tokio::join!(
        Node::start_with("interior", None, &[], &interior_settings),
        Node::start_with("finances", None, &[], &validity),
        Node::start_synapse("email-lookup"),
    );
    // The map is read again when it changes: the nodes' names are known only now.
    std::fs::write(
        &map,
        format!(
            "[domains]\n\"interieur.gouv.fr\" = \"{}\"\n\"finances.gouv.fr\" = \"{}\"\n\"synapse.gouv.fr\" = \"{}\"\n",
            interior.server_name(),
            finances.server_name(),
            synapse.server_name()
        ),
    )
    .unwrap();
    let root = finances.admin_token().await;
    let (alice_id, alice) = finances.register("alice").await;
    finances.set_displayname(&alice, &alice_id, "Alice Martin").await;
    bind(&finances, &root, &alice_id, "alice.martin@finances.gouv.fr").await;
    let (carol_id, carol) = finances.register("carol").await;
    bind(&finances, &root, &carol_id, "carol@finances.gouv.fr").await;
    hide(&finances, &carol, &carol_id, true).await;
    let (erin_id, _) = finances.register("erin").await;
    bind(&finances, &root, &erin_id, "erin@finances.gouv.fr").await;
    let validity_path = "/_synapse/admin/v1/account_validity/validity";
    finances.post(&root, validity_path, json!({ "user_id": erin_id, "expiration_ts": 1000 })).await;
    let (_, bob) = interior.register("bob").await;

    let body = json!({ "search_term": "Alice.Martin@Finances.gouv.fr", "limit": 10 });
    let found: Value = interior.post(&bob, "/_matrix/client/v3/user_directory/search", body).await;
    let results = found["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(results[0]["user_id"], alice_id.as_str(), "{found}");
    assert_eq!(results[0]["display_name"], "Alice Martin", "{found}");

    for term in [
        "alice.martin@finances.gouv",
        "carol@finances.gouv.fr",
        "erin@finances.gouv.fr",
        "nobody@finances.gouv.fr",
        "someone@synapse.gouv.fr",
        "someone@elsewhere.example",
    ] {
        assert_eq!(search(&interior, &bob, term).await, Vec::<String>::new(), "{term}");
    }

    // Shown again, the hidden agent is found; hidden, the found one is no more.
    hide(&finances, &carol, &carol_id, false).await;
    assert_eq!(search(&interior, &bob, "carol@finances.gouv.fr").await, vec![carol_id.clone()]);
    hide(&finances, &alice, &alice_id, true).await;
    assert_eq!(search(&interior, &bob, "alice.martin@finances.gouv.fr").await, Vec::<String>::new());
}
