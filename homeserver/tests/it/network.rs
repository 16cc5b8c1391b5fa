//! A node of a ministry network (`[network]`, docs/network.md) on its own: the room access rules
//! on the events its users send, room creation's defaults, publication, the last admin's leave.
//! The rules on events received from other nodes are in federation-tests (`network.rs`).

use reqwest::Method;
use serde_json::{json, Value};

use super::common::{api, register_raw, urlencode, TestServer};

const EXTERNAL: &str = "externes.example";
const REFUSED: &str = "This event is not allowed in this context";

fn network_server(extra: &[(&str, toml::Value)]) -> TestServer {
    let mut settings = vec![("network.external_servers", toml::Value::Array(vec![EXTERNAL.into()]))];
    settings.extend(extra.iter().cloned());
    TestServer::start_with(&settings)
}

async fn create(server: &TestServer, token: &str, body: Value) -> String {
    let (status, answer) = api(server, Method::POST, Some(token), "/_matrix/client/v3/createRoom", Some(body)).await;
    assert_eq!(status, 200, "createRoom: {answer}");
    answer["room_id"].as_str().unwrap().to_owned()
}

async fn put_state(server: &TestServer, token: &str, room: &str, kind: &str, content: Value) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", urlencode(room));
    api(server, Method::PUT, Some(token), &path, Some(content)).await
}

async fn state(server: &TestServer, token: &str, room: &str, kind: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", urlencode(room));
    let (status, content) = api(server, Method::GET, Some(token), &path, None).await;
    assert_eq!(status, 200, "{kind}: {content}");
    content
}

async fn invite(server: &TestServer, token: &str, room: &str, user: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(room));
    api(server, Method::POST, Some(token), &path, Some(json!({ "user_id": user }))).await
}

async fn join(server: &TestServer, token: &str, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/join", urlencode(room));
    let (status, body) = api(server, Method::POST, Some(token), &path, Some(json!({}))).await;
    assert_eq!(status, 200, "join: {body}");
}

fn refused(answer: &(u16, Value)) {
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert_eq!(answer.1["errcode"], "M_FORBIDDEN", "{}", answer.1);
    assert_eq!(answer.1["error"], REFUSED, "{}", answer.1);
}

fn accepted(answer: &(u16, Value)) {
    assert_eq!(answer.0, 200, "{}", answer.1);
}

/// A new room gets `restricted` and the network's power levels; external users can neither be
/// invited nor given power; the rule changes only from restricted to unrestricted; a public room
/// is not encrypted, and turns private only once encrypted; only restricted rooms are published.
#[tokio::test]
async fn access_rules_of_a_room() {
    let server = network_server(&[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let external = format!("@guest:{EXTERNAL}");

    let room = create(&server, &alice, json!({})).await;
    assert_eq!(state(&server, &alice, &room, "im.vector.room.access_rules").await, json!({ "rule": "restricted" }));
    let power = state(&server, &alice, &room, "m.room.power_levels").await;
    assert_eq!(power["invite"], 50, "{power}");
    assert_eq!(power["state_default"], 100, "{power}");
    assert_eq!(power["events"]["m.call.member"], 0, "{power}");
    assert_eq!(power["events"]["org.matrix.msc3401.call.member"], 0, "{power}");
    assert_eq!(power["events"]["m.beacon_info"], 0, "{power}");
    assert_eq!(power["events"]["org.matrix.msc3672.beacon_info"], 0, "{power}");
    let visibility = state(&server, &alice, &room, "m.room.history_visibility").await;
    assert_eq!(visibility["history_visibility"], "invited");

    refused(&invite(&server, &alice, &room, &external).await);
    refused(&put_state(&server, &alice, &room, "im.vector.room.access_rules", json!({ "rule": "direct" })).await);
    refused(&put_state(&server, &alice, &room, "im.vector.room.access_rules", json!({ "rule": "open" })).await);
    accepted(
        &put_state(&server, &alice, &room, "im.vector.room.access_rules", json!({ "rule": "unrestricted" })).await,
    );
    refused(&put_state(&server, &alice, &room, "im.vector.room.access_rules", json!({ "rule": "restricted" })).await);

    let mut power = state(&server, &alice, &room, "m.room.power_levels").await;
    power["users"][&external] = json!(50);
    refused(&put_state(&server, &alice, &room, "m.room.power_levels", power.clone()).await);
    power["users"][&external] = json!(0);
    power["users_default"] = json!(10);
    refused(&put_state(&server, &alice, &room, "m.room.power_levels", power.clone()).await);
    power["users_default"] = json!(0);
    accepted(&put_state(&server, &alice, &room, "m.room.power_levels", power).await);

    // Unrestricted: not in the public directory.
    let path = format!("/_matrix/client/v3/directory/list/room/{}", urlencode(&room));
    let (status, body) = api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "visibility": "public" }))).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (403, Some("M_UNKNOWN"), Some("Not allowed to publish room"))
    );

    accepted(&put_state(&server, &alice, &room, "m.room.join_rules", json!({ "join_rule": "public" })).await);
    refused(
        &put_state(&server, &alice, &room, "m.room.encryption", json!({ "algorithm": "m.megolm.v1.aes-sha2" })).await,
    );
    refused(&put_state(&server, &alice, &room, "m.room.join_rules", json!({ "join_rule": "invite" })).await);

    // A restricted room may be published; creating an unrestricted public room is refused.
    let public = create(&server, &alice, json!({ "visibility": "public", "preset": "public_chat" })).await;
    assert_eq!(state(&server, &alice, &public, "m.room.history_visibility").await["history_visibility"], "shared");
    // Published, it stays restricted.
    refused(
        &put_state(&server, &alice, &public, "im.vector.room.access_rules", json!({ "rule": "unrestricted" })).await,
    );
    let (status, body) = api(
        &server,
        Method::POST,
        Some(&alice),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "visibility": "public",
                     "initial_state": [{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }] })),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (403, Some("M_UNKNOWN"), Some("Room visibility value not allowed."))
    );
}

