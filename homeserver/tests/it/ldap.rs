//! The LDAP bridge against a real OpenLDAP `slapd` on loopback: sign-in with directory
//! passwords (a matrix-sdk client among others), first-login provisioning and refresh, filter
//! injection, the directory down or hanging, and the directory sync (dry run, groups → rooms,
//! removal → deactivation and logout, the mass-deactivation guard and its per-run override), the
//! accounts the directory must never take over (local, bridge, appservice) and `ldap link`, and
//! plain `ldap://` refused without `allow_insecure`.

use std::time::Duration;

use hemicycle_bridges::testing::{Slapd, BASE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, sdk_error, TestServer};

const SERVICE_DN: &str = "cn=hemicycle,ou=services,dc=example,dc=gouv,dc=fr";

fn person(uid: &str, cn: &str, password: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {cn}\n\
         mail: {uid}@example.gouv.fr\nuserPassword: {password}\n{extra}\n"
    )
}

/// Six people (one disabled, one admin, one with an accented uid), a service account and two
/// groups (member DNs and memberUid).
fn directory() -> String {
    let mut ldif = format!(
        "dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: hemicycle\n\
         userPassword: service-secret\n\n"
    );
    ldif.push_str(&person("jdupont", "Jean Dupré", "jean-pw", ""));
    ldif.push('\n');
    ldif.push_str(&person("mlefevre", "Marie Lefèvre", "marie-pw", ""));
    ldif.push('\n');
    ldif.push_str(&person("hcoste", "Hélène Coste", "helene-pw", "employeeType: admin\n"));
    ldif.push('\n');
    ldif.push_str(&person("pmartin", "Paul Martin", "paul-pw", "employeeType: disabled\n"));
    ldif.push('\n');
    ldif.push_str(&person("josé", "José Núñez", "jose-pw", ""));
    ldif.push('\n');
    ldif.push_str(&person("cbernard", "Claire Bernard", "claire-pw", ""));
    ldif.push_str(&format!(
        "\ndn: cn=dsi,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: dsi\n\
         member: uid=jdupont,ou=people,{BASE}\nmember: uid=mlefevre,ou=people,{BASE}\n\
         member: uid=pmartin,ou=people,{BASE}\n\n\
         dn: cn=admins,ou=groups,{BASE}\nobjectClass: posixGroup\ncn: admins\ngidNumber: 500\nmemberUid: hcoste\n"
    ));
    ldif
}

/// A server whose `[ldap]` points at `uri`, with the service password in a file next to it.
fn server(uri: &str, extra: &[(&str, toml::Value)]) -> (TestServer, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("bind-password");
    std::fs::write(&password_file, "service-secret\n").unwrap();
    let mut overrides: Vec<(&str, toml::Value)> = vec![
        ("ldap.enabled", true.into()),
        ("ldap.uri", uri.into()),
        ("ldap.base", format!("ou=people,{BASE}").into()),
        ("ldap.bind_dn", SERVICE_DN.into()),
        ("ldap.bind_password_file", password_file.to_string_lossy().into_owned().into()),
        ("ldap.filter", "(&(objectClass=inetOrgPerson)(!(employeeType=disabled)))".into()),
        ("ldap.admin_filter", "(employeeType=admin)".into()),
        ("ldap.timeout_ms", 1500.into()),
        // Pages of 2 against a directory that returns at most 3 entries unpaged.
        ("ldap.page_size", 2.into()),
        ("ldap.max_deactivate_ratio", 0.5.into()),
        // The test slapd speaks plain ldap:// on loopback.
        ("ldap.allow_insecure", true.into()),
        ("registration.open", false.into()),
    ];
    overrides.extend(extra.iter().cloned());
    (TestServer::start_with(&overrides), secrets)
}

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await
}

fn cli_ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn users(server: &TestServer) -> String {
    cli_ok(server, &["user", "list"])
}

fn local_admin(server: &TestServer, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "admin-pw").unwrap();
    cli_ok(server, &["user", "create", name, "--admin", "--password-file", file.to_str().unwrap()]);
    "admin-pw".to_owned()
}

