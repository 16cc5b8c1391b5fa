//! The Synapse-compatible admin API (`/_synapse/admin`): access control, users, devices, rooms,
//! event reports and the audit log, with the shapes synapse-admin reads.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{api, upload, TestServer, TokenClock};

async fn login(server: &TestServer, user: &str, password: &str) -> String {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let (status, body) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A server with an admin (`root`) and a regular user (`alice`); their tokens.
async fn setup() -> (TestServer, String, String) {
    setup_with_env(&[]).await
}

/// [`setup`], the server started with extra environment variables.
async fn setup_with_env(env: &[(&str, &str)]) -> (TestServer, String, String) {
    let server = TestServer::start_with_env(&[], env);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = login(&server, "root", "root-pw").await;
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    (server, root, alice)
}

async fn call(server: &TestServer, method: Method, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api(server, method, Some(token), &format!("/_synapse/admin{path}"), body).await
}

fn error(status: u16, code: &str) -> (u16, Option<String>) {
    (status, Some(code.to_owned()))
}

fn got(response: &(u16, Value)) -> (u16, Option<String>) {
    (response.0, response.1["errcode"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn only_server_admins_get_in() {
    let (server, root, alice) = setup().await;
    for path in ["/v2/users", "/v3/users", "/v1/rooms", "/v1/event_reports", "/v1/audit"] {
        assert_eq!(got(&call(&server, Method::GET, &alice, path, None).await), error(403, "M_FORBIDDEN"), "{path}");
        let anonymous = api(&server, Method::GET, None, &format!("/_synapse/admin{path}"), None).await;
        assert_eq!(got(&anonymous), error(401, "M_MISSING_TOKEN"), "{path}");
        assert_eq!(call(&server, Method::GET, &root, path, None).await.0, 200, "{path}");
    }
    // The version is public, as synapse-admin reads it before signing in.
    let (status, version) = api(&server, Method::GET, None, "/_synapse/admin/v1/server_version", None).await;
    assert_eq!(status, 200);
    assert!(version["server_version"].as_str().unwrap().starts_with("Hemicycle/"), "{version}");
    // A regular user cannot change anything either, and nothing is changed.
    let put =
        call(&server, Method::PUT, &alice, "/v2/users/@mallory:localhost", Some(json!({ "password": "x" }))).await;
    assert_eq!(got(&put), error(403, "M_FORBIDDEN"));
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v2/users/@mallory:localhost", None).await),
        error(404, "M_NOT_FOUND")
    );
}

#[tokio::test]
async fn users_are_created_listed_changed_and_deactivated() {
    let (server, root, _alice) = setup().await;

    // Create (201) with the shape synapse-admin reads back.
    let created = call(
        &server,
        Method::PUT,
        &root,
        "/v2/users/@bob:localhost",
        Some(json!({ "password": "bob-pw", "displayname": "Bob Léger", "threepids": [{ "medium": "email", "address": "Bob@Example.gouv.fr" }] })),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["name"], "@bob:localhost");
    assert_eq!(created.1["displayname"], "Bob Léger");
    assert_eq!(created.1["admin"], 0);
    assert_eq!(created.1["deactivated"], 0);
    assert_eq!(created.1["threepids"][0]["address"], "bob@example.gouv.fr");
    let bob = login(&server, "bob", "bob-pw").await;

    // synapse-admin's edit form sends the whole record back, read-only fields included: they
    // are ignored. The single-user view gives creation_ts in seconds, the list in ms.
    let (_, shown) = call(&server, Method::GET, &root, "/v2/users/@bob:localhost", None).await;
    let mut record = shown.clone();
    record["id"] = record["name"].clone();
    record["avatar_src"] = Value::Null;
    record["displayname"] = json!("Bob Léger-Dupont");
    // Its form turns the 0/1 flags into the booleans Synapse's PUT takes.
    for flag in ["admin", "deactivated", "is_guest", "shadow_banned"] {
        record[flag] = json!(record[flag] == 1);
    }
    let saved = call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(record)).await;
    assert_eq!(saved.0, 200, "{}", saved.1);
    assert_eq!(saved.1["displayname"], "Bob Léger-Dupont");
    let seconds = shown["creation_ts"].as_u64().unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now_s - seconds < 600, "creation_ts {seconds} is in seconds");
    assert!(shown["last_seen_ts"].as_u64().unwrap() >= seconds * 1000, "bob signed in: {shown}");
    let changed_ids = call(
        &server,
        Method::PUT,
        &root,
        "/v2/users/@bob:localhost",
        Some(json!({ "external_ids": [{ "auth_provider": "ldap", "external_id": "uid=bob,dc=x" }] })),
    )
    .await;
    assert_eq!(got(&changed_ids), error(400, "M_INVALID_PARAM"), "external ids are the directory's");
    // Synapse's user types: set, shown, cleared; anything else refused.
    let bot = call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(json!({ "user_type": "bot" }))).await;
    assert_eq!((bot.0, &bot.1["user_type"]), (200, &json!("bot")), "{}", bot.1);
    let odd =
        call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(json!({ "user_type": "robot" }))).await;
    assert_eq!(got(&odd), error(400, "M_INVALID_PARAM"));
    let cleared =
        call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(json!({ "user_type": null }))).await;
    assert_eq!(cleared.1["user_type"], Value::Null, "{}", cleared.1);

    // Modify (200).
    let modified =
        call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(json!({ "displayname": "Bob L." }))).await;
    assert_eq!(modified.0, 200, "{}", modified.1);
    let (_, profile) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/profile/@bob:localhost", None).await;
    assert_eq!(profile["displayname"], "Bob L.");

    // The list: users + total, filters, order and paging.
    let (status, list) =
        call(&server, Method::GET, &root, "/v2/users?from=0&limit=10&guests=false&order_by=name&dir=f", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 3);
    let names: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["@alice:localhost", "@bob:localhost", "@root:localhost"]);
    assert!(list.get("next_token").is_none());
    let (_, page) = call(&server, Method::GET, &root, "/v2/users?limit=2&dir=b", None).await;
    let names: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["@root:localhost", "@bob:localhost"]);
    assert_eq!(page["next_token"], "2");
    let (_, page2) = call(&server, Method::GET, &root, "/v2/users?limit=2&dir=b&from=2", None).await;
    assert_eq!(page2["users"][0]["name"], "@alice:localhost");
    let (_, found) = call(&server, Method::GET, &root, "/v2/users?name=l%C3%A9ger", None).await;
    assert_eq!(found["total"], 0, "the display name changed: {found}");
    let (_, found) = call(&server, Method::GET, &root, "/v2/users?name=bob%20l", None).await;
    assert_eq!(found["users"][0]["name"], "@bob:localhost", "{found}");
    let (_, admins) = call(&server, Method::GET, &root, "/v2/users?admins=true", None).await;
    assert_eq!(admins["total"], 1);
    let creation_ms = list["users"][1]["creation_ts"].as_u64().unwrap();
    assert_eq!(creation_ms / 1000, seconds, "the list gives ms");
    assert!(list["users"][2]["last_seen_ts"].as_u64().is_some(), "root signed in: {list}");
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v2/users?order_by=shoe_size", None).await),
        error(400, "M_INVALID_PARAM")
    );
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v2/users?limit=many", None).await),
        error(400, "M_INVALID_PARAM")
    );

    // Admin flag.
    let (_, flag) = call(&server, Method::GET, &root, "/v1/users/@bob:localhost/admin", None).await;
    assert_eq!(flag, json!({ "admin": false }));
    assert_eq!(
        call(&server, Method::PUT, &root, "/v1/users/@bob:localhost/admin", Some(json!({ "admin": true }))).await.0,
        200
    );
    assert_eq!(call(&server, Method::GET, &bob, "/v2/users?limit=1", None).await.0, 200, "bob is an admin now");
    assert_eq!(
        call(&server, Method::PUT, &root, "/v1/users/@bob:localhost/admin", Some(json!({ "admin": false }))).await.0,
        200
    );
    assert_eq!(call(&server, Method::GET, &bob, "/v2/users?limit=1", None).await.0, 403);
    let demote =
        call(&server, Method::PUT, &root, "/v1/users/@root:localhost/admin", Some(json!({ "admin": false }))).await;
    assert_eq!(demote.0, 400, "{}", demote.1);

    // Bad input changes nothing.
    let bad = api(&server, Method::PUT, Some(&root), "/_synapse/admin/v2/users/@bob:localhost", None).await;
    assert_eq!(bad.0, 200, "an empty body changes nothing");
    let not_json = server
        .http()
        .put(format!("{}/_synapse/admin/v2/users/@bob:localhost", server.url))
        .bearer_auth(&root)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
    let wrong = call(&server, Method::PUT, &root, "/v2/users/@bob:localhost", Some(json!({ "admin": "yes" }))).await;
    assert_eq!(got(&wrong), error(400, "M_BAD_JSON"));
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v2/users/not-a-user", None).await),
        error(400, "M_INVALID_PARAM")
    );
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v2/users/@bob:elsewhere.fr", None).await),
        error(400, "M_INVALID_PARAM")
    );
    let (_, still) = call(&server, Method::GET, &root, "/v2/users/@bob:localhost", None).await;
    assert_eq!((still["admin"].clone(), still["displayname"].clone()), (json!(0), json!("Bob L.")));

    // Password reset logs out; the new password works.
    let reset = call(
        &server,
        Method::POST,
        &root,
        "/v1/reset_password/@bob:localhost",
        Some(json!({ "new_password": "new-pw" })),
    )
    .await;
    assert_eq!(reset.0, 200, "{}", reset.1);
    let (status, _) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401);
    let bob = login(&server, "bob", "new-pw").await;

    // Deactivation: gone from the default list, there with deactivated=true, its token dead.
    let done =
        call(&server, Method::POST, &root, "/v1/deactivate/@bob:localhost", Some(json!({ "erase": false }))).await;
    assert_eq!(done, (200, json!({ "id_server_unbind_result": "success" })));
    let (status, _) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401);
    let (_, list) = call(&server, Method::GET, &root, "/v2/users", None).await;
    assert_eq!(list["total"], 2);
    let (_, list) = call(&server, Method::GET, &root, "/v2/users?deactivated=true", None).await;
    assert_eq!(list["total"], 3);
    // v3 (Ketesa): no filter lists everyone, true only the deactivated, false only the others.
    for (query, total) in [("", 3), ("?deactivated=true", 1), ("?deactivated=false", 2)] {
        let (_, list) = call(&server, Method::GET, &root, &format!("/v3/users{query}"), None).await;
        assert_eq!(list["total"], total, "v3{query}: {list}");
    }
    let (_, bob_now) = call(&server, Method::GET, &root, "/v2/users/@bob:localhost", None).await;
    assert_eq!(bob_now["deactivated"], 1);

    // Every change is in the audit log, newest first, with who made it.
    let (_, audit) = call(&server, Method::GET, &root, "/v1/audit", None).await;
    // The admins' changes (sign-ins are audited too, and checked on their own).
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|action| !action.starts_with("login"))
        .collect();
    assert_eq!(
        actions,
        [
            "user.deactivate",
            "user.reset_password",
            "user.modify",
            "user.set_admin",
            "user.set_admin",
            "user.modify",
            "user.modify",
            "user.modify",
            "user.modify",
            "user.create"
        ],
        "{audit}"
    );
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["action"].as_str().unwrap().starts_with("login"))
        .all(|e| e["admin"] == "@root:localhost" && e["target"] == "@bob:localhost"));
    assert!(!audit.to_string().contains("new-pw"), "no password in the audit log");
}

