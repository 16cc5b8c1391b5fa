//! Error cases over raw HTTP: every failure is a Matrix error body with the spec's status and errcode.

use serde_json::{json, Value};

use crate::common::TestServer;

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http().request(method, format!("{}{}", server.url, path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn register_raw(server: &TestServer, name: &str, password: &str) -> String {
    let body = json!({ "username": name, "password": password, "auth": { "type": "m.login.dummy" } }).to_string();
    let (status, value) = call(server, reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
    assert_eq!(status, 200, "{value}");
    value["access_token"].as_str().unwrap().to_owned()
}

fn errcode(value: &Value) -> &str {
    value["errcode"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn auth_and_body_errors() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let token = register_raw(&server, "bob", "right-pw").await;

    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "wrong" });
    let (status, v) = call(&server, M::POST, "/_matrix/client/v3/login", None, Some(&login.to_string())).await;
    assert_eq!((status, errcode(&v)), (403, "M_FORBIDDEN"));
    let login =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" }, "password": "x" });
    let (status, v) = call(&server, M::POST, "/_matrix/client/v3/login", None, Some(&login.to_string())).await;
    assert_eq!((status, errcode(&v)), (403, "M_FORBIDDEN"), "unknown users look like wrong passwords");

    let (status, v) = call(&server, M::POST, "/_matrix/client/v3/login", None, Some("{}")).await;
    assert_eq!((status, errcode(&v)), (400, "M_BAD_JSON"), "a login body without `type`");
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/account/whoami", Some("not-a-token"), None).await;
    assert_eq!((status, errcode(&v)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(v["soft_logout"], json!(false));
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/account/whoami", None, None).await;
    assert_eq!((status, errcode(&v)), (401, "M_MISSING_TOKEN"));
    let (status, v) =
        call(&server, M::GET, &format!("/_matrix/client/v3/account/whoami?access_token={token}"), None, None).await;
    assert_eq!((status, v["user_id"].as_str()), (200, Some("@bob:localhost")), "query-string token accepted");

    let (status, v) =
        call(&server, M::POST, "/_matrix/client/v3/user/@bob:localhost/filter", Some(&token), Some("{not json")).await;
    assert_eq!((status, errcode(&v)), (400, "M_NOT_JSON"));
    let (status, v) = call(
        &server,
        M::PUT,
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        Some(&token),
        Some(r#"{"displayname": 5}"#),
    )
    .await;
    assert_eq!((status, errcode(&v)), (400, "M_BAD_JSON"));
    let (_, v) = call(&server, M::GET, "/_matrix/client/v3/profile/@bob:localhost/displayname", None, None).await;
    assert_eq!(v["displayname"], json!("bob"), "a refused write changes nothing");

    let huge = format!(r#"{{"displayname": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, v) =
        call(&server, M::PUT, "/_matrix/client/v3/profile/@bob:localhost/displayname", Some(&token), Some(&huge)).await;
    assert_eq!((status, errcode(&v)), (413, "M_TOO_LARGE"));

    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/no/such/endpoint", None, None).await;
    assert_eq!((status, errcode(&v)), (404, "M_UNRECOGNIZED"));
    let (status, v) = call(&server, M::DELETE, "/_matrix/client/v3/login", None, None).await;
    assert_eq!((status, errcode(&v)), (405, "M_UNRECOGNIZED"));

    let (status, v) =
        call(&server, M::GET, "/_matrix/client/v3/user/@bob:localhost/account_data/m.nothing", Some(&token), None)
            .await;
    assert_eq!((status, errcode(&v)), (404, "M_NOT_FOUND"));
    let (status, v) =
        call(&server, M::PUT, "/_matrix/client/v3/user/@other:localhost/account_data/x.y", Some(&token), Some("{}"))
            .await;
    assert_eq!((status, errcode(&v)), (403, "M_FORBIDDEN"));
    let (status, v) = call(
        &server,
        M::PUT,
        "/_matrix/client/v3/profile/@other:localhost/displayname",
        Some(&token),
        Some(r#"{"displayname":"x"}"#),
    )
    .await;
    assert_eq!((status, errcode(&v)), (403, "M_FORBIDDEN"));
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/profile/not-a-user-id", None, None).await;
    assert_eq!((status, errcode(&v)), (400, "M_INVALID_PARAM"));
    let (status, v) =
        call(&server, M::GET, "/_matrix/client/v3/user/@bob:localhost/filter/999", Some(&token), None).await;
    assert_eq!((status, errcode(&v)), (404, "M_NOT_FOUND"));
}

#[tokio::test]
async fn registration_rules() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let (status, v) =
        call(&server, M::POST, "/_matrix/client/v3/register", None, Some(r#"{"username":"carol","password":"p"}"#))
            .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    assert!(v["session"].is_string());

    let (status, v) =
        call(&server, M::POST, "/_matrix/client/v3/register", None, Some(r#"{"username":"Bad Name!","password":"p"}"#))
            .await;
    assert_eq!((status, errcode(&v)), (400, "M_INVALID_USERNAME"));
    let (status, v) = call(&server, M::POST, "/_matrix/client/v3/register?kind=guest", None, Some("{}")).await;
    assert_eq!((status, errcode(&v)), (403, "M_GUEST_ACCESS_FORBIDDEN"));

    register_raw(&server, "carol", "p").await;
    let body = json!({ "username": "carol", "password": "p", "auth": { "type": "m.login.dummy" } }).to_string();
    let (status, v) = call(&server, M::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
    assert_eq!((status, errcode(&v)), (400, "M_USER_IN_USE"));
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/register/available?username=carol", None, None).await;
    assert_eq!((status, errcode(&v)), (400, "M_USER_IN_USE"));
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/register/available?username=dave", None, None).await;
    assert_eq!((status, v["available"].clone()), (200, json!(true)));
}

#[tokio::test]
async fn closed_and_token_registration() {
    use reqwest::Method as M;
    let closed = TestServer::start_with(&[("registration.open", false.into())]);
    let body = json!({ "username": "x", "password": "p", "auth": { "type": "m.login.dummy" } }).to_string();
    let (status, v) = call(&closed, M::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
    assert_eq!((status, errcode(&v)), (403, "M_FORBIDDEN"));

    let tokened =
        TestServer::start_with(&[("registration.open", false.into()), ("registration.token", "let-me-in".into())]);
    let (status, v) =
        call(&tokened, M::POST, "/_matrix/client/v3/register", None, Some(r#"{"username":"x","password":"p"}"#)).await;
    assert_eq!(status, 401);
    assert_eq!(v["flows"], json!([{ "stages": ["m.login.registration_token"] }]));
    let session = v["session"].as_str().unwrap().to_owned();
    let wrong = json!({ "username": "x", "password": "p", "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } });
    let (status, v) = call(&tokened, M::POST, "/_matrix/client/v3/register", None, Some(&wrong.to_string())).await;
    assert_eq!((status, errcode(&v)), (401, "M_FORBIDDEN"));
    let (status, v) = call(&tokened, M::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
    assert_eq!(status, 400, "dummy is not offered when a token is required: {v}");
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let (_, v) = call(&tokened, M::GET, &format!("{validity}?token=nope"), None, None).await;
    assert_eq!(v["valid"], json!(false));
    let (_, v) = call(&tokened, M::GET, &format!("{validity}?token=let-me-in"), None, None).await;
    assert_eq!(v["valid"], json!(true));
    let right = json!({ "username": "x", "password": "p", "auth": { "type": "m.login.registration_token", "token": "let-me-in", "session": session } });
    let (status, v) = call(&tokened, M::POST, "/_matrix/client/v3/register", None, Some(&right.to_string())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user_id"], json!("@x:localhost"));
}

#[tokio::test]
async fn login_is_rate_limited() {
    use reqwest::Method as M;
    let server = TestServer::start_with(&[
        ("rate_limits.enabled", true.into()),
        (
            "rate_limits.login",
            toml::Value::Table(toml::toml! { per_second = 0.01
            burst = 2 }),
        ),
    ]);
    let login =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" }, "password": "x" })
            .to_string();
    for _ in 0..2 {
        let (status, _) = call(&server, M::POST, "/_matrix/client/v3/login", None, Some(&login)).await;
        assert_eq!(status, 403);
    }
    let response =
        server.http().post(format!("{}/_matrix/client/v3/login", server.url)).body(login.clone()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let v: Value = response.json().await.unwrap();
    assert_eq!(errcode(&v), "M_LIMIT_EXCEEDED");
    assert!(v["retry_after_ms"].as_u64().unwrap() > 1000);
}

#[tokio::test]
async fn discovery_and_cors() {
    use reqwest::Method as M;
    let server = TestServer::start();
    let (status, v) = call(&server, M::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
    assert!(v["versions"].as_array().unwrap().contains(&json!("v1.11")));
    let (status, v) = call(&server, M::GET, "/.well-known/matrix/client", None, None).await;
    assert_eq!((status, v["m.homeserver"]["base_url"].as_str()), (200, Some(server.url.as_str())));
    let (status, v) = call(&server, M::GET, "/.well-known/matrix/server", None, None).await;
    assert_eq!((status, errcode(&v)), (404, "M_NOT_FOUND"), "no federation listener configured");
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/login", None, None).await;
    assert_eq!((status, v["flows"][0]["type"].as_str()), (200, Some("m.login.password")));
    let token = register_raw(&server, "erin", "pw").await;
    let (status, v) = call(&server, M::GET, "/_matrix/client/v3/capabilities", Some(&token), None).await;
    assert_eq!(status, 200);
    // The spec's default for an absent m.change_password is `true`; it must not say false.
    assert_ne!(v["capabilities"]["m.change_password"]["enabled"], json!(false));
    assert_eq!(v["capabilities"]["m.room_versions"]["default"], json!("12"));

    let response = server
        .http()
        .get(format!("{}/_matrix/client/versions", server.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let preflight = server
        .http()
        .request(M::OPTIONS, format!("{}/_matrix/client/v3/login", server.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let methods = preflight.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for h in ["x-requested-with", "content-type", "authorization"] {
        assert!(headers.contains(h), "{headers}");
    }
}