/// `is_direct` rooms get `direct`: two people, no name, topic or avatar, never public; a rule
/// that does not match `is_direct`, or power levels that loosen the network's, are refused at
/// creation with the reference's 400s.
#[tokio::test]
async fn direct_chats() {
    let server = network_server(&[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let (carol_id, _) = register_raw(&server, "carol").await;

    let room = create(&server, &alice, json!({ "is_direct": true, "invite": [bob_id] })).await;
    assert_eq!(state(&server, &alice, &room, "im.vector.room.access_rules").await, json!({ "rule": "direct" }));
    join(&server, &bob, &room).await;
    refused(&put_state(&server, &alice, &room, "m.room.name", json!({ "name": "us" })).await);
    refused(&put_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "us" })).await);
    refused(&put_state(&server, &alice, &room, "m.room.avatar", json!({ "url": "mxc://localhost/a" })).await);
    refused(&put_state(&server, &alice, &room, "m.room.join_rules", json!({ "join_rule": "public" })).await);
    refused(&invite(&server, &alice, &room, &carol_id).await);

    let bad = [
        (
            json!({ "is_direct": true, "initial_state": [{ "type": "im.vector.room.access_rules", "content": { "rule": "restricted" } }] }),
            "Invalid access rule",
        ),
        (
            json!({ "initial_state": [{ "type": "im.vector.room.access_rules", "content": { "rule": "direct" } }] }),
            "Invalid access rule",
        ),
        (json!({ "is_direct": true, "preset": "public_chat" }), "Invalid access rule"),
        (json!({ "power_level_content_override": { "invite": 0 } }), "Invalid power levels content override"),
        (
            json!({ "initial_state": [{ "type": "m.room.power_levels", "content": { "state_default": 50 } }] }),
            "Invalid power levels content",
        ),
    ];
    for (body, message) in bad {
        let (status, answer) =
            api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(body.clone())).await;
        assert_eq!(
            (status, answer["errcode"].as_str(), answer["error"].as_str()),
            (400, Some("M_UNKNOWN"), Some(message)),
            "{body}"
        );
    }
}

/// The network's bypass list and this node's server admins are exempt from every rule; others
/// are not.
#[tokio::test]
async fn the_bypass_list_is_exempt() {
    let server = network_server(&[("network.access_rules_bypass", toml::Value::Array(vec!["@root:localhost".into()]))]);
    let (_, root) = register_raw(&server, "root").await;
    let (_, alice) = register_raw(&server, "alice").await;
    let chief = admin_token(&server, "chief").await;
    for (token, exempt) in [(&alice, false), (&root, true), (&chief, true)] {
        let room = create(&server, token, json!({})).await;
        let changed =
            put_state(&server, token, &room, "im.vector.room.access_rules", json!({ "rule": "direct" })).await;
        let named = put_state(&server, token, &room, "m.room.name", json!({ "name": "exempt" })).await;
        if exempt {
            accepted(&changed);
            accepted(&named);
        } else {
            refused(&changed);
        }
    }
}