#[tokio::test]
async fn devices_whois_joined_rooms_and_login_as() {
    let (server, root, alice) = setup().await;
    let (status, body) = call(&server, Method::POST, &root, "/v1/users/@alice:localhost/login", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let puppet = body["access_token"].as_str().unwrap().to_owned();
    let (_, whoami) = api(&server, Method::GET, Some(&puppet), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(whoami["user_id"], "@alice:localhost");
    let own = call(&server, Method::POST, &root, "/v1/users/@root:localhost/login", Some(json!({}))).await;
    assert_eq!(own.0, 400, "not as oneself");

    let (_, devices) = call(&server, Method::GET, &root, "/v2/users/@alice:localhost/devices", None).await;
    assert_eq!(devices["total"], 2, "{devices}");
    let puppet_device = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["display_name"] == "admin login")
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .expect("the admin login's device");
    assert_eq!(devices["devices"][0]["user_id"], "@alice:localhost");
    let path = format!("/v2/users/@alice:localhost/devices/{puppet_device}");
    assert_eq!(call(&server, Method::PUT, &root, &path, Some(json!({ "display_name": "audit" }))).await.0, 200);
    let (_, device) = call(&server, Method::GET, &root, &path, None).await;
    assert_eq!(device["display_name"], "audit");
    let (_, whois) = call(&server, Method::GET, &root, "/v1/whois/@alice:localhost", None).await;
    assert_eq!(whois["user_id"], "@alice:localhost");
    assert!(whois["devices"][&puppet_device]["sessions"][0]["connections"].is_array(), "{whois}");
    assert_eq!(call(&server, Method::DELETE, &root, &path, None).await.0, 200);
    let (status, _) = api(&server, Method::GET, Some(&puppet), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401, "the deleted device's token is dead");
    assert_eq!(got(&call(&server, Method::GET, &root, &path, None).await), error(404, "M_NOT_FOUND"));

    // Joined rooms.
    let (_, room) =
        api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({ "name": "Cabinet" })))
            .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (_, joined) = call(&server, Method::GET, &root, "/v1/users/@alice:localhost/joined_rooms", None).await;
    assert_eq!(joined, json!({ "total": 1, "joined_rooms": [room_id] }));

    // delete_devices logs out the rest.
    let (_, devices) = call(&server, Method::GET, &root, "/v2/users/@alice:localhost/devices", None).await;
    let ids: Vec<Value> = devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].clone()).collect();
    assert_eq!(
        call(
            &server,
            Method::POST,
            &root,
            "/v2/users/@alice:localhost/delete_devices",
            Some(json!({ "devices": ids }))
        )
        .await
        .0,
        200
    );
    let (status, _) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn rooms_and_event_reports() {
    let (server, root, alice) = setup().await;
    let (_, room) = api(
        &server,
        Method::POST,
        Some(&alice),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "name": "Cellule de crise", "room_alias_name": "crise", "preset": "public_chat" })),
    )
    .await;
    let crisis = room["room_id"].as_str().unwrap().to_owned();
    let (_, other) =
        api(&server, Method::POST, Some(&root), "/_matrix/client/v3/createRoom", Some(json!({ "name": "Archives" })))
            .await;
    let archives = other["room_id"].as_str().unwrap().to_owned();

    let (status, list) = call(&server, Method::GET, &root, "/v1/rooms?order_by=name", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_rooms"], 2);
    assert_eq!(list["offset"], 0);
    assert_eq!(list["rooms"][0]["room_id"], archives.as_str(), "A before C");
    let first = &list["rooms"][1];
    assert_eq!(first["name"], "Cellule de crise");
    assert_eq!(first["canonical_alias"], "#crise:localhost");
    assert_eq!(first["joined_members"], 1);
    assert_eq!(first["joined_local_members"], 1);
    assert_eq!(first["creator"], "@alice:localhost");
    assert_eq!(first["join_rules"], "public");
    assert!(first["state_events"].as_u64().unwrap() >= 5);
    let (_, searched) = call(&server, Method::GET, &root, "/v1/rooms?search_term=CRISE", None).await;
    assert_eq!(searched["total_rooms"], 1);
    // Ketesa's filters: neither room is in the directory, neither is empty.
    for (query, total) in
        [("public_rooms=true", 0), ("public_rooms=false", 2), ("empty_rooms=true", 0), ("empty_rooms=false", 2)]
    {
        let (_, filtered) = call(&server, Method::GET, &root, &format!("/v1/rooms?{query}"), None).await;
        assert_eq!(filtered["total_rooms"], total, "{query}: {filtered}");
    }
    // A server admin may publish a room it is not in (synapse-admin's directory button); a
    // regular user who is not a moderator there may not.
    let directory = format!("/_matrix/client/v3/directory/list/room/{archives}");
    let (status, body) =
        api(&server, Method::PUT, Some(&alice), &directory, Some(json!({ "visibility": "public" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) = api(
        &server,
        Method::PUT,
        Some(&root),
        &format!("/_matrix/client/v3/directory/list/room/{crisis}"),
        Some(json!({ "visibility": "public" })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, published) = call(&server, Method::GET, &root, "/v1/rooms?public_rooms=true", None).await;
    assert_eq!(published["total_rooms"], 1, "{published}");
    assert_eq!(published["rooms"][0]["room_id"], crisis.as_str());
    let (_, paged) = call(&server, Method::GET, &root, "/v1/rooms?limit=1", None).await;
    assert_eq!((paged["rooms"].as_array().unwrap().len(), paged["next_batch"].clone()), (1, json!(1)));
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/rooms?order_by=colour", None).await),
        error(400, "M_INVALID_PARAM")
    );

    let (_, details) = call(&server, Method::GET, &root, &format!("/v1/rooms/{crisis}"), None).await;
    assert_eq!(details["room_id"], crisis.as_str());
    assert_eq!(details["joined_local_devices"], 1);
    let (_, members) = call(&server, Method::GET, &root, &format!("/v1/rooms/{crisis}/members"), None).await;
    assert_eq!(members, json!({ "total": 1, "members": ["@alice:localhost"] }));
    let (_, state) = call(&server, Method::GET, &root, &format!("/v1/rooms/{crisis}/state"), None).await;
    assert!(state["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"), "{state}");
    let (_, extremities) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{crisis}/forward_extremities"), None).await;
    assert_eq!(extremities["count"], 1);
    assert!(extremities["results"][0]["event_id"].as_str().unwrap().starts_with('$'));
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/rooms/!nope:localhost", None).await),
        error(404, "M_NOT_FOUND")
    );
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/rooms/garbage/state", None).await),
        error(400, "M_INVALID_PARAM")
    );

    // A report, listed with the room's name and the event's sender, shown with the event, deleted.
    let (_, sent) = api(
        &server,
        Method::PUT,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{crisis}/send/m.room.message/t1"),
        Some(json!({ "msgtype": "m.text", "body": "spam" })),
    )
    .await;
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let (status, _) = api(
        &server,
        Method::POST,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{crisis}/report/{event}"),
        Some(json!({ "reason": "test" })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, reports) = call(&server, Method::GET, &root, "/v1/event_reports", None).await;
    assert_eq!(reports["total"], 1, "{reports}");
    let report = &reports["event_reports"][0];
    assert_eq!(
        (report["event_id"].as_str(), report["name"].as_str()),
        (Some(event.as_str()), Some("Cellule de crise"))
    );
    assert_eq!(
        (report["sender"].as_str(), report["user_id"].as_str()),
        (Some("@alice:localhost"), Some("@alice:localhost"))
    );
    let id = report["id"].as_u64().unwrap();
    let (_, one) = call(&server, Method::GET, &root, &format!("/v1/event_reports/{id}"), None).await;
    assert_eq!(one["event_json"]["content"]["body"], "spam");
    let (_, filtered) = call(&server, Method::GET, &root, &format!("/v1/event_reports?room_id={archives}"), None).await;
    assert_eq!(filtered["total"], 0);
    assert_eq!(call(&server, Method::DELETE, &root, &format!("/v1/event_reports/{id}"), None).await.0, 200);
    assert_eq!(
        got(&call(&server, Method::GET, &root, &format!("/v1/event_reports/{id}"), None).await),
        error(404, "M_NOT_FOUND")
    );
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/event_reports/abc", None).await),
        error(400, "M_INVALID_PARAM")
    );
    let (_, audit) = call(&server, Method::GET, &root, "/v1/audit", None).await;
    assert_eq!(audit["entries"][0]["action"], "report.delete");
}

async fn register_with_token(server: &TestServer, name: &str, token: &str) -> (u16, Value) {
    let url = "/_matrix/client/v3/register";
    let (status, first) =
        api(server, Method::POST, None, url, Some(json!({ "username": name, "password": "pw" }))).await;
    assert_eq!(status, 401, "{first}");
    assert_eq!(first["flows"], json!([{ "stages": ["m.login.registration_token"] }]), "{first}");
    let auth = json!({ "type": "m.login.registration_token", "token": token, "session": first["session"] });
    api(server, Method::POST, None, url, Some(json!({ "username": name, "password": "pw", "auth": auth }))).await
}

#[tokio::test]
async fn registration_tokens_open_a_closed_registration() {
    let server = TestServer::start_with(&[("registration.open", false.into())]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success());
    let root = login(&server, "root", "root-pw").await;
    let closed = api(
        &server,
        Method::POST,
        None,
        "/_matrix/client/v3/register",
        Some(json!({ "username": "x", "password": "pw" })),
    )
    .await;
    assert_eq!(got(&closed), error(403, "M_FORBIDDEN"), "closed without tokens");

    let (status, random) = call(&server, Method::POST, &root, "/v1/registration_tokens/new", Some(json!({}))).await;
    assert_eq!(status, 200, "{random}");
    assert_eq!(random["token"].as_str().unwrap().len(), 16);
    assert_eq!((random["uses_allowed"].clone(), random["completed"].clone()), (Value::Null, json!(0)));
    let (status, one) = call(
        &server,
        Method::POST,
        &root,
        "/v1/registration_tokens/new",
        Some(json!({ "token": "bienvenue-2026", "uses_allowed": 1 })),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let again =
        call(&server, Method::POST, &root, "/v1/registration_tokens/new", Some(json!({ "token": "bienvenue-2026" })))
            .await;
    assert_eq!(got(&again), error(400, "M_INVALID_PARAM"));
    let bad =
        call(&server, Method::POST, &root, "/v1/registration_tokens/new", Some(json!({ "token": "pas de blancs" })))
            .await;
    assert_eq!(got(&bad), error(400, "M_INVALID_PARAM"));
    let (_, list) = call(&server, Method::GET, &root, "/v1/registration_tokens", None).await;
    assert_eq!(list["registration_tokens"].as_array().unwrap().len(), 2);

    // The one-use token registers one account, then is spent.
    let (status, body) = register_with_token(&server, "agent1", "bienvenue-2026").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@agent1:localhost");
    let (status, body) = register_with_token(&server, "agent2", "bienvenue-2026").await;
    assert_eq!(status, 401, "spent: {body}");
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=bienvenue-2026";
    assert_eq!(api(&server, Method::GET, None, validity, None).await.1, json!({ "valid": false }));
    let (_, spent) = call(&server, Method::GET, &root, "/v1/registration_tokens/bienvenue-2026", None).await;
    assert_eq!(spent["completed"], 1);
    let (_, invalid) = call(&server, Method::GET, &root, "/v1/registration_tokens?valid=false", None).await;
    assert_eq!(invalid["registration_tokens"][0]["token"], "bienvenue-2026");

    // One more use, then delete it.
    let (status, more) =
        call(&server, Method::PUT, &root, "/v1/registration_tokens/bienvenue-2026", Some(json!({ "uses_allowed": 2 })))
            .await;
    assert_eq!((status, more["uses_allowed"].clone()), (200, json!(2)));
    let wrong = call(
        &server,
        Method::PUT,
        &root,
        "/v1/registration_tokens/bienvenue-2026",
        Some(json!({ "uses_allowed": "deux" })),
    )
    .await;
    assert_eq!(got(&wrong), error(400, "M_INVALID_PARAM"));
    assert_eq!(api(&server, Method::GET, None, validity, None).await.1, json!({ "valid": true }));
    let (status, _) = register_with_token(&server, "agent2", "bienvenue-2026").await;
    assert_eq!(status, 200);
    assert_eq!(call(&server, Method::DELETE, &root, "/v1/registration_tokens/bienvenue-2026", None).await.0, 200);
    let gone = call(&server, Method::GET, &root, "/v1/registration_tokens/bienvenue-2026", None).await;
    assert_eq!(got(&gone), error(404, "M_NOT_FOUND"));
    let (_, audit) = call(&server, Method::GET, &root, "/v1/audit", None).await;
    // The admins' changes (sign-ins are audited too, and checked on their own).
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|action| !action.starts_with("login"))
        .collect();
    assert_eq!(
        actions,
        [
            "registration_token.delete",
            "registration_token.update",
            "registration_token.create",
            "registration_token.create"
        ]
    );
}

async fn download(server: &TestServer, token: &str, id: &str) -> u16 {
    let url = format!("{}/_matrix/client/v1/media/download/localhost/{id}", server.url);
    server.http().get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { usize::from(e.path().is_file()) })
        .sum()
}

