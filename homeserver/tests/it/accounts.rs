//! Account life cycle through matrix-sdk, the client our users' apps are built on.

use matrix_sdk::ruma::{
    api::client::{
        config::{get_global_account_data, get_room_account_data, set_room_account_data},
        device::get_device,
        filter::{create_filter, get_filter, FilterDefinition},
        uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier},
    },
    events::{ignored_user_list::IgnoredUserListEventContent, GlobalAccountDataEventType, RoomAccountDataEventType},
    mxc_uri, owned_room_id,
    serde::Raw,
    UInt,
};
use serde_json::{json, Value};

use crate::common::{forbidden, matrix_error, sdk_error, unknown_token, TestServer, TokenClock};

fn password_auth(user: &str, password: &str, session: Option<String>) -> AuthData {
    let mut p = Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new(user.to_owned())), password.to_owned());
    p.session = session;
    AuthData::Password(p)
}

#[tokio::test]
async fn register_login_whoami_profile() {
    let server = TestServer::start();
    let alice = server.register("alice", "secret-one").await;
    assert_eq!(alice.user_id().unwrap().as_str(), "@alice:localhost");

    let whoami = alice.whoami().await.unwrap();
    assert_eq!(whoami.user_id, "@alice:localhost");
    assert_eq!(whoami.device_id.as_ref(), alice.device_id().map(ToOwned::to_owned).as_ref());

    // A second client logs in with the localpart and gets a different device.
    let second = server.client().await;
    second.matrix_auth().login_username("alice", "secret-one").initial_device_display_name("laptop").await.unwrap();
    assert_ne!(second.device_id(), alice.device_id());
    // Full user ids work too.
    let third = server.client().await;
    third.matrix_auth().login_username("@alice:localhost", "secret-one").await.unwrap();

    // Profile: display name defaults to the localpart, then changes; avatar set and read back.
    assert_eq!(alice.account().get_display_name().await.unwrap().as_deref(), Some("alice"));
    alice.account().set_display_name(Some("Alice Martin")).await.unwrap();
    alice.account().set_avatar_url(Some(mxc_uri!("mxc://localhost/abc"))).await.unwrap();
    let profile = second.account().fetch_user_profile_of(alice.user_id().unwrap()).await.unwrap();
    assert_eq!(profile.get("displayname"), Some(&json!("Alice Martin")));
    assert_eq!(profile.get("avatar_url"), Some(&json!("mxc://localhost/abc")));
    alice.account().set_avatar_url(None).await.unwrap();
    let profile = second.account().fetch_user_profile_of(alice.user_id().unwrap()).await.unwrap();
    assert_eq!(profile.get("avatar_url"), None, "unset avatar is gone from the profile");
    assert_eq!(profile.get("displayname"), Some(&json!("Alice Martin")));
}

#[tokio::test]
async fn devices_can_be_listed_renamed_and_deleted_with_uia() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw-alice").await;
    let laptop = server.client().await;
    laptop.matrix_auth().login_username("alice", "pw-alice").initial_device_display_name("laptop").await.unwrap();
    let laptop_id = laptop.device_id().unwrap().to_owned();

    let devices = alice.devices().await.unwrap().devices;
    assert_eq!(devices.len(), 2);
    let listed = devices.iter().find(|d| d.device_id == laptop_id).unwrap();
    assert_eq!(listed.display_name.as_deref(), Some("laptop"));
    assert!(listed.last_seen_ts.is_some());

    alice.rename_device(&laptop_id, "old laptop").await.unwrap();
    let devices = alice.devices().await.unwrap().devices;
    assert_eq!(devices.iter().find(|d| d.device_id == laptop_id).unwrap().display_name.as_deref(), Some("old laptop"));
    let one = alice.send(get_device::v3::Request::new(laptop_id.clone())).await.unwrap().device;
    assert_eq!(one.display_name.as_deref(), Some("old laptop"));
    let unknown = alice.send(get_device::v3::Request::new("NOSUCHDEVICE".into())).await.unwrap_err();
    assert_eq!(unknown.as_client_api_error().map(|e| e.status_code.as_u16()), Some(404));

    // Deleting needs the password: first round is a challenge, a wrong password is refused.
    let err = alice.delete_devices(std::slice::from_ref(&laptop_id), None).await.unwrap_err();
    let session = err.as_uiaa_response().expect("challenge").session.clone();
    let err = alice
        .delete_devices(std::slice::from_ref(&laptop_id), Some(password_auth("alice", "wrong", session.clone())))
        .await
        .unwrap_err();
    assert!(err.as_uiaa_response().is_some(), "wrong password gives a new challenge");
    assert_eq!(alice.devices().await.unwrap().devices.len(), 2, "nothing deleted on failure");
    alice
        .delete_devices(std::slice::from_ref(&laptop_id), Some(password_auth("@alice:localhost", "pw-alice", session)))
        .await
        .unwrap();
    assert_eq!(alice.devices().await.unwrap().devices.len(), 1);
    // The deleted device's token is dead.
    assert_eq!(matrix_error(&laptop.whoami().await.unwrap_err()), unknown_token());
}

