//! The admins' web console (`/_hemicycle/console`) over HTTP: sign-in and its cookie, the
//! security headers, CSRF and cross-site refusals, sign-out, users made and deactivated through
//! it; and in a real browser (Debian's chromium driven by playwright-core, tests/console/browser.mjs).

use std::{path::Path, process::Command, time::Duration};

use reqwest::{header, redirect::Policy, Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{api, register_raw, urlencode, TestServer};

const CONSOLE: &str = "/_hemicycle/console";

/// A server with an admin `root` (password `root-pw`), made with the CLI.
fn server_with_admin(overrides: &[(&str, toml::Value)]) -> TestServer {
    let server = TestServer::start_with(overrides);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server
}

/// A request carrying an HTML form's fields.
fn with_form(request: reqwest::RequestBuilder, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body)
}

/// A client that asks for HTML as browsers do, and shows redirects instead of following them, so
/// cookies can be read.
fn browser() -> reqwest::Client {
    let mut headers = header::HeaderMap::new();
    headers.insert(header::ACCEPT, header::HeaderValue::from_static("text/html,*/*;q=0.8"));
    reqwest::Client::builder().redirect(Policy::none()).default_headers(headers).build().unwrap()
}

/// `POST` of a form to a console path, with the session cookie when given.
pub(crate) async fn post(
    server: &TestServer,
    cookie: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = with_form(browser().post(format!("{}{CONSOLE}{path}", server.url)), form);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.unwrap()
}