#[tokio::test]
async fn media_is_listed_quarantined_and_deleted() {
    let (server, root, alice) = setup().await;
    let media_dir = server.config_path.parent().unwrap().join("db").join("media");
    let first = upload(&server, &alice, "premier fichier", "un.txt").await;
    let second = upload(&server, &alice, "second fichier, plus long", "deux.txt").await;
    let stored = files_under(&media_dir);
    assert!(stored >= 2, "{stored} files");

    let (status, list) =
        call(&server, Method::GET, &root, "/v1/users/@alice:localhost/media?order_by=media_length&dir=b", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2);
    assert_eq!(list["media"][0]["media_id"], second.as_str());
    assert_eq!(list["media"][0]["upload_name"], "deux.txt");
    assert_eq!(list["media"][1]["media_length"], 15);

    // Quarantine: kept, served to nobody; released again.
    assert_eq!(download(&server, &alice, &first).await, 200);
    assert_eq!(
        call(&server, Method::POST, &root, &format!("/v1/media/quarantine/localhost/{first}"), None).await.0,
        200
    );
    assert_eq!(download(&server, &alice, &first).await, 404);
    let (_, info) = call(&server, Method::GET, &root, &format!("/v1/media/localhost/{first}"), None).await;
    assert_eq!(info["media_info"]["quarantined_by"], "@root:localhost");
    assert_eq!(
        call(&server, Method::POST, &root, &format!("/v1/media/unquarantine/localhost/{first}"), None).await.0,
        200
    );
    assert_eq!(download(&server, &alice, &first).await, 200);

    // Deletion by id, then by age: the records and the files go.
    let (status, deleted) = call(&server, Method::DELETE, &root, &format!("/v1/media/localhost/{first}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({ "deleted_media": [first], "total": 1 }));
    assert_eq!(download(&server, &alice, &first).await, 404);
    let remote = call(&server, Method::DELETE, &root, "/v1/media/elsewhere.fr/abc", None).await;
    assert_eq!(remote.0, 400);
    let missing = call(&server, Method::POST, &root, "/v1/media/delete", None).await;
    assert_eq!(got(&missing), error(400, "M_MISSING_PARAM"));
    let far_future = 4_000_000_000_000u64;
    let (_, deleted) =
        call(&server, Method::POST, &root, &format!("/v1/media/delete?before_ts={far_future}&size_gt=1000"), None)
            .await;
    assert_eq!(deleted["total"], 0, "nothing is that large");
    // Protected media and a local user's avatar survive a deletion by age (synapse-admin's
    // older path, keep_profiles by default); keep_profiles=false takes the avatar too.
    let avatar = upload(&server, &alice, "portrait", "moi.png").await;
    let kept = upload(&server, &alice, "à garder", "garder.txt").await;
    let set_avatar = json!({ "avatar_url": format!("mxc://localhost/{avatar}") });
    let (status, _) = api(
        &server,
        Method::PUT,
        Some(&alice),
        "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
        Some(set_avatar),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(call(&server, Method::POST, &root, &format!("/v1/media/protect/{kept}"), None).await.0, 200);
    let (_, info) = call(&server, Method::GET, &root, &format!("/v1/media/localhost/{kept}"), None).await;
    assert_eq!(info["media_info"]["safe_from_quarantine"], true, "{info}");
    let (_, done) = call(&server, Method::POST, &root, "/v1/user/@alice:localhost/media/quarantine", None).await;
    assert_eq!(done["num_quarantined"], 2, "the protected file is not quarantined: {done}");
    assert_eq!(download(&server, &alice, &kept).await, 200);
    let (_, deleted) =
        call(&server, Method::POST, &root, &format!("/v1/media/localhost/delete?before_ts={far_future}"), None).await;
    assert_eq!(deleted["deleted_media"], json!([second]));
    let elsewhere =
        call(&server, Method::POST, &root, &format!("/v1/media/elsewhere.fr/delete?before_ts={far_future}"), None)
            .await;
    assert_eq!(got(&elsewhere), error(400, "M_INVALID_PARAM"));
    assert_eq!(call(&server, Method::POST, &root, &format!("/v1/media/unprotect/{kept}"), None).await.0, 200);
    let (_, deleted) = call(
        &server,
        Method::POST,
        &root,
        &format!("/v1/media/delete?before_ts={far_future}&keep_profiles=false"),
        None,
    )
    .await;
    let mut gone: Vec<String> =
        deleted["deleted_media"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    gone.sort();
    let mut expected = vec![avatar.clone(), kept.clone()];
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(files_under(&media_dir), stored - 2, "the files are removed from disk");
    let unknown = call(&server, Method::POST, &root, "/v1/media/protect/nothing", None).await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));
    let (_, list) = call(&server, Method::GET, &root, "/v1/users/@alice:localhost/media", None).await;
    assert_eq!(list["total"], 0);
    let (_, purged) =
        call(&server, Method::POST, &root, &format!("/v1/purge_media_cache?before_ts={far_future}"), None).await;
    assert_eq!(purged, json!({ "deleted": 0 }));
}

#[tokio::test]
async fn blocked_rooms_refuse_joins_and_invites() {
    let (server, root, alice) = setup().await;
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
    let path = format!("/v1/rooms/{room}/block");
    assert_eq!(call(&server, Method::GET, &root, &path, None).await.1, json!({ "block": false }));
    assert_eq!(
        call(&server, Method::PUT, &root, &path, Some(json!({ "block": true }))).await.1,
        json!({ "block": true })
    );
    assert_eq!(
        call(&server, Method::GET, &root, &path, None).await.1,
        json!({ "block": true, "user_id": "@root:localhost" })
    );
    let join =
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await;
    assert_eq!(got(&join), error(403, "M_FORBIDDEN"));
    let invite = api(
        &server,
        Method::POST,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(json!({ "user_id": "@bob:localhost" })),
    )
    .await;
    assert_eq!(got(&invite), error(403, "M_FORBIDDEN"));
    assert_eq!(call(&server, Method::PUT, &root, &path, Some(json!({ "block": false }))).await.0, 200);
    let join =
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await;
    assert_eq!(join.0, 200, "{}", join.1);
    // A room this server does not know can be blocked ahead.
    let ahead =
        call(&server, Method::PUT, &root, "/v1/rooms/!inconnue:elsewhere.fr/block", Some(json!({ "block": true })))
            .await;
    assert_eq!(ahead.0, 200);
    let bad = call(&server, Method::PUT, &root, &path, Some(json!({ "block": "oui" }))).await;
    assert_eq!(got(&bad), error(400, "M_BAD_JSON"));
}

#[tokio::test]
async fn lookups_account_data_pushers_and_suspension() {
    let (server, root, alice) = setup().await;
    let put = api(
        &server,
        Method::PUT,
        Some(&alice),
        "/_matrix/client/v3/user/@alice:localhost/account_data/fr.gouv.preferences",
        Some(json!({ "langue": "fr" })),
    )
    .await;
    assert_eq!(put.0, 200);
    let (_, data) = call(&server, Method::GET, &root, "/v1/users/@alice:localhost/accountdata", None).await;
    assert_eq!(data["account_data"]["global"]["fr.gouv.preferences"], json!({ "langue": "fr" }), "{data}");
    assert!(data["account_data"]["rooms"].is_object());

    let pusher = json!({ "kind": "http", "app_id": "fr.gouv.tchap", "pushkey": "abc", "app_display_name": "App",
        "device_display_name": "Téléphone", "lang": "fr", "data": { "url": "https://push.example/_matrix/push/v1/notify" } });
    assert_eq!(api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/pushers/set", Some(pusher)).await.0, 200);
    let (_, pushers) = call(&server, Method::GET, &root, "/v1/users/@alice:localhost/pushers", None).await;
    assert_eq!(pushers["total"], 1, "{pushers}");
    assert_eq!(pushers["pushers"][0]["app_id"], "fr.gouv.tchap");

    assert_eq!(
        call(&server, Method::GET, &root, "/v1/username_available?username=zoe", None).await.1,
        json!({ "available": true })
    );
    let taken = call(&server, Method::GET, &root, "/v1/username_available?username=alice", None).await;
    assert_eq!(got(&taken), error(400, "M_USER_IN_USE"));
    let invalid = call(&server, Method::GET, &root, "/v1/username_available?username=%C3%A9l%C3%A9onore", None).await;
    assert_eq!(got(&invalid), error(400, "M_INVALID_USERNAME"));

    let (status, _) = call(
        &server,
        Method::PUT,
        &root,
        "/v2/users/@alice:localhost",
        Some(json!({ "threepids": [{ "medium": "email", "address": "alice@example.gouv.fr" }] })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, found) = call(&server, Method::GET, &root, "/v1/threepid/email/users/Alice@Example.gouv.fr", None).await;
    assert_eq!(found, json!({ "user_id": "@alice:localhost" }));
    let missing = call(&server, Method::GET, &root, "/v1/threepid/email/users/nobody@example.gouv.fr", None).await;
    assert_eq!(got(&missing), error(404, "M_NOT_FOUND"));
    let none = call(&server, Method::GET, &root, "/v1/auth_providers/ldap/users/uid=x,dc=example", None).await;
    assert_eq!(got(&none), error(404, "M_NOT_FOUND"));

    // Suspension: the account may read but not send.
    let (status, body) =
        call(&server, Method::PUT, &root, "/v1/suspend/@alice:localhost", Some(json!({ "suspend": true }))).await;
    assert_eq!((status, body), (200, json!({ "user_@alice:localhost_suspended": true })));
    let create = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    assert_eq!(got(&create), error(403, "M_USER_SUSPENDED"));
    call(&server, Method::PUT, &root, "/v1/suspend/@alice:localhost", Some(json!({ "suspend": false }))).await;
    assert_eq!(api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await.0, 200);

    // A device made by an admin, without a session.
    assert_eq!(
        call(
            &server,
            Method::POST,
            &root,
            "/v2/users/@alice:localhost/devices",
            Some(json!({ "device_id": "BRIDGE1" }))
        )
        .await
        .0,
        200
    );
    let (_, device) = call(&server, Method::GET, &root, "/v2/users/@alice:localhost/devices/BRIDGE1", None).await;
    assert_eq!(device["device_id"], "BRIDGE1");
    let (_, updates) = call(&server, Method::GET, &root, "/v1/background_updates/status", None).await;
    assert_eq!(updates["current_updates"], json!({}));
}

#[tokio::test]
async fn rooms_are_shut_down_made_admin_of_and_read() {
    let (server, root, alice) = setup().await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    let create = |name: &'static str| {
        let server = &server;
        let alice = alice.clone();
        async move {
            let body = json!({ "name": name, "room_alias_name": name, "preset": "private_chat", "invite": ["@bob:localhost"] });
            let (_, room) = api(server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(body)).await;
            room["room_id"].as_str().unwrap().to_owned()
        }
    };
    let first = create("premiere").await;
    assert_eq!(
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{first}"), Some(json!({}))).await.0,
        200
    );
    for text in ["un", "deux", "trois"] {
        let path = format!("/_matrix/client/v3/rooms/{first}/send/m.room.message/{text}");
        api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
    }

    // The admin reads the room without being in it, newest first, page by page.
    let (status, page) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?limit=2&dir=b"), None).await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["trois", "deux"]);
    let trois = page["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let end = page["end"].as_str().unwrap();
    let (_, next) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?limit=1&dir=b&from={end}"), None).await;
    assert_eq!(next["chunk"][0]["content"]["body"], "un");
    // Forwards by default (as Synapse), from the room's creation.
    let (_, oldest) = call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?limit=1"), None).await;
    assert_eq!(oldest["chunk"][0]["type"], "m.room.create", "{oldest}");
    // Ketesa's filter: only messages of one sender.
    let filter = crate::common::urlencode(
        r#"{"types":["m.room.*"],"not_types":["m.room.member"],"senders":["@alice:localhost"],"contains_url":false}"#,
    );
    let (_, filtered) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?limit=50&dir=b&filter={filter}"), None)
            .await;
    let kinds: Vec<&str> = filtered["chunk"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.starts_with(&["m.room.message", "m.room.message", "m.room.message"]), "{kinds:?}");
    assert!(!kinds.contains(&"m.room.member"), "{kinds:?}");
    let bad = call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?filter=%7Bnope"), None).await;
    assert_eq!(got(&bad), error(400, "M_INVALID_PARAM"));
    // Jump to a date: the last event at or before now is the last message.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let (status, at) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/timestamp_to_event?ts={now}&dir=b"), None).await;
    assert_eq!(status, 200, "{at}");
    let (_, last) = call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/messages?limit=1&dir=b"), None).await;
    assert_eq!(at["event_id"], last["chunk"][0]["event_id"]);
    let (status, _) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/timestamp_to_event?ts={now}&dir=f"), None).await;
    assert_eq!(status, 404, "nothing after now");

    // make_room_admin: the admin is invited, joined and given the creator's power.
    assert_eq!(
        call(&server, Method::POST, &root, &format!("/v1/rooms/{first}/make_room_admin"), Some(json!({}))).await.0,
        200
    );
    let (_, joined) = api(&server, Method::GET, Some(&root), "/_matrix/client/v3/joined_rooms", None).await;
    assert!(joined["joined_rooms"].as_array().unwrap().iter().any(|r| r == first.as_str()), "{joined}");
    let (_, levels) = api(
        &server,
        Method::GET,
        Some(&root),
        &format!("/_matrix/client/v3/rooms/{first}/state/m.room.power_levels/"),
        None,
    )
    .await;
    assert!(levels["users"]["@root:localhost"].as_i64().unwrap() >= 100, "{levels}");

    // v1 delete: everyone local leaves, the alias goes, the room is blocked.
    let (status, report) =
        call(&server, Method::DELETE, &root, &format!("/v1/rooms/{first}"), Some(json!({ "block": true }))).await;
    assert_eq!(status, 200, "{report}");
    let mut kicked: Vec<&str> =
        report["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    kicked.sort();
    assert_eq!(kicked, ["@alice:localhost", "@bob:localhost", "@root:localhost"]);
    assert_eq!(report["local_aliases"], json!(["#premiere:localhost"]));
    // Purged (the default): the room and its events are gone from the store; the block stays.
    let (_, page) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/joined_rooms", None).await;
    assert_eq!(page["joined_rooms"], json!([]));
    for path in
        [format!("/v1/rooms/{first}"), format!("/v1/rooms/{first}/members"), format!("/v1/rooms/{first}/messages")]
    {
        assert_eq!(got(&call(&server, Method::GET, &root, &path, None).await), error(404, "M_NOT_FOUND"), "{path}");
    }
    let (_, listed) = call(&server, Method::GET, &root, "/v1/rooms", None).await;
    assert!(!listed.to_string().contains(&first), "{listed}");
    let (_, block) = call(&server, Method::GET, &root, &format!("/v1/rooms/{first}/block"), None).await;
    assert_eq!(block["block"], true);
    let gone = call(&server, Method::GET, &root, &format!("/v1/fetch_event/{trois}"), None).await;
    assert_eq!(got(&gone), error(404, "M_NOT_FOUND"), "its events are gone");
    let (_, sync) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/sync", None).await;
    assert!(!sync.to_string().contains(&first), "the purged room is in nobody's sync: {sync}");
    let rejoin =
        api(&server, Method::POST, Some(&alice), &format!("/_matrix/client/v3/join/{first}"), Some(json!({}))).await;
    assert_eq!(got(&rejoin), error(403, "M_FORBIDDEN"));
    let alias = api(&server, Method::GET, None, "/_matrix/client/v3/directory/room/%23premiere:localhost", None).await;
    assert_eq!(alias.0, 404);

    // v2 delete: a delete id and its status; an invite is rejected too.
    let second = create("seconde").await;
    let (status, started) =
        call(&server, Method::DELETE, &root, &format!("/v2/rooms/{second}"), Some(json!({ "purge": false }))).await;
    assert_eq!(status, 200, "{started}");
    let delete_id = started["delete_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let (_, status) =
            call(&server, Method::GET, &root, &format!("/v2/rooms/delete_status/{delete_id}"), None).await;
        if status["status"] != "shutting_down" {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status["status"], "complete", "{status}");
    let mut kicked: Vec<&str> =
        status["shutdown_room"]["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    kicked.sort();
    assert_eq!(kicked, ["@alice:localhost", "@bob:localhost"], "the invite is rejected as well");
    let (_, by_room) = call(&server, Method::GET, &root, &format!("/v2/rooms/{second}/delete_status"), None).await;
    assert_eq!(by_room["results"][0]["delete_id"], delete_id.as_str());
    let (_, sync) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/sync", None).await;
    assert!(sync["rooms"]["invite"].get(&second).is_none(), "{sync}");

    // new_room_user_id: the members are moved to a new room made by that user, told why, and
    // the aliases follow. A user of another server or an unknown one is refused first.
    let third = create("troisieme").await;
    assert_eq!(
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{third}"), Some(json!({}))).await.0,
        200
    );
    for (creator, expected) in
        [("@root:elsewhere.example", (400, "M_INVALID_PARAM")), ("@nobody:localhost", (404, "M_NOT_FOUND"))]
    {
        let refused = call(
            &server,
            Method::DELETE,
            &root,
            &format!("/v1/rooms/{third}"),
            Some(json!({ "new_room_user_id": creator })),
        )
        .await;
        assert_eq!(got(&refused), error(expected.0, expected.1), "{creator}");
    }
    let (_, members) = call(&server, Method::GET, &root, &format!("/v1/rooms/{third}/members"), None).await;
    assert_eq!(members["total"], 2, "a refused deletion changes nothing: {members}");
    let (status, report) = call(
        &server,
        Method::DELETE,
        &root,
        &format!("/v1/rooms/{third}"),
        Some(json!({ "new_room_user_id": "@root:localhost", "room_name": "Salle fermée", "message": "Cette salle a été fermée." })),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let new_room = report["new_room_id"].as_str().expect("a new room").to_owned();
    let (_, joined) = api(&server, Method::GET, Some(&bob), "/_matrix/client/v3/joined_rooms", None).await;
    assert_eq!(joined["joined_rooms"], json!([new_room]), "bob is in the new room only");
    let (_, name) =
        api(&server, Method::GET, Some(&bob), &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.name/"), None)
            .await;
    assert_eq!(name["name"], "Salle fermée");
    let (_, page) = api(
        &server,
        Method::GET,
        Some(&bob),
        &format!("/_matrix/client/v3/rooms/{new_room}/messages?dir=b&limit=5"),
        None,
    )
    .await;
    let said: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(said.contains(&"Cette salle a été fermée."), "{page}");
    let (_, alias) =
        api(&server, Method::GET, None, "/_matrix/client/v3/directory/room/%23troisieme:localhost", None).await;
    assert_eq!(alias["room_id"], new_room.as_str(), "the alias moved to the new room");
    let speak = api(
        &server,
        Method::PUT,
        Some(&bob),
        &format!("/_matrix/client/v3/rooms/{new_room}/send/m.room.message/x"),
        Some(json!({ "msgtype": "m.text", "body": "?" })),
    )
    .await;
    assert_eq!(got(&speak), error(403, "M_FORBIDDEN"), "members of the new room may read, not speak");

    // Forward extremities: one here (a single server never forks), so nothing to drop; the
    // call is for admins only and needs a known room.
    let path = format!("/v1/rooms/{new_room}/forward_extremities");
    let (_, listed) = call(&server, Method::GET, &root, &path, None).await;
    assert_eq!(listed["count"], 1, "{listed}");
    let (status, pruned) = call(&server, Method::DELETE, &root, &path, None).await;
    assert_eq!((status, &pruned), (200, &json!({ "deleted": 0 })));
    assert_eq!(got(&call(&server, Method::DELETE, &alice, &path, None).await), error(403, "M_FORBIDDEN"));
    let unknown = call(&server, Method::DELETE, &root, "/v1/rooms/!nowhere:localhost/forward_extremities", None).await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));
}

#[tokio::test]
async fn server_notices_reach_users_in_one_tagged_room() {
    let (server, root, alice) = setup().await;
    let notice =
        |body: &str| json!({ "user_id": "@alice:localhost", "content": { "msgtype": "m.text", "body": body } });
    let (status, first) =
        call(&server, Method::POST, &root, "/v1/send_server_notice", Some(notice("Maintenance ce soir"))).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["event_id"].as_str().unwrap().starts_with('$'));
    let (_, sync) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/sync", None).await;
    let invites = sync["rooms"]["invite"].as_object().unwrap();
    assert_eq!(invites.len(), 1, "{sync}");
    let room = invites.keys().next().unwrap().clone();
    assert_eq!(
        api(&server, Method::POST, Some(&alice), &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await.0,
        200
    );
    let (_, tags) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags"),
        None,
    )
    .await;
    assert!(tags["tags"].get("m.server_notice").is_some(), "{tags}");

    // The next notice goes to the same room; the user may read, not write.
    call(&server, Method::POST, &root, "/v1/send_server_notice", Some(notice("Maintenance terminée"))).await;
    let (_, messages) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
        None,
    )
    .await;
    let bodies: Vec<&str> =
        messages["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["Maintenance terminée", "Maintenance ce soir"]);
    let reply = api(
        &server,
        Method::PUT,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/r1"),
        Some(json!({ "msgtype": "m.text", "body": "merci" })),
    )
    .await;
    assert_eq!(got(&reply), error(403, "M_FORBIDDEN"));

    let remote = call(
        &server,
        Method::POST,
        &root,
        "/v1/send_server_notice",
        Some(json!({ "user_id": "@x:elsewhere.fr", "content": {} })),
    )
    .await;
    assert_eq!(got(&remote), error(400, "M_INVALID_PARAM"));
    let unknown = call(
        &server,
        Method::POST,
        &root,
        "/v1/send_server_notice",
        Some(json!({ "user_id": "@nobody:localhost", "content": {} })),
    )
    .await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));
    let bad =
        call(&server, Method::POST, &root, "/v1/send_server_notice", Some(json!({ "user_id": "@alice:localhost" })))
            .await;
    assert_eq!(got(&bad), error(400, "M_BAD_JSON"));
}

#[tokio::test]
async fn shadow_bans_context_and_media_statistics() {
    let (server, root, alice) = setup().await;
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
    let send = |token: String, txn: &'static str, text: &'static str| {
        let server = &server;
        let room = room.clone();
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
            api(server, Method::PUT, Some(&token), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await
        }
    };
    let (_, first) = send(alice.clone(), "a1", "avant").await;
    let first_id = first["event_id"].as_str().unwrap().to_owned();

    // Shadow-banned: the send looks fine (same id on retry) and nobody gets it.
    assert_eq!(call(&server, Method::POST, &root, "/v1/users/@bob:localhost/shadow_ban", None).await.0, 200);
    let (status, ghost) = send(bob.clone(), "b1", "spam").await;
    assert_eq!(status, 200, "{ghost}");
    let (_, again) = send(bob.clone(), "b1", "spam").await;
    assert_eq!(ghost["event_id"], again["event_id"]);
    assert!(ghost["event_id"].as_str().unwrap().starts_with('$'));
    let (_, user) = call(&server, Method::GET, &root, "/v2/users/@bob:localhost", None).await;
    assert_eq!(user["shadow_banned"], 1);
    send(alice.clone(), "a2", "après").await;
    let (_, page) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
        None,
    )
    .await;
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["après", "avant"], "the spam reached nobody");
    assert_eq!(call(&server, Method::DELETE, &root, "/v1/users/@bob:localhost/shadow_ban", None).await.0, 200);
    let (_, real) = send(bob.clone(), "b2", "pardon").await;
    let (_, event) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/event/{}", real["event_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(event["content"]["body"], "pardon");
    assert_eq!(call(&server, Method::POST, &root, "/v1/users/@root:localhost/shadow_ban", None).await.0, 400);

    // Context around an event, read by the admin from outside the room.
    let (status, context) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{room}/context/{first_id}?limit=2"), None).await;
    assert_eq!(status, 200, "{context}");
    assert_eq!(context["event"]["content"]["body"], "avant");
    assert_eq!(context["events_after"][0]["content"]["body"], "après");
    assert!(context["events_before"].as_array().unwrap().len() == 1, "{context}");
    assert!(context["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    let missing = call(&server, Method::GET, &root, &format!("/v1/rooms/{room}/context/$nope"), None).await;
    assert_eq!(got(&missing), error(404, "M_NOT_FOUND"));

    // Media statistics per uploader.
    upload(&server, &alice, "premier fichier", "un.txt").await;
    upload(&server, &alice, "second fichier, plus long", "deux.txt").await;
    upload(&server, &bob, "x", "x.txt").await;
    let (status, stats) =
        call(&server, Method::GET, &root, "/v1/statistics/users/media?order_by=media_length&dir=b", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["total"], 2);
    assert_eq!(
        stats["users"][0],
        json!({ "user_id": "@alice:localhost", "displayname": "alice", "media_count": 2, "media_length": 40 })
    );
    assert_eq!(stats["users"][1]["media_count"], 1);
    let (_, only) = call(&server, Method::GET, &root, "/v1/statistics/users/media?search_term=bob", None).await;
    assert_eq!(only["total"], 1);
}

#[tokio::test]
async fn a_rooms_media_is_listed_and_quarantined() {
    let (server, root, alice) = setup().await;
    let (_, room) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let image = upload(&server, &alice, "pas vraiment une image", "photo.png").await;
    let thumb = upload(&server, &alice, "vignette", "vignette.png").await;
    let elsewhere = upload(&server, &alice, "ailleurs", "autre.txt").await;
    let content = json!({ "msgtype": "m.image", "body": "photo.png", "url": format!("mxc://localhost/{image}"),
        "info": { "thumbnail_url": format!("mxc://localhost/{thumb}") } });
    api(
        &server,
        Method::PUT,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/i1"),
        Some(content),
    )
    .await;
    let remote = json!({ "msgtype": "m.file", "body": "x", "url": "mxc://elsewhere.fr/abcdef" });
    api(
        &server,
        Method::PUT,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/i2"),
        Some(remote),
    )
    .await;

    let (status, media) = call(&server, Method::GET, &root, &format!("/v1/room/{room}/media"), None).await;
    assert_eq!(status, 200, "{media}");
    assert_eq!(media["local"], json!([format!("mxc://localhost/{image}"), format!("mxc://localhost/{thumb}")]));
    assert_eq!(media["remote"], json!(["mxc://elsewhere.fr/abcdef"]));
    let (_, done) = call(&server, Method::POST, &root, &format!("/v1/room/{room}/media/quarantine"), None).await;
    assert_eq!(done, json!({ "num_quarantined": 2 }), "the remote one is not cached here");
    assert_eq!(download(&server, &alice, &image).await, 404);
    assert_eq!(download(&server, &alice, &thumb).await, 404);
    assert_eq!(download(&server, &alice, &elsewhere).await, 200, "media outside the room is untouched");
    let unknown = call(&server, Method::GET, &root, "/v1/room/!nope:localhost/media", None).await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));

    // Everything a user uploaded, at once (the two already quarantined count again: Synapse
    // counts the media it marked).
    let (_, done) = call(&server, Method::POST, &root, "/v1/user/@alice:localhost/media/quarantine", None).await;
    assert_eq!(done, json!({ "num_quarantined": 3 }));
    assert_eq!(download(&server, &alice, &elsewhere).await, 404);
    let refused = call(&server, Method::POST, &alice, "/v1/user/@alice:localhost/media/quarantine", None).await;
    assert_eq!(got(&refused), error(403, "M_FORBIDDEN"));
    let unknown = call(&server, Method::POST, &root, "/v1/user/@nobody:localhost/media/quarantine", None).await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));
}

