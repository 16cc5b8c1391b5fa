//! The OAuth 2.0 API (spec v1.15 on): the server as its own authorization server. A real OAuth
//! client — matrix-sdk's `client.oauth()` — registers, signs in through the server's sign-in page
//! (its form posted as a browser posts it), refreshes and logs out; raw HTTP then checks each
//! refusal and its RFC error.

use std::collections::HashMap;

use base64::Engine;
use matrix_sdk::{
    authentication::oauth::registration::{ApplicationType, ClientMetadata, Localized, OAuthGrantType},
    encryption::CrossSigningResetAuthType,
    ruma::serde::Raw,
};
use reqwest::{header, Method, Url};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{api, TestServer};

const OAUTH: &str = "/_hemicycle/oauth2";
const CALLBACK: &str = "http://127.0.0.1/callback";

fn oauth_server() -> TestServer {
    TestServer::start_with(&[("oauth.enabled", true.into())])
}

/// A client that does not follow redirects: the test reads where the server sends the browser.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

async fn post_form(server: &TestServer, path: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let response = browser()
        .post(format!("{}{path}", server.url))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(fields))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits the sign-in form of an authorization URL the way a browser does (its parameters as
/// the form's hidden fields, plus the person's answer); returns the status and `Location`.
async fn sign_in(server: &TestServer, authorize_url: &str, answer: &[(&str, &str)]) -> (u16, Option<String>, String) {
    let url = Url::parse(authorize_url).unwrap();
    let page = browser().get(url.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200, "the sign-in page opens");
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"password\""), "{html}");
    let mut fields: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    fields.extend(answer.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let response = browser()
        .post(format!("{}{OAUTH}/authorize", server.url))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(form_urlencoded::Serializer::new(String::new()).extend_pairs(&fields).finish())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
    (status, location, response.text().await.unwrap_or_default())
}

fn query_of(location: &str) -> HashMap<String, String> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

async fn whoami(server: &TestServer, token: &str) -> (u16, Value) {
    api(server, Method::GET, Some(token), "/_matrix/client/v3/account/whoami", None).await
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Registers a native client with a loopback redirect URI; returns its id.
async fn register_client(server: &TestServer) -> String {
    let metadata = json!({
        "application_type": "native",
        "client_name": "Raw client",
        "client_uri": "https://client.example/",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let (status, body) = api(server, Method::POST, None, &format!("{OAUTH}/register"), Some(metadata)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["redirect_uris"], json!([CALLBACK]));
    body["client_id"].as_str().unwrap().to_owned()
}

/// The authorization URL a client would open for `device`, with the PKCE challenge of `verifier`.
fn authorize_url(server: &TestServer, client_id: &str, redirect: &str, device: &str, verifier: &str) -> String {
    let scope = format!("urn:matrix:client:api:* urn:matrix:client:device:{device}");
    let query = form_body(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("scope", &scope),
        ("state", "st4te"),
        ("code_challenge", &challenge(verifier)),
        ("code_challenge_method", "S256"),
    ]);
    format!("{}{OAUTH}/authorize?{query}", server.url)
}

/// Signs alice in through the page and exchanges the code: (access token, refresh token).
async fn tokens_for(server: &TestServer, client_id: &str, device: &str) -> (String, String) {
    let verifier = "v".repeat(50);
    let redirect = "http://127.0.0.1:5555/callback";
    let url = authorize_url(server, client_id, redirect, device, &verifier);
    let (status, location, _) =
        sign_in(server, &url, &[("username", "alice"), ("password", "alice-pw"), ("action", "allow")]).await;
    assert_eq!(status, 303);
    let code = query_of(&location.unwrap())["code"].clone();
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("client_id", client_id),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body) = post_form(server, &format!("{OAUTH}/token"), &fields).await;
    assert_eq!(status, 200, "{body}");
    (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
}

async fn refresh(server: &TestServer, client_id: &str, refresh_token: &str) -> (u16, Value) {
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)];
    post_form(server, &format!("{OAUTH}/token"), &fields).await
}