/// When the last admin leaves, the moderators become admins; with none, in a restricted room,
/// everyone does.
#[tokio::test]
async fn the_last_admin_leaving_promotes_others() {
    let server = network_server(&[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let (carol_id, carol) = register_raw(&server, "carol").await;

    let room = create(&server, &alice, json!({ "room_version": "11" })).await;
    for (id, token) in [(&bob_id, &bob), (&carol_id, &carol)] {
        accepted(&invite(&server, &alice, &room, id).await);
        join(&server, token, &room).await;
    }
    let mut power = state(&server, &alice, &room, "m.room.power_levels").await;
    power["users"][&bob_id] = json!(50);
    accepted(&put_state(&server, &alice, &room, "m.room.power_levels", power).await);
    let path = format!("/_matrix/client/v3/rooms/{}/leave", urlencode(&room));
    accepted(&api(&server, Method::POST, Some(&alice), &path, Some(json!({}))).await);
    let power = state(&server, &bob, &room, "m.room.power_levels").await;
    assert_eq!(power["users"][&bob_id], 100, "the moderator is promoted: {power}");
    assert!(power["users"].get(&carol_id).is_none(), "{power}");

    // Bob, now the last admin, leaves a room with no moderator: everyone becomes an admin.
    accepted(&api(&server, Method::POST, Some(&bob), &path, Some(json!({}))).await);
    let power = state(&server, &carol, &room, "m.room.power_levels").await;
    assert_eq!(power["users_default"], 100, "{power}");
}

/// The last admin who lowers their own level promotes others in the same change, as when they
/// leave: the moderator first; with none, in a restricted room, everyone (the demoted admin
/// keeps the level they chose).
#[tokio::test]
async fn the_last_admin_demoting_themselves_promotes_others() {
    let server = network_server(&[]);
    let (alice_id, alice) = register_raw(&server, "alice").await;
    let (bob_id, bob) = register_raw(&server, "bob").await;
    let (carol_id, carol) = register_raw(&server, "carol").await;

    let room = create(&server, &alice, json!({ "room_version": "11" })).await;
    for (id, token) in [(&bob_id, &bob), (&carol_id, &carol)] {
        accepted(&invite(&server, &alice, &room, id).await);
        join(&server, token, &room).await;
    }
    let mut power = state(&server, &alice, &room, "m.room.power_levels").await;
    power["users"][&bob_id] = json!(50);
    accepted(&put_state(&server, &alice, &room, "m.room.power_levels", power.clone()).await);
    power["users"][&alice_id] = json!(50);
    accepted(&put_state(&server, &alice, &room, "m.room.power_levels", power).await);
    let power = state(&server, &carol, &room, "m.room.power_levels").await;
    assert_eq!(power["users"][&alice_id], 50, "alice's own change holds: {power}");
    assert_eq!(power["users"][&bob_id], 100, "the moderator is promoted with it: {power}");

    // Another admin left in the change: nobody else is promoted.
    let mut handed = power.clone();
    handed["users"][&carol_id] = json!(100);
    handed["users"][&bob_id] = json!(0);
    accepted(&put_state(&server, &bob, &room, "m.room.power_levels", handed).await);
    let power = state(&server, &carol, &room, "m.room.power_levels").await;
    assert_eq!((&power["users"][&bob_id], &power["users"][&carol_id]), (&json!(0), &json!(100)), "{power}");
    assert_eq!(power["users_default"], 0, "{power}");

    // Carol, the last admin, with no moderator left: everyone becomes an admin, Carol stays at 10.
    let mut alone = power.clone();
    alone["users"] = json!({ carol_id.clone(): 100 });
    accepted(&put_state(&server, &carol, &room, "m.room.power_levels", alone.clone()).await);
    alone["users"] = json!({ carol_id.clone(): 10 });
    accepted(&put_state(&server, &carol, &room, "m.room.power_levels", alone).await);
    let power = state(&server, &carol, &room, "m.room.power_levels").await;
    assert_eq!(power["users_default"], 100, "{power}");
    assert_eq!(power["users"][&carol_id], 10, "{power}");
}

/// Room version 12 creators are above every level: an external user may be one only in a direct
/// chat (whose two people the reference makes admins anyway); a room with an external creator
/// cannot be opened to external users.
#[tokio::test]
async fn an_external_user_is_never_a_creator_of_a_room_open_to_them() {
    let server = network_server(&[("network.access_rules_bypass", toml::Value::Array(vec!["@root:localhost".into()]))]);
    let (_, root) = register_raw(&server, "root").await;
    let (alice_id, alice) = register_raw(&server, "alice").await;
    let guest = format!("@guest:{EXTERNAL}");

    let body = json!({ "room_version": "12", "creation_content": { "additional_creators": [guest] } });
    let (status, answer) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(body)).await;
    assert_eq!(
        (status, answer["errcode"].as_str(), answer["error"].as_str()),
        (400, Some("M_UNKNOWN"), Some("Invalid access rule")),
        "{answer}"
    );
    let direct =
        json!({ "room_version": "12", "is_direct": true, "creation_content": { "additional_creators": [guest] } });
    let room = create(&server, &alice, direct).await;
    assert_eq!(state(&server, &alice, &room, "im.vector.room.access_rules").await["rule"], "direct");

    // A room made by an exempt user with an external co-creator: its other creator cannot open it.
    let body = json!({ "room_version": "12", "creation_content": { "additional_creators": [guest, alice_id] } });
    let room = create(&server, &root, body).await;
    accepted(&invite(&server, &root, &room, &alice_id).await);
    join(&server, &alice, &room).await;
    refused(&put_state(&server, &alice, &room, "im.vector.room.access_rules", json!({ "rule": "unrestricted" })).await);
    let plain = create(&server, &alice, json!({ "room_version": "12" })).await;
    accepted(
        &put_state(&server, &alice, &plain, "im.vector.room.access_rules", json!({ "rule": "unrestricted" })).await,
    );
}

/// The admin API shows the externals' users as `user_type: external` (Synapse's field, as a
/// Synapse of the network configured with that user type shows them), and filters them out
/// with `not_user_type=external`.
#[tokio::test]
async fn the_admin_api_marks_external_users() {
    let server = TestServer::start_with(&[
        ("server_name", EXTERNAL.into()),
        ("network.role", "external".into()),
        ("network.external_servers", toml::Value::Array(vec![EXTERNAL.into()])),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    let (status, logged) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(login)).await;
    assert_eq!(status, 200, "{logged}");
    let root = logged["access_token"].as_str().unwrap().to_owned();
    let (guest_id, _) = register_raw(&server, "guest").await;
    let (bot_id, _) = register_raw(&server, "bot").await;
    let admin = |path: String| {
        let (server, root) = (&server, &root);
        async move { api(server, Method::GET, Some(root), &format!("/_synapse/admin{path}"), None).await }
    };
    let put = json!({ "user_type": "bot" });
    let path = format!("/_synapse/admin/v2/users/{}", urlencode(&bot_id));
    let (status, body) = api(&server, Method::PUT, Some(&root), &path, Some(put)).await;
    assert_eq!(status, 200, "{body}");

    let (status, user) = admin(format!("/v2/users/{}", urlencode(&guest_id))).await;
    assert_eq!((status, &user["user_type"]), (200, &json!("external")), "{user}");
    let (_, list) = admin("/v2/users".to_owned()).await;
    let types: Vec<(String, Value)> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().to_owned(), u["user_type"].clone()))
        .collect();
    assert!(types.contains(&(guest_id.clone(), json!("external"))), "{types:?}");
    assert!(types.contains(&(bot_id.clone(), json!("bot"))), "{types:?}");
    let (_, list) = admin("/v2/users?not_user_type=external".to_owned()).await;
    let names: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![bot_id.as_str()], "{list}");
}

