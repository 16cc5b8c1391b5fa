//! Expiring accounts end to end on one node: renewal emails at their offsets through a real SMTP
//! conversation on loopback, the emailed link followed, `403 ORG_MATRIX_EXPIRED_ACCOUNT` on every
//! request but renewing and logging out, the admin API, deactivation after the grace period, and
//! the records surviving a restart. Time moves with the server's token clock hook (no waiting
//! days), and `SIGUSR2` tells the server's timer task the clock moved.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    common::{api, TestServer, TokenClock},
    email::{decode, smtp_sink},
};

const DAY: u64 = 24 * 3600 * 1000;

/// The server's clock, moved by the test, and a way to tell the server it moved.
struct Clock {
    clock: TokenClock,
    offset_ms: u64,
}

impl Clock {
    fn advance(&mut self, server: &TestServer, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.offset_ms += ms;
        let status = std::process::Command::new("kill").args(["-USR2", &server.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn now(&self) -> u64 {
        let system = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        system + self.offset_ms
    }
}

async fn next_mail(inbox: &mut UnboundedReceiver<(Vec<String>, String)>) -> (Vec<String>, String) {
    let (to, data) = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
        .await
        .expect("an email within 20 s")
        .expect("the sink runs");
    (to, decode(&data))
}

/// The path and query of the renewal link in an email.
fn link(text: &str) -> String {
    let start = text.find("/_matrix/client/unstable/account_validity/renew?token=").expect("a renewal link");
    text[start..].split_whitespace().next().unwrap().to_owned()
}

async fn get_page(server: &TestServer, path: &str) -> (u16, String) {
    let response = server.http().get(format!("{}{path}", server.url)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn errcode(response: &(u16, Value)) -> (u16, &str) {
    (response.0, response.1["errcode"].as_str().unwrap_or(""))
}

async fn whoami(server: &TestServer, token: &str) -> (u16, Value) {
    api(server, Method::GET, Some(token), "/_matrix/client/v3/account/whoami", None).await
}

#[tokio::test]
async fn accounts_expire_are_renewed_by_the_emailed_link_and_are_deactivated_after_the_grace_period() {
    let (port, mut inbox) = smtp_sink().await;
    let clock = TokenClock::system();
    let (env, path) = clock.env();
    let mut clock = Clock { clock, offset_ms: 0 };
    let mut server = TestServer::start_with_env(
        &[
            ("email.smtp_host", "127.0.0.1".into()),
            ("email.smtp_port", i64::from(port).into()),
            ("email.smtp_tls", "none".into()),
            ("account_validity.period", "30d".into()),
            ("account_validity.send_renewal_email_at", toml::Value::Array(vec!["1w".into(), "1d".into()])),
            ("account_validity.deactivate_after", "10d".into()),
            (
                "account_validity.exclude",
                toml::Value::Array(vec!["@root:localhost".into(), "@bot-.*:localhost".into()]),
            ),
        ],
        &[(env, &path)],
    );
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
    let registered_at = clock.now();
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, bot) = crate::common::register_raw(&server, "bot-1").await;
    let (status, body) = api(
        &server,
        Method::PUT,
        Some(&root),
        "/_synapse/admin/v2/users/@alice:localhost",
        Some(json!({ "threepids": [{ "medium": "email", "address": "alice@ministere.example" }] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A new account is valid for a period.
    let (status, validity) =
        api(&server, Method::GET, Some(&alice), "/_matrix/client/unstable/account_validity/validity", None).await;
    assert_eq!(status, 200, "{validity}");
    assert_eq!(validity["valid"], true);
    let expiry = validity["expiration_ts"].as_u64().expect("an expiry");
    assert!(expiry >= registered_at + 30 * DAY && expiry < clock.now() + 30 * DAY + 1000, "{expiry}");
    let (_, bot_validity) =
        api(&server, Method::GET, Some(&bot), "/_matrix/client/unstable/account_validity/validity", None).await;
    assert_eq!(bot_validity["expiration_ts"], Value::Null, "excluded accounts never expire");

    // A week before the end, the first renewal email.
    clock.advance(&server, 23 * DAY + 60_000);
    let (to, first) = next_mail(&mut inbox).await;
    assert_eq!(to, vec!["alice@ministere.example".to_owned()]);
    let first_link = link(&first);
    assert!(inbox.try_recv().is_err(), "one email per offset");
    // A day before, the second; its link replaces the first one.
    clock.advance(&server, 6 * DAY);
    let (_, second) = next_mail(&mut inbox).await;
    let second_link = link(&second);
    assert_ne!(first_link, second_link);
    assert_eq!(get_page(&server, &first_link).await.0, 400, "a replaced link renews nothing");

    // Past the end: every request is refused but renewing and logging out; others are unaffected.
    clock.advance(&server, DAY);
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));
    let sync = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/sync?timeout=0", None).await;
    assert_eq!(errcode(&sync), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));
    assert_eq!(whoami(&server, &bot).await.0, 200);
    assert_eq!(whoami(&server, &root).await.0, 200);
    let (status, validity) =
        api(&server, Method::GET, Some(&alice), "/_matrix/client/unstable/account_validity/validity", None).await;
    assert_eq!((status, &validity["valid"]), (200, &json!(false)));
    // The expired client asks for a new email; its link renews the account.
    let sent = api(
        &server,
        Method::POST,
        Some(&alice),
        "/_matrix/client/unstable/account_validity/send_mail",
        Some(json!({})),
    )
    .await;
    assert_eq!(sent, (200, json!({})));
    let (_, third) = next_mail(&mut inbox).await;
    let third_link = link(&third);
    let before_renewal = clock.now();
    let (status, page) = get_page(&server, &third_link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("renewed"), "{page}");
    assert_eq!(whoami(&server, &alice).await.0, 200, "renewed: the same token works again");
    let (_, validity) =
        api(&server, Method::GET, Some(&alice), "/_matrix/client/unstable/account_validity/validity", None).await;
    let renewed_until = validity["expiration_ts"].as_u64().unwrap();
    assert!(renewed_until >= before_renewal + 30 * DAY, "{renewed_until}");
    let (status, page) = get_page(&server, &third_link).await;
    assert_eq!(status, 200);
    assert!(page.contains("used already"), "a second click changes nothing: {page}");
    assert_eq!(get_page(&server, "/_matrix/client/unstable/account_validity/renew?token=nonsense").await.0, 400);

    // Synapse's admin API: only admins; an expiry set in the past expires the account at once.
    let admin_path = "/_synapse/admin/v1/account_validity/validity";
    let refused =
        api(&server, Method::POST, Some(&alice), admin_path, Some(json!({ "user_id": "@alice:localhost" }))).await;
    assert_eq!(errcode(&refused), (403, "M_FORBIDDEN"));
    let unknown =
        api(&server, Method::POST, Some(&root), admin_path, Some(json!({ "user_id": "@nobody:localhost" }))).await;
    assert_eq!(unknown.0, 404);
    let past = clock.now() - 1000;
    let set = api(
        &server,
        Method::POST,
        Some(&root),
        admin_path,
        Some(json!({ "user_id": "@alice:localhost", "expiration_ts": past, "enable_renewal_emails": false })),
    )
    .await;
    assert_eq!(set, (200, json!({ "expiration_ts": past })));
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));

    // The records are durable.
    server.restart();
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));
    let renewed =
        api(&server, Method::POST, Some(&root), admin_path, Some(json!({ "user_id": "@alice:localhost" }))).await;
    assert_eq!(renewed.0, 200, "{}", renewed.1);
    assert!(renewed.1["expiration_ts"].as_u64().unwrap() >= clock.now() + 30 * DAY - 60_000);
    assert_eq!(whoami(&server, &alice).await.0, 200);

    // Expired for longer than `deactivate_after`: deactivated, as `user deactivate` does it.
    let set = api(
        &server,
        Method::POST,
        Some(&root),
        admin_path,
        Some(json!({ "user_id": "@alice:localhost", "expiration_ts": clock.now() - 1000 })),
    )
    .await;
    assert_eq!(set.0, 200);
    clock.advance(&server, 10 * DAY + 60_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while whoami(&server, &alice).await.0 != 401 {
        assert!(std::time::Instant::now() < deadline, "the expired account was never deactivated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, shown) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@alice:localhost", None).await;
    assert_eq!(shown["deactivated"], 1, "{shown}");
    assert_eq!(whoami(&server, &bot).await.0, 200, "excluded accounts stay");
    assert!(inbox.try_recv().is_err(), "no email after renewal emails were switched off");
}

#[tokio::test]
async fn the_console_shows_and_changes_an_accounts_expiry() {
    use crate::console::{csrf, get, post, sign_in};
    let server = TestServer::start_with(&[
        ("account_validity.period", "30d".into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let view = "/users/view?id=@alice:localhost";
    let page = get(&server, Some(&cookie), view).await.text().await.unwrap();
    assert!(page.contains("Valid until"), "{page}");
    let root_page = get(&server, Some(&cookie), "/users/view?id=@root:localhost").await.text().await.unwrap();
    assert!(root_page.contains("never expires"), "{root_page}");

    // A date in the past: expired at once.
    let token = csrf(&server, &cookie, view).await;
    let form = [("csrf", token.as_str()), ("user", "@alice:localhost"), ("date", "2020-01-31")];
    let response = post(&server, Some(&cookie), "/users/validity", &form).await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));
    let page = get(&server, Some(&cookie), view).await.text().await.unwrap();
    assert!(page.contains("Expired since 2020-01-31 23:59:59 UTC"), "{page}");
    let bad = [("csrf", token.as_str()), ("user", "@alice:localhost"), ("date", "2020-02-30")];
    assert_eq!(post(&server, Some(&cookie), "/users/validity", &bad).await.status(), 400);

    // No date: a period from now.
    let form = [("csrf", token.as_str()), ("user", "@alice:localhost"), ("date", ""), ("emails", "on")];
    assert_eq!(post(&server, Some(&cookie), "/users/validity", &form).await.status(), 303);
    assert_eq!(whoami(&server, &alice).await.0, 200);
}

#[tokio::test]
async fn the_user_directory_leaves_out_agents_who_hide_and_expired_accounts() {
    let server = TestServer::start_with(&[
        ("account_validity.period", "30d".into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
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
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    let (_, room) = api(
        &server,
        Method::POST,
        Some(&alice),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "public_chat" })),
    )
    .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    assert_eq!(
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await.0,
        200
    );
    let finds_alice = || async {
        let (status, body) = api(
            &server,
            Method::POST,
            Some(&bob),
            "/_matrix/client/v3/user_directory/search",
            Some(json!({ "search_term": "alice" })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["results"].as_array().unwrap().iter().any(|r| r["user_id"] == "@alice:localhost")
    };
    assert!(finds_alice().await);

    let hide = "/_matrix/client/v3/user/@alice:localhost/account_data/im.vector.hide_profile";
    assert_eq!(api(&server, Method::PUT, Some(&alice), hide, Some(json!({ "hide_profile": true }))).await.0, 200);
    assert!(!finds_alice().await, "an agent who asked to be hidden is not found");
    assert_eq!(api(&server, Method::PUT, Some(&alice), hide, Some(json!({ "hide_profile": false }))).await.0, 200);
    assert!(finds_alice().await);

    let admin_path = "/_synapse/admin/v1/account_validity/validity";
    let past = json!({ "user_id": "@alice:localhost", "expiration_ts": 1000 });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(past)).await.0, 200);
    assert!(!finds_alice().await, "an expired account is not found");
    let renew = json!({ "user_id": "@alice:localhost" });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(renew)).await.0, 200);
    assert!(finds_alice().await);
}

/// Signs `root` (made by the command line, an admin, excluded from expiry by the tests'
/// settings) in and returns its access token.
async fn root_token(server: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    api(server, Method::POST, None, "/_matrix/client/v3/login", Some(login)).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `user` is (or is no longer) a joined member of `room`, as `token` reads it. The
/// discovery room's task joins and leaves on its own, with nothing a client can wait on.
async fn wait_member(server: &TestServer, token: &str, room: &str, user: &str, joined: bool) {
    let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, members) = api(server, Method::GET, Some(token), &path, None).await;
        assert_eq!(status, 200, "{members}");
        if members["joined"].get(user).is_some() == joined {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{user} never {} the room: {members}",
            if joined { "joined" } else { "left" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The discovery room (`directory.discovery_room`) on one node: every account joins it, so two
/// agents who share no other room find each other; clients are not shown it; an account leaves it
/// when it expires (the expiry itself, as the clock passes it) and joins it again when renewed.
#[tokio::test]
async fn accounts_join_the_discovery_room_leave_it_when_they_expire_and_come_back_when_renewed() {
    let settings = |room: Option<&str>| {
        let mut s: Vec<(&str, toml::Value)> = vec![
            ("account_validity.period", "30d".into()),
            ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
        ];
        if let Some(room) = room {
            s.push(("directory.discovery_room", room.into()));
        }
        s
    };
    let mut server = TestServer::start_with(&settings(None));
    let root = root_token(&server).await;
    let (_, created) = api(
        &server,
        Method::POST,
        Some(&root),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "public_chat", "room_alias_name": "discovery" })),
    )
    .await;
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    crate::common::write_config(server.config_path.parent().unwrap(), &settings(Some("#discovery:localhost")));
    let clock = TokenClock::system();
    let (env, path) = clock.env();
    let mut clock = Clock { clock, offset_ms: 0 };
    server.set_env(&[(env, &path)]);
    server.restart();

    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    wait_member(&server, &root, &room, "@alice:localhost", true).await;
    wait_member(&server, &root, &room, "@bob:localhost", true).await;
    let finds_alice = || async {
        let body = json!({ "search_term": "alice" });
        let (status, found) =
            api(&server, Method::POST, Some(&bob), "/_matrix/client/v3/user_directory/search", Some(body)).await;
        assert_eq!(status, 200, "{found}");
        found["results"].as_array().unwrap().iter().any(|r| r["user_id"] == "@alice:localhost")
    };
    assert!(finds_alice().await, "two agents sharing only the discovery room find each other");
    for token in [&alice, &root] {
        let (_, joined) = api(&server, Method::GET, Some(token), "/_matrix/client/v3/joined_rooms", None).await;
        assert!(!joined["joined_rooms"].as_array().unwrap().iter().any(|r| r == &json!(room)), "{joined}");
        let (_, synced) = api(&server, Method::GET, Some(token), "/_matrix/client/v3/sync?timeout=0", None).await;
        assert!(synced["rooms"]["join"].get(&room).is_none(), "sync shows the discovery room: {synced}");
    }

    // The expiry passes: alice leaves the room (bob stays, renewed by an admin meanwhile).
    let admin_path = "/_synapse/admin/v1/account_validity/validity";
    let later = json!({ "user_id": "@bob:localhost", "expiration_ts": clock.now() + 90 * DAY });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(later)).await.0, 200);
    clock.advance(&server, 30 * DAY + 60_000);
    wait_member(&server, &root, &room, "@alice:localhost", false).await;
    wait_member(&server, &root, &room, "@bob:localhost", true).await;
    assert!(!finds_alice().await);
    // Renewed: back in the room.
    let renew = json!({ "user_id": "@alice:localhost" });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(renew)).await.0, 200);
    wait_member(&server, &root, &room, "@alice:localhost", true).await;
    assert!(finds_alice().await);
}