#[tokio::test]
async fn rate_limit_overrides_replace_the_configured_limit() {
    let limit = toml::Value::Table(
        [("per_second".to_owned(), toml::Value::from(0.001)), ("burst".to_owned(), toml::Value::from(1))]
            .into_iter()
            .collect(),
    );
    let server = TestServer::start_with(&[("rate_limits.enabled", true.into()), ("rate_limits.media_upload", limit)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    assert!(server
        .cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()])
        .status
        .success());
    let root = login(&server, "root", "root-pw").await;
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let try_upload = |token: String| {
        let server = &server;
        async move {
            let url = format!("{}/_matrix/media/v3/upload", server.url);
            server.http().post(url).bearer_auth(token).body("x").send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(try_upload(alice.clone()).await, 200);
    assert_eq!(try_upload(alice.clone()).await, 429, "the configured burst is 1");

    let path = "/v1/users/@alice:localhost/override_ratelimit";
    assert_eq!(call(&server, Method::GET, &root, path, None).await.1, json!({}));
    let (status, set) = call(&server, Method::POST, &root, path, Some(json!({}))).await;
    assert_eq!((status, set), (200, json!({ "messages_per_second": 0.0, "burst_count": 0 })));
    for _ in 0..3 {
        assert_eq!(try_upload(alice.clone()).await, 200, "0/0 is unlimited");
    }
    let bad = call(&server, Method::POST, &root, path, Some(json!({ "messages_per_second": -1 }))).await;
    assert_eq!(got(&bad), error(400, "M_INVALID_PARAM"));
    assert_eq!(call(&server, Method::DELETE, &root, path, None).await.0, 200);
    assert_eq!(call(&server, Method::GET, &root, path, None).await.1, json!({}));
    assert_eq!(try_upload(alice.clone()).await, 429, "the configured limit again");
}

/// Ketesa's calls: a user's memberships, joining a user to a room, one event, the tasks list.
#[tokio::test]
async fn memberships_joins_events_and_scheduled_tasks() {
    let (server, root, alice) = setup().await;
    let (_, _bob) = crate::common::register_raw(&server, "bob").await;
    let create = |token: &str, body: Value| {
        let server = &server;
        let token = token.to_owned();
        async move {
            let (status, room) =
                api(server, Method::POST, Some(&token), "/_matrix/client/v3/createRoom", Some(body)).await;
            assert_eq!(status, 200, "{room}");
            room["room_id"].as_str().unwrap().to_owned()
        }
    };
    let open = create(&alice, json!({ "preset": "public_chat", "room_alias_name": "ouverte" })).await;
    let roots = create(&root, json!({ "preset": "private_chat" })).await;
    let closed = create(&alice, json!({ "preset": "private_chat" })).await;
    let bob = json!({ "user_id": "@bob:localhost" });

    let (status, joined) = call(&server, Method::POST, &root, "/v1/join/%23ouverte:localhost", Some(bob.clone())).await;
    assert_eq!((status, &joined["room_id"]), (200, &json!(open)), "{joined}");
    let (status, joined) = call(&server, Method::POST, &root, &format!("/v1/join/{roots}"), Some(bob.clone())).await;
    assert_eq!(status, 200, "the admin invites first in a room it is in: {joined}");
    let refused = call(&server, Method::POST, &root, &format!("/v1/join/{closed}"), Some(bob.clone())).await;
    assert_eq!(got(&refused), error(403, "M_FORBIDDEN"), "nobody lets bob into alice's private room");
    let nobody = call(
        &server,
        Method::POST,
        &root,
        &format!("/v1/join/{open}"),
        Some(json!({ "user_id": "@nobody:localhost" })),
    )
    .await;
    assert_eq!(got(&nobody), error(404, "M_NOT_FOUND"));
    let bad = call(&server, Method::POST, &root, "/v1/join/not-a-room", Some(bob.clone())).await;
    assert_eq!(got(&bad), error(400, "M_INVALID_PARAM"));

    let (_, memberships) = call(&server, Method::GET, &root, "/v1/users/@bob:localhost/memberships", None).await;
    assert_eq!(memberships["memberships"][&open], "join", "{memberships}");
    assert_eq!(memberships["memberships"][&roots], "join", "{memberships}");
    assert!(memberships["memberships"].get(&closed).is_none(), "{memberships}");
    assert_eq!(
        got(&call(&server, Method::GET, &alice, "/v1/users/@bob:localhost/memberships", None).await),
        error(403, "M_FORBIDDEN")
    );

    let (_, page) = call(&server, Method::GET, &root, &format!("/v1/rooms/{open}/messages?limit=1&dir=b"), None).await;
    let event_id = page["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let (status, fetched) = call(&server, Method::GET, &root, &format!("/v1/fetch_event/{event_id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["event"]["event_id"], event_id.as_str());
    assert_eq!(fetched["event"]["type"], "m.room.member");
    let missing = call(&server, Method::GET, &root, "/v1/fetch_event/$nothing", None).await;
    assert_eq!(got(&missing), error(404, "M_NOT_FOUND"));

    // A space's hierarchy, whatever the admin's membership: alice's private room is listed under
    // her space though the admin is in neither.
    let space = create(&alice, json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } })).await;
    let child = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{closed}");
    let (status, _) = api(&server, Method::PUT, Some(&alice), &child, Some(json!({ "via": ["localhost"] }))).await;
    assert_eq!(status, 200);
    let (status, tree) =
        call(&server, Method::GET, &root, &format!("/v1/rooms/{space}/hierarchy?limit=10"), None).await;
    assert_eq!(status, 200, "{tree}");
    let ids: Vec<&str> = tree["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [space.as_str(), closed.as_str()], "{tree}");
    let (status, _) =
        api(&server, Method::GET, Some(&root), &format!("/_matrix/client/v1/rooms/{space}/hierarchy"), None).await;
    assert_eq!(status, 403, "the client API still hides it from the admin as a user");

    let (_, none) = call(&server, Method::GET, &root, "/v1/scheduled_tasks", None).await;
    assert_eq!(none, json!({ "scheduled_tasks": [] }));
    let (_, started) = call(&server, Method::DELETE, &root, &format!("/v2/rooms/{closed}"), Some(json!({}))).await;
    let delete_id = started["delete_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, status) =
            call(&server, Method::GET, &root, &format!("/v2/rooms/delete_status/{delete_id}"), None).await;
        if status["status"] == "complete" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, tasks) =
        call(&server, Method::GET, &root, &format!("/v1/scheduled_tasks?resource_id={closed}&status=complete"), None)
            .await;
    let task = &tasks["scheduled_tasks"][0];
    assert_eq!(task["id"], delete_id.as_str(), "{tasks}");
    assert_eq!(task["action"], "shutdown_and_purge_room");
    assert!(task["timestamp_ms"].as_u64().unwrap() > 0);
    let (_, active) = call(&server, Method::GET, &root, "/v1/scheduled_tasks?status=active", None).await;
    assert_eq!(active, json!({ "scheduled_tasks": [] }));
}

/// Login-as with `valid_until_ms`: the token works until then, and is refused after (an hour on,
/// which the test's token clock makes now).
#[tokio::test]
async fn a_login_as_token_with_an_expiry_stops_working() {
    let clock = TokenClock::system();
    let (env, path) = clock.env();
    let (server, root, _alice) = setup_with_env(&[(env, &path)]).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let past = call(
        &server,
        Method::POST,
        &root,
        "/v1/users/@alice:localhost/login",
        Some(json!({ "valid_until_ms": now - 1 })),
    )
    .await;
    assert_eq!(got(&past), error(400, "M_INVALID_PARAM"));
    let until = now + 3_600_000;
    let (status, body) = call(
        &server,
        Method::POST,
        &root,
        "/v1/users/@alice:localhost/login",
        Some(json!({ "valid_until_ms": until })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, whoami) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, &whoami["user_id"]), (200, &json!("@alice:localhost")));
    clock.advance(std::time::Duration::from_secs(3540));
    let (status, _) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 200, "a minute before valid_until_ms");
    clock.advance(std::time::Duration::from_secs(61));
    let (status, body) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{body}");
}