#[tokio::test]
async fn account_data_and_filters() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let user = alice.user_id().unwrap().to_owned();

    let ignored = IgnoredUserListEventContent::users(vec![matrix_sdk::ruma::owned_user_id!("@spam:localhost")]);
    alice.account().set_account_data(ignored).await.unwrap();
    let got = alice
        .send(get_global_account_data::v3::Request::new(user.clone(), GlobalAccountDataEventType::IgnoredUserList))
        .await
        .unwrap();
    let value: serde_json::Value = got.account_data.deserialize_as().unwrap();
    assert_eq!(value["ignored_users"]["@spam:localhost"], json!({}));

    let room = owned_room_id!("!room:localhost");
    let content = Raw::new(&json!({ "colour": "blue" })).unwrap().cast_unchecked();
    alice
        .send(set_room_account_data::v3::Request::new_raw(
            user.clone(),
            room.clone(),
            "org.example.pref".into(),
            content,
        ))
        .await
        .unwrap();
    let got = alice
        .send(get_room_account_data::v3::Request::new(
            user.clone(),
            room.clone(),
            RoomAccountDataEventType::from("org.example.pref"),
        ))
        .await
        .unwrap();
    assert_eq!(got.account_data.deserialize_as::<serde_json::Value>().unwrap(), json!({ "colour": "blue" }));
    // Global and room scopes are separate.
    let missing = alice
        .send(get_global_account_data::v3::Request::new(
            user.clone(),
            GlobalAccountDataEventType::from("org.example.pref"),
        ))
        .await;
    assert_eq!(matrix_error(&missing.unwrap_err()), (404, "M_NOT_FOUND".to_owned()));

    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(7u32));
    let id = alice.send(create_filter::v3::Request::new(user.clone(), filter)).await.unwrap().filter_id;
    let back = alice.send(get_filter::v3::Request::new(user.clone(), id)).await.unwrap().filter;
    assert_eq!(back.room.timeline.limit, Some(UInt::from(7u32)));
}