/// Tchap's cap on the discovery room: an earlier room that filled up is listed as passive — its
/// members stay there (not joined to the new room), are not shown it, and leave it when they
/// hide — while new agents join the active room, and the operator is mailed once the active room
/// reaches `discovery_room_max_size`.
#[tokio::test]
async fn a_full_discovery_room_stays_as_a_passive_one_and_the_operator_is_told_when_the_next_fills() {
    let (port, mut inbox) = smtp_sink().await;
    let mut server = TestServer::start();
    let root = root_token(&server).await;
    let create = |alias: &'static str| {
        let (server, root) = (&server, root.clone());
        async move {
            let body = json!({ "preset": "public_chat", "room_alias_name": alias });
            let (_, created) =
                api(server, Method::POST, Some(&root), "/_matrix/client/v3/createRoom", Some(body)).await;
            created["room_id"].as_str().expect("room_id").to_owned()
        }
    };
    let full = create("decouverte-1").await;
    let active = create("decouverte-2").await;
    let (_, ancien) = crate::common::register_raw(&server, "ancien").await;
    let path = format!("/_matrix/client/v3/join/{full}");
    assert_eq!(api(&server, Method::POST, Some(&ancien), &path, Some(json!({}))).await.0, 200);
    crate::common::write_config(
        server.config_path.parent().unwrap(),
        &[
            ("email.smtp_host", "127.0.0.1".into()),
            ("email.smtp_port", i64::from(port).into()),
            ("email.smtp_tls", "none".into()),
            ("directory.discovery_room", "#decouverte-2:localhost".into()),
            ("directory.discovery_passive_rooms", toml::Value::Array(vec![full.clone().into()])),
            ("directory.discovery_room_max_size", 3.into()),
            ("directory.discovery_alert_email", "support@ministere.example".into()),
        ],
    );
    server.restart();

    // root made the active room; alice and bob join it: three members, the size.
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    crate::common::register_raw(&server, "bob").await;
    wait_member(&server, &root, &active, "@alice:localhost", true).await;
    wait_member(&server, &root, &active, "@bob:localhost", true).await;
    let (to, text) = next_mail(&mut inbox).await;
    assert_eq!(to, vec!["support@ministere.example".to_owned()]);
    assert!(text.contains(&active) && text.contains("has 3 members"), "{text}");

    // The member of the full room stayed there, not joined to the active one, shown neither.
    let members = |room: String| {
        let (server, root) = (&server, root.clone());
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
            api(server, Method::GET, Some(&root), &path, None).await.1["joined"].clone()
        }
    };
    assert!(members(active.clone()).await.get("@ancien:localhost").is_none());
    assert!(members(full.clone()).await.get("@ancien:localhost").is_some());
    for token in [&ancien, &alice] {
        let (_, joined) = api(&server, Method::GET, Some(token), "/_matrix/client/v3/joined_rooms", None).await;
        let joined = joined["joined_rooms"].as_array().unwrap().clone();
        assert!(!joined.contains(&json!(full)) && !joined.contains(&json!(active)), "{joined:?}");
    }
    // Found through the full room all the same, though alice is not in it.
    let body = json!({ "search_term": "ancien" });
    let (_, found) =
        api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/user_directory/search", Some(body)).await;
    assert_eq!(found["results"][0]["user_id"], "@ancien:localhost", "{found}");

    // Hiding leaves the full room too.
    let path = "/_matrix/client/v3/user/@ancien:localhost/account_data/im.vector.hide_profile";
    assert_eq!(api(&server, Method::PUT, Some(&ancien), path, Some(json!({ "hide_profile": true }))).await.0, 200);
    wait_member(&server, &root, &full, "@ancien:localhost", false).await;
    assert!(members(active.clone()).await.get("@ancien:localhost").is_none());
}