/// The user directory marks users of external servers with `user_type: "external"` (here found by
/// their whole email address, on the externals' node where every user is one); a part of an
/// address finds nobody.
#[tokio::test]
async fn the_user_directory_marks_external_users() {
    let server = TestServer::start_with(&[
        ("server_name", EXTERNAL.into()),
        ("network.role", "external".into()),
        ("network.external_servers", toml::Value::Array(vec![EXTERNAL.into()])),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    let root = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(login)).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (guest_id, _) = register_raw(&server, "guest").await;
    let (_, other) = register_raw(&server, "other").await;
    let address = json!({ "threepids": [{ "medium": "email", "address": "jean.dupont@partenaire.example" }] });
    let path = format!("/_synapse/admin/v2/users/{}", urlencode(&guest_id));
    let (status, body) = api(&server, Method::PUT, Some(&root), &path, Some(address)).await;
    assert_eq!(status, 200, "{body}");
    let search = |term: &'static str| {
        let (server, other) = (&server, &other);
        async move {
            let body = json!({ "search_term": term });
            let (status, found) =
                api(server, Method::POST, Some(other), "/_matrix/client/v3/user_directory/search", Some(body)).await;
            assert_eq!(status, 200, "{found}");
            found["results"].as_array().unwrap().clone()
        }
    };
    let found = search("Jean.Dupont@partenaire.example").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["user_id"], json!(guest_id));
    assert_eq!(found[0]["user_type"], "external", "{found:?}");
    assert!(search("dupont@partenaire").await.is_empty(), "a part of an address finds nobody");
}