/// History purges: old messages go, state stays, the room keeps working; local messages stay
/// unless asked.
#[tokio::test]
async fn room_history_is_purged_up_to_an_event_keeping_the_state() {
    let (server, root, alice) = setup().await;
    let (_, room) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for (i, text) in ["un", "deux", "trois", "quatre"].iter().enumerate() {
        if i == 1 {
            let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
            api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "name": "Archives 2026" }))).await;
        }
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{text}");
        let (_, sent) =
            api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    async fn bodies(server: &TestServer, root: &str, room: &str) -> Vec<String> {
        let path = format!("/_synapse/admin/v1/rooms/{room}/messages?limit=50");
        let (_, page) = api(server, Method::GET, Some(root), &path, None).await;
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }
    let wait = |purge_id: String| {
        let server = &server;
        let root = root.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let (_, status) =
                    call(server, Method::GET, &root, &format!("/v1/purge_history_status/{purge_id}"), None).await;
                if status["status"] != "active" {
                    return status;
                }
                assert!(std::time::Instant::now() < deadline, "{status}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };

    // Without delete_local_events, this server's own messages stay.
    let (status, started) =
        call(&server, Method::POST, &root, &format!("/v1/purge_history/{room}/{}", ids[2]), Some(json!({}))).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(wait(started["purge_id"].as_str().unwrap().to_owned()).await["status"], "complete");
    assert_eq!(bodies(&server, &root, &room).await, ["un", "deux", "trois", "quatre"]);

    let (_, started) = call(
        &server,
        Method::POST,
        &root,
        &format!("/v1/purge_history/{room}"),
        Some(json!({ "purge_up_to_event_id": ids[2], "delete_local_events": true })),
    )
    .await;
    let done = wait(started["purge_id"].as_str().unwrap().to_owned()).await;
    assert_eq!((&done["status"], &done["deleted"]), (&json!("complete"), &json!(2)), "{done}");
    assert_eq!(bodies(&server, &root, &room).await, ["trois", "quatre"]);
    let (_, name) =
        api(&server, Method::GET, Some(&alice), &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), None)
            .await;
    assert_eq!(name["name"], "Archives 2026", "state stays");
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/cinq");
    let (status, _) =
        api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "msgtype": "m.text", "body": "cinq" }))).await;
    assert_eq!(status, 200, "the room works on");
    let (status, page) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let seen: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(seen, ["cinq", "quatre", "trois"]);

    // Bad input: no bound, an event of another room, an unknown room, an unknown purge id.
    let none = call(&server, Method::POST, &root, &format!("/v1/purge_history/{room}"), Some(json!({}))).await;
    assert_eq!(got(&none), error(400, "M_INVALID_PARAM"));
    let (_, other) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let other = other["room_id"].as_str().unwrap().to_owned();
    let wrong =
        call(&server, Method::POST, &root, &format!("/v1/purge_history/{other}/{}", ids[3]), Some(json!({}))).await;
    assert_eq!(got(&wrong), error(400, "M_INVALID_PARAM"));
    let unknown = call(
        &server,
        Method::POST,
        &root,
        "/v1/purge_history/!nowhere:localhost",
        Some(json!({ "purge_up_to_ts": 1 })),
    )
    .await;
    assert_eq!(got(&unknown), error(404, "M_NOT_FOUND"));
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/purge_history_status/nothing", None).await),
        error(404, "M_NOT_FOUND")
    );
    assert_eq!(
        got(&call(
            &server,
            Method::POST,
            &alice,
            &format!("/v1/purge_history/{room}"),
            Some(json!({ "purge_up_to_ts": 1 }))
        )
        .await),
        error(403, "M_FORBIDDEN")
    );
}