/// Tchap's user info: `{"expired", "deactivated"}` of a local user (a name never given is
/// neither), `404 M_NOT_FOUND` for a user of a server that cannot say.
#[tokio::test]
async fn user_info_says_whether_an_account_expired_or_was_deactivated() {
    let server = TestServer::start_with(&[
        ("account_validity.period", "30d".into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
    ]);
    let root = root_token(&server).await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    crate::common::register_raw(&server, "alice").await;
    crate::common::register_raw(&server, "carol").await;
    let info = |user: &'static str, version: &'static str| {
        let bob = bob.clone();
        let server = &server;
        async move {
            api(server, Method::GET, Some(&bob), &format!("/_matrix/client/{version}/user/{user}/info"), None).await
        }
    };
    let neither = json!({ "expired": false, "deactivated": false });
    assert_eq!(info("@alice:localhost", "r0").await, (200, neither.clone()));
    assert_eq!(info("@nobody:localhost", "v3").await, (200, neither.clone()));
    let past = json!({ "user_id": "@alice:localhost", "expiration_ts": 1000 });
    assert_eq!(
        api(&server, Method::POST, Some(&root), "/_synapse/admin/v1/account_validity/validity", Some(past)).await.0,
        200
    );
    assert_eq!(info("@alice:localhost", "r0").await, (200, json!({ "expired": true, "deactivated": false })));
    assert_eq!(info("@alice:localhost", "v3").await.1["expired"], true);
    let out = server.cli(&["user", "deactivate", "carol"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(info("@carol:localhost", "r0").await, (200, json!({ "expired": false, "deactivated": true })));
    let unanswered = info("@someone:127.0.0.1:9", "r0").await;
    assert_eq!(errcode(&unanswered), (404, "M_NOT_FOUND"), "{}", unanswered.1);
    let (status, _) = api(&server, Method::GET, None, "/_matrix/client/r0/user/@alice:localhost/info", None).await;
    assert_eq!(status, 401, "asked with an access token only");

    // The bulk form: every user its server can say something of.
    let ids = json!({ "user_ids": ["@alice:localhost", "@carol:localhost", "@bob:localhost", "@someone:127.0.0.1:9"] });
    let (status, all) = api(&server, Method::POST, Some(&bob), "/_matrix/client/unstable/users/info", Some(ids)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all,
        json!({
            "@alice:localhost": { "expired": true, "deactivated": false },
            "@carol:localhost": { "expired": false, "deactivated": true },
            "@bob:localhost": { "expired": false, "deactivated": false },
        })
    );
    let bad = json!({ "user_ids": ["not a user"] });
    let refused = api(&server, Method::POST, Some(&bob), "/_matrix/client/unstable/users/info", Some(bad)).await;
    assert_eq!(errcode(&refused), (400, "M_INVALID_PARAM"), "{}", refused.1);
}

/// The code in a renewal email sent with `send_links = false`.
fn code(text: &str) -> String {
    let at = text.find("type this code in your app: ").expect("a renewal code") + "type this code in your app: ".len();
    text[at..at + 8].to_owned()
}

/// `send_links = false`: the email carries an 8-digit code the agent types in their client; it
/// renews only with the account's own access token, and stops working after five wrong codes.
#[tokio::test]
async fn short_renewal_codes_work_only_with_the_accounts_own_token() {
    let (port, mut inbox) = smtp_sink().await;
    let server = TestServer::start_with(&[
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
        ("account_validity.period", "30d".into()),
        ("account_validity.send_links", false.into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
    ]);
    let root = root_token(&server).await;
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    let address = json!({ "threepids": [{ "medium": "email", "address": "alice@ministere.example" }] });
    assert_eq!(
        api(&server, Method::PUT, Some(&root), "/_synapse/admin/v2/users/@alice:localhost", Some(address)).await.0,
        200
    );
    let admin_path = "/_synapse/admin/v1/account_validity/validity";
    let past = json!({ "user_id": "@alice:localhost", "expiration_ts": 1000 });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(past)).await.0, 200);
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));

    let send_mail = "/_matrix/client/unstable/account_validity/send_mail";
    assert_eq!(api(&server, Method::POST, Some(&alice), send_mail, Some(json!({}))).await.0, 200);
    let (_, mail) = next_mail(&mut inbox).await;
    assert!(!mail.contains("account_validity/renew"), "no link: {mail}");
    let first = code(&mail);
    assert!(first.chars().all(|c| c.is_ascii_digit()), "{first}");
    let renew = |token: Option<&str>, code: &str| {
        let path = format!("/_matrix/client/unstable/account_validity/renew?token={code}");
        let mut request = server.http().get(format!("{}{path}", server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(renew(None, &first).await, 400, "a code alone renews nothing");
    assert_eq!(renew(Some(&bob), &first).await, 400, "nor with another account's token");
    assert_eq!(errcode(&whoami(&server, &alice).await), (403, "ORG_MATRIX_EXPIRED_ACCOUNT"));
    assert_eq!(renew(Some(&alice), &first).await, 200, "the code with the account's own token");
    assert_eq!(whoami(&server, &alice).await.0, 200);

    // Five wrong codes: the right one no longer works; a new email gives a new code.
    let past = json!({ "user_id": "@alice:localhost", "expiration_ts": 1000 });
    assert_eq!(api(&server, Method::POST, Some(&root), admin_path, Some(past)).await.0, 200);
    assert_eq!(api(&server, Method::POST, Some(&alice), send_mail, Some(json!({}))).await.0, 200);
    let second = code(&next_mail(&mut inbox).await.1);
    let wrong = if second == "00000000" { "11111111" } else { "00000000" };
    for _ in 0..5 {
        assert_eq!(renew(Some(&alice), wrong).await, 400);
    }
    assert_eq!(renew(Some(&alice), &second).await, 400, "the code stopped working");
    assert_eq!(api(&server, Method::POST, Some(&alice), send_mail, Some(json!({}))).await.0, 200);
    let third = code(&next_mail(&mut inbox).await.1);
    assert_eq!(renew(Some(&alice), &third).await, 200);
    assert_eq!(whoami(&server, &alice).await.0, 200);
}