fn write_domains(path: &std::path::Path, text: &str) {
    // Written aside and renamed, as an editor saves: a reader never sees half a file.
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

async fn info(server: &TestServer, endpoint: &str, address: &str) -> Value {
    let path = format!("/_matrix/identity/api/v1/{endpoint}?medium=email&address={}", urlencode(address));
    let (status, body) = api(server, Method::GET, None, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The email-domain map: the identity `info` endpoints answer from it, and answer what the file
/// says now (edited while the server runs; an address bound here that the map now sends
/// elsewhere is told both, `hs` and `new_hs`); binding an address that belongs to another node, and
/// a third-party invite of an external address into a restricted room, are refused with the
/// reference's errors.
#[tokio::test]
async fn the_domain_map() {
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.toml");
    write_domains(
        &domains,
        &format!(
            "[domains]\n\"interieur.gouv.fr\" = \"localhost\"\n\"*.gouv.fr\" = \"finances.example\"\n\
             [fallback]\nserver = \"{EXTERNAL}\"\n"
        ),
    );
    let server = network_server(&[("network.domains_file", domains.to_string_lossy().into_owned().into())]);
    let (_, alice) = register_raw(&server, "alice").await;

    assert_eq!(info(&server, "info", "Jean@interieur.gouv.fr").await, json!({ "hs": "localhost", "invited": false }));
    assert_eq!(info(&server, "info", "anne@budget.finances.gouv.fr").await["hs"], "finances.example");
    assert_eq!(info(&server, "info", "someone@gmail.com").await, json!({ "hs": EXTERNAL, "invited": false }));
    assert_eq!(
        info(&server, "internal-info", "someone@gmail.com").await,
        json!({ "hs": EXTERNAL, "requires_invite": true, "invited": false })
    );
    assert_eq!(info(&server, "internal-info", "jean@interieur.gouv.fr").await["requires_invite"], false);

    // Binding: only addresses the map sends here.
    let request = |email: &str| json!({ "client_secret": "secret", "email": email, "send_attempt": 1 });
    let path = "/_matrix/client/v3/account/3pid/email/requestToken";
    for email in ["someone@gmail.com", "anne@budget.finances.gouv.fr"] {
        let (status, body) = api(&server, Method::POST, Some(&alice), path, Some(request(email))).await;
        assert_eq!(
            (status, body["errcode"].as_str(), body["error"].as_str()),
            (403, Some("M_THREEPID_DENIED"), Some("Your email domain is not authorized on this server")),
            "{email}"
        );
    }
    let (_, body) = api(&server, Method::POST, Some(&alice), path, Some(request("jean@interieur.gouv.fr"))).await;
    assert_ne!(body["error"], "Your email domain is not authorized on this server", "{body}");

    // Third-party invites: no external address in a restricted room, nor anything but an email.
    let room = create(&server, &alice, json!({})).await;
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room));
    for (medium, address) in [("email", "someone@gmail.com"), ("msisdn", "33600000000")] {
        let body = json!({ "id_server": "id.example", "id_access_token": "t", "medium": medium, "address": address });
        let (status, answer) = api(&server, Method::POST, Some(&alice), &invite_path, Some(body)).await;
        assert_eq!(
            (status, answer["errcode"].as_str(), answer["error"].as_str()),
            (403, Some("M_FORBIDDEN"), Some("This third-party identifier can not be invited in this room")),
            "{address}"
        );
    }
    let body = json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email", "address": "jean@interieur.gouv.fr" });
    let (_, answer) = api(&server, Method::POST, Some(&alice), &invite_path, Some(body)).await;
    assert_ne!(answer["error"], "This third-party identifier can not be invited in this room", "{answer}");

    // Jean's address is bound to his account here (by the operator).
    let root = admin_token(&server, "root").await;
    let (jean_id, _) = register_raw(&server, "jean").await;
    let bind = json!({ "threepids": [{ "medium": "email", "address": "jean@interieur.gouv.fr" }] });
    let path_jean = format!("/_synapse/admin/v2/users/{}", urlencode(&jean_id));
    let (status, body) = api(&server, Method::PUT, Some(&root), &path_jean, Some(bind)).await;
    assert_eq!(status, 200, "{body}");
    let answer = info(&server, "info", "jean@interieur.gouv.fr").await;
    assert_eq!((&answer["hs"], answer.get("new_hs")), (&json!("localhost"), None), "{answer}");

    // The operator moves the domain to another node: the next answer says so, no restart. Jean,
    // bound here, keeps his node as `hs`, with the map's in `new_hs`, as Tchap's identity
    // service answers.
    write_domains(
        &domains,
        &format!("[domains]\n\"interieur.gouv.fr\" = \"interieur.example\"\n[fallback]\nserver = \"{EXTERNAL}\"\n"),
    );
    assert_eq!(info(&server, "info", "paul@interieur.gouv.fr").await["hs"], "interieur.example");
    for endpoint in ["info", "internal-info"] {
        let answer = info(&server, endpoint, "jean@interieur.gouv.fr").await;
        assert_eq!((&answer["hs"], &answer["new_hs"]), (&json!("localhost"), &json!("interieur.example")), "{answer}");
    }
    let (status, _) = api(&server, Method::POST, Some(&alice), path, Some(request("paul@interieur.gouv.fr"))).await;
    assert_eq!(status, 403);
    // A broken file keeps the last good map.
    write_domains(&domains, "[domains\n");
    assert_eq!(info(&server, "info", "paul@interieur.gouv.fr").await["hs"], "interieur.example");
}

/// Creates a server admin `name` with the operator's command and signs it in; answers its token.
async fn admin_token(server: &TestServer, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", name, "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": "root-pw" });
    let (status, logged) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(login)).await;
    assert_eq!(status, 200, "{logged}");
    logged["access_token"].as_str().unwrap().to_owned()
}

/// The externals' node: its users cannot create rooms.
#[tokio::test]
async fn external_users_cannot_create_rooms() {
    let server = TestServer::start_with(&[
        ("server_name", EXTERNAL.into()),
        ("network.role", "external".into()),
        ("network.external_servers", toml::Value::Array(vec![EXTERNAL.into()])),
    ]);
    let (_, guest) = register_raw(&server, "guest").await;
    let (status, body) =
        api(&server, Method::POST, Some(&guest), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (403, Some("M_FORBIDDEN"), Some("You are not permitted to create rooms")),
        "{body}"
    );
}

/// With `external_users_create_rooms`, the externals' users get past the creation check, but
/// their own join of the new room is judged as in a restricted room and refused (as with Tchap's
/// module); and they cannot publish a room (here a restricted one, which the node's exempt admin
/// made and let them into, with the power to publish it).
#[tokio::test]
async fn external_users_cannot_publish_rooms() {
    let server = TestServer::start_with(&[
        ("server_name", EXTERNAL.into()),
        ("network.role", "external".into()),
        ("network.external_servers", toml::Value::Array(vec![EXTERNAL.into()])),
        ("network.external_users_create_rooms", true.into()),
    ]);
    let (guest_id, guest) = register_raw(&server, "guest").await;
    // Allowed to create rooms, an external user is still never the creator of a room open to
    // them only as a direct chat (room version 12 creators are admins).
    let (status, body) =
        api(&server, Method::POST, Some(&guest), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (400, Some("M_UNKNOWN"), Some("Invalid access rule")),
        "{body}"
    );

    let root = admin_token(&server, "root").await;
    let room = create(&server, &root, json!({})).await;
    accepted(&invite(&server, &root, &room, &guest_id).await);
    join(&server, &guest, &room).await;
    let mut power = state(&server, &root, &room, "m.room.power_levels").await;
    power["users"][&guest_id] = json!(100);
    accepted(&put_state(&server, &root, &room, "m.room.power_levels", power).await);
    let path = format!("/_matrix/client/v3/directory/list/room/{}", urlencode(&room));
    let (status, body) = api(&server, Method::PUT, Some(&guest), &path, Some(json!({ "visibility": "public" }))).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (403, Some("M_UNKNOWN"), Some("Not allowed to publish room")),
        "{body}"
    );
}