/// Redacting everything a user sent: in a room where the admin may redact, every message goes;
/// where it may not, the events are reported in `failed_redactions`.
#[tokio::test]
async fn a_users_messages_are_redacted_where_the_admin_may() {
    let (server, root, alice) = setup().await;
    let (_, managed) = api(
        &server,
        Method::POST,
        Some(&root),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "public_chat" })),
    )
    .await;
    let managed = managed["room_id"].as_str().unwrap().to_owned();
    api(&server, Method::POST, Some(&alice), &format!("/_matrix/client/v3/join/{managed}"), Some(json!({}))).await;
    let (_, own) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let own = own["room_id"].as_str().unwrap().to_owned();
    let mut theirs = Vec::new();
    for (room, text) in [(&managed, "spam 1"), (&managed, "spam 2"), (&own, "chez moi")] {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{}", text.replace(' ', "-"));
        let (_, sent) =
            api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
        theirs.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    let (status, started) = call(
        &server,
        Method::POST,
        &root,
        "/v1/user/@alice:localhost/redact",
        Some(json!({ "rooms": [], "reason": "spam" })),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let redact_id = started["redact_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let (_, status) = call(&server, Method::GET, &root, &format!("/v1/user/redact_status/{redact_id}"), None).await;
        if status["status"] != "active" {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "complete", "{done}");
    let failed = done["failed_redactions"].as_object().unwrap();
    assert_eq!(failed.keys().collect::<Vec<_>>(), [&theirs[2]], "the admin is not in alice's own room: {done}");
    for (event, redacted) in [(&theirs[0], true), (&theirs[1], true), (&theirs[2], false)] {
        let (_, fetched) = call(&server, Method::GET, &root, &format!("/v1/fetch_event/{event}"), None).await;
        assert_eq!(fetched["event"]["content"].get("body").is_none(), redacted, "{fetched}");
    }
    let (_, name) = api(
        &server,
        Method::GET,
        Some(&alice),
        &format!("/_matrix/client/v3/rooms/{managed}/state/m.room.member/@alice:localhost"),
        None,
    )
    .await;
    assert_eq!(name["membership"], "join", "state events stay");
    assert_eq!(
        got(&call(&server, Method::GET, &root, "/v1/user/redact_status/nothing", None).await),
        error(404, "M_NOT_FOUND")
    );
    let refused =
        call(&server, Method::POST, &alice, "/v1/user/@alice:localhost/redact", Some(json!({ "rooms": [] }))).await;
    assert_eq!(got(&refused), error(403, "M_FORBIDDEN"));
}

/// Ketesa's user statistics: invites sent and rooms joined since a time.
#[tokio::test]
async fn invites_sent_and_rooms_joined_are_counted_from_a_time() {
    let (server, root, alice) = setup().await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 1000;
    for _ in 0..2 {
        let body = json!({ "preset": "private_chat", "invite": ["@bob:localhost"] });
        let (_, room) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(body)).await;
        let room = room["room_id"].as_str().unwrap().to_owned();
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await;
        api(&server, Method::POST, Some(&bob), &format!("/_matrix/client/v3/rooms/{room}/leave"), Some(json!({})))
            .await;
    }
    let count = |path: String| {
        let server = &server;
        let root = root.clone();
        async move { call(server, Method::GET, &root, &path, None).await }
    };
    let (status, invites) = count(format!("/v1/users/@alice:localhost/sent_invite_count?from_ts={start}")).await;
    assert_eq!((status, invites), (200, json!({ "invite_count": 2 })));
    let (_, none) = count("/v1/users/@bob:localhost/sent_invite_count?from_ts=0".into()).await;
    assert_eq!(none, json!({ "invite_count": 0 }));
    let (_, joined) = count(format!("/v1/users/@bob:localhost/cumulative_joined_room_count?from_ts={start}")).await;
    assert_eq!(joined, json!({ "cumulative_joined_room_count": 2 }), "left rooms count too");
    let (_, later) = count("/v1/users/@bob:localhost/cumulative_joined_room_count?from_ts=4000000000000".into()).await;
    assert_eq!(later, json!({ "cumulative_joined_room_count": 0 }));
    let missing = count("/v1/users/@bob:localhost/sent_invite_count".into()).await;
    assert_eq!(got(&missing), error(400, "M_MISSING_PARAM"));

    // The rooms taking the most room: a room with a long message comes first.
    let (_, big) = api(&server, Method::POST, Some(&alice), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let big = big["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{big}/send/m.room.message/long");
    api(&server, Method::PUT, Some(&alice), &path, Some(json!({ "msgtype": "m.text", "body": "x".repeat(20_000) })))
        .await;
    let (status, sizes) = count("/v1/statistics/database/rooms".into()).await;
    assert_eq!(status, 200);
    let rooms = sizes["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 3, "{sizes}");
    assert_eq!(rooms[0]["room_id"], big.as_str());
    assert!(rooms[0]["estimated_size"].as_u64().unwrap() > 20_000);
    assert!(rooms[1]["estimated_size"].as_u64() <= rooms[0]["estimated_size"].as_u64());

    // Experimental features are the same for everyone here: shown, and only a no-op accepted.
    let path = "/v1/experimental_features/@bob:localhost";
    let (_, features) = count(path.into()).await;
    assert_eq!(features, json!({ "features": { "msc3881": false, "msc3575": true, "msc4222": true } }));
    let same = call(&server, Method::PUT, &root, path, Some(json!({ "features": { "msc4222": true } }))).await;
    assert_eq!(same.0, 200);
    let change = call(&server, Method::PUT, &root, path, Some(json!({ "features": { "msc3881": true } }))).await;
    assert_eq!(got(&change), error(400, "M_INVALID_PARAM"));
    let unknown = call(&server, Method::PUT, &root, path, Some(json!({ "features": { "msc9999": true } }))).await;
    assert_eq!(got(&unknown), error(400, "M_INVALID_PARAM"));
}

/// Every `/login` sign-in and every refused password is in the audit log (as the OAuth pages'
/// sign-ins are), with the account it was for.
#[tokio::test]
async fn sign_ins_and_refused_passwords_are_audited() {
    let (server, root, _alice) = setup().await;
    let wrong = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "nope" });
    let (status, _) = api(&server, Method::POST, None, "/_matrix/client/v3/login", Some(wrong)).await;
    assert_eq!(status, 403);
    login(&server, "root", "root-pw").await;
    let (_, audit) = call(&server, Method::GET, &root, "/v1/audit", None).await;
    let entries: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [("login", "@root:localhost"), ("login.refused", "@root:localhost"), ("login", "@root:localhost")],
        "{audit}"
    );
}
