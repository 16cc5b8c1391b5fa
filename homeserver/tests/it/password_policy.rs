//! Password rules (MSC2000): announced at `/password_policy` and enforced on every way a password
//! is set — registration, a change, an admin's reset or creation, the command line — with the
//! MSC's errcodes, and nothing changed by a refused password.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, TestServer};

/// Ten characters with a digit, a symbol, both cases.
fn strict() -> Vec<(&'static str, toml::Value)> {
    vec![
        ("password_policy.enabled", true.into()),
        ("password_policy.minimum_length", 10.into()),
        ("password_policy.require_digit", true.into()),
        ("password_policy.require_symbol", true.into()),
        ("password_policy.require_lowercase", true.into()),
        ("password_policy.require_uppercase", true.into()),
    ]
}

const GOOD: &str = "Correct-Horse-7";

/// Each broken rule and its errcode.
const BAD: &[(&str, &str)] = &[
    ("Sh0rt-", "M_PASSWORD_TOO_SHORT"),
    ("No-Digits-Here", "M_PASSWORD_NO_DIGIT"),
    ("NoSymbols1234", "M_PASSWORD_NO_SYMBOL"),
    ("no-upper-case-1", "M_PASSWORD_NO_UPPERCASE"),
    ("NO-LOWER-CASE-1", "M_PASSWORD_NO_LOWERCASE"),
];

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await
}