/// The state events of `kind` in `room`: (state key, content).
async fn state_of_kind(server: &TestServer, token: &str, room: &str, kind: &str) -> Vec<(String, Value)> {
    let path = format!("/_matrix/client/v3/rooms/{}/state", urlencode(room));
    let (status, list) = api(server, Method::GET, Some(token), &path, None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"].clone()))
        .collect()
}

/// Proves `address` by the emailed code and adds it to the account (`name`, password `pw`).
async fn bind_email(
    server: &TestServer,
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, String)>,
    token: &str,
    name: &str,
    address: &str,
) {
    let request = json!({ "client_secret": "s3cret", "email": address, "send_attempt": 1 });
    let path = "/_matrix/client/v3/account/3pid/email/requestToken";
    let (status, session) = api(server, Method::POST, None, path, Some(request)).await;
    assert_eq!(status, 200, "{session}");
    let sid = session["sid"].as_str().unwrap().to_owned();
    let (_, data) = inbox.recv().await.expect("the validation email");
    let text = super::email::decode(&data);
    let code = text.split("enter this code: ").nth(1).expect("a code").split_whitespace().next().unwrap().to_owned();
    let submit = json!({ "sid": sid, "client_secret": "s3cret", "token": code });
    let (status, body) = api(server, Method::POST, None, "/_hemicycle/client/email/submit_token", Some(submit)).await;
    assert_eq!(status, 200, "{body}");
    let auth =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": "pw" });
    let add = json!({ "client_secret": "s3cret", "sid": sid, "auth": auth });
    let (status, body) = api(server, Method::POST, Some(token), "/_matrix/client/v3/account/3pid/add", Some(add)).await;
    assert_eq!(status, 200, "{body}");
}

/// Third-party (email) invites: kept as `m.room.third_party_invite` state (a token, the redacted
/// address, the invite's key) so that the access rules see them (a direct chat takes one, and
/// then only its two people), reported as `invited` by the identity `info` endpoints, and turned
/// into member invites, signed with that token, once the address is bound to an account here.
#[tokio::test]
async fn third_party_invites() {
    let (port, mut inbox) = super::email::smtp_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.toml");
    write_domains(
        &domains,
        &format!("[domains]\n\"interieur.gouv.fr\" = \"localhost\"\n[fallback]\nserver = \"{EXTERNAL}\"\n"),
    );
    let server = network_server(&[
        ("network.domains_file", domains.to_string_lossy().into_owned().into()),
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
        ("email.notif_from", "Hemicycle <noreply@localhost>".into()),
    ]);
    let (_, alice) = register_raw(&server, "alice").await;
    let (bob_id, _) = register_raw(&server, "bob").await;
    let by_email = |room: &str, address: &str| {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(room));
        let body = json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email", "address": address });
        let (server, alice) = (&server, &alice);
        async move { api(server, Method::POST, Some(alice), &path, Some(body)).await }
    };

    let room = create(&server, &alice, json!({ "room_version": "11" })).await;
    accepted(&by_email(&room, "Jean@interieur.gouv.fr").await);
    let invites = state_of_kind(&server, &alice, &room, "m.room.third_party_invite").await;
    assert_eq!(invites.len(), 1, "{invites:?}");
    let (jean_token, content) = &invites[0];
    assert_eq!(content["display_name"], "jea…@interieur.gouv.fr", "{content}");
    assert!(content["public_keys"][0]["public_key"].as_str().is_some_and(|k| !k.is_empty()), "{content}");
    assert_eq!(info(&server, "info", "jean@interieur.gouv.fr").await["invited"], true);
    assert_eq!(info(&server, "internal-info", "paul@interieur.gouv.fr").await["invited"], false);

    // A direct chat: one pending third-party invite, then only its two people.
    let direct = create(&server, &alice, json!({ "room_version": "11", "is_direct": true })).await;
    accepted(&by_email(&direct, "paul@interieur.gouv.fr").await);
    refused(&by_email(&direct, "marie@interieur.gouv.fr").await);
    refused(&invite(&server, &alice, &direct, &bob_id).await);
    let paul_token = state_of_kind(&server, &alice, &direct, "m.room.third_party_invite").await[0].0.clone();

    // Jean and Paul sign up and bind their address: the invites become theirs, and they join.
    for (name, address, room, token) in [
        ("jean", "jean@interieur.gouv.fr", &room, jean_token),
        ("paul", "paul@interieur.gouv.fr", &direct, &paul_token),
    ] {
        let (id, access) = register_raw(&server, name).await;
        bind_email(&server, &mut inbox, &access, name, address).await;
        let members = state_of_kind(&server, &alice, room, "m.room.member").await;
        let (_, member) = members.iter().find(|(key, _)| key == &id).expect("the invite of the new account");
        assert_eq!(member["membership"], "invite", "{member}");
        assert_eq!(member["third_party_invite"]["signed"]["token"], token.as_str(), "{member}");
        join(&server, &access, room).await;
    }
}