/// A matrix-sdk client signed in as `user` through the OAuth API: it registers, opens the
/// authorization URL (the test posts the page's form as a browser would) and exchanges the code.
async fn sdk_signed_in(server: &TestServer, user: &str, password: &str) -> matrix_sdk::Client {
    let client = server.client().await;
    let oauth = client.oauth();
    let metadata = oauth.server_metadata().await.expect("the server publishes its OAuth metadata");
    assert_eq!(metadata.issuer.as_str(), format!("{}/", server.url));

    let mut client_metadata = ClientMetadata::new(
        ApplicationType::Native,
        vec![OAuthGrantType::AuthorizationCode { redirect_uris: vec![Url::parse(CALLBACK).unwrap()] }],
        Localized::new(Url::parse("https://sdk.example/").unwrap(), []),
    );
    client_metadata.client_name = Some(Localized::new("SDK test client".to_owned(), []));
    let registration = Raw::new(&client_metadata).unwrap().into();
    // A native client listens on a port of its own choosing: the registered URI has none.
    let redirect = Url::parse("http://127.0.0.1:4242/callback").unwrap();
    let auth = oauth.login(redirect, None, Some(registration), None).build().await.expect("authorization URL");

    let (status, location, body) =
        sign_in(server, auth.url.as_str(), &[("username", user), ("password", password), ("action", "allow")]).await;
    assert_eq!(status, 303, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with("http://127.0.0.1:4242/callback?code="), "{location}");
    oauth.finish_login(Url::parse(&location).unwrap().into()).await.expect("the code is exchanged");
    client
}

#[tokio::test]
async fn matrix_sdk_signs_in_refreshes_and_logs_out_through_oauth() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client = sdk_signed_in(&server, "alice", "alice-pw").await;
    let oauth = client.oauth();

    let me = client.whoami().await.unwrap();
    assert_eq!(me.user_id.as_str(), "@alice:localhost");
    let device = client.device_id().unwrap().to_owned();
    assert_eq!(me.device_id.as_deref(), Some(&*device), "the device is the one the scope allocated");
    let devices = client.devices().await.unwrap().devices;
    let listed = devices.iter().find(|d| d.device_id == device).expect("the session is a device of alice");
    assert_eq!(listed.display_name.as_deref(), Some("SDK test client"));

    let first = client.access_token().unwrap();
    oauth.refresh_access_token().await.expect("refresh");
    let second = client.access_token().unwrap();
    assert_ne!(first, second);
    assert_eq!(whoami(&server, &second).await.0, 200);
    let (status, body) = whoami(&server, &first).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "the replaced token is dead");

    // Logging out: `oauth.logout()` revokes the access token (RFC 7009), but the oauth2 crate
    // under it refuses a plain-HTTP revocation endpoint, so the test sends its request itself.
    let refresh_token = oauth.full_session().unwrap().user.tokens.refresh_token.unwrap();
    let client_id = oauth.client_id().unwrap().as_str().to_owned();
    let revocation =
        [("token", second.as_str()), ("token_type_hint", "access_token"), ("client_id", client_id.as_str())];
    let (status, _) = post_form(&server, &format!("{OAUTH}/revoke"), &revocation).await;
    assert_eq!(status, 200, "revocation");
    let (status, body) = whoami(&server, &second).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "revoked with its session");
    let (status, body) = refresh(&server, &client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "the refresh token died too: {body}");

    // The sign-in and the revocation are in the audit log.
    let token = admin_token(&server).await;
    let entries = audit_actions(&server, &token).await;
    assert!(entries.iter().any(|(action, who)| action == "oauth.sign_in" && who == "@alice:localhost"), "{entries:?}");
    assert!(entries.iter().any(|(action, _)| action == "oauth.revoke"), "{entries:?}");
}

/// A server admin's access token (an account made with the command line).
async fn admin_token(server: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    let (status, body) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The audit log's (action, actor) pairs, read by a server admin.
async fn audit_actions(server: &TestServer, admin_token: &str) -> Vec<(String, String)> {
    let (status, audit) = api(server, Method::GET, Some(admin_token), "/_synapse/admin/v1/audit", None).await;
    assert_eq!(status, 200, "{audit}");
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or("").to_owned(), e["admin"].as_str().unwrap_or("").to_owned()))
        .collect()
}