pub(crate) async fn get(server: &TestServer, cookie: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = browser().get(format!("{}{CONSOLE}{path}", server.url));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// Signs in; the whole `Set-Cookie` value and the `name=value` pair to send back.
pub(crate) async fn sign_in(server: &TestServer, user: &str, password: &str) -> (String, String) {
    let response = post(server, None, "/login", &[("username", user), ("password", password)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
    let set = response.headers().get(header::SET_COOKIE).expect("a session cookie").to_str().unwrap().to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    (set, pair)
}

/// The CSRF token in a page's forms.
pub(crate) async fn csrf(server: &TestServer, cookie: &str, path: &str) -> String {
    let response = get(server, Some(cookie), path).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    let start = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
    html[start..start + 64].to_owned()
}

async fn admin_token(server: &TestServer, user: &str, password: &str) -> Result<String, u16> {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let (status, body) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    match status {
        200 => Ok(body["access_token"].as_str().unwrap().to_owned()),
        other => Err(other),
    }
}

async fn account(server: &TestServer, token: &str, user: &str) -> (u16, Value) {
    api(server, Method::GET, Some(token), &format!("/_synapse/admin/v2/users/{user}"), None).await
}

#[tokio::test]
async fn console_sign_in_sets_a_strict_cookie_and_every_answer_the_security_headers() {
    let server = server_with_admin(&[]);
    let login = get(&server, None, "/login").await;
    assert_eq!(login.status(), 200);
    let headers = login.headers().clone();
    let csp = headers.get(header::CONTENT_SECURITY_POLICY).expect("a CSP").to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let html = login.text().await.unwrap();
    assert!(html.contains(r#"<html lang="en">"#) && html.contains(r#"<label for="password">"#), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");

    // Without a session, pages send the browser to the sign-in page.
    let anonymous = get(&server, None, "").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[header::LOCATION], format!("{CONSOLE}/login"));

    let (set, cookie) = sign_in(&server, "root", "root-pw").await;
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains(&format!("Path={CONSOLE}")) && set.contains("Max-Age=43200"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP without an https public_baseurl: {set}");
    let node = get(&server, Some(&cookie), "").await;
    assert_eq!(node.status(), 200);
    assert!(node.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("default-src 'none'"));
    let html = node.text().await.unwrap();
    assert!(html.contains("This node") && html.contains("Signing keys") && html.contains("ed25519:"), "{html}");
    for path in ["/peers", "/rooms", "/users", "/tokens", "/media", "/reports", "/audit"] {
        let page = get(&server, Some(&cookie), path).await;
        assert_eq!(page.status(), 200, "{path}");
        assert!(page.text().await.unwrap().contains(r#"<nav aria-label="Console sections">"#), "{path}");
    }
    let css = get(&server, None, "/static/console.css").await;
    assert_eq!(
        (css.status().as_u16(), css.headers()[header::CONTENT_TYPE].to_str().unwrap()),
        (200, "text/css; charset=utf-8")
    );

    // Bad input is an HTML error page with its status, never a panic.
    let missing = get(&server, Some(&cookie), "/users/view?id=@nobody:localhost").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(missing.text().await.unwrap().contains("User not found"));
    // A client that does not ask for HTML gets a Matrix error body.
    let url = format!("{}{CONSOLE}/users/view?id=@nobody:localhost", server.url);
    let json = server.http().get(url).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(json.status(), 404);
    let body: Value = json.json().await.unwrap();
    assert_eq!(
        (body["errcode"].as_str(), body["error"].as_str()),
        (Some("M_NOT_FOUND"), Some("User not found")),
        "{body}"
    );
    assert_eq!(get(&server, Some(&cookie), "/rooms/view?id=not-a-room").await.status(), 400);
    assert_eq!(get(&server, Some(&cookie), "/no-such-page").await.status(), 404);
    assert_eq!(get(&server, Some(&cookie), "/users?from=many").await.status(), 400);

    // Behind an https public_baseurl the cookie is Secure too.
    let tls = server_with_admin(&[("public_baseurl", "https://matrix.example.gouv.fr/".into())]);
    let (set, _) = sign_in(&tls, "root", "root-pw").await;
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn console_refuses_non_admins_and_deactivated_admins() {
    let server = server_with_admin(&[]);
    register_raw(&server, "alice").await;
    let response = post(&server, None, "/login", &[("username", "alice"), ("password", "pw")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::SET_COOKIE).is_none(), "no session for a non-admin");
    assert!(response.text().await.unwrap().contains("not a server admin"));
    // The refused sign-in left no device behind.
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, devices) =
        api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@alice:localhost/devices", None).await;
    assert!(
        devices["devices"].as_array().unwrap().iter().all(|d| d["display_name"] != "Hemicycle console"),
        "{devices}"
    );

    let wrong = post(&server, None, "/login", &[("username", "root"), ("password", "nope")]).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());

    // A second admin, deactivated, cannot sign in either.
    let (status, _) = api(
        &server,
        Method::PUT,
        Some(&root),
        "/_synapse/admin/v2/users/@bea:localhost",
        Some(json!({ "password": "bea-pw", "admin": true })),
    )
    .await;
    assert_eq!(status, 201);
    sign_in(&server, "bea", "bea-pw").await;
    let (status, _) =
        api(&server, Method::POST, Some(&root), "/_synapse/admin/v1/deactivate/@bea:localhost", Some(json!({}))).await;
    assert_eq!(status, 200);
    let refused = post(&server, None, "/login", &[("username", "bea"), ("password", "bea-pw")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    assert!(refused.text().await.unwrap().contains("Sign-in refused"));
}

#[tokio::test]
async fn console_changes_need_the_sessions_csrf_token_and_the_same_site() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "/users").await;
    let create = |csrf: &'static str| [("localpart", "bob"), ("password", "bob-pw"), ("csrf", csrf)];

    let without = post(&server, Some(&cookie), "/users/create", &[("localpart", "bob"), ("password", "bob-pw")]).await;
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    assert!(without.text().await.unwrap().contains("security token"));
    let wrong = post(
        &server,
        Some(&cookie),
        "/users/create",
        &create("00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff"),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(post(&server, Some(&cookie), "/users/create", &create("not hex")).await.status(), StatusCode::FORBIDDEN);

    // Another session's token is no good for this one.
    let (_, other) = sign_in(&server, "root", "root-pw").await;
    let other_token = csrf(&server, &other, "/users").await;
    assert_ne!(other_token, token);
    let fields = [("localpart", "bob"), ("password", "bob-pw"), ("csrf", other_token.as_str())];
    assert_eq!(post(&server, Some(&cookie), "/users/create", &fields).await.status(), StatusCode::FORBIDDEN);

    // The right token from another site is refused too.
    let fields = [("localpart", "bob"), ("password", "bob-pw"), ("csrf", token.as_str())];
    let url = format!("{}{CONSOLE}/users/create", server.url);
    let cross = browser().post(&url).header(header::COOKIE, &cookie).header("sec-fetch-site", "cross-site");
    let cross = with_form(cross, &fields).send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let foreign = browser().post(&url).header(header::COOKIE, &cookie).header(header::ORIGIN, "http://evil.example");
    let foreign = with_form(foreign, &fields).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    // Without a session there is nothing to change.
    assert_eq!(post(&server, None, "/users/create", &fields).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(account(&server, &root, "@bob:localhost").await.0, 404, "no refused request created bob");

    // The same form, same-origin with the session's token, goes through.
    let origin = server.url.clone();
    let ok = browser()
        .post(&url)
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, origin)
        .header("sec-fetch-site", "same-origin");
    let ok = with_form(ok, &fields).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(account(&server, &root, "@bob:localhost").await.0, 200);
}

#[tokio::test]
async fn console_creates_resets_and_deactivates_users_and_audits_it() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "/users").await;

    let created = post(
        &server,
        Some(&cookie),
        "/users/create",
        &[("localpart", "Carla"), ("password", "carla-pw"), ("csrf", &token)],
    )
    .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let location = created.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{CONSOLE}/users/view?id=%40carla%3Alocalhost")), "{location}");
    let (status, carla) = account(&server, &root, "@carla:localhost").await;
    assert_eq!((status, carla["admin"].as_u64(), carla["deactivated"].as_u64()), (200, Some(0), Some(0)), "{carla}");
    assert!(admin_token(&server, "carla", "carla-pw").await.is_ok());
    let page = get(&server, Some(&cookie), &location.replacen(CONSOLE, "", 1)).await.text().await.unwrap();
    assert!(page.contains("@carla:localhost created."), "the confirmation shows");
    // A confirmation not signed for this session (a link made elsewhere) is not shown.
    let forged = get(&server, Some(&cookie), "/users?ok=Call+0800+123+456&sig=00ff").await.text().await.unwrap();
    assert!(!forged.contains("Call 0800"), "{forged}");
    let unsigned = get(&server, Some(&cookie), "/users?ok=Call+0800+123+456").await.text().await.unwrap();
    assert!(!unsigned.contains("Call 0800"));

    // An existing name is refused with the service's words.
    let again =
        post(&server, Some(&cookie), "/users/create", &[("localpart", "carla"), ("password", "x"), ("csrf", &token)])
            .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    let reset = post(
        &server,
        Some(&cookie),
        "/users/password",
        &[("user", "@carla:localhost"), ("password", "carla-new"), ("logout", "on"), ("csrf", &token)],
    )
    .await;
    assert_eq!(reset.status(), StatusCode::SEE_OTHER);
    assert_eq!(admin_token(&server, "carla", "carla-pw").await, Err(403));
    let carla_token = admin_token(&server, "carla", "carla-new").await.unwrap();

    let deactivated =
        post(&server, Some(&cookie), "/users/deactivate", &[("user", "@carla:localhost"), ("csrf", &token)]).await;
    assert_eq!(deactivated.status(), StatusCode::SEE_OTHER);
    let (_, carla) = account(&server, &root, "@carla:localhost").await;
    assert_eq!(carla["deactivated"].as_u64(), Some(1), "{carla}");
    assert_eq!(admin_token(&server, "carla", "carla-new").await, Err(403));
    let (status, _) = api(&server, Method::GET, Some(&carla_token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401, "her sessions ended");
    // One cannot deactivate oneself from the console.
    let own = post(&server, Some(&cookie), "/users/deactivate", &[("user", "@root:localhost"), ("csrf", &token)]).await;
    assert_eq!(own.status(), StatusCode::BAD_REQUEST);

    // Registration tokens, made and deleted.
    let made = post(
        &server,
        Some(&cookie),
        "/tokens/create",
        &[("token", "welcome-2026"), ("uses_allowed", "2"), ("csrf", &token)],
    )
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let (_, listed) =
        api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/registration_tokens/welcome-2026", None).await;
    assert_eq!(listed["uses_allowed"], 2);
    let bad = post(&server, Some(&cookie), "/tokens/create", &[("uses_allowed", "many"), ("csrf", &token)]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        post(&server, Some(&cookie), "/tokens/delete", &[("token", "welcome-2026"), ("csrf", &token)]).await.status(),
        StatusCode::SEE_OTHER
    );
    let (status, _) =
        api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/registration_tokens/welcome-2026", None).await;
    assert_eq!(status, 404);

    // Every change is in the audit log, as the admin API records them.
    let (_, audit) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await;
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["admin"] == "@root:localhost")
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["target"].as_str().unwrap().to_owned()))
        .collect();
    for (action, target) in [
        ("user.create", "@carla:localhost"),
        ("user.reset_password", "@carla:localhost"),
        ("user.deactivate", "@carla:localhost"),
        ("registration_token.create", "welcome-2026"),
        ("registration_token.delete", "welcome-2026"),
    ] {
        assert!(actions.contains(&(action.to_owned(), target.to_owned())), "{action} {target} in {actions:?}");
    }
    let log = get(&server, Some(&cookie), "/audit").await.text().await.unwrap();
    assert!(log.contains("user.deactivate") && log.contains(r#"<th scope="col">"#));
}

#[tokio::test]
async fn console_sign_out_ends_the_session() {
    let server = server_with_admin(&[]);
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "").await;
    let session_token = cookie.split_once('=').unwrap().1.to_owned();
    let (status, whoami) =
        api(&server, Method::GET, Some(&session_token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, whoami["user_id"].as_str()), (200, Some("@root:localhost")), "the session is an access token");

    assert_eq!(
        post(&server, Some(&cookie), "/logout", &[]).await.status(),
        StatusCode::FORBIDDEN,
        "sign-out needs the token too"
    );
    let out = post(&server, Some(&cookie), "/logout", &[("csrf", &token)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = out.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let after = get(&server, Some(&cookie), "/users").await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the old cookie no longer opens a page");
    let change =
        post(&server, Some(&cookie), "/users/create", &[("localpart", "eve"), ("password", "x"), ("csrf", &token)])
            .await;
    assert_eq!(change.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = api(&server, Method::GET, Some(&session_token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401, "its device is gone");
}

/// Makes the node try to reach a peer that does not exist: a local room bans a user of
/// `127.0.0.1:1`, so the sender records that destination and fails to deliver to it.
async fn dead_peer(server: &TestServer, token: &str) -> String {
    let (status, room) =
        api(server, Method::POST, Some(token), "/_matrix/client/v3/createRoom", Some(json!({ "name": "Cabinet" })))
            .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/ban");
    let (status, body) =
        api(server, Method::POST, Some(token), &path, Some(json!({ "user_id": "@x:127.0.0.1:1", "reason": "test" })))
            .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..100 {
        let (_, list) = api(server, Method::GET, Some(token), "/_synapse/admin/v1/federation/destinations", None).await;
        if list["destinations"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["destination"] == "127.0.0.1:1" && d["failures"].as_u64() > Some(0)))
        {
            return "127.0.0.1:1".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sender never tried 127.0.0.1:1");
}

/// A room with a message a user reported, and a file the admin uploaded: the reports and media
/// pages then have rows to show.
async fn something_to_show(server: &TestServer, root: &str) {
    let (alice, alice_token) = register_raw(server, "alice").await;
    let body = json!({ "name": "Direction des achats", "invite": [alice] });
    let (_, room) = api(server, Method::POST, Some(root), "/_matrix/client/v3/createRoom", Some(body)).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let (status, _) =
        api(server, Method::POST, Some(&alice_token), &format!("/_matrix/client/v3/join/{room}"), Some(json!({})))
            .await;
    assert_eq!(status, 200);
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let (_, sent) =
        api(server, Method::PUT, Some(root), &path, Some(json!({ "msgtype": "m.text", "body": "Offre à 1 €" }))).await;
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/report/{event}");
    let (status, body) = api(server, Method::POST, Some(&alice_token), &path, Some(json!({ "reason": "spam" }))).await;
    assert_eq!(status, 200, "{body}");
    let upload = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload?filename=note.txt", server.url))
        .bearer_auth(root)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("compte rendu")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
}

#[tokio::test]
async fn console_in_a_real_browser() {
    let playwright = std::env::var("PLAYWRIGHT_CORE").unwrap_or_else(|_| {
        panic!("PLAYWRIGHT_CORE is not set: run the tests with ./scripts/test, which installs playwright-core")
    });
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run ./scripts/test, which installs Debian's chromium"
    );
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let destination = dead_peer(&server, &root).await;
    something_to_show(&server, &root).await;
    let scratch = tempfile::tempdir().unwrap();
    let shots = std::env::var("CONSOLE_SCREENSHOTS").unwrap_or_else(|_| scratch.path().to_string_lossy().into_owned());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.mjs");
    let out = tokio::task::spawn_blocking({
        let (url, shots) = (server.url.clone(), shots.clone());
        move || {
            Command::new("node")
                .arg(script)
                .env("CONSOLE_URL", url)
                .env("CONSOLE_ADMIN", "root")
                .env("CONSOLE_PASSWORD", "root-pw")
                .env("CONSOLE_SCREENSHOTS", shots)
                .env("CONSOLE_DESTINATION", destination)
                .env("CONSOLE_NEW_USER", "dora")
                .env("PLAYWRIGHT_CORE", playwright)
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the browser script printed no JSON ({e}): {stdout}"));
    assert_eq!(seen["lang"], "en");
    assert!(seen["deactivated"].as_str().unwrap().contains("deactivated"), "{seen}");
    assert!(seen["peerBefore"].as_str().unwrap().contains("no ("), "the dead peer shows as unreachable: {seen}");
    assert!(seen["peerBefore"].as_str().unwrap().contains("cannot be reached"), "with its last error: {seen}");
    assert!(seen["audit"].as_str().unwrap().contains("destination.reset_connection"), "{seen}");
    assert_eq!(seen["afterSignOut"], format!("{CONSOLE}/login"));
    for page in [
        "login",
        "node",
        "users",
        "user",
        "peers",
        "rooms",
        "room",
        "tokens",
        "media",
        "reports",
        "audit",
        "node-phone",
    ] {
        assert!(seen["pages"].as_array().unwrap().iter().any(|p| p == page), "{page} in {seen}");
        assert!(Path::new(&shots).join(format!("{page}.png")).exists(), "{page}.png");
    }

    // What the browser did really happened.
    let (_, dora) = account(&server, &root, "@dora:localhost").await;
    assert_eq!(dora["deactivated"].as_u64(), Some(1), "{dora}");
    assert_eq!(admin_token(&server, "dora", "console-reset-pw").await, Err(403));
    let (_, audit) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in [
        "user.create",
        "user.reset_password",
        "user.deactivate",
        "destination.reset_connection",
        "registration_token.create",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let (_, tokens) = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/registration_tokens", None).await;
    assert!(tokens["registration_tokens"].as_array().unwrap().iter().any(|t| t["uses_allowed"] == 3), "{tokens}");
    let (_, devices) =
        api(&server, Method::GET, Some(&root), "/_synapse/admin/v2/users/@root:localhost/devices", None).await;
    assert!(
        devices["devices"].as_array().unwrap().iter().all(|d| d["display_name"] != "Hemicycle console"),
        "signing out removed the console's device: {devices}"
    );
}

#[tokio::test]
async fn console_signs_directory_admins_in_through_ldap() {
    use hemicycle_bridges::testing::{Slapd, BASE};
    let service = format!("cn=hemicycle,ou=services,{BASE}");
    let person = |uid: &str, extra: &str| {
        format!(
            "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
             userPassword: {uid}-pw\n{extra}\n"
        )
    };
    let ldif = format!(
        "dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {service}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: hemicycle\n\
         userPassword: service-secret\n\n{}\n{}",
        person("hcoste", "employeeType: admin\n"),
        person("jdupont", "")
    );
    let slapd = Slapd::start(&ldif, 2).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("bind-password");
    std::fs::write(&password_file, "service-secret\n").unwrap();
    let server = TestServer::start_with(&[
        ("ldap.enabled", true.into()),
        ("ldap.uri", slapd.uri().into()),
        ("ldap.allow_insecure", true.into()),
        ("ldap.base", format!("ou=people,{BASE}").into()),
        ("ldap.bind_dn", service.as_str().into()),
        ("ldap.bind_password_file", password_file.to_string_lossy().into_owned().into()),
        ("ldap.filter", "(objectClass=inetOrgPerson)".into()),
        ("ldap.admin_filter", "(employeeType=admin)".into()),
    ]);
    // A directory admin's first sign-in makes the account and opens the console.
    let (_, cookie) = sign_in(&server, "hcoste", "hcoste-pw").await;
    let page = get(&server, Some(&cookie), "/users").await.text().await.unwrap();
    assert!(page.contains("@hcoste:localhost") && page.contains("(directory)"), "{page}");
    // A wrong directory password and a directory agent who is no admin get no session.
    let wrong = post(&server, None, "/login", &[("username", "hcoste"), ("password", "nope")]).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let agent = post(&server, None, "/login", &[("username", "jdupont"), ("password", "jdupont-pw")]).await;
    assert_eq!(agent.status(), StatusCode::FORBIDDEN);
    assert!(agent.headers().get(header::SET_COOKIE).is_none());
    assert!(agent.text().await.unwrap().contains("not a server admin"));
}

/// RFC 4648 base32 (no padding), as the console shows TOTP secrets.
fn base32_decode(text: &str) -> Vec<u8> {
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

#[tokio::test]
async fn console_dangerous_changes_ask_a_fresh_one_time_code() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    register_raw(&server, "vic").await;
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "/second-factor").await;

    // Enrolment: a secret shown once, confirmed with a code the app makes from it.
    let begun = post(&server, Some(&cookie), "/second-factor/begin", &[("csrf", &token)]).await;
    assert_eq!(begun.status(), 200);
    let html = begun.text().await.unwrap();
    let start = html.find(r#"<code id="totp-secret">"#).expect("the secret") + r#"<code id="totp-secret">"#.len();
    let secret = base32_decode(&html[start..start + html[start..].find('<').unwrap()]);
    assert_eq!(secret.len(), 20);
    let step = hemicycle::time::now_ms() / 1000 / 30;
    let code = |step: u64| format!("{:06}", hemicycle::users::totp::code_at(&secret, step, 6));
    let wrong = {
        let near: Vec<String> = (step - 1..=step + 2).map(code).collect();
        (0..1_000_000).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).unwrap()
    };
    let refused = post(&server, Some(&cookie), "/second-factor/confirm", &[("totp", &wrong), ("csrf", &token)]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "a wrong code does not enrol");
    let confirmed =
        post(&server, Some(&cookie), "/second-factor/confirm", &[("totp", &code(step)), ("csrf", &token)]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER, "{}", confirmed.text().await.unwrap());

    // Deactivation now needs a code: none, a wrong one and the spent one are refused, and the
    // account stays active each time.
    let deactivate = |totp: Option<String>| {
        let (server, cookie, token) = (&server, cookie.clone(), token.clone());
        async move {
            let mut form = vec![("user", "@vic:localhost".to_owned()), ("csrf", token)];
            if let Some(totp) = totp {
                form.push(("totp", totp));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = post(server, Some(&cookie), "/users/deactivate", &form).await;
            (response.status(), response.text().await.unwrap())
        }
    };
    for (totp, why) in
        [(None, "no code"), (Some(wrong.clone()), "a wrong code"), (Some(code(step)), "the code used to enrol")]
    {
        let (status, body) = deactivate(totp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}: {body}");
        let (_, vic) = account(&server, &root, "@vic:localhost").await;
        assert_eq!(vic["deactivated"], 0, "{why} changed nothing: {vic}");
    }
    let (status, body) = deactivate(Some(code(step))).await;
    assert!(body.contains("used already"), "a replayed code is named so: {status} {body}");
    // The next step's code works, once.
    let (status, body) = deactivate(Some(code(step + 1))).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, vic) = account(&server, &root, "@vic:localhost").await;
    assert_eq!(vic["deactivated"], 1, "{vic}");
    let replayed =
        post(&server, Some(&cookie), "/second-factor/remove", &[("totp", &code(step + 1)), ("csrf", &token)]).await;
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN, "the same code is not good twice");
    let audit = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await.1;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"console.second_factor.enrol") && actions.contains(&"user.deactivate"), "{actions:?}");
}

/// Waits (long-polling `/sync`) for a message of the notices account in `room` whose body
/// contains `text`; answers the body.
async fn notices_answer(
    server: &TestServer,
    token: &str,
    room: &str,
    since: &mut Option<String>,
    text: &str,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut path = "/_matrix/client/v3/sync?timeout=5000".to_owned();
        if let Some(since) = since.as_deref() {
            path.push_str(&format!("&since={since}"));
        }
        let (status, body) = api(server, Method::GET, Some(token), &path, None).await;
        assert_eq!(status, 200, "{body}");
        *since = body["next_batch"].as_str().map(str::to_owned);
        let events = body["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        for event in events {
            let body = event["content"]["body"].as_str().unwrap_or_default();
            if event["sender"] == "@notices:localhost"
                && event["content"]["msgtype"] == "m.notice"
                && body.contains(text)
            {
                return body.to_owned();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no answer with {text:?} in the admin room");
    }
}

#[tokio::test]
async fn the_admin_room_answers_admins_and_refuses_everyone_else() {
    let server = server_with_admin(&[("console.admin_room", toml::Value::from("#admins:localhost"))]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    register_raw(&server, "vic").await;
    let (_, eve) = register_raw(&server, "eve").await;
    let (status, created) = api(
        &server,
        Method::POST,
        Some(&root),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "room_alias_name": "admins", "invite": ["@notices:localhost", "@eve:localhost"] })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, _) = api(
        &server,
        Method::POST,
        Some(&eve),
        &format!("/_matrix/client/v3/join/{}", urlencode(&room)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let say = |token: String, text: String| {
        let (server, room) = (&server, room.clone());
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", urlencode(&room), rand_txn());
            let (status, body) =
                api(server, Method::PUT, Some(&token), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let mut since = None;
    say(root.clone(), "!admin user info @vic:localhost".into()).await;
    let info = notices_answer(&server, &root, &room, &mut since, "@vic:localhost: admin false").await;
    assert!(info.contains("deactivated false"), "{info}");
    // Someone who is not a server admin is refused, and nothing happens.
    say(eve.clone(), "!admin user deactivate @vic:localhost 123456".into()).await;
    notices_answer(&server, &root, &room, &mut since, "@eve:localhost is not a server admin").await;
    // The admin without a second factor, then with a wrong code: refused.
    say(root.clone(), "!admin user deactivate @vic:localhost 123456".into()).await;
    notices_answer(&server, &root, &room, &mut since, "enrol one").await;
    let (_, vic) = account(&server, &root, "@vic:localhost").await;
    assert_eq!(vic["deactivated"], 0, "{vic}");
    // With a second factor enrolled in the console, the command with a fresh code works; the
    // same code again is refused.
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "/second-factor").await;
    let html = post(&server, Some(&cookie), "/second-factor/begin", &[("csrf", &token)]).await.text().await.unwrap();
    let start = html.find(r#"<code id="totp-secret">"#).unwrap() + r#"<code id="totp-secret">"#.len();
    let secret = base32_decode(&html[start..start + html[start..].find('<').unwrap()]);
    let step = hemicycle::time::now_ms() / 1000 / 30;
    let code = |step: u64| format!("{:06}", hemicycle::users::totp::code_at(&secret, step, 6));
    let confirmed =
        post(&server, Some(&cookie), "/second-factor/confirm", &[("totp", &code(step)), ("csrf", &token)]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    say(root.clone(), format!("!admin user deactivate @vic:localhost {}", code(step))).await;
    notices_answer(&server, &root, &room, &mut since, "used already").await;
    say(root.clone(), format!("!admin user deactivate @vic:localhost {}", code(step + 1))).await;
    notices_answer(&server, &root, &room, &mut since, "@vic:localhost is deactivated.").await;
    let (_, vic) = account(&server, &root, "@vic:localhost").await;
    assert_eq!(vic["deactivated"], 1, "{vic}");
    say(root.clone(), "!admin federation health".into()).await;
    notices_answer(&server, &root, &room, &mut since, "1 nodes:").await;
    let audit = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await.1;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["admin_room.refused", "admin_room.federation_health", "user.deactivate"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

fn rand_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("admin-room-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Enrols a second factor for the signed-in admin of `cookie`; answers a maker of codes by time
/// step, and the step of the code that confirmed it (spent).
async fn enrol(server: &TestServer, cookie: &str) -> (impl Fn(u64) -> String, u64) {
    let token = csrf(server, cookie, "/second-factor").await;
    let html = post(server, Some(cookie), "/second-factor/begin", &[("csrf", &token)]).await.text().await.unwrap();
    let start = html.find(r#"<code id="totp-secret">"#).unwrap() + r#"<code id="totp-secret">"#.len();
    let secret = base32_decode(&html[start..start + html[start..].find('<').unwrap()]);
    let step = hemicycle::time::now_ms() / 1000 / 30;
    let code = move |step: u64| format!("{:06}", hemicycle::users::totp::code_at(&secret, step, 6));
    let confirmed =
        post(server, Some(cookie), "/second-factor/confirm", &[("totp", &code(step)), ("csrf", &token)]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    (code, step)
}

/// A code none of the steps around `step` makes.
fn wrong_code(code: &impl Fn(u64) -> String, step: u64) -> String {
    let near: Vec<String> = (step - 1..=step + 3).map(code).collect();
    (0..1_000_000).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).unwrap()
}

#[tokio::test]
async fn wrong_one_time_codes_in_a_row_make_the_next_attempts_wait() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    register_raw(&server, "vic").await;
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let (code, step) = enrol(&server, &cookie).await;
    let token = csrf(&server, &cookie, "/users").await;
    let wrong = wrong_code(&code, step);
    let deactivate = |totp: String| {
        let (server, cookie, token) = (&server, cookie.clone(), token.clone());
        async move {
            let form = [("user", "@vic:localhost"), ("csrf", token.as_str()), ("totp", totp.as_str())];
            // As a script reads it: JSON, not a page.
            let request = with_form(
                reqwest::Client::builder()
                    .redirect(Policy::none())
                    .build()
                    .unwrap()
                    .post(format!("{}{CONSOLE}/users/deactivate", server.url)),
                &form,
            )
            .header(header::COOKIE, cookie);
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
            let status = response.status();
            let body: Value = if status.is_redirection() { json!({}) } else { response.json().await.unwrap() };
            (status, retry_after, body)
        }
    };
    for attempt in 1..=5 {
        let (status, _, body) = deactivate(wrong.clone()).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
            "{attempt}: {body}"
        );
    }
    // The sixth attempt waits, even with the right code: a guesser learns nothing from it.
    let (status, retry_after, body) = deactivate(code(step + 1)).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("M_LIMIT_EXCEEDED")), "{body}");
    let wait = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 20_000 && wait <= 30_000, "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 20), "Retry-After");
    let (_, vic) = account(&server, &root, "@vic:localhost").await;
    assert_eq!(vic["deactivated"], 0, "nothing changed: {vic}");
}

#[tokio::test]
async fn console_key_rotation_asks_a_fresh_one_time_code() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let (code, step) = enrol(&server, &cookie).await;
    let current_key = || {
        let (server, cookie) = (&server, &cookie);
        async move {
            let html = get(server, Some(cookie), "").await.text().await.unwrap();
            let row = html.split("<tr>").find(|row| row.contains("<td>current</td>")).unwrap().to_owned();
            (row.split("<code>").nth(1).unwrap().split("</code>").next().unwrap().to_owned(), html)
        }
    };
    let (old, _) = current_key().await;
    let token = csrf(&server, &cookie, "").await;
    let (wrong, spent) = (wrong_code(&code, step), code(step));
    for (totp, why) in [("", "no code"), (wrong.as_str(), "a wrong code"), (spent.as_str(), "a spent code")] {
        let response = post(&server, Some(&cookie), "/keys/rotate", &[("csrf", &token), ("totp", totp)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{why}");
        assert_eq!(current_key().await.0, old, "{why} changed nothing");
    }
    let response = post(&server, Some(&cookie), "/keys/rotate", &[("csrf", &token), ("totp", &code(step + 1))]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
    let (new, html) = current_key().await;
    assert_ne!(new, old);
    assert!(html.contains(&format!("<code>{old}</code></th><td>retired</td>")), "{html}");
    let out = server.cli(&["server", "key-id"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), new, "the running server signs with the new key");
    let audit = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await.1;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "server.rotate_key").count(), 1, "{actions:?}");
}

#[tokio::test]
async fn console_history_purge_asks_a_fresh_one_time_code() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let (code, step) = enrol(&server, &cookie).await;
    let (_, created) =
        api(&server, Method::POST, Some(&root), "/_matrix/client/v3/createRoom", Some(json!({ "name": "Archives" })))
            .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    // The newest event stays (the room's forward extremity): the older one goes.
    for body in ["ancien", "récent"] {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", urlencode(&room), rand_txn());
        let (status, _) =
            api(&server, Method::PUT, Some(&root), &path, Some(json!({ "msgtype": "m.text", "body": body }))).await;
        assert_eq!(status, 200);
    }
    let token = csrf(&server, &cookie, &format!("/rooms/view?id={}", urlencode(&room))).await;
    let purge = |totp: String| {
        let (server, cookie, token, room) = (&server, cookie.clone(), token.clone(), room.clone());
        async move {
            let form = [
                ("csrf", token.as_str()),
                ("room", room.as_str()),
                ("days", "0"),
                ("local", "on"),
                ("totp", totp.as_str()),
            ];
            post(server, Some(&cookie), "/rooms/purge", &form).await
        }
    };
    let response = purge(wrong_code(&code, step)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = purge(code(step + 1)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
    let location = response.headers().get(header::LOCATION).unwrap().to_str().unwrap().to_owned();
    let query = location.split_once('?').unwrap().1;
    let message = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "ok").unwrap().1.into_owned();
    let id = message.split("(purge ").nth(1).unwrap().trim_end_matches(").").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) =
            api(&server, Method::GET, Some(&root), &format!("/_synapse/admin/v1/purge_history_status/{id}"), None)
                .await;
        if status["status"] == "complete" {
            assert!(status["deleted"].as_u64().unwrap() >= 1, "{status}");
            break;
        }
        assert_eq!(status["status"], "active", "{status}");
        assert!(std::time::Instant::now() < deadline, "the purge never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await.1;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "room.purge_history").count(), 1, "{actions:?}");
}

#[tokio::test]
async fn the_admin_room_resets_a_password_with_a_one_time_code() {
    let server = server_with_admin(&[("console.admin_room", toml::Value::from("#admins:localhost"))]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, vic) = register_raw(&server, "vic").await;
    let (_, eve) = register_raw(&server, "eve").await;
    let (status, created) = api(
        &server,
        Method::POST,
        Some(&root),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "room_alias_name": "admins", "invite": ["@notices:localhost", "@eve:localhost"] })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let (status, _) = api(
        &server,
        Method::POST,
        Some(&eve),
        &format!("/_matrix/client/v3/join/{}", urlencode(&room)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let say = |token: String, text: String| {
        let (server, room) = (&server, room.clone());
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", urlencode(&room), rand_txn());
            let (status, body) =
                api(server, Method::PUT, Some(&token), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let (code, step) = enrol(&server, &cookie).await;
    let mut since = None;
    say(root.clone(), "!admin help".into()).await;
    notices_answer(&server, &root, &room, &mut since, "!admin user reset @user:server CODE").await;
    // From someone who is not a server admin, without a code, with a wrong code: refused, and
    // the password stays.
    say(eve.clone(), format!("!admin user reset @vic:localhost {}", code(step + 1))).await;
    notices_answer(&server, &root, &room, &mut since, "@eve:localhost is not a server admin").await;
    say(root.clone(), "!admin user reset @vic:localhost".into()).await;
    notices_answer(&server, &root, &room, &mut since, "ends with your one-time code").await;
    say(root.clone(), format!("!admin user reset @vic:localhost {}", wrong_code(&code, step))).await;
    notices_answer(&server, &root, &room, &mut since, "the one-time code is wrong").await;
    let (status, _) = api(&server, Method::GET, Some(&vic), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 200, "vic's session lives on");
    // With a fresh code: a new password, given in the room by the notices account; vic's
    // sessions end, the old password no longer signs in, the new one does.
    say(root.clone(), format!("!admin user reset @vic:localhost {}", code(step + 1))).await;
    let answer = notices_answer(&server, &root, &room, &mut since, "The password of @vic:localhost is reset").await;
    let password = answer.rsplit(": ").next().unwrap().trim().to_owned();
    assert!(password.len() >= 24, "{answer}");
    let (status, body) = api(&server, Method::GET, Some(&vic), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{body}");
    let login = |password: String| {
        let server = &server;
        async move {
            let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "vic" }, "password": password });
            api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await.0
        }
    };
    assert_eq!(login(password).await, 200);
    assert_eq!(login("pw".to_owned()).await, 403);
    let audit = api(&server, Method::GET, Some(&root), "/_synapse/admin/v1/audit", None).await.1;
    let resets: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "user.reset_password").collect();
    assert_eq!(resets.len(), 1, "{audit}");
    assert_eq!(resets[0]["target"], "@vic:localhost");
}

/// Every console change refuses callers the way the client API does — no session cookie `401
/// M_MISSING_TOKEN`, the token of an ended session `401 M_UNKNOWN_TOKEN`, a live access token of
/// a user who is not an admin `403 M_FORBIDDEN` — and an admin's bad input (a body that is not a
/// form or is too large, a missing or malformed field, an unknown user, device, token, room or
/// report) with its status and errcode. None of it changes anything: the audit log, where every
/// change goes, stays as it was.
#[tokio::test]
async fn console_changes_refuse_strangers_and_bad_input_and_change_nothing() {
    let server = server_with_admin(&[]);
    let root = admin_token(&server, "root", "root-pw").await.unwrap();
    let (_, alice_token) = register_raw(&server, "alice").await;
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let token = csrf(&server, &cookie, "/users").await;
    let (_, ended) = sign_in(&server, "root", "root-pw").await;
    let ended_token = csrf(&server, &ended, "/users").await;
    assert_eq!(post(&server, Some(&ended), "/logout", &[("csrf", &ended_token)]).await.status(), StatusCode::SEE_OTHER);
    let audit = || {
        let (server, root) = (&server, &root);
        async move {
            let (status, body) = api(server, Method::GET, Some(root), "/_synapse/admin/v1/audit", None).await;
            assert_eq!(status, 200, "{body}");
            body["total"].as_u64().unwrap()
        }
    };
    let before = audit().await;

    // A client that reads JSON, as scripts do.
    let send = |cookie: Option<String>, path: &str, content_type: &str, body: String| {
        let mut request = server
            .http()
            .post(format!("{}{CONSOLE}{path}", server.url))
            .header(header::CONTENT_TYPE, content_type.to_owned())
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let form = |fields: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    const FORM: &str = "application/x-www-form-urlencoded";
    let changes = [
        "/users/create",
        "/users/deactivate",
        "/users/password",
        "/users/devices/delete",
        "/users/validity",
        "/tokens/create",
        "/tokens/delete",
        "/antivirus/probe",
        "/network/refresh",
        "/keys/rotate",
        "/peers/reset",
        "/peers/allow",
        "/proposals/new",
        "/proposals/decide",
        "/notices/send",
        "/rooms/block",
        "/rooms/delete",
        "/rooms/purge",
        "/media/quarantine",
        "/media/delete",
        "/reports/delete",
        "/second-factor/begin",
        "/second-factor/confirm",
        "/second-factor/remove",
        "/logout",
    ];
    let fields = form(&[("user", "@alice:localhost"), ("localpart", "mallory"), ("password", "x"), ("csrf", &token)]);
    let strangers = [
        (None, 401, "M_MISSING_TOKEN"),
        (Some("hemicycle_console=not-a-token".to_owned()), 401, "M_UNKNOWN_TOKEN"),
        (Some(ended.clone()), 401, "M_UNKNOWN_TOKEN"),
        (Some(format!("hemicycle_console={alice_token}")), 403, "M_FORBIDDEN"),
    ];
    for path in changes {
        for (cookie, status, errcode) in &strangers {
            let (got, body) = send(cookie.clone(), path, FORM, fields.clone()).await;
            assert_eq!((got, body["errcode"].as_str()), (*status, Some(*errcode)), "{path} with {cookie:?}: {body}");
        }
    }

    // An admin's bad input.
    let over = "x".repeat(1024 * 1024 + 1);
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("/users/create", "application/json", r#"{"localpart":"mallory"}"#.to_owned(), 415, "M_UNRECOGNIZED"),
        (
            "/users/create",
            FORM,
            form(&[("localpart", "mallory"), ("password", &over), ("csrf", &token)]),
            413,
            "M_TOO_LARGE",
        ),
        ("/users/create", FORM, form(&[("password", "x"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        (
            "/users/create",
            FORM,
            form(&[("localpart", "mal lory"), ("password", "x"), ("csrf", &token)]),
            400,
            "M_INVALID_USERNAME",
        ),
        ("/users/deactivate", FORM, form(&[("user", "@nobody:localhost"), ("csrf", &token)]), 404, "M_NOT_FOUND"),
        ("/users/deactivate", FORM, form(&[("user", "not a user"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        ("/users/deactivate", FORM, form(&[("csrf", &token)]), 400, "M_INVALID_PARAM"),
        (
            "/users/password",
            FORM,
            form(&[("user", "@nobody:localhost"), ("password", "x"), ("csrf", &token)]),
            404,
            "M_NOT_FOUND",
        ),
        ("/users/password", FORM, form(&[("user", "@alice:localhost"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        (
            "/users/devices/delete",
            FORM,
            form(&[("user", "@alice:localhost"), ("device", "NOPE"), ("csrf", &token)]),
            404,
            "M_NOT_FOUND",
        ),
        ("/users/validity", FORM, form(&[("user", "@nobody:localhost"), ("csrf", &token)]), 404, "M_NOT_FOUND"),
        (
            "/users/validity",
            FORM,
            form(&[("user", "@alice:localhost"), ("date", "tomorrow"), ("csrf", &token)]),
            400,
            "M_INVALID_PARAM",
        ),
        ("/tokens/create", FORM, form(&[("uses_allowed", "many"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        ("/tokens/create", FORM, form(&[("days", "-1"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        ("/tokens/delete", FORM, form(&[("token", "nope"), ("csrf", &token)]), 404, "M_NOT_FOUND"),
        ("/rooms/delete", FORM, form(&[("room", "!nope:localhost"), ("csrf", &token)]), 404, "M_NOT_FOUND"),
        ("/rooms/delete", FORM, form(&[("room", "not a room"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        (
            "/rooms/purge",
            FORM,
            form(&[("room", "!nope:localhost"), ("days", "1"), ("csrf", &token)]),
            404,
            "M_NOT_FOUND",
        ),
        ("/reports/delete", FORM, form(&[("report", "many"), ("csrf", &token)]), 400, "M_INVALID_PARAM"),
        ("/reports/delete", FORM, form(&[("report", "999"), ("csrf", &token)]), 404, "M_NOT_FOUND"),
    ];
    for (path, content_type, body, status, errcode) in cases {
        let (got, answer) = send(Some(cookie.clone()), path, content_type, body).await;
        assert_eq!((got, answer["errcode"].as_str()), (status, Some(errcode)), "{path}: {answer}");
    }
    assert_eq!(audit().await, before, "no refused change was made");
    assert_eq!(account(&server, &root, "@mallory:localhost").await.0, 404);
    let (_, alice) = account(&server, &root, "@alice:localhost").await;
    assert_eq!(alice["deactivated"], 0, "{alice}");
}