#[tokio::test]
async fn directory_passwords_sign_in_and_provision() {
    let slapd = Slapd::start(&directory(), 3).unwrap();
    // The first URI is dead: the next one is tried.
    let dead = format!("ldap://127.0.0.1:{}", hemicycle_free_port());
    let uris = toml::Value::Array(vec![dead.clone().into(), slapd.uri().into()]);
    let (server, _secrets) = server(&dead, &[("ldap.uri", uris)]);

    // A real client signs in with its directory password; the first sign-in makes the account.
    let client = server.client().await;
    client.matrix_auth().login_username("jdupont", "jean-pw").send().await.expect("LDAP login");
    assert_eq!(client.user_id().unwrap().as_str(), "@jdupont:localhost");
    assert_eq!(client.account().get_display_name().await.unwrap().as_deref(), Some("Jean Dupré"));
    let threepids = client.account().get_3pids().await.unwrap().threepids;
    assert_eq!(threepids.len(), 1);
    assert_eq!(threepids[0].address, "jdupont@example.gouv.fr");

    // Wrong password, unknown user, filter injection, empty password, disabled entry: all the
    // same refusal.
    for (user, password) in [
        ("jdupont", "wrong"),
        ("nobody", "jean-pw"),
        ("*)(uid=*", "jean-pw"),
        ("*", "jean-pw"),
        ("jdupont)(|(uid=*", "jean-pw"),
        ("jdupont", ""),
        ("pmartin", "paul-pw"),
    ] {
        let (status, body) = login(&server, user, password).await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{user}/{password}: {body}");
    }
    assert!(!users(&server).contains("@pmartin:"), "a disabled entry gets no account");

    // A full user id works; an accented uid keeps its spelling in the display name and maps by
    // the documented rule.
    let (status, body) = login(&server, "@jdupont:localhost", "jean-pw").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = login(&server, "josé", "jose-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@jos=c3=a9:localhost");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (_, profile) =
        api(&server, Method::GET, Some(&token), "/_matrix/client/v3/profile/@jos=c3=a9:localhost", None).await;
    assert_eq!(profile["displayname"], "José Núñez");
    let (status, _) = login(&server, "@jos=c3=a9:localhost", "jose-pw").await;
    assert_eq!(status, 200, "a full id of an escaped localpart signs in too");

    // The admin filter makes server admins.
    let (status, _) = login(&server, "hcoste", "helene-pw").await;
    assert_eq!(status, 200);
    let list = users(&server);
    assert!(list.lines().any(|l| l.starts_with("@hcoste:localhost") && l.contains("admin")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("@jdupont:localhost") && !l.contains("admin")), "{list}");

    // A later sign-in refreshes the profile from the directory.
    slapd
        .modify(&format!(
            "dn: uid=jdupont,ou=people,{BASE}\nchangetype: modify\nreplace: cn\ncn: Jean Dupré-Martin\n-\n\
             replace: mail\nmail: jean.dupre-martin@example.gouv.fr\n"
        ))
        .unwrap();
    let client2 = server.client().await;
    client2.matrix_auth().login_username("jdupont", "jean-pw").send().await.unwrap();
    assert_eq!(client2.account().get_display_name().await.unwrap().as_deref(), Some("Jean Dupré-Martin"));
    let threepids = client2.account().get_3pids().await.unwrap().threepids;
    let addresses: Vec<&str> = threepids.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addresses, ["jean.dupre-martin@example.gouv.fr"]);

    // The directory owns the password.
    let token = client2.access_token().unwrap();
    let (status, body) = api(
        &server,
        Method::POST,
        Some(&token),
        "/_matrix/client/v3/account/password",
        Some(json!({ "new_password": "local", "auth": { "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "jdupont" }, "password": "jean-pw" } })),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("managed by the directory"), "{body}");
    let out = server.cli(&["user", "reset-password", "jdupont"]);
    assert!(!out.status.success(), "an operator cannot give a directory account a local password either");

    // UIA password stages check the directory password (here: deleting a device).
    let device = client.device_id().unwrap().to_string();
    let first_token = client.access_token().unwrap();
    let (status, body) = api(
        &server,
        Method::POST,
        Some(&token),
        "/_matrix/client/v3/delete_devices",
        Some(json!({ "devices": [device], "auth": { "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "@jdupont:localhost" }, "password": "jean-pw" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(&server, Method::GET, Some(&first_token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "deleted device: {body}");

    // A local account that is not an admin keeps no password by default.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "plain-pw").unwrap();
    cli_ok(&server, &["user", "create", "plain", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    let (status, _) = login(&server, "plain", "plain-pw").await;
    assert_eq!(status, 403, "without local_password_fallback");

    // The directory down: directory users get a quick 503, local admins still sign in.
    let admin_password = local_admin(&server, "root");
    drop(slapd);
    let (status, body) = login(&server, "mlefevre", "marie-pw").await;
    assert_eq!((status, body["errcode"].as_str()), (503, Some("M_UNKNOWN")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("directory"), "{body}");
    let (status, body) = login(&server, "jdupont", "jean-pw").await;
    assert_eq!(status, 503, "a provisioned directory user too: {body}");
    let (status, body) = login(&server, "root", &admin_password).await;
    assert_eq!(status, 200, "local admin while the directory is down: {body}");
    let err = {
        let client = server.client().await;
        client.matrix_auth().login_username("cbernard", "claire-pw").send().await.unwrap_err()
    };
    assert_eq!(sdk_error(&err).0, 503);
}

/// A loopback port nobody listens on.
fn hemicycle_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA and a certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Hemicycle test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// `ldaps://` and StartTLS with the directory's CA from `ca_file`; without it (system roots)
/// the test CA is not trusted and the directory counts as unreachable.
#[tokio::test]
async fn tls_directories_with_a_ca_file() {
    let (ca, cert, key) = certificates();
    let slapd =
        Slapd::start_with(&directory(), 3, Some(hemicycle_bridges::testing::Tls { cert_pem: &cert, key_pem: &key }))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let ca_file: toml::Value = ca_file.to_string_lossy().into_owned().into();
    let ldaps = slapd.ldaps_uri().unwrap();

    let (node, _s) = server(&ldaps, &[("ldap.ca_file", ca_file.clone())]);
    let (status, body) = login(&node, "jdupont", "jean-pw").await;
    assert_eq!(status, 200, "ldaps:// {body}");
    let (status, _) = login(&node, "jdupont", "wrong").await;
    assert_eq!(status, 403);
    drop(node);

    let (node, _s) = server(&slapd.uri(), &[("ldap.ca_file", ca_file), ("ldap.start_tls", true.into())]);
    let (status, body) = login(&node, "mlefevre", "marie-pw").await;
    assert_eq!(status, 200, "StartTLS {body}");
    drop(node);

    let (node, _s) = server(&ldaps, &[]);
    let (status, body) = login(&node, "jdupont", "jean-pw").await;
    assert_eq!((status, body["errcode"].as_str()), (503, Some("M_UNKNOWN")), "untrusted certificate: {body}");
}

/// A directory that accepts connections and never answers: sign-in ends with 503 within
/// `timeout_ms` instead of hanging (the request would otherwise never return).
#[tokio::test]
async fn a_hanging_directory_answers_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("ldap://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let (server, _secrets) =
        server(&uri, &[("ldap.timeout_ms", 300.into()), ("ldap.local_password_fallback", true.into())]);
    let request = login(&server, "jdupont", "jean-pw");
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), request).await.expect("login returned");
    assert_eq!((status, body["errcode"].as_str()), (503, Some("M_UNKNOWN")), "{body}");
    // With local_password_fallback, a local account that is not an admin signs in meanwhile.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "plain-pw").unwrap();
    cli_ok(&server, &["user", "create", "plain", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    let (status, body) = login(&server, "plain", "plain-pw").await;
    assert_eq!(status, 200, "{body}");
    drop(held);
}

/// A private room with an alias; the bridge invited with `bridge_power`; inviting needs 50.
async fn create_room(server: &TestServer, token: &str, alias: &str, bridge_power: i64) -> String {
    let (status, body) = api(
        server,
        Method::POST,
        Some(token),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "room_alias_name": alias, "preset": "private_chat", "invite": ["@ldap:localhost"],
            "power_level_content_override": { "users": { "@ldap:localhost": bridge_power }, "invite": 50 } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn members(server: &TestServer, token: &str, room: &str) -> Vec<(String, String, Option<String>)> {
    let (status, body) =
        api(server, Method::GET, Some(token), &format!("/_matrix/client/v3/rooms/{room}/members"), None).await;
    assert_eq!(status, 200, "{body}");
    let mut out: Vec<_> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
                e["content"]["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    out.sort();
    out
}

fn membership(members: &[(String, String, Option<String>)], user: &str) -> Option<String> {
    members.iter().find(|m| m.0 == user).map(|m| m.1.clone())
}

#[tokio::test]
async fn directory_sync_accounts_groups_and_guard() {
    let slapd = Slapd::start(&directory(), 3).unwrap();
    let group = format!("cn=dsi,ou=groups,{BASE}");
    let table = |pairs: &[(&str, toml::Value)]| {
        toml::Value::Table(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    };
    let groups = toml::Value::Array(vec![
        table(&[("dn", group.clone().into()), ("room", "#dsi:localhost".into())]),
        table(&[
            ("dn", format!("cn=admins,ou=groups,{BASE}").into()),
            ("room", "#direction:localhost".into()),
            ("join", true.into()),
        ]),
        table(&[("dn", group.clone().into()), ("room", "#nopower:localhost".into())]),
        table(&[
            ("dn", format!("cn=admins,ou=groups,{BASE}").into()),
            ("room", "#espace:localhost".into()),
            ("space_children", true.into()),
        ]),
    ]);
    let (server, _secrets) = server(&slapd.uri(), &[("ldap.groups", groups)]);
    let admin_password = local_admin(&server, "root");
    let (_, body) = login(&server, "root", &admin_password).await;
    let root = body["access_token"].as_str().unwrap().to_owned();

    // A dry run prints the plan and changes nothing (not even the bridge's user).
    let plan = cli_ok(&server, &["ldap", "sync", "--dry-run"]);
    assert!(plan.contains("dry run"), "{plan}");
    assert!(plan.contains("5 created"), "{plan}");
    assert!(plan.contains("create jdupont (Jean Dupré)"), "{plan}");
    assert!(plan.contains("create jos=c3=a9 (José Núñez)"), "{plan}");
    assert!(!plan.contains("pmartin"), "{plan}");
    assert!(plan.contains("#dsi:localhost"), "the unknown room is reported: {plan}");
    let before = users(&server);
    assert!(!before.contains("@jdupont:"), "{before}");
    assert!(!before.contains("@ldap:"), "{before}");

    // The real run: five accounts (more than one unpaged search may return), the bridge's user.
    let summary = cli_ok(&server, &["ldap", "sync"]);
    assert!(summary.contains("5 created"), "{summary}");
    let list = users(&server);
    for user in ["@jdupont:", "@mlefevre:", "@hcoste:", "@jos=c3=a9:", "@cbernard:", "@ldap:"] {
        assert!(list.contains(user), "{user} in {list}");
    }
    assert!(!list.contains("@pmartin:"), "{list}");
    // The admin API finds an account by its entry, and shows where it comes from.
    let dn = format!("uid=jdupont,ou=people,{BASE}");
    let path = format!("/_synapse/admin/v1/auth_providers/ldap/users/{}", crate::common::urlencode(&dn));
    let (status, found) = api(&server, Method::GET, Some(&root), &path, None).await;
    assert_eq!((status, found["user_id"].as_str()), (200, Some("@jdupont:localhost")), "{found}");
    let (_, user) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@jdupont:localhost", None).await;
    assert_eq!(user["external_ids"], json!([{ "auth_provider": "ldap", "external_id": dn }]));
    // A second run finds nothing to do.
    let again = cli_ok(&server, &["ldap", "sync"]);
    assert!(again.contains("0 created, 0 updated, 0 deactivated"), "{again}");

    // Groups → rooms: the bridge joins the rooms it was invited to and brings the members in.
    let dsi = create_room(&server, &root, "dsi", 100).await;
    let direction = create_room(&server, &root, "direction", 100).await;
    let nopower = create_room(&server, &root, "nopower", 0).await;
    let espace = create_room(&server, &root, "espace", 100).await;
    let equipe = create_room(&server, &root, "equipe", 100).await;
    let (status, body) = api(
        &server,
        Method::PUT,
        Some(&root),
        &format!("/_matrix/client/v3/rooms/{espace}/state/m.space.child/{equipe}"),
        Some(json!({ "via": ["localhost"] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let summary = cli_ok(&server, &["ldap", "sync"]);
    assert!(summary.contains("5 memberships added"), "{summary}");
    assert!(summary.contains(&format!("{nopower}: the bridge user @ldap lacks the power to invite")), "{summary}");
    let m = members(&server, &root, &nopower).await;
    assert_eq!(membership(&m, "@jdupont:localhost"), None, "{m:?}");
    for room in [&espace, &equipe] {
        let m = members(&server, &root, room).await;
        assert_eq!(membership(&m, "@hcoste:localhost").as_deref(), Some("invite"), "space and child: {m:?}");
    }
    let m = members(&server, &root, &dsi).await;
    assert_eq!(membership(&m, "@ldap:localhost").as_deref(), Some("join"), "{m:?}");
    assert_eq!(membership(&m, "@jdupont:localhost").as_deref(), Some("invite"), "{m:?}");
    assert_eq!(membership(&m, "@mlefevre:localhost").as_deref(), Some("invite"), "{m:?}");
    assert_eq!(membership(&m, "@pmartin:localhost"), None, "disabled members are not accounts");
    let m = members(&server, &root, &direction).await;
    assert_eq!(membership(&m, "@hcoste:localhost").as_deref(), Some("join"), "join = true joins: {m:?}");

    // A signed-in member: leaves the group → removed from the room; leaves the directory →
    // deactivated and logged out.
    let (status, body) = login(&server, "mlefevre", "marie-pw").await;
    assert_eq!(status, 200, "{body}");
    let marie = body["access_token"].as_str().unwrap().to_owned();
    slapd
        .modify(&format!(
            "dn: {group}\nchangetype: modify\ndelete: member\nmember: uid=mlefevre,ou=people,{BASE}\n\n\
             dn: uid=cbernard,ou=people,{BASE}\nchangetype: delete\n"
        ))
        .unwrap();
    let summary = cli_ok(&server, &["ldap", "sync"]);
    assert!(summary.contains("1 deactivated"), "{summary}");
    assert!(summary.contains("1 removed"), "{summary}");
    let m = members(&server, &root, &dsi).await;
    let marie_member = m.iter().find(|x| x.0 == "@mlefevre:localhost").unwrap();
    assert_eq!(marie_member.1, "leave", "{m:?}");
    assert_eq!(marie_member.2.as_deref(), Some(format!("left {group}").as_str()));
    assert_eq!(membership(&m, "@jdupont:localhost").as_deref(), Some("invite"));
    let list = users(&server);
    assert!(list.lines().any(|l| l.starts_with("@cbernard:localhost") && l.contains("deactivated")), "{list}");
    let (status, body) = login(&server, "cbernard", "claire-pw").await;
    assert_eq!(status, 403, "gone from the directory: {body}");

    // Marie still signs in (she only left a group); Claire's entry coming back reactivates
    // nothing: only an operator does.
    let (status, _) = api(&server, Method::GET, Some(&marie), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 200);
    let entry = person("cbernard", "Claire Bernard", "claire-pw", "");
    let (dn_line, rest) = entry.split_once('\n').unwrap();
    slapd.modify(&format!("{dn_line}\nchangetype: add\n{rest}")).unwrap();
    cli_ok(&server, &["ldap", "sync"]);
    let (status, _) = login(&server, "cbernard", "claire-pw").await;
    assert_eq!(status, 403, "a deactivated directory user never signs in again by itself");
    let out = cli_ok(&server, &["user", "reactivate", "cbernard"]);
    assert!(out.contains("reactivated"), "{out}");
    let (status, body) = login(&server, "cbernard", "claire-pw").await;
    assert_eq!(status, 200, "reactivated by the operator: {body}");

    // Deactivating a signed-in user logs out every device.
    slapd
        .modify(&format!(
            "dn: uid=mlefevre,ou=people,{BASE}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n"
        ))
        .unwrap();
    let summary = cli_ok(&server, &["ldap", "sync"]);
    assert!(summary.contains("1 deactivated"), "{summary}");
    let (status, body) = api(&server, Method::GET, Some(&marie), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{body}");

    // A run that would deactivate everyone (the filter now matches nobody) is refused whole.
    let mut ldif = String::new();
    for uid in ["jdupont", "hcoste", "josé", "cbernard"] {
        ldif.push_str(&format!(
            "dn: uid={uid},ou=people,{BASE}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n\n"
        ));
    }
    slapd.modify(&ldif).unwrap();
    let out = server.cli(&["ldap", "sync"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused") && stderr.contains("max_deactivate_ratio"), "{stderr}");
    // The message names the flag that lets this run through: the server runs, so the CLI's
    // sync runs in it with its configuration, and only the flag can allow more.
    assert!(stderr.contains("hemicycle ldap sync --max-deactivate-ratio"), "{stderr}");
    let list = users(&server);
    assert!(list.lines().any(|l| l.starts_with("@jdupont:localhost") && !l.contains("deactivated")), "{list}");
    for bad in ["1.5", "-0.1", "NaN", "x"] {
        let out = server.cli(&["ldap", "sync", &format!("--max-deactivate-ratio={bad}")]);
        assert!(!out.status.success(), "--max-deactivate-ratio {bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("between 0 and 1"), "{bad}: {stderr}");
    }
    assert_eq!(users(&server), list, "a refused ratio changes nothing");
    // A ratio too low for this run is still refused; a dry run with 1 shows the plan.
    let out = server.cli(&["ldap", "sync", "--max-deactivate-ratio", "0.6"]);
    assert!(!out.status.success(), "4 of 5 is more than 0.6");
    let plan = cli_ok(&server, &["ldap", "sync", "--dry-run", "--max-deactivate-ratio", "1"]);
    assert!(plan.contains("4 deactivated"), "{plan}");
    assert_eq!(users(&server), list, "a dry run changes nothing");
    let summary = cli_ok(&server, &["ldap", "sync", "--max-deactivate-ratio", "1"]);
    assert!(summary.contains("4 deactivated"), "{summary}");
    let list = users(&server);
    for user in ["@jdupont:localhost", "@hcoste:localhost", "@jos=c3=a9:localhost", "@cbernard:localhost"] {
        assert!(list.lines().any(|l| l.starts_with(user) && l.contains("deactivated")), "{user}: {list}");
    }
    // Each use of the flag is in the audit log, with the run's outcome.
    let (status, audit) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await;
    assert_eq!(status, 200, "{audit}");
    let runs: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "ldap.sync").collect();
    assert_eq!(runs.len(), 3, "{audit}");
    assert_eq!(runs[0]["admin"], "hemicycle-cli");
    assert_eq!(runs[0]["details"]["max_deactivate_ratio"], 1.0);
    assert_eq!(runs[0]["details"]["configured_ratio"], 0.5);
    assert_eq!(runs[0]["details"]["dry_run"], false);
    assert_eq!(runs[0]["details"]["outcome"]["deactivated"], 4);
    assert_eq!(runs[1]["details"]["dry_run"], true);
    assert!(runs[2]["details"]["outcome"]["failed"].as_str().unwrap().contains("refused"), "{audit}");

    // The directory down: the sync fails and changes nothing.
    drop(slapd);
    let out = server.cli(&["ldap", "sync"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("directory"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(users(&server), list);
}

/// A bad `[ldap]` section stops the start-up with the key named (exit code 2).
#[test]
fn bad_ldap_config_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (overrides, key) in [
        (vec![("ldap.enabled", toml::Value::from(true)), ("ldap.uri", "ldap://127.0.0.1:1".into())], "ldap.base"),
        (
            vec![
                ("ldap.enabled", true.into()),
                ("ldap.uri", "ldap://127.0.0.1:1".into()),
                ("ldap.base", BASE.into()),
                ("ldap.bind_dn", SERVICE_DN.into()),
                ("ldap.bind_password_file", "/nonexistent/secret".into()),
                ("ldap.allow_insecure", true.into()),
            ],
            "ldap.bind_password_file",
        ),
        (vec![("ldap.max_deactivate", toml::Value::from(0.2))], "ldap"),
    ] {
        let config = crate::common::write_config(dir.path(), &overrides);
        let out =
            std::process::Command::new(crate::common::BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

/// `sync_interval_s`: the server syncs by itself, from start-up on.
#[tokio::test]
async fn the_server_syncs_periodically() {
    let slapd = Slapd::start(&directory(), 3).unwrap();
    let (server, _secrets) = server(&slapd.uri(), &[("ldap.sync_interval_s", 1.into())]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Observed through the operator's command: the accounts appear without anyone asking.
    while !users(&server).contains("@cbernard:localhost") {
        assert!(std::time::Instant::now() < deadline, "no periodic sync: {}", users(&server));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slapd
        .modify(&format!(
            "dn: uid=cbernard,ou=people,{BASE}\nchangetype: modify\nreplace: cn\ncn: Claire Bernard-Roy\n"
        ))
        .unwrap();
    let (_, body) = login(&server, "jdupont", "jean-pw").await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    loop {
        let (_, profile) =
            api(&server, Method::GET, Some(&token), "/_matrix/client/v3/profile/@cbernard:localhost", None).await;
        if profile["displayname"] == "Claire Bernard-Roy" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the next periodic sync did not refresh: {profile}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plain `ldap://` without StartTLS sends directory passwords in clear and lets anyone on the path
/// forge the directory's answers (admin flags included): refused at start-up, naming the key and
/// why, unless `ldap.allow_insecure`; StartTLS and ldaps:// need no such key.
#[test]
fn plain_ldap_is_refused_without_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let section = |uri: &str, extra: &[(&'static str, toml::Value)]| {
        let mut overrides: Vec<(&str, toml::Value)> =
            vec![("ldap.enabled", true.into()), ("ldap.uri", uri.into()), ("ldap.base", BASE.into())];
        overrides.extend(extra.iter().cloned());
        crate::common::write_config(dir.path(), &overrides)
    };
    let config = section("ldap://127.0.0.1:1", &[]);
    let out = std::process::Command::new(crate::common::BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in ["ldap.uri", "ldap://127.0.0.1:1", "StartTLS", "in clear", "ldap.allow_insecure"] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    // A list with one plain URI among ldaps:// ones is refused too.
    let uris = toml::Value::Array(vec!["ldaps://127.0.0.1:1".into(), "ldap://127.0.0.1:2".into()]);
    let config = section("ldaps://127.0.0.1:1", &[("ldap.uri", uris)]);
    let out = std::process::Command::new(crate::common::BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ldap://127.0.0.1:2"));
    // Accepted: with allow_insecure, with StartTLS, ldaps:// (any command loads the configuration).
    for config in [
        section("ldap://127.0.0.1:1", &[("ldap.allow_insecure", true.into())]),
        section("ldap://127.0.0.1:1", &[("ldap.start_tls", true.into())]),
        section("ldaps://127.0.0.1:1", &[]),
    ] {
        let out = std::process::Command::new(crate::common::BIN)
            .args(["user", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// An appservice registration holding `@ws_.*` exclusively, its sender `@workspace` (no URL: it
/// takes no traffic).
fn workspace_registration(dir: &std::path::Path) -> toml::Value {
    let path = dir.join("workspace.yaml");
    std::fs::write(
        &path,
        "id: workspace\nurl: null\nas_token: as-token-ldap\nhs_token: hs-token-ldap\nsender_localpart: workspace\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: \"@ws_.*:localhost\"\n",
    )
    .unwrap();
    toml::Value::Array(vec![path.to_string_lossy().into_owned().into()])
}

fn external_ids(user: &Value) -> Value {
    user["external_ids"].clone()
}

/// Directory entries named like accounts the directory did not make: a break-glass admin made
/// with `hemicycle user create --admin`, a local account that is not an admin, an appservice's
/// sender and a user in its exclusive namespace, the bridge's own user. Neither the sync nor a
/// directory sign-in takes any of them over (password, admin flag and link stay as they were);
/// the dry run and the summary report them; `ldap link` hands the local ones to the directory
/// (server running, then stopped) and refuses the appservice's and the bridge's.
#[tokio::test]
async fn the_directory_never_takes_over_accounts_it_did_not_make() {
    let mut ldif = format!(
        "dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: hemicycle\n\
         userPassword: service-secret\n\n"
    );
    for (uid, cn, password, extra) in [
        ("root", "Root Annuaire", "root-dir-pw", ""),
        ("plain", "Plain Annuaire", "plain-dir-pw", "employeeType: admin\n"),
        ("workspace", "Workspace Annuaire", "ws-dir-pw", "employeeType: admin\n"),
        ("ws_agent", "Agent Annuaire", "agent-dir-pw", ""),
        ("ldap", "Bridge Annuaire", "bridge-dir-pw", "employeeType: admin\n"),
        ("jdupont", "Jean Dupré", "jean-pw", ""),
    ] {
        ldif.push_str(&person(uid, cn, password, extra));
        ldif.push('\n');
    }
    let slapd = Slapd::start(&ldif, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _secrets) =
        server(&slapd.uri(), &[("appservices.registrations", workspace_registration(dir.path()))]);
    let root_password = local_admin(&server, "root");
    std::fs::write(dir.path().join("pw"), "plain-local-pw").unwrap();
    cli_ok(&server, &["user", "create", "plain", "--password-file", dir.path().join("pw").to_str().unwrap()]);

    let not_linked = [
        ("root", "a local account the directory did not create"),
        ("plain", "a local account the directory did not create"),
        ("workspace", "held exclusively by appservice `workspace`"),
        ("ws_agent", "held exclusively by appservice `workspace`"),
        ("ldap", "the LDAP bridge's own user"),
    ];
    let reported = |out: &str| {
        for (name, why) in not_linked {
            assert!(
                out.lines().any(|l| l.contains(&format!("not linked: {name} (uid={name},")) && l.contains(why)),
                "{name} not reported as {why:?}: {out}"
            );
        }
        assert!(out.contains("5 not linked"), "{out}");
        assert!(out.contains("`hemicycle ldap link root`"), "the way out is named: {out}");
    };
    let plan = cli_ok(&server, &["ldap", "sync", "--dry-run"]);
    reported(&plan);
    let summary = cli_ok(&server, &["ldap", "sync"]);
    reported(&summary);

    // Nothing was taken over: passwords, admin flags and links are as before.
    let list = users(&server);
    assert!(list.lines().any(|l| l.starts_with("@root:localhost") && l.contains("admin")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("@plain:localhost") && !l.contains("admin")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("@workspace:localhost") && !l.contains("admin")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("@ldap:localhost") && !l.contains("admin")), "{list}");
    assert!(!list.contains("@ws_agent:"), "no account in the appservice's namespace: {list}");
    let (status, body) = login(&server, "root", &root_password).await;
    assert_eq!(status, 200, "the break-glass admin keeps its password: {body}");
    let root = body["access_token"].as_str().unwrap().to_owned();
    for user in ["root", "plain", "workspace", "ldap"] {
        let (status, body) =
            api(&server, Method::GET, Some(&root), &format!("/_synapse/admin/v2/users/@{user}:localhost"), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(external_ids(&body), json!([]), "{user} not linked: {body}");
    }
    // Only jdupont was created; nothing else was planned or done.
    assert!(plan.contains("1 created") && plan.contains("0 updated"), "{plan}");
    assert!(summary.contains("1 created") && summary.contains("0 updated"), "{summary}");

    // Directory sign-ins of those names take nothing over either (and make no account).
    for (user, password) in [
        ("root", "root-dir-pw"),
        ("plain", "plain-dir-pw"),
        ("workspace", "ws-dir-pw"),
        ("ws_agent", "agent-dir-pw"),
        ("ldap", "bridge-dir-pw"),
    ] {
        let (status, body) = login(&server, user, password).await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{user}: {body}");
    }
    assert_eq!(users(&server), list, "no account changed by the sign-ins");
    let (status, _) = login(&server, "root", &root_password).await;
    assert_eq!(status, 200);
    let (status, body) = login(&server, "jdupont", "jean-pw").await;
    assert_eq!(status, 200, "directory accounts still sign in: {body}");

    // `ldap link` never hands the appservice's users or the bridge's to the directory.
    for (user, said) in
        [("workspace", "appservice `workspace`"), ("@ws_agent:localhost", "appservice `workspace`"), ("ldap", "bridge")]
    {
        let out = server.cli(&["ldap", "link", user]);
        assert!(!out.status.success(), "{user} linked");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused") && stderr.contains(said), "{user}: {stderr}");
    }
    let out = server.cli(&["ldap", "link", "jdupont"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already"));

    // The operator links the break-glass admin (server running): the directory's password and
    // admin flag from now on.
    let out = cli_ok(&server, &["ldap", "link", "root"]);
    assert!(out.contains(&format!("linked @root:localhost to uid=root,ou=people,{BASE}")), "{out}");
    let (status, _) = login(&server, "root", &root_password).await;
    assert_eq!(status, 403, "the local password is gone");
    let (status, body) = login(&server, "root", "root-dir-pw").await;
    assert_eq!(status, 200, "{body}");
    let list = users(&server);
    assert!(list.lines().any(|l| l.starts_with("@root:localhost") && !l.contains("admin")), "{list}");

    // And the other one with the server stopped.
    server.stop();
    let out = cli_ok(&server, &["ldap", "link", "plain"]);
    assert!(out.contains("linked @plain:localhost") && out.contains("admin: yes"), "{out}");
    server.restart();
    let (status, body) = login(&server, "plain", "plain-dir-pw").await;
    assert_eq!(status, 200, "{body}");
    let plain = body["access_token"].as_str().unwrap().to_owned();
    let (_, body) = api(&server, Method::GET, Some(&plain), "/_synapse/admin/v2/users/@plain:localhost", None).await;
    assert_eq!(body["admin"], 1, "admin from the directory: {body}");
    assert_eq!(
        external_ids(&body),
        json!([{ "auth_provider": "ldap", "external_id": format!("uid=plain,ou=people,{BASE}") }])
    );

    // The next sync manages the linked accounts and still reports the others.
    let summary = cli_ok(&server, &["ldap", "sync"]);
    assert!(summary.contains("3 not linked"), "{summary}");
    assert!(!summary.contains("not linked: root") && !summary.contains("not linked: plain"), "{summary}");

    // Both links are in the audit log.
    let (status, audit) = api(&server, Method::GET, Some(&plain), "/_synapse/admin/v1/audit", None).await;
    assert_eq!(status, 200, "{audit}");
    let links: Vec<(&str, &str, bool)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ldap.link")
        .map(|e| (e["admin"].as_str().unwrap(), e["target"].as_str().unwrap(), e["details"]["was_admin"] == true))
        .collect();
    assert_eq!(
        links,
        [("hemicycle-cli", "@plain:localhost", false), ("hemicycle-cli", "@root:localhost", true)],
        "{audit}"
    );
}

/// Long-polls `/sync` until `room` is among the user's invites; returns the user's own member
/// event content from the invite state.
async fn wait_for_invite(server: &TestServer, token: &str, user: &str, room: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut since: Option<String> = None;
    loop {
        let mut path = "/_matrix/client/v3/sync?timeout=5000".to_owned();
        if let Some(since) = &since {
            path.push_str(&format!("&since={since}"));
        }
        let (status, sync) = api(server, Method::GET, Some(token), &path, None).await;
        assert_eq!(status, 200, "{sync}");
        let own = sync["rooms"]["invite"][room]["invite_state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
            .map(|e| e["content"].clone());
        if let Some(content) = own {
            return content;
        }
        assert!(std::time::Instant::now() < deadline, "no invite into {room} for {user}: {sync}");
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
}

/// The address the directory gives an account it makes is bound like any other: a third-party
/// invite of it, sent before the agent ever signed in, becomes the new account's invite, signed
/// with the invite's token.
#[tokio::test]
async fn a_directory_account_takes_up_the_invites_of_its_address() {
    let slapd = Slapd::start(&directory(), 3).unwrap();
    let (server, _secrets) = server(&slapd.uri(), &[]);
    let password = local_admin(&server, "root");
    let (status, body) = login(&server, "root", &password).await;
    assert_eq!(status, 200, "{body}");
    let root = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) =
        api(&server, Method::POST, Some(&root), "/_matrix/client/v3/createRoom", Some(json!({ "room_version": "11" })))
            .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{}/invite", crate::common::urlencode(&room));
    let invite = json!({ "id_server": "id.example", "id_access_token": "t", "medium": "email",
                         "address": "mlefevre@example.gouv.fr" });
    let (status, body) = api(&server, Method::POST, Some(&root), &path, Some(invite)).await;
    assert_eq!(status, 200, "{body}");
    let (status, state) = api(
        &server,
        Method::GET,
        Some(&root),
        &format!("/_matrix/client/v3/rooms/{}/state", crate::common::urlencode(&room)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{state}");
    let token = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.third_party_invite")
        .and_then(|e| e["state_key"].as_str())
        .expect("the third-party invite")
        .to_owned();

    let (status, body) = login(&server, "mlefevre", "marie-pw").await;
    assert_eq!(status, 200, "{body}");
    let marie = body["access_token"].as_str().unwrap();
    let member = wait_for_invite(&server, marie, "@mlefevre:localhost", &room).await;
    assert_eq!(member["membership"], "invite", "{member}");
    assert_eq!(member["third_party_invite"]["signed"]["token"], token.as_str(), "{member}");
}

/// Makes `root` (password `Admin-Passw0rd`, which keeps the tests' rules) and signs it in.
async fn policy_admin(server: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "Admin-Passw0rd").unwrap();
    cli_ok(server, &["user", "create", "root", "--admin", "--password-file", file.to_str().unwrap()]);
    login(server, "root", "Admin-Passw0rd").await.1["access_token"].as_str().unwrap().to_owned()
}

async fn expiry_of(server: &TestServer, token: &str) -> Value {
    let path = "/_matrix/client/unstable/account_validity/validity";
    api(server, Method::GET, Some(token), path, None).await.1["expiration_ts"].clone()
}

async fn expire_now(server: &TestServer, root: &str, user: &str) {
    let body = json!({ "user_id": user, "expiration_ts": 1000 });
    let (status, answer) =
        api(server, Method::POST, Some(root), "/_synapse/admin/v1/account_validity/validity", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

async fn whoami(server: &TestServer, token: &str) -> (u16, Value) {
    api(server, Method::GET, Some(token), "/_matrix/client/v3/account/whoami", None).await
}

/// Accounts the directory manages keep the directory's passwords, whatever `[password_policy]`
/// says (the directory owns them), and follow the directory rather than `[account_validity]`
/// unless `directory_accounts_expire`.
#[tokio::test]
async fn directory_accounts_are_exempt_from_the_password_policy_and_follow_the_directory() {
    let slapd = Slapd::start(&directory(), 3).unwrap();
    let rules: Vec<(&str, toml::Value)> = vec![
        ("password_policy.enabled", true.into()),
        ("password_policy.minimum_length", 12.into()),
        ("password_policy.require_digit", true.into()),
        ("password_policy.require_uppercase", true.into()),
        ("account_validity.period", "30d".into()),
        ("account_validity.exclude", toml::Value::Array(vec!["@root:localhost".into()])),
    ];

    let (first, _secrets) = server(&slapd.uri(), &rules);
    let root = policy_admin(&first).await;
    // "jean-pw" breaks every rule: the directory's password still signs in.
    let (status, body) = login(&first, "jdupont", "jean-pw").await;
    assert_eq!(status, 200, "{body}");
    let jean = body["access_token"].as_str().unwrap().to_owned();
    // Changing it here is refused for being the directory's, not for the rules.
    let change = json!({ "new_password": "short", "auth": { "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "jdupont" }, "password": "jean-pw" } });
    let refused = api(&first, Method::POST, Some(&jean), "/_matrix/client/v3/account/password", Some(change)).await;
    assert_eq!((refused.0, refused.1["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{}", refused.1);
    // No expiry of its own; an expiry set anyway does not lock it out.
    assert_eq!(expiry_of(&first, &jean).await, Value::Null);
    expire_now(&first, &root, "@jdupont:localhost").await;
    assert_eq!(whoami(&first, &jean).await.0, 200, "the directory decides, not the expiry");
    drop(first);

    // With directory_accounts_expire, directory accounts expire like the others.
    let mut expiring = rules.clone();
    expiring.push(("account_validity.directory_accounts_expire", true.into()));
    let (second, _secrets) = server(&slapd.uri(), &expiring);
    let root = policy_admin(&second).await;
    let marie = login(&second, "mlefevre", "marie-pw").await.1["access_token"].as_str().unwrap().to_owned();
    assert!(expiry_of(&second, &marie).await.is_u64(), "a directory account with an expiry");
    expire_now(&second, &root, "@mlefevre:localhost").await;
    let refused = whoami(&second, &marie).await;
    assert_eq!((refused.0, refused.1["errcode"].as_str()), (403, Some("ORG_MATRIX_EXPIRED_ACCOUNT")), "{}", refused.1);
}