#[tokio::test]
async fn discovery_is_unrecognized_while_oauth_is_off() {
    let server = TestServer::start();
    for path in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
    ] {
        let (status, body) = api(&server, Method::GET, None, path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")), "{path}");
    }
    let (status, _) = post_form(&server, &format!("{OAUTH}/token"), &[("grant_type", "refresh_token")]).await;
    assert_eq!(status, 404);

    let server = oauth_server();
    let (status, stable) = api(&server, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(status, 200);
    let (_, unstable) =
        api(&server, Method::GET, None, "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", None).await;
    assert_eq!(stable, unstable);
    assert_eq!(stable["code_challenge_methods_supported"], json!(["S256"]));
    let (_, issuer) =
        api(&server, Method::GET, None, "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", None).await;
    assert_eq!(issuer["issuer"], stable["issuer"]);
}

#[tokio::test]
async fn registration_follows_the_spec_rules() {
    let server = oauth_server();
    let register = |body: Value| {
        let server = &server;
        async move { api(server, Method::POST, None, &format!("{OAUTH}/register"), Some(body)).await }
    };
    let (status, body) = register(json!({
        "client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"],
        "logo_uri": "https://cdn.app.example/logo.png", "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["grant_types"], json!(["authorization_code", "refresh_token"]), "unsupported grants are left out");
    assert_eq!(body["application_type"], "web");
    for (metadata, error) in [
        (
            json!({"client_uri": "https://app.example/", "redirect_uris": ["http://app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "client_uri": "https://app.example/", "redirect_uris": ["http://127.0.0.1:8080/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "client_uri": "https://app.example/", "redirect_uris": ["org.evil:/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"], "logo_uri": "https://evil.example/l.png"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_uri": "http://app.example/", "redirect_uris": ["https://app.example/cb"]}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": ["https://app.example/cb"]}), "invalid_client_metadata"),
    ] {
        let (status, body) = register(metadata.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{metadata}: {body}");
    }
}

#[tokio::test]
async fn refusals_carry_the_rfc_errors() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;
    let verifier = "a".repeat(43);

    // A redirect URI the client did not register: the page refuses, the browser goes nowhere.
    let url = authorize_url(&server, &client_id, "https://evil.example/cb", "DEVONE", &verifier);
    let page = browser().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.headers().get(header::LOCATION).is_none());
    assert!(page.text().await.unwrap().contains("not one this application registered"));

    // PKCE is S256 only: a plain challenge goes back to the client as invalid_request.
    let plain = authorize_url(&server, &client_id, CALLBACK, "DEVONE", &verifier)
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let answer = browser().get(&plain).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    let back = query_of(answer.headers()[header::LOCATION].to_str().unwrap());
    assert_eq!((back["error"].as_str(), back["state"].as_str()), ("invalid_request", "st4te"));

    // Wrong password: the page again, the refusal in the audit log.
    let url = authorize_url(&server, &client_id, CALLBACK, "DEVONE", &verifier);
    let (status, location, html) =
        sign_in(&server, &url, &[("username", "alice"), ("password", "nope"), ("action", "allow")]).await;
    assert_eq!((status, location), (403, None));
    assert!(html.contains("role=\"alert\""), "{html}");
    let admin = admin_token(&server).await;
    let entries = audit_actions(&server, &admin).await;
    assert!(
        entries.iter().any(|(action, who)| action == "oauth.sign_in_refused" && who == "@alice:localhost"),
        "{entries:?}"
    );

    // Cancel: access_denied.
    let (status, location, _) = sign_in(&server, &url, &[("action", "deny")]).await;
    assert_eq!(status, 303);
    assert_eq!(query_of(&location.unwrap())["error"], "access_denied");

    // The code: a wrong verifier is invalid_grant, the right one works once; a replay is
    // invalid_grant and ends the session the first exchange opened.
    let (_, location, _) =
        sign_in(&server, &url, &[("username", "alice"), ("password", "alice-pw"), ("action", "allow")]).await;
    let code = query_of(&location.unwrap())["code"].clone();
    let exchange = |verifier: String, redirect: &'static str| {
        let (server, client_id, code) = (&server, client_id.clone(), code.clone());
        async move {
            let fields = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("client_id", client_id.as_str()),
                ("code_verifier", verifier.as_str()),
            ];
            post_form(server, &format!("{OAUTH}/token"), &fields).await
        }
    };
    let (status, body) = exchange("b".repeat(43), CALLBACK).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "PKCE mismatch: {body}");
    let (status, body) = exchange(verifier.clone(), "http://127.0.0.1:9/callback").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "another redirect URI: {body}");
    let (status, body) = exchange(verifier.clone(), CALLBACK).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "urn:matrix:client:api:* urn:matrix:client:device:DEVONE");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&server, &access).await.1["device_id"], "DEVONE");
    let (status, body) = exchange(verifier.clone(), CALLBACK).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "replayed code: {body}");
    assert_eq!(whoami(&server, &access).await.0, 401, "a replayed code ends the session it opened");

    // Another client's refresh token is refused; unknown clients are invalid_client.
    let (_, refresh_token) = tokens_for(&server, &client_id, "DEVTWO").await;
    let (status, body) = refresh(&server, "someone-else", &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));

    // A revoked refresh token is invalid_grant; revoking an unknown token is fine.
    let (status, _) = post_form(&server, &format!("{OAUTH}/revoke"), &[("token", &refresh_token)]).await;
    assert_eq!(status, 200);
    let (status, body) = refresh(&server, &client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "revoked refresh token: {body}");
    let (status, _) = post_form(&server, &format!("{OAUTH}/revoke"), &[("token", "hcr_unknown")]).await;
    assert_eq!(status, 200);
    let (status, body) = post_form(&server, &format!("{OAUTH}/revoke"), &[]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_stolen_one_ends_the_session() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;

    // The answer to a refresh was lost: the old refresh token works again while the new pair
    // is unused, and the lost pair stops working.
    let (_, r1) = tokens_for(&server, &client_id, "ROTATE").await;
    let (status, lost) = refresh(&server, &client_id, &r1).await;
    assert_eq!(status, 200, "{lost}");
    let (status, retried) = refresh(&server, &client_id, &r1).await;
    assert_eq!(status, 200, "a retry after a lost answer: {retried}");
    let (status, body) = refresh(&server, &client_id, lost["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(whoami(&server, lost["access_token"].as_str().unwrap()).await.0, 401);

    // Once the new pair is used, the old refresh token is a stolen copy: the session ends.
    let a2 = retried["access_token"].as_str().unwrap();
    assert_eq!(whoami(&server, a2).await.0, 200);
    let (status, body) = refresh(&server, &client_id, &r1).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(whoami(&server, a2).await.0, 401, "the session was ended");
    let (status, _) = refresh(&server, &client_id, retried["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);

    // Signing in again for an existing device of the same user reuses it.
    let (access, _) = tokens_for(&server, &client_id, "KEEPME").await;
    let (again, _) = tokens_for(&server, &client_id, "KEEPME").await;
    assert_eq!(whoami(&server, &access).await.0, 401, "the device's previous session is replaced");
    let (_, devices) = api(&server, Method::GET, Some(&again), "/_matrix/client/v3/devices", None).await;
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().filter_map(|d| d["device_id"].as_str()).collect();
    assert_eq!(ids.iter().filter(|id| **id == "KEEPME").count(), 1, "{devices}");
}

#[tokio::test]
async fn device_authorization_grant_signs_a_second_device_in() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let (status, metadata) = api(&server, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(status, 200);
    let device_endpoint = metadata["device_authorization_endpoint"].as_str().unwrap().to_owned();
    let registration = json!({
        "application_type": "native", "client_uri": "https://tv.example/", "client_name": "TV",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
    });
    let (status, client) = api(&server, Method::POST, None, &format!("{OAUTH}/register"), Some(registration)).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let scope = "urn:matrix:client:api:* urn:matrix:client:device:TVDEVICE";
    let path = device_endpoint.strip_prefix(&server.url).unwrap().to_owned();
    let (status, asked) = post_form(&server, &path, &[("client_id", &client_id), ("scope", scope)]).await;
    assert_eq!(status, 200, "{asked}");
    let device_code = asked["device_code"].as_str().unwrap().to_owned();
    let user_code = asked["user_code"].as_str().unwrap().to_owned();
    let poll = || {
        let fields = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", client_id.as_str()),
        ];
        let server = &server;
        async move { post_form(server, &format!("{OAUTH}/token"), &fields).await }
    };
    let (status, body) = poll().await;
    assert_eq!((status, body["error"].as_str()), (400, Some("authorization_pending")));
    let (_, body) = poll().await;
    assert_eq!(body["error"], "slow_down", "polling faster than the interval");

    // The person opens the link on a signed-in device, signs in and allows it.
    let page = browser().get(asked["verification_uri_complete"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("TVDEVICE"));
    let fields = [("code", user_code.as_str()), ("username", "alice"), ("password", "alice-pw"), ("action", "allow")];
    let (status, _) = post_page(&server, &format!("{OAUTH}/link"), &fields, None).await;
    assert_eq!(status, 200);
    let (status, tokens) = poll().await;
    assert_eq!(status, 200, "{tokens}");
    let (_, me) = whoami(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!((me["user_id"].as_str(), me["device_id"].as_str()), (Some("@alice:localhost"), Some("TVDEVICE")));
    let (status, body) = poll().await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "a device code is used once");

    // Declined: the device hears access_denied.
    let (_, asked) = post_form(&server, &path, &[("client_id", &client_id), ("scope", scope)]).await;
    let code = asked["user_code"].as_str().unwrap();
    let (status, _) = post_page(&server, &format!("{OAUTH}/link"), &[("code", code), ("action", "deny")], None).await;
    assert_eq!(status, 200);
    let fields = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", asked["device_code"].as_str().unwrap()),
        ("client_id", client_id.as_str()),
    ];
    let (status, body) = post_form(&server, &format!("{OAUTH}/token"), &fields).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")));
}

/// Posts a page's form as a browser does (same origin, a cookie when given); answers the status,
/// the `Location` and `Set-Cookie` headers, and the page.
async fn post_page(
    server: &TestServer,
    path: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
) -> (u16, (Option<String>, Option<String>, String)) {
    let mut request = browser()
        .post(format!("{}{path}", server.url))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(form_body(fields));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    let read = |name| response.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned());
    let (location, set_cookie) = (read(header::LOCATION), read(header::SET_COOKIE));
    (response.status().as_u16(), (location, set_cookie, response.text().await.unwrap_or_default()))
}

#[tokio::test]
async fn the_account_page_lists_and_ends_sessions() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;
    let (access, refresh_token) = tokens_for(&server, &client_id, "PHONE").await;
    let (_, metadata) = api(&server, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    let account = metadata["account_management_uri"].as_str().unwrap().to_owned();
    assert!(metadata["account_management_actions_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "org.matrix.device_delete"));

    // Element X deep-links to ending a session: the page asks to sign in first.
    let deep = format!("{account}?action=org.matrix.device_delete&device_id=PHONE");
    let page = browser().get(&deep).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"password\""), "{page}");
    let return_query = "action=org.matrix.device_delete&device_id=PHONE";
    let path = "/_hemicycle/oauth2/account/login";
    let (status, (location, cookie, _)) =
        post_page(&server, path, &[("username", "alice"), ("password", "alice-pw"), ("return", return_query)], None)
            .await;
    assert_eq!(status, 303);
    assert!(location.unwrap().ends_with(return_query));
    let cookie = cookie.unwrap().split(';').next().unwrap().to_owned();
    let page = browser().get(&deep).header(header::COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("PHONE") && page.contains("Raw client"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    let end = "/_hemicycle/oauth2/account/end";
    let (status, _) = post_page(&server, end, &[("device_id", "PHONE"), ("csrf", "00")], Some(&cookie)).await;
    assert_eq!(status, 403, "a change needs the page's CSRF token");
    assert_eq!(whoami(&server, &access).await.0, 200);
    let (status, _) = post_page(&server, end, &[("device_id", "PHONE"), ("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(status, 303);
    assert_eq!(whoami(&server, &access).await.0, 401, "the session ended");
    let (status, body) = refresh(&server, &client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "with its refresh token");
}

#[tokio::test]
async fn admins_see_and_end_oauth_sessions() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;
    let (access, _) = tokens_for(&server, &client_id, "LAPTOP").await;
    let admin = admin_token(&server).await;
    let path = "/_synapse/admin/v1/users/@alice:localhost/oauth_sessions";
    let (status, sessions) = api(&server, Method::GET, Some(&admin), path, None).await;
    assert_eq!(status, 200, "{sessions}");
    assert_eq!(sessions["total"], 1);
    assert_eq!(
        (sessions["sessions"][0]["device_id"].as_str(), sessions["sessions"][0]["client_name"].as_str()),
        (Some("LAPTOP"), Some("Raw client"))
    );
    let id = sessions["sessions"][0]["session_id"].as_str().unwrap();
    let (status, _) = api(&server, Method::GET, Some(&access), path, None).await;
    assert_eq!(status, 403, "admins only");
    let (status, _) = api(&server, Method::DELETE, Some(&admin), &format!("{path}/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(whoami(&server, &access).await.0, 401);
    let (_, sessions) = api(&server, Method::GET, Some(&admin), path, None).await;
    assert_eq!(sessions["total"], 0);
    let entries = audit_actions(&server, &admin).await;
    assert!(entries.iter().any(|(action, _)| action == "oauth.session_end"), "{entries:?}");
}

#[tokio::test]
async fn an_oauth_only_node_takes_no_password_on_login() {
    let server = TestServer::start_with(&[("oauth.enabled", true.into()), ("oauth.only", true.into())]);
    let (_, flows) = api(&server, Method::GET, None, "/_matrix/client/v3/login", None).await;
    let types: Vec<&str> = flows["flows"].as_array().unwrap().iter().filter_map(|f| f["type"].as_str()).collect();
    assert!(!types.contains(&"m.login.password"), "{flows}");
    let body =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "x" });
    let (status, body) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) = api(
        &server,
        Method::POST,
        None,
        "/_matrix/client/v3/register",
        Some(json!({ "username": "bob", "password": "pw" })),
    )
    .await;
    assert_eq!(status, 403);
}

const SIGNING_UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";

/// A well-formed master key for `user` that no client holds (its public key made up).
fn made_up_master(user: &str, seed: &str) -> Value {
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(seed.as_bytes()));
    json!({ "user_id": user, "usage": ["master"], "keys": { format!("ed25519:{public}"): public } })
}

/// The master key the server publishes for `user`.
async fn published_master(server: &TestServer, token: &str, user: &str) -> Value {
    let query = json!({ "device_keys": { user: [] } });
    let (status, keys) = api(server, Method::POST, Some(token), "/_matrix/client/v3/keys/query", Some(query)).await;
    assert_eq!(status, 200, "{keys}");
    keys["master_keys"][user]["keys"].clone()
}

/// The stages of each flow a UIA answer offers.
fn stages(uia: &Value) -> Vec<Vec<String>> {
    uia["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["stages"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .collect()
}

/// MSC4312 (spec v1.17's `m.oauth` stage): a session signed in through OAuth has no password to
/// answer UIA with, so replacing its cross-signing identity asks the person to approve it on the
/// account page. matrix-sdk's identity reset reads the approval URL and waits; once the person
/// approves (signed in on the page — the client's own access token does not open it), the reset
/// goes through, once.
#[tokio::test]
async fn an_oauth_session_resets_its_identity_once_the_person_approves_it_on_the_account_page() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let alice = "@alice:localhost";
    let client = sdk_signed_in(&server, "alice", "alice-pw").await;
    client.encryption().bootstrap_cross_signing(None).await.expect("a first identity needs no approval");
    let token = client.access_token().unwrap();
    let first_master = published_master(&server, &token, alice).await;
    assert!(first_master.is_object(), "{first_master}");

    // Replacing it without the approval: the m.oauth stage (and its unstable name), with the
    // account page's URL; retrying in the session, or without a stage, changes nothing.
    let upload = json!({ "master_key": made_up_master(alice, "intruder") });
    let (status, uia) = api(&server, Method::POST, Some(&token), SIGNING_UPLOAD, Some(upload.clone())).await;
    assert_eq!(status, 401, "{uia}");
    assert_eq!(stages(&uia), [["m.oauth"], ["org.matrix.cross_signing_reset"]], "{uia}");
    let url = uia["params"]["m.oauth"]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/_hemicycle/oauth2/account?action=org.matrix.cross_signing_reset", server.url));
    assert_eq!(uia["params"]["org.matrix.cross_signing_reset"]["url"], url.as_str());
    let session = uia["session"].as_str().unwrap().to_owned();
    for auth in [json!({ "type": "m.oauth", "session": session }), json!({ "session": session })] {
        let mut retry = upload.clone();
        retry["auth"] = auth;
        let (status, again) = api(&server, Method::POST, Some(&token), SIGNING_UPLOAD, Some(retry)).await;
        assert_eq!((status, again["errcode"].as_str()), (401, Some("M_FORBIDDEN")), "{again}");
        assert_eq!(again["session"], session.as_str(), "the client keeps its session while it waits");
    }
    assert_eq!(published_master(&server, &token, alice).await, first_master);

    // A session of `/login` still answers with its password.
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "alice-pw" });
    let (_, legacy) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    let legacy = legacy["access_token"].as_str().unwrap().to_owned();
    let (status, uia) = api(&server, Method::POST, Some(&legacy), SIGNING_UPLOAD, Some(upload.clone())).await;
    assert_eq!((status, stages(&uia)), (401, vec![vec!["m.login.password".to_owned()]]), "{uia}");

    // The SDK's reset learns the URL and waits for the approval.
    let handle = client.encryption().recovery().reset_identity().await.unwrap().expect("the reset asks for approval");
    let CrossSigningResetAuthType::OAuth(info) = handle.auth_type() else { panic!("expected the m.oauth stage") };
    assert_eq!(info.approval_url.as_str(), url);
    let waiting = tokio::spawn(async move { handle.reset(None).await });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "the reset waits for the person");
    assert_eq!(published_master(&server, &token, alice).await, first_master);

    // The client's access token is no page session: the page asks the person to sign in.
    let stolen = format!("hemicycle_account={token}");
    let page = browser().get(&url).header(header::COOKIE, &stolen).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"password\"") && !page.contains("name=\"csrf\""), "{page}");
    let (status, _) =
        post_page(&server, "/_hemicycle/oauth2/account/cross_signing_reset", &[("csrf", "00")], Some(&stolen)).await;
    assert_eq!(status, 303, "sent to sign in");
    let return_query = "action=org.matrix.cross_signing_reset";
    let fields = [("username", "alice"), ("password", "alice-pw"), ("return", return_query)];
    let (status, (_, cookie, _)) = post_page(&server, "/_hemicycle/oauth2/account/login", &fields, None).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap().split(';').next().unwrap().to_owned();
    let page = browser().get(&url).header(header::COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Allow the reset"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let approve = "/_hemicycle/oauth2/account/cross_signing_reset";
    let (status, _) = post_page(&server, approve, &[("csrf", "00")], Some(&cookie)).await;
    assert_eq!(status, 403, "an approval needs the page's CSRF token");
    assert!(!waiting.is_finished());
    let (status, (location, _, _)) = post_page(&server, approve, &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(status, 303);
    assert!(location.unwrap().contains("ok=reset"));

    let reset = tokio::time::timeout(std::time::Duration::from_secs(30), waiting).await;
    reset.expect("the reset finishes once approved").unwrap().expect("the reset succeeds");
    let second_master = published_master(&server, &token, alice).await;
    assert!(second_master.is_object() && second_master != first_master, "{second_master}");

    // One approval, one replacement.
    let (status, uia) = api(&server, Method::POST, Some(&token), SIGNING_UPLOAD, Some(upload)).await;
    assert_eq!((status, stages(&uia).len()), (401, 2), "{uia}");
    assert_eq!(published_master(&server, &token, alice).await, second_master);
    let admin = admin_token(&server).await;
    let entries = audit_actions(&server, &admin).await;
    assert!(
        entries.iter().any(|(action, who)| action == "oauth.cross_signing_reset_allowed" && who == alice),
        "{entries:?}"
    );
}

/// `org.matrix.account_deactivate`: the OAuth API's way to deactivate (its clients hold no
/// password for `/account/deactivate`'s UIA). The person types their Matrix ID to confirm; a
/// mismatch changes nothing; then every session ends and the account no longer signs in.
#[tokio::test]
async fn the_account_page_deactivates_the_account_once_confirmed() {
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;
    let (access, refresh_token) = tokens_for(&server, &client_id, "PHONE").await;
    let (_, metadata) = api(&server, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    let actions = metadata["account_management_actions_supported"].as_array().unwrap();
    for action in ["org.matrix.account_deactivate", "org.matrix.cross_signing_reset"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {metadata}");
    }

    let return_query = "action=org.matrix.account_deactivate";
    let fields = [("username", "alice"), ("password", "alice-pw"), ("return", return_query)];
    let (status, (_, cookie, _)) = post_page(&server, "/_hemicycle/oauth2/account/login", &fields, None).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap().split(';').next().unwrap().to_owned();
    let page = format!("{}/_hemicycle/oauth2/account?{return_query}", server.url);
    let html = browser().get(&page).header(header::COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name=\"confirm\""), "{html}");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    let path = "/_hemicycle/oauth2/account/deactivate";
    let (status, _) = post_page(&server, path, &[("confirm", "@alice:localhost"), ("csrf", "00")], Some(&cookie)).await;
    assert_eq!(status, 403, "a change needs the page's CSRF token");
    let (status, (_, _, html)) =
        post_page(&server, path, &[("confirm", "@bob:localhost"), ("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(status, 400, "{html}");
    assert_eq!(whoami(&server, &access).await.0, 200, "a mismatch changes nothing");

    let (status, (_, cleared, html)) =
        post_page(&server, path, &[("confirm", "@alice:localhost"), ("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    assert!(cleared.unwrap().contains("Max-Age=0"), "the page session's cookie is cleared");
    assert_eq!(whoami(&server, &access).await.0, 401, "every session ended");
    let (status, body) = refresh(&server, &client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let url = authorize_url(&server, &client_id, CALLBACK, "AGAIN", &"v".repeat(50));
    let (status, _, _) =
        sign_in(&server, &url, &[("username", "alice"), ("password", "alice-pw"), ("action", "allow")]).await;
    assert_eq!(status, 403, "the account no longer signs in");
    let admin = admin_token(&server).await;
    let entries = audit_actions(&server, &admin).await;
    assert!(entries.iter().any(|(action, _)| action == "oauth.account_deactivate"), "{entries:?}");
}

/// `prompt=create` (OpenID Connect Prompt Create, which Element X sends for "Create account"):
/// the page offers the registration form when the node's registration is open, and the new
/// account's session goes to the client like a sign-in's; a closed node shows the sign-in only.
#[tokio::test]
async fn prompt_create_registers_an_account_when_registration_is_open() {
    let server = TestServer::start_with(&[("oauth.enabled", true.into()), ("registration.open", true.into())]);
    server.register("alice", "alice-pw").await;
    let (_, metadata) = api(&server, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(metadata["prompt_values_supported"], json!(["create"]), "{metadata}");
    let client_id = register_client(&server).await;
    let verifier = "c".repeat(43);
    let url = format!("{}&prompt=create", authorize_url(&server, &client_id, CALLBACK, "NEWDEV", &verifier));
    let html = browser().get(&url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name=\"action\" value=\"create\""), "{html}");

    let strong = "Un-mot-de-passe-2026!";
    let (status, location, html) =
        sign_in(&server, &url, &[("username", "alice"), ("password", strong), ("action", "create")]).await;
    assert_eq!((status, location), (400, None), "a taken name: {html}");
    let (status, location, html) =
        sign_in(&server, &url, &[("username", "bob"), ("password", strong), ("action", "create")]).await;
    assert_eq!(status, 303, "{html}");
    let code = query_of(&location.unwrap())["code"].clone();
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("client_id", client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, tokens) = post_form(&server, &format!("{OAUTH}/token"), &fields).await;
    assert_eq!(status, 200, "{tokens}");
    let (_, me) = whoami(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!((me["user_id"].as_str(), me["device_id"].as_str()), (Some("@bob:localhost"), Some("NEWDEV")));
    let body =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": strong });
    let (status, _) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 200, "the new account has its password");

    // Registration closed: no form, and a forged submission creates nothing.
    let closed = TestServer::start_with(&[("oauth.enabled", true.into()), ("registration.open", false.into())]);
    let (_, metadata) = api(&closed, Method::GET, None, "/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(metadata["prompt_values_supported"], json!([]));
    let client_id = register_client(&closed).await;
    let url = format!("{}&prompt=create", authorize_url(&closed, &client_id, CALLBACK, "NEWDEV", &verifier));
    let html = browser().get(&url).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("name=\"action\" value=\"create\""), "{html}");
    let (status, location, _) =
        sign_in(&closed, &url, &[("username", "carol"), ("password", strong), ("action", "create")]).await;
    assert_eq!((status, location), (403, None));
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": strong });
    let (status, _) = api(&closed, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 403, "no account was made");
}

/// The console's account page names the OAuth client of each session, and ending the session
/// there ends the grant: its access token and its refresh token both stop working.
#[tokio::test]
async fn the_console_shows_and_ends_oauth_sessions() {
    use crate::console::{csrf, get, post, sign_in};
    let server = oauth_server();
    server.register("alice", "alice-pw").await;
    let client_id = register_client(&server).await;
    let (access, refresh_token) = tokens_for(&server, &client_id, "LAPTOP").await;
    // The device's own name (the client's name at first) no longer says which client it is.
    let body = json!({ "display_name": "Alice's laptop" });
    let (status, _) = api(&server, Method::PUT, Some(&access), "/_matrix/client/v3/devices/LAPTOP", Some(body)).await;
    assert_eq!(status, 200);
    admin_token(&server).await;
    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let path = "/users/view?id=%40alice%3Alocalhost";
    let page = get(&server, Some(&cookie), path).await.text().await.unwrap();
    let row = page.split("<tr>").find(|row| row.contains("LAPTOP")).expect("a row for the OAuth session");
    assert!(row.contains("laptop") && row.contains("Raw client"), "{row}");
    let token = csrf(&server, &cookie, path).await;
    let ended = post(
        &server,
        Some(&cookie),
        "/users/devices/delete",
        &[("user", "@alice:localhost"), ("device", "LAPTOP"), ("csrf", &token)],
    )
    .await;
    assert_eq!(ended.status(), 303, "{}", ended.text().await.unwrap());
    assert_eq!(whoami(&server, &access).await.0, 401, "the access token ended");
    let (status, body) = refresh(&server, &client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "and the refresh token: {body}");
}