#[tokio::test]
async fn password_change_logout_and_deactivate() {
    let server = TestServer::start();
    let alice = server.register("alice", "first-pw").await;
    let other = server.client().await;
    other.matrix_auth().login_username("alice", "first-pw").await.unwrap();

    let err = alice.account().change_password("second-pw", None).await.unwrap_err();
    let session = err.as_uiaa_response().expect("challenge").session.clone();
    alice.account().change_password("second-pw", Some(password_auth("alice", "first-pw", session))).await.unwrap();
    // Other sessions were logged out (logout_devices defaults to true); this one survives.
    assert_eq!(matrix_error(&other.whoami().await.unwrap_err()), unknown_token());
    alice.whoami().await.unwrap();
    let fresh = server.client().await;
    assert_eq!(sdk_error(&fresh.matrix_auth().login_username("alice", "first-pw").await.unwrap_err()), forbidden());
    fresh.matrix_auth().login_username("alice", "second-pw").await.unwrap();

    // Logout kills exactly that token.
    fresh.matrix_auth().logout().await.unwrap();
    alice.whoami().await.unwrap();

    // Deactivation (UIA) ends every session and login.
    let err = alice.account().deactivate(None, None, false).await.unwrap_err();
    let session = err.as_uiaa_response().expect("challenge").session.clone();
    alice.account().deactivate(None, Some(password_auth("alice", "second-pw", session)), false).await.unwrap();
    assert_eq!(matrix_error(&alice.whoami().await.unwrap_err()), unknown_token());
    let again = server.client().await;
    assert_eq!(sdk_error(&again.matrix_auth().login_username("alice", "second-pw").await.unwrap_err()), forbidden());
    // The id stays taken.
    let status = server
        .http()
        .get(format!("{}/_matrix/client/v3/register/available?username=alice", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 400);
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let other = server.client().await;
    other.matrix_auth().login_username("alice", "pw").await.unwrap();
    let token = other.access_token().unwrap();
    let response = server
        .http()
        .post(format!("{}/_matrix/client/v3/logout/all", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(matrix_error(&alice.whoami().await.unwrap_err()), unknown_token());
    assert_eq!(matrix_error(&other.whoami().await.unwrap_err()), unknown_token());
}

#[tokio::test]
async fn restart_keeps_accounts_devices_tokens_and_key() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    alice.account().set_display_name(Some("Alice")).await.unwrap();
    let token = alice.access_token().unwrap();
    let key_before = signing_key_id(&server);

    server.restart();
    let client = server.client().await;
    let response = server
        .http()
        .get(format!("{}/_matrix/client/v3/account/whoami", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "token survives restart");
    client.matrix_auth().login_username("alice", "pw").await.unwrap();
    assert_eq!(client.account().get_display_name().await.unwrap().as_deref(), Some("Alice"));
    assert_eq!(client.devices().await.unwrap().devices.len(), 2);
    assert_eq!(signing_key_id(&server), key_before, "the server key id is stable");
}

/// A `kill -9` right after the answer: the write is there after a restart, so it had left the
/// process before the client got its `200` (into the database's log; maybe still only in the
/// kernel's page cache, which outlives the process — that it reached the disk is what the
/// power-cut test, `durability.rs`, checks).
#[tokio::test]
async fn acknowledged_writes_leave_the_process_before_the_answer() {
    let mut server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    alice.account().set_display_name(Some("Durable")).await.unwrap();
    server.kill();
    server.restart();
    let client = server.client().await;
    client.matrix_auth().login_username("alice", "pw").await.unwrap();
    assert_eq!(client.account().get_display_name().await.unwrap().as_deref(), Some("Durable"));
}

/// The server's signing key id, asked of the running server through the operator CLI.
fn signing_key_id(server: &TestServer) -> String {
    let out = server.cli(&["server", "key-id"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn room_tags_are_kept_per_room() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let http = server.http();
    let base = format!("{}/_matrix/client/v3/user/@alice:localhost/rooms/!r:localhost/tags", server.url);
    let put = http
        .put(format!("{base}/m.favourite"))
        .bearer_auth(&token)
        .json(&json!({ "order": 0.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let put = http.put(format!("{base}/u.travail")).bearer_auth(&token).json(&json!({})).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let response = http.get(&base).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let tags: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    assert!(tags["tags"]["u.travail"].is_object());
    let deleted = http.delete(format!("{base}/u.travail")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let response = http.get(&base).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let tags: serde_json::Value = response.json().await.unwrap();
    assert!(tags["tags"].is_object(), "{tags}");
    assert!(tags["tags"].get("u.travail").is_none());
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5, "the other tag stays");
    let other = http
        .get(format!("{}/_matrix/client/v3/user/@bob:localhost/rooms/!r:localhost/tags", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
}

/// Refresh tokens: a client that asks for one gets an expiring access token; `POST /refresh`
/// rotates both (the old ones stop working), an expired token is a soft logout, and
/// matrix-sdk refreshes by itself when its token expires. Tokens live an hour, and expire when
/// the test moves the server's token clock past it.
#[tokio::test]
async fn refresh_tokens_rotate_and_expire() {
    let clock = TokenClock::system();
    let (env, path) = clock.env();
    let server =
        TestServer::start_with_env(&[("session.refreshable_access_token_lifetime_s", 3600.into())], &[(env, &path)]);
    let hour = std::time::Duration::from_secs(3600);
    server.register("alice", "pw").await;
    let http = server.http();
    let url = |path: &str| format!("{}{path}", server.url);
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": "pw",
        "refresh_token": true,
    });
    let session: Value =
        http.post(url("/_matrix/client/v3/login")).json(&login).send().await.unwrap().json().await.unwrap();
    let (access, refresh) =
        (session["access_token"].as_str().unwrap().to_owned(), session["refresh_token"].as_str().unwrap().to_owned());
    assert_eq!(session["expires_in_ms"], 3_600_000, "{session}");
    let whoami = |token: String| {
        let request = http.get(url("/_matrix/client/v3/account/whoami")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(whoami(access.clone()).await.0, 200);
    let refresh_with = |token: String| {
        let request = http.post(url("/_matrix/client/v3/refresh")).json(&json!({ "refresh_token": token }));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };

    let refreshed = refresh_with(refresh.clone()).await;
    let new_access = refreshed["access_token"].as_str().unwrap().to_owned();
    let new_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refreshed["expires_in_ms"], 3_600_000);
    assert_ne!(new_access, access);
    // The replaced access token works until the new one is used (requests under way with it
    // when the client refreshed), then never again.
    assert_eq!(whoami(access.clone()).await.0, 200, "the old access token works until the new one is used");
    let (status, body) = whoami(new_access.clone()).await;
    assert_eq!((status, body["device_id"].clone()), (200, session["device_id"].clone()), "same device");
    let (status, body) = whoami(access.clone()).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "the old access token is gone");
    let again =
        http.post(url("/_matrix/client/v3/refresh")).json(&json!({ "refresh_token": refresh })).send().await.unwrap();
    assert_eq!(again.status(), 401, "the old refresh token is gone");
    assert_eq!(again.json::<Value>().await.unwrap()["errcode"], "M_UNKNOWN_TOKEN");

    // Just before the end of its lifetime it works; past it, it is a soft logout.
    clock.advance(hour - std::time::Duration::from_secs(60));
    assert_eq!(whoami(new_access.clone()).await.0, 200, "a minute before it expires");
    clock.advance(std::time::Duration::from_secs(61));
    let (status, body) = whoami(new_access.clone()).await;
    assert_eq!(status, 401);
    assert_eq!((body["errcode"].as_str(), body["soft_logout"].as_bool()), (Some("M_UNKNOWN_TOKEN"), Some(true)));
    let refreshed = refresh_with(new_refresh.clone()).await;
    assert_eq!(whoami(refreshed["access_token"].as_str().unwrap().to_owned()).await.0, 200);

    // Two refreshes in a row, as matrix-sdk makes when a request that failed with the expired
    // token refreshes again just after another one did: the token the first refresh gave (which
    // the first request is retrying with) still works; the expired one before it does not.
    let first = refresh_with(refreshed["refresh_token"].as_str().unwrap().to_owned()).await;
    let second = refresh_with(first["refresh_token"].as_str().unwrap().to_owned()).await;
    let first_access = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(first_access.clone()).await.0, 200, "the retry with the first refresh's token");
    let before = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(before).await.0, 401, "only the token just replaced is kept");
    assert_eq!(whoami(second["access_token"].as_str().unwrap().to_owned()).await.0, 200);
    assert_eq!(whoami(first_access).await.0, 401, "gone once the newest token is used");
    let refreshed = second;

    // Logging out ends the refresh token too.
    let last = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let logout = http
        .post(url("/_matrix/client/v3/logout"))
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    let after =
        http.post(url("/_matrix/client/v3/refresh")).json(&json!({ "refresh_token": last })).send().await.unwrap();
    assert_eq!(after.status(), 401);

    // Without refresh_token the access token does not expire and no refresh token is issued.
    let mut plain = login.clone();
    plain["refresh_token"] = false.into();
    let session: Value =
        http.post(url("/_matrix/client/v3/login")).json(&plain).send().await.unwrap().json().await.unwrap();
    assert!(session.get("refresh_token").is_none() && session.get("expires_in_ms").is_none(), "{session}");
    let plain_token = session["access_token"].as_str().unwrap().to_owned();

    // matrix-sdk asks for a refresh token and refreshes by itself once the token expired.
    let client =
        matrix_sdk::Client::builder().homeserver_url(&server.url).handle_refresh_tokens().build().await.unwrap();
    client.matrix_auth().login_username("alice", "pw").request_refresh_token().send().await.unwrap();
    let first = client.access_token().unwrap();
    assert!(client.matrix_auth().session().unwrap().tokens.refresh_token.is_some());
    clock.advance(hour + std::time::Duration::from_secs(1));
    let me = client.whoami().await.expect("matrix-sdk refreshes and retries");
    assert_eq!(me.user_id.as_str(), "@alice:localhost");
    assert_ne!(client.access_token().unwrap(), first, "a new access token was fetched");
    assert_eq!(whoami(plain_token).await.0, 200, "a token without refresh_token outlives the hours gone by");
}

/// Signing a new device in from an existing one: `POST /login/get_token` (password confirmed
/// through UIA) gives a single-use token for `m.login.token`.
#[tokio::test]
async fn login_tokens_sign_in_a_new_device_once() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let http = server.http();
    let url = |path: &str| format!("{}{path}", server.url);
    let types: Value = http.get(url("/_matrix/client/v3/login")).send().await.unwrap().json().await.unwrap();
    let token_type = types["flows"].as_array().unwrap().iter().find(|f| f["type"] == "m.login.token").cloned();
    assert_eq!(token_type.map(|t| t["get_login_token"].clone()), Some(json!(true)), "{types}");
    let caps: Value = http
        .get(url("/_matrix/client/v3/capabilities"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(caps["capabilities"]["m.get_login_token"]["enabled"], true);

    let ask = |body: Value| http.post(url("/_matrix/client/v1/login/get_token")).bearer_auth(&token).json(&body).send();
    let challenge = ask(json!({})).await.unwrap();
    assert_eq!(challenge.status(), 401, "the password is asked for first");
    let challenge: Value = challenge.json().await.unwrap();
    assert_eq!(challenge["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = challenge["session"].as_str().unwrap();
    let auth = |password: &str| {
        json!({ "auth": { "type": "m.login.password", "session": session, "password": password,
                          "identifier": { "type": "m.id.user", "user": "alice" } } })
    };
    assert_eq!(ask(auth("wrong")).await.unwrap().status(), 401, "a wrong password gets no token");
    let issued: Value = ask(auth("pw")).await.unwrap().json().await.unwrap();
    assert_eq!(issued["expires_in_ms"], 120_000, "{issued}");
    let login_token = issued["login_token"].as_str().unwrap().to_owned();

    let login = json!({ "type": "m.login.token", "token": login_token, "initial_device_display_name": "phone" });
    let signed_in: Value =
        http.post(url("/_matrix/client/v3/login")).json(&login).send().await.unwrap().json().await.unwrap();
    assert_eq!(signed_in["user_id"], "@alice:localhost", "{signed_in}");
    assert_ne!(signed_in["device_id"], json!(alice.device_id().unwrap().as_str()), "a new device");
    let me: Value = http
        .get(url("/_matrix/client/v3/account/whoami"))
        .bearer_auth(signed_in["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], "@alice:localhost");
    let again = http.post(url("/_matrix/client/v3/login")).json(&login).send().await.unwrap();
    assert_eq!(again.status(), 403, "single use");
    assert_eq!(again.json::<Value>().await.unwrap()["errcode"], "M_FORBIDDEN");
    let unknown = json!({ "type": "m.login.token", "token": "made-up" });
    assert_eq!(http.post(url("/_matrix/client/v3/login")).json(&unknown).send().await.unwrap().status(), 403);
}

/// Third-party ids without an email or SMS sender: the account lists none, removal changes
/// nothing, adding fails its validation, and every requestToken is refused as the spec says.
#[tokio::test]
async fn third_party_ids_are_refused_without_a_sender() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let token = alice.access_token().unwrap();
    let http = server.http();
    let call = |method: reqwest::Method, path: &str, auth: bool, body: Value| {
        let mut request = http.request(method, format!("{}{path}", server.url)).json(&body);
        if auth {
            request = request.bearer_auth(&token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, list) = call(reqwest::Method::GET, "/_matrix/client/v3/account/3pid", true, json!(null)).await;
    assert_eq!(status, 200);
    assert!(list.get("threepids").is_none_or(|t| t == &json!([])), "none: {list}");
    assert_eq!(call(reqwest::Method::GET, "/_matrix/client/v3/account/3pid", false, json!(null)).await.0, 401);
    let gone = json!({ "medium": "email", "address": "alice@example.gouv.fr" });
    let (status, body) = call(reqwest::Method::POST, "/_matrix/client/v3/account/3pid/delete", true, gone).await;
    assert_eq!((status, body["id_server_unbind_result"].as_str()), (200, Some("no-support")));
    let password =
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "pw" });
    let add = json!({ "client_secret": "secret", "sid": "nosuchsession", "auth": password });
    let (status, body) = call(reqwest::Method::POST, "/_matrix/client/v3/account/3pid/add", true, add).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_THREEPID_AUTH_FAILED")));
    let email = json!({ "client_secret": "secret", "email": "alice@example.gouv.fr", "send_attempt": 1 });
    let phone = json!({ "client_secret": "secret", "country": "FR", "phone_number": "0600000000", "send_attempt": 1 });
    for (path, body) in [
        ("/_matrix/client/v3/register/email/requestToken", &email),
        ("/_matrix/client/v3/register/msisdn/requestToken", &phone),
        ("/_matrix/client/v3/account/password/email/requestToken", &email),
        ("/_matrix/client/v3/account/password/msisdn/requestToken", &phone),
        ("/_matrix/client/v3/account/3pid/email/requestToken", &email),
        ("/_matrix/client/v3/account/3pid/msisdn/requestToken", &phone),
    ] {
        let (status, answer) = call(reqwest::Method::POST, path, false, body.clone()).await;
        assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")), "{path}: {answer}");
    }
    let (status, answer) =
        call(reqwest::Method::POST, "/_matrix/client/v3/register/email/requestToken", false, json!({ "email": "x" }))
            .await;
    assert_eq!(status, 400, "a malformed request is refused before anything: {answer}");
}

/// The spec's rule for a refresh whose answer was lost (or two refreshes of one client at once):
/// the old refresh token keeps working until the new access or refresh token is used; refreshing
/// with it again replaces the unused pair, and the first use of the new pair ends it.
#[tokio::test]
async fn a_refresh_token_works_again_until_its_successor_is_used() {
    let server = TestServer::start_with_env(&[("session.refreshable_access_token_lifetime_s", 3600.into())], &[]);
    server.register("alice", "pw").await;
    let http = server.http();
    let url = |path: &str| format!("{}{path}", server.url);
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                        "password": "pw", "refresh_token": true });
    let session: Value =
        http.post(url("/_matrix/client/v3/login")).json(&login).send().await.unwrap().json().await.unwrap();
    let first = session["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let request = http.post(url("/_matrix/client/v3/refresh")).json(&json!({ "refresh_token": token }));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let whoami = |token: &str| {
        let request = http.get(url("/_matrix/client/v3/account/whoami")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (status, lost) = refresh(first.clone()).await;
    assert_eq!(status, 200, "{lost}");
    // The client never got `lost`: it refreshes again with the token it has.
    let (status, second) = refresh(first.clone()).await;
    assert_eq!(status, 200, "the old refresh token works until its successor is used: {second}");
    assert_eq!(whoami(lost["access_token"].as_str().unwrap()).await, 401, "the unused pair was replaced");
    assert_eq!(refresh(lost["refresh_token"].as_str().unwrap().to_owned()).await.0, 401);
    assert_eq!(whoami(second["access_token"].as_str().unwrap()).await, 200);
    let (status, body) = refresh(first).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "used successor: the old one ends");
    assert_eq!(refresh(second["refresh_token"].as_str().unwrap().to_owned()).await.0, 200);
}