/// Tchap's `shadow_hs`: callers of the public `info` endpoint from outside `non_shadow_ranges`
/// are told the node's shadow name from the map's `[shadow]` section; callers inside them, and
/// the internal variant, the node's own name.
#[tokio::test]
async fn shadow_names_for_callers_outside_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.toml");
    write_domains(
        &domains,
        &format!(
            "[domains]\n\"interieur.gouv.fr\" = \"agents.interieur.example\"\n[fallback]\nserver = \"{EXTERNAL}\"\n\
             [shadow]\n\"agents.interieur.example\" = \"e.agents.interieur.example\"\n"
        ),
    );
    let file = ("network.domains_file", toml::Value::from(domains.to_string_lossy().into_owned()));
    let outside =
        network_server(&[file.clone(), ("network.non_shadow_ranges", toml::Value::Array(vec!["10.0.0.0/8".into()]))]);
    assert_eq!(info(&outside, "info", "jean@interieur.gouv.fr").await["hs"], "e.agents.interieur.example");
    assert_eq!(info(&outside, "internal-info", "jean@interieur.gouv.fr").await["hs"], "agents.interieur.example");
    assert_eq!(info(&outside, "info", "someone@gmail.com").await["hs"], EXTERNAL, "no shadow name: the node's own");
    let inside = network_server(&[file, ("network.non_shadow_ranges", toml::Value::Array(vec!["127.0.0.0/8".into()]))]);
    assert_eq!(info(&inside, "info", "jean@interieur.gouv.fr").await["hs"], "agents.interieur.example");
}

async fn key_valid(server: &TestServer, public_key: &str) -> bool {
    let path = format!("/_matrix/identity/v2/pubkey/ephemeral/isvalid?public_key={}", urlencode(public_key));
    let (status, body) = api(server, Method::GET, None, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["valid"].as_bool().expect("valid")
}

/// A third-party invite stands until taken up, revoked (its event emptied or redacted) or
/// expired (`network.third_party_invite_lifetime`): the key it names in the room is valid at its
/// `key_validity_url` while it stands, the address counts as invited, and binding the address
/// takes it up; after, none of these.
#[tokio::test]
async fn third_party_invites_are_revoked_and_expire() {
    let (port, mut inbox) = super::email::smtp_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.toml");
    write_domains(
        &domains,
        &format!("[domains]\n\"interieur.gouv.fr\" = \"localhost\"\n[fallback]\nserver = \"{EXTERNAL}\"\n"),
    );
    let server = network_server(&[
        ("network.domains_file", domains.to_string_lossy().into_owned().into()),
        ("network.third_party_invite_lifetime", "8s".into()),
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
        ("email.notif_from", "Hemicycle <noreply@localhost>".into()),
    ]);
    let (_, alice) = register_raw(&server, "alice").await;
    let room = create(&server, &alice, json!({ "room_version": "11" })).await;
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room));
    let by_email = |address: &str| json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email", "address": address });
    let invited = std::time::Instant::now();
    for address in ["jean@interieur.gouv.fr", "paul@interieur.gouv.fr", "anne@interieur.gouv.fr"] {
        accepted(&api(&server, Method::POST, Some(&alice), &invite_path, Some(by_email(address))).await);
    }
    let invites = state_of_kind(&server, &alice, &room, "m.room.third_party_invite").await;
    let key_of = |prefix: &str| {
        let (token, content) =
            invites.iter().find(|(_, c)| c["display_name"].as_str().unwrap().starts_with(prefix)).unwrap();
        (token.clone(), content["public_key"].as_str().unwrap().to_owned())
    };
    let ((_, jean_key), (paul_token, paul_key), (anne_token, anne_key)) = (key_of("jea"), key_of("pau"), key_of("ann"));
    for key in [&jean_key, &paul_key, &anne_key] {
        assert!(key_valid(&server, key).await);
    }
    assert!(!key_valid(&server, "c29tZXRoaW5nIGVsc2U").await, "a key no invite has");
    let (status, body) = api(&server, Method::GET, None, "/_matrix/identity/v2/pubkey/ephemeral/isvalid", None).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");

    // Paul's invite is revoked by emptying its event, Anne's by redacting it.
    accepted(&put_state_key(&server, &alice, &room, "m.room.third_party_invite", &paul_token, json!({})).await);
    let event_id = state_event_id(&server, &alice, &room, "m.room.third_party_invite", &anne_token).await;
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/revoke", urlencode(&room), urlencode(&event_id));
    accepted(&api(&server, Method::PUT, Some(&alice), &path, Some(json!({}))).await);
    for (address, key) in [("paul@interieur.gouv.fr", &paul_key), ("anne@interieur.gouv.fr", &anne_key)] {
        assert!(!key_valid(&server, key).await, "{address}");
        assert_eq!(info(&server, "internal-info", address).await["invited"], false, "{address}");
    }
    assert_eq!(info(&server, "internal-info", "jean@interieur.gouv.fr").await["invited"], true);

    // Jean's expires; bound afterwards, the address takes up nothing.
    tokio::time::sleep(std::time::Duration::from_secs(9).saturating_sub(invited.elapsed())).await;
    assert!(!key_valid(&server, &jean_key).await);
    assert_eq!(info(&server, "internal-info", "jean@interieur.gouv.fr").await["invited"], false);
    for (name, address) in [("jean", "jean@interieur.gouv.fr"), ("paul", "paul@interieur.gouv.fr")] {
        let (id, access) = register_raw(&server, name).await;
        bind_email(&server, &mut inbox, &access, name, address).await;
        let members = state_of_kind(&server, &alice, &room, "m.room.member").await;
        assert!(members.iter().all(|(key, _)| key != &id), "{name}: {members:?}");
    }
}