fn errcode(response: &(u16, Value)) -> (u16, &str) {
    (response.0, response.1["errcode"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn the_policy_is_announced_on_every_path_clients_use() {
    let server = TestServer::start_with(&strict());
    let expected = json!({
        "m.minimum_length": 10, "m.require_digit": true, "m.require_symbol": true,
        "m.require_lowercase": true, "m.require_uppercase": true,
    });
    for version in ["v3", "r0", "unstable"] {
        let (status, body) =
            api(&server, Method::GET, None, &format!("/_matrix/client/{version}/password_policy"), None).await;
        assert_eq!((status, &body), (200, &expected), "{version}");
    }
    let open = TestServer::start();
    let (status, body) = api(&open, Method::GET, None, "/_matrix/client/v3/password_policy", None).await;
    assert_eq!((status, body), (200, json!({})), "no policy: nothing announced");
    crate::common::register_raw(&open, "anything").await;
}

#[tokio::test]
async fn registration_refuses_each_broken_rule_before_authentication() {
    let server = TestServer::start_with(&strict());
    for (password, code) in BAD {
        let body = json!({ "username": "agent", "password": password });
        let refused = api(&server, Method::POST, None, "/_matrix/client/v3/register", Some(body)).await;
        assert_eq!(errcode(&refused), (400, *code), "{password}");
    }
    // With the dummy stage completed too, a weak password still creates nothing.
    let (_, first) = api(
        &server,
        Method::POST,
        None,
        "/_matrix/client/v3/register",
        Some(json!({ "username": "agent", "password": GOOD })),
    )
    .await;
    let session = first["session"].as_str().expect("a good password gets the UIA challenge").to_owned();
    let weak =
        json!({ "username": "agent", "password": "weak", "auth": { "type": "m.login.dummy", "session": session } });
    let refused = api(&server, Method::POST, None, "/_matrix/client/v3/register", Some(weak)).await;
    assert_eq!(errcode(&refused), (400, "M_PASSWORD_TOO_SHORT"));
    let (status, _) =
        api(&server, Method::GET, None, "/_matrix/client/v3/register/available?username=agent", None).await;
    assert_eq!(status, 200, "the name is still free");
    let good =
        json!({ "username": "agent", "password": GOOD, "auth": { "type": "m.login.dummy", "session": session } });
    let (status, body) = api(&server, Method::POST, None, "/_matrix/client/v3/register", Some(good)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn password_changes_and_admin_resets_keep_the_rules() {
    let server = TestServer::start_with(&strict());
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "Root-Passw0rd").unwrap();
    let out = server.cli(&["user", "create", "root", "--admin", "--password-file", pw_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = login(&server, "root", "Root-Passw0rd").await.1["access_token"].as_str().unwrap().to_owned();
    let (_, first) = api(
        &server,
        Method::POST,
        None,
        "/_matrix/client/v3/register",
        Some(json!({ "username": "alice", "password": GOOD })),
    )
    .await;
    let body = json!({ "username": "alice", "password": GOOD, "auth": { "type": "m.login.dummy", "session": first["session"] } });
    let (_, done) = api(&server, Method::POST, None, "/_matrix/client/v3/register", Some(body)).await;
    let alice = done["access_token"].as_str().unwrap().to_owned();

    // The user's own change, with a correct current password.
    for (password, code) in BAD {
        let body = json!({ "new_password": password, "auth": { "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" }, "password": GOOD } });
        let refused = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/account/password", Some(body)).await;
        assert_eq!(errcode(&refused), (400, *code), "{password}");
    }
    // An admin's reset, and an admin's creation of an account with a password.
    for (password, code) in BAD {
        let reset = api(
            &server,
            Method::POST,
            Some(&root),
            "/_synapse/admin/v1/reset_password/@alice:localhost",
            Some(json!({ "new_password": password })),
        )
        .await;
        assert_eq!(errcode(&reset), (400, *code), "reset to {password}");
        let create = api(
            &server,
            Method::PUT,
            Some(&root),
            "/_synapse/admin/v2/users/@bob:localhost",
            Some(json!({ "password": password })),
        )
        .await;
        assert_eq!(errcode(&create), (400, *code), "creation with {password}");
    }
    assert_eq!(login(&server, "alice", GOOD).await.0, 200, "every refusal left the password as it was");
    let (status, _) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@bob:localhost", None).await;
    assert_eq!(status, 404, "no account was made with a refused password");

    let reset = api(
        &server,
        Method::POST,
        Some(&root),
        "/_synapse/admin/v1/reset_password/@alice:localhost",
        Some(json!({ "new_password": "Another-Good-1" })),
    )
    .await;
    assert_eq!(reset.0, 200, "{}", reset.1);
    assert_eq!(login(&server, "alice", "Another-Good-1").await.0, 200);
}

#[tokio::test]
async fn the_command_line_refuses_weak_passwords_and_makes_up_good_ones() {
    let server = TestServer::start_with(&strict());
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "NoSymbols1234").unwrap();
    let out = server.cli(&["user", "create", "carol", "--password-file", pw_file.to_str().unwrap()]);
    assert!(!out.status.success(), "a weak password is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbol"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        api(&server, Method::GET, None, "/_matrix/client/v3/register/available?username=carol", None).await.0,
        200
    );

    // Without a password file the command makes one up, and it keeps the rules.
    let out = server.cli(&["user", "create", "carol"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let made_up =
        stdout.lines().find_map(|l| l.strip_prefix("password: ")).expect("the password is shown").trim().to_owned();
    assert_eq!(login(&server, "carol", &made_up).await.0, 200);

    let out = server.cli(&["user", "reset-password", "@carol:localhost", "--password-file", pw_file.to_str().unwrap()]);
    assert!(!out.status.success(), "a weak reset is refused");
    assert_eq!(login(&server, "carol", &made_up).await.0, 200, "and changed nothing");
    let out = server.cli(&["user", "reset-password", "@carol:localhost"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let again =
        stdout.lines().find_map(|l| l.strip_prefix("password: ")).expect("the password is shown").trim().to_owned();
    assert_eq!(login(&server, "carol", &again).await.0, 200);
}

/// A reset by email (the emailed session is not used up by a refused password) and the console's
/// forms (an account made, a password reset) keep the rules too.
#[tokio::test]
async fn the_email_reset_and_the_consoles_forms_keep_the_rules() {
    use crate::console::{csrf, post, sign_in};
    let (port, mut inbox) = crate::email::smtp_sink().await;
    let mut settings = strict();
    settings.extend([
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
    ]);
    let server = TestServer::start_with(&settings);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "Root-Passw0rd").unwrap();
    let out = server.cli(&["user", "create", "root", "--admin", "--password-file", pw_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = login(&server, "root", "Root-Passw0rd").await.1["access_token"].as_str().unwrap().to_owned();

    // The console: an account with a weak password is not made; a weak reset changes nothing.
    let (_, cookie) = sign_in(&server, "root", "Root-Passw0rd").await;
    let token = csrf(&server, &cookie, "/users").await;
    for (password, _) in BAD {
        let form = [("csrf", token.as_str()), ("localpart", "alice"), ("password", password)];
        assert_eq!(post(&server, Some(&cookie), "/users/create", &form).await.status(), 400, "{password}");
    }
    let (status, _) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@alice:localhost", None).await;
    assert_eq!(status, 404, "no account was made with a refused password");
    let form = [("csrf", token.as_str()), ("localpart", "alice"), ("password", GOOD)];
    assert_eq!(post(&server, Some(&cookie), "/users/create", &form).await.status(), 303);
    for (password, _) in BAD {
        let form = [("csrf", token.as_str()), ("user", "@alice:localhost"), ("password", password)];
        assert_eq!(post(&server, Some(&cookie), "/users/password", &form).await.status(), 400, "{password}");
    }
    assert_eq!(login(&server, "alice", GOOD).await.0, 200, "the refused resets changed nothing");

    // A reset by email: the weak password is refused before the validated session is used.
    let address = json!({ "threepids": [{ "medium": "email", "address": "alice@ministere.example" }] });
    let (status, body) =
        api(&server, Method::PUT, Some(&root), "/_synapse/admin/v2/users/@alice:localhost", Some(address)).await;
    assert_eq!(status, 200, "{body}");
    let ask = json!({ "client_secret": "r3set", "email": "alice@ministere.example", "send_attempt": 1 });
    let (status, body) =
        api(&server, Method::POST, None, "/_matrix/client/v3/account/password/email/requestToken", Some(ask)).await;
    assert_eq!(status, 200, "{body}");
    let sid = body["sid"].as_str().unwrap().to_owned();
    let (_, data) = tokio::time::timeout(std::time::Duration::from_secs(20), inbox.recv()).await.unwrap().unwrap();
    let text = crate::email::decode(&data);
    let query = text.split("submit_token?").nth(1).expect("a link").split_whitespace().next().unwrap().to_owned();
    let clicked =
        server.http().get(format!("{}/_hemicycle/client/email/submit_token?{query}", server.url)).send().await.unwrap();
    assert_eq!(clicked.status(), 200);
    let new_password = |password: &str| {
        json!({ "new_password": password,
                "auth": { "type": "m.login.email.identity", "threepid_creds": { "sid": sid, "client_secret": "r3set" } } })
    };
    for (password, code) in BAD {
        let refused =
            api(&server, Method::POST, None, "/_matrix/client/v3/account/password", Some(new_password(password))).await;
        assert_eq!(errcode(&refused), (400, *code), "{password}");
    }
    let done =
        api(&server, Method::POST, None, "/_matrix/client/v3/account/password", Some(new_password("Another-Good-1")))
            .await;
    assert_eq!(done.0, 200, "the session survived the refusals: {}", done.1);
    assert_eq!(login(&server, "alice", "Another-Good-1").await.0, 200);
}