async fn put_state_key(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", urlencode(room), urlencode(key));
    api(server, Method::PUT, Some(token), &path, Some(content)).await
}

async fn state_event_id(server: &TestServer, token: &str, room: &str, kind: &str, key: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/state", urlencode(room));
    let (status, list) = api(server, Method::GET, Some(token), &path, None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
        .and_then(|e| e["event_id"].as_str())
        .expect("the state event")
        .to_owned()
}

/// Registration with an email (`registration.email`): the address is proved by the emailed
/// code and must belong to this node by the domain map (refused with the reference's message
/// otherwise); the new account has it, and the third-party invites of it are the account's
/// invites by the time registration answers.
#[tokio::test]
async fn registering_with_an_email_takes_up_its_invites() {
    let (port, mut inbox) = super::email::smtp_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let domains = dir.path().join("domains.toml");
    write_domains(
        &domains,
        &format!("[domains]\n\"interieur.gouv.fr\" = \"localhost\"\n[fallback]\nserver = \"{EXTERNAL}\"\n"),
    );
    let server = network_server(&[
        ("network.domains_file", domains.to_string_lossy().into_owned().into()),
        ("registration.email", true.into()),
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
        ("email.notif_from", "Hemicycle <noreply@localhost>".into()),
    ]);
    let (_, alice) = register_raw(&server, "alice").await;
    let room = create(&server, &alice, json!({ "room_version": "11" })).await;
    let path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room));
    let body = json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email", "address": "jean@interieur.gouv.fr" });
    accepted(&api(&server, Method::POST, Some(&alice), &path, Some(body)).await);
    let token = state_of_kind(&server, &alice, &room, "m.room.third_party_invite").await[0].0.clone();

    let request_token = "/_matrix/client/v3/register/email/requestToken";
    let ask = |email: &str| json!({ "client_secret": "s3cret", "email": email, "send_attempt": 1 });
    let (status, body) = api(&server, Method::POST, None, request_token, Some(ask("someone@gmail.com"))).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (403, Some("M_THREEPID_DENIED"), Some("Your email domain is not authorized to register on this server")),
        "{body}"
    );
    let (status, session) = api(&server, Method::POST, None, request_token, Some(ask("jean@interieur.gouv.fr"))).await;
    assert_eq!(status, 200, "{session}");
    let sid = session["sid"].as_str().unwrap().to_owned();
    let (_, data) = inbox.recv().await.expect("the validation email");
    let text = super::email::decode(&data);
    let code = text.split("enter this code: ").nth(1).expect("a code").split_whitespace().next().unwrap().to_owned();
    let submit = json!({ "sid": sid, "client_secret": "s3cret", "token": code });
    let (status, body) = api(&server, Method::POST, None, "/_hemicycle/client/email/submit_token", Some(submit)).await;
    assert_eq!(status, 200, "{body}");

    let register = "/_matrix/client/v3/register";
    let (status, challenge) =
        api(&server, Method::POST, None, register, Some(json!({ "username": "jean", "password": "pw" }))).await;
    assert_eq!(status, 401, "{challenge}");
    assert!(
        challenge["flows"].as_array().unwrap().iter().any(|f| f["stages"] == json!(["m.login.email.identity"])),
        "{challenge}"
    );
    let auth = json!({ "type": "m.login.email.identity", "session": challenge["session"],
                       "threepid_creds": { "sid": sid, "client_secret": "s3cret" } });
    // Completing the stage while the map sends the address to another node: refused, with the
    // reference's message for it.
    let map = |server: &str| {
        format!("[domains]\n\"interieur.gouv.fr\" = \"{server}\"\n[fallback]\nserver = \"{EXTERNAL}\"\n")
    };
    write_domains(&domains, &map("interieur.example"));
    let attempt = json!({ "username": "jean", "password": "pw", "auth": auth.clone() });
    let (status, body) = api(&server, Method::POST, None, register, Some(attempt)).await;
    assert_eq!(
        (status, body["errcode"].as_str(), body["error"].as_str()),
        (
            403,
            Some("M_THREEPID_DENIED"),
            Some("Third party identifiers (email/phone numbers) are not authorized on this server")
        ),
        "{body}"
    );
    write_domains(&domains, &map("localhost"));
    let (status, done) =
        api(&server, Method::POST, None, register, Some(json!({ "username": "jean", "password": "pw", "auth": auth })))
            .await;
    assert_eq!(status, 200, "{done}");
    let jean = done["access_token"].as_str().unwrap();
    let (_, list) = api(&server, Method::GET, Some(jean), "/_matrix/client/v3/account/3pid", None).await;
    assert_eq!(list["threepids"][0]["address"], "jean@interieur.gouv.fr", "{list}");
    let members = state_of_kind(&server, &alice, &room, "m.room.member").await;
    let (_, member) = members.iter().find(|(key, _)| key == "@jean:localhost").expect("jean's invite");
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["third_party_invite"]["signed"]["token"], token.as_str(), "{member}");
}
