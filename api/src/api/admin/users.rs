//! Users: list, query, create or modify, deactivate, reset password, admin flag, devices, whois,
//! joined rooms, login as a user.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{created, ok, paginate, Admin, Answer, Body, Params};
use crate::{
    api::error::ApiError,
    error::Error,
    services::Services,
    users::{Account, Restriction},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v2/users", get(list_v2))
        .route("/_synapse/admin/v3/users", get(list_v3))
        .route("/_synapse/admin/v2/users/{user_id}", get(query).put(upsert))
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/reset_password/{user_id}", post(reset_password))
        .route("/_synapse/admin/v1/users/{user_id}/admin", get(get_admin).put(set_admin))
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(devices))
        .route(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            get(device).put(rename_device).delete(delete_device),
        )
        .route("/_synapse/admin/v2/users/{user_id}/delete_devices", post(delete_devices))
        .route("/_synapse/admin/v1/users/{user_id}/oauth_sessions", get(oauth_sessions))
        .route(
            "/_synapse/admin/v1/users/{user_id}/oauth_sessions/{session_id}",
            axum::routing::delete(end_oauth_session),
        )
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route("/_synapse/admin/v1/users/{user_id}/joined_rooms", get(joined_rooms))
        .route("/_synapse/admin/v1/users/{user_id}/login", post(login_as))
        .route("/_synapse/admin/v1/users/{user_id}/shadow_ban", post(shadow_ban).delete(lift_shadow_ban))
        .route(
            "/_synapse/admin/v1/users/{user_id}/_allow_cross_signing_replacement_without_uia",
            post(allow_key_replacement),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            get(get_rate_override).post(set_rate_override).delete(delete_rate_override),
        )
}

/// A local user id from the path: 400 `M_INVALID_PARAM` when it is not one of ours.
fn local_user(services: &Services, raw: &str) -> Result<OwnedUserId, ApiError> {
    let user = UserId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?;
    if !services.users.is_local(&user) {
        return Err(Error::invalid_param("Can only look up local users").into());
    }
    Ok(user)
}

use super::existing_user as existing;

fn flag(value: bool) -> Value {
    json!(value as u8)
}

/// Whether a listed user (as [`user_json`] shows it) has `needle` (lower case) in their id or
/// display name: the admin API's `name` filter and the console's user search.
pub(crate) fn name_matches(user: &UserId, json: &Value, needle: &str) -> bool {
    let display = json["displayname"].as_str().unwrap_or("").to_lowercase();
    user.as_str().to_lowercase().contains(needle) || display.contains(needle)
}

/// A user as Synapse's admin API shows it (`full` adds third-party and external ids).
pub(crate) fn user_json(services: &Services, user: &UserId, account: &Account, full: bool) -> Result<Value, ApiError> {
    let profile = services.profiles.get(user)?;
    let mut out = json!({
        "name": user,
        "displayname": profile.get("displayname").cloned().unwrap_or(Value::Null),
        "avatar_url": profile.get("avatar_url").cloned().unwrap_or(Value::Null),
        "is_guest": flag(false),
        "admin": flag(account.admin),
        "deactivated": flag(account.deactivated),
        "erased": account.erased,
        "shadow_banned": flag(account.shadow_banned),
        "creation_ts": account.created_ts,
        "last_seen_ts": last_seen(services, user)?,
        "user_type": user_type(services, user, account),
        "locked": account.locked,
        "suspended": account.suspended,
    });
    if full {
        let threepids: Vec<Value> = services
            .threepids
            .list(user)?
            .into_iter()
            .map(|(medium, address, record)| {
                json!({ "medium": medium, "address": address, "added_at": record.added_at, "validated_at": record.validated_at })
            })
            .collect();
        let external: Vec<Value> =
            account.directory.iter().map(|link| json!({ "auth_provider": "ldap", "external_id": link.dn })).collect();
        let appservice =
            services.appservices.all().iter().find(|a| a.claims_user(user)).map(|a| a.registration.id.clone());
        out["threepids"] = json!(threepids);
        out["external_ids"] = json!(external);
        out["appservice_id"] = json!(appservice);
        out["consent_server_notice_sent"] = Value::Null;
        out["consent_version"] = Value::Null;
        out["consent_ts"] = Value::Null;
    }
    Ok(out)
}

/// The admin API's `user_type`: the account's own (`bot`, `support`), else `external` for the
/// users of a ministry network's externals' node, as a Synapse of that network configured with
/// `user_types.default_user_type: external` shows them (docs/network.md).
fn user_type(services: &Services, user: &UserId, account: &Account) -> Option<String> {
    account.user_type.clone().or_else(|| services.network.is_external_user(user).then(|| "external".to_owned()))
}

/// When any of the user's devices was last used (ms), as the admin API's `last_seen_ts`.
fn last_seen(services: &Services, user: &UserId) -> Result<Option<u64>, ApiError> {
    Ok(services.users.devices(user)?.iter().filter_map(|(_, d)| d.last_seen_ts).max())
}

/// `GET /_synapse/admin/v2/users`: `deactivated=true` includes deactivated accounts.
async fn list_v2(State(services): State<Arc<Services>>, admin: Admin, params: Params) -> Answer {
    let include = params.bool("deactivated")?.unwrap_or(false);
    list(services, admin, params, if include { None } else { Some(false) }).await
}

/// `GET /_synapse/admin/v3/users` (Ketesa's list): `deactivated` absent lists everyone, `true`
/// only deactivated accounts, `false` only active ones.
async fn list_v3(State(services): State<Arc<Services>>, admin: Admin, params: Params) -> Answer {
    let deactivated = params.bool("deactivated")?;
    list(services, admin, params, deactivated).await
}

/// The user list of both versions: filters `name` (in the id or display name), `user_id`,
/// `guests`, `admins`, `locked` (include them; excluded by default, as Synapse does), and
/// `deactivated` (already read by the caller); `order_by`, `dir`, `from`, `limit`.
async fn list(services: Arc<Services>, _: Admin, params: Params, deactivated: Option<bool>) -> Answer {
    let (from, limit) = params.page()?;
    let include_locked = params.bool("locked")?.unwrap_or(false);
    let admins = params.bool("admins")?;
    let guests = params.bool("guests")?.unwrap_or(true);
    let name = params.str("name").map(str::to_lowercase);
    let user_id = params.str("user_id").map(str::to_lowercase);
    // Synapse's `not_user_type` (`bot`, `support`, `external`, or empty for users without one).
    let not_user_type = params.str("not_user_type");
    let order_by = params.str("order_by").unwrap_or("name");
    let known = [
        "name",
        "is_guest",
        "admin",
        "user_type",
        "deactivated",
        "shadow_banned",
        "displayname",
        "avatar_url",
        "creation_ts",
        "last_seen_ts",
        "locked",
    ];
    if !known.contains(&order_by) {
        return Err(Error::invalid_param(format!("unknown order_by {order_by:?}")).into());
    }
    let mut rows = Vec::new();
    for (user, account) in services.users.list()? {
        if deactivated.is_some_and(|d| d != account.deactivated)
            || (account.locked && !include_locked)
            || admins.is_some_and(|a| a != account.admin)
        {
            continue;
        }
        if not_user_type.is_some_and(|t| user_type(&services, &user, &account).as_deref().unwrap_or("") == t) {
            continue;
        }
        let json = user_json(&services, &user, &account, false)?;
        if name.as_deref().is_some_and(|name| !name_matches(&user, &json, name)) {
            continue;
        }
        if user_id.as_ref().is_some_and(|u| !user.as_str().to_lowercase().contains(u.as_str())) {
            continue;
        }
        rows.push(json);
    }
    // Guests do not exist on this server: `guests=false` filters nothing.
    let _ = guests;
    let key = |v: &Value| -> (String, u64) {
        match &v[order_by] {
            Value::String(s) => (s.to_lowercase(), 0),
            Value::Number(n) => (String::new(), n.as_u64().unwrap_or(0)),
            Value::Bool(b) => (String::new(), *b as u64),
            _ => (String::new(), 0),
        }
    };
    rows.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a["name"].as_str().cmp(&b["name"].as_str())));
    if params.backwards()? {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "users": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    ok(body)
}

/// `GET /_synapse/admin/v2/users/{user_id}`: as in the list, except that `creation_ts` is in
/// seconds here, as Synapse gives it (synapse-admin multiplies it by 1000).
async fn query(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, account) = existing(&services, &user)?;
    let mut body = user_json(&services, &user, &account, true)?;
    body["creation_ts"] = json!(account.created_ts / 1000);
    ok(body)
}

#[derive(Deserialize)]
struct ThreepidInput {
    medium: String,
    address: String,
}

/// A field that is present, even as `null` (`Some(None)`), as opposed to absent (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// The fields Synapse reads; the others are ignored as Synapse ignores them (admin UIs send the
/// whole record back: `name`, `is_guest`, `creation_ts`, …).
#[derive(Deserialize)]
struct Upsert {
    password: Option<String>,
    logout_devices: Option<bool>,
    displayname: Option<String>,
    avatar_url: Option<String>,
    threepids: Option<Vec<ThreepidInput>>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    locked: Option<bool>,
    /// Absent: unchanged; `null`: cleared.
    #[serde(default, deserialize_with = "present")]
    user_type: Option<Option<String>>,
    external_ids: Option<Vec<Value>>,
}

/// `PUT /_synapse/admin/v2/users/{user_id}`: creates the account (201) or changes the fields
/// given (200); answers the user as `GET` shows it.
async fn upsert(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<Upsert>,
) -> Answer {
    let user = local_user(&services, &user)?;
    // Synapse's built-in user types; `null` clears it.
    if body.user_type.as_ref().and_then(|t| t.as_deref()).is_some_and(|t| !matches!(t, "bot" | "support")) {
        return Err(Error::invalid_param("user_type must be bot, support or null").into());
    }
    if let Some(given) = &body.external_ids {
        // What GET showed may come back unchanged; changing it is the directory's business.
        let current = services.users.account(&user)?.and_then(|a| a.directory).map(|link| link.dn);
        let same = match (given.as_slice(), &current) {
            ([], None) => true,
            ([one], Some(dn)) => one["auth_provider"] == "ldap" && one["external_id"] == dn.as_str(),
            _ => false,
        };
        if !same {
            return Err(Error::invalid_param("external ids come from the directory (LDAP) only").into());
        }
    }
    let mut changed = Vec::new();
    let creating = services.users.account(&user)?.is_none();
    if creating {
        services.users.create(user.localpart(), body.password.clone(), body.admin.unwrap_or(false)).await?;
        changed.push("created");
    } else if let Some(password) = &body.password {
        let logout = body.logout_devices.unwrap_or(true);
        services.users.set_password(&user, password.clone(), logout, None).await?;
        changed.push("password");
    }
    // A field sent back unchanged (admin UIs send the whole record) changes nothing, so the
    // rooms do not get a new member event at each save.
    let profile = services.profiles.get(&user)?;
    if let Some(name) = body.displayname.as_ref().filter(|n| profile.get("displayname") != Some(&json!(n))) {
        services.profiles.set_field(&user, "displayname", Some(json!(name)))?;
        services.rooms.refresh_profile(&user).await?;
        changed.push("displayname");
    }
    if let Some(url) = body.avatar_url.as_ref().filter(|u| profile.get("avatar_url") != Some(&json!(u))) {
        services.profiles.set_field(&user, "avatar_url", Some(json!(url)))?;
        services.rooms.refresh_profile(&user).await?;
        changed.push("avatar_url");
    }
    if let Some(wanted) = &body.user_type {
        let current = services.users.account(&user)?.and_then(|a| a.user_type);
        if &current != wanted {
            services.users.set_user_type(&user, wanted.clone()).await?;
            changed.push("user_type");
        }
    }
    if let Some(threepids) = &body.threepids {
        for (medium, address, _) in services.threepids.list(&user)? {
            services.threepids.remove(&user, &medium, &address)?;
        }
        for t in threepids {
            services.threepids.add(&user, &t.medium, &t.address.trim().to_lowercase())?;
        }
        // As `/account/3pid/add` does: the third-party invites of the addresses are taken up
        // (and the nodes that sent them told) before the answer.
        crate::federation::threepid::take_up_bound(&services).await;
        changed.push("threepids");
    }
    if let (Some(value), false) = (body.admin, creating) {
        set_admin_flag(&services, &admin, &user, value).await?;
        changed.push("admin");
    }
    if let Some(locked) = body.locked {
        services.users.set_restriction(&user, Restriction::Locked, locked).await?;
        changed.push("locked");
    }
    match body.deactivated {
        Some(true) if !creating => {
            crate::users::deactivation::deactivate(&services, &user, false).await?;
            changed.push("deactivated");
        }
        Some(false) if services.users.account(&user)?.is_some_and(|a| a.deactivated) => {
            services.users.reactivate(&user).await?;
            changed.push("reactivated");
        }
        _ => {}
    }
    let action = if creating { "user.create" } else { "user.modify" };
    admin.audit(&services, action, user.as_str(), json!({ "fields": changed }))?;
    let account = services.users.account(&user)?.ok_or_else(|| Error::not_found("User not found"))?;
    let out = user_json(&services, &user, &account, true)?;
    if creating {
        created(out)
    } else {
        ok(out)
    }
}

async fn set_admin_flag(services: &Services, admin: &Admin, user: &UserId, value: bool) -> Result<(), ApiError> {
    if !value && user == admin.0.user_id {
        return Err(Error::BadState("You may not demote yourself".into()).into());
    }
    services.users.set_admin(user, value).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deactivate {
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<Deactivate>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    deactivate_account(&services, &admin, &user, body.erase).await?;
    ok(json!({ "id_server_unbind_result": "success" }))
}

/// Deactivates an account (it leaves every room, its sessions end) and records who did it: the
/// admin API and the console both go through here, so both audit it the same way.
pub(crate) async fn deactivate_account(
    services: &Services,
    admin: &Admin,
    user: &UserId,
    erase: bool,
) -> Result<(), ApiError> {
    crate::users::deactivation::deactivate(services, user, erase).await?;
    admin.audit(services, "user.deactivate", user.as_str(), json!({ "erase": erase }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetPassword {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn reset_password(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<ResetPassword>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    reset_password_of(&services, &admin, &user, body.new_password, body.logout_devices).await?;
    ok(json!({}))
}

/// Sets a new password chosen by an admin (refused for directory accounts) and records it,
/// never the password itself; shared by the admin API and the console.
pub(crate) async fn reset_password_of(
    services: &Services,
    admin: &Admin,
    user: &UserId,
    password: String,
    logout_devices: bool,
) -> Result<(), ApiError> {
    services.users.set_password(user, password, logout_devices, None).await?;
    admin.audit(services, "user.reset_password", user.as_str(), json!({ "logout_devices": logout_devices }))
}

async fn get_admin(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (_, account) = existing(&services, &user)?;
    ok(json!({ "admin": account.admin }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAdmin {
    admin: bool,
}

async fn set_admin(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<SetAdmin>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    set_admin_flag(&services, &admin, &user, body.admin).await?;
    admin.audit(&services, "user.set_admin", user.as_str(), json!({ "admin": body.admin }))?;
    ok(json!({}))
}

fn device_json(user: &UserId, device_id: &str, device: &crate::users::Device) -> Value {
    json!({
        "device_id": device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": Value::Null,
        "dehydrated": false,
        "user_id": user,
    })
}

async fn devices(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let devices: Vec<Value> =
        services.users.devices(&user)?.iter().map(|(id, d)| device_json(&user, id.as_str(), d)).collect();
    ok(json!({ "total": devices.len(), "devices": devices }))
}

async fn device(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((user, device)): Path<(String, String)>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let device_id: OwnedDeviceId = device.into();
    let found = services.users.device(&user, &device_id)?.ok_or_else(|| Error::not_found("No device found"))?;
    ok(device_json(&user, device_id.as_str(), &found))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    display_name: Option<String>,
}

async fn rename_device(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((user, device)): Path<(String, String)>,
    Body(body): Body<Rename>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let device_id: OwnedDeviceId = device.into();
    if services.users.device(&user, &device_id)?.is_none() {
        return Err(Error::not_found("No device found").into());
    }
    services.users.set_device_display_name(&user, &device_id, body.display_name.clone()).await?;
    admin.audit(
        &services,
        "device.rename",
        &format!("{user}/{device_id}"),
        json!({ "display_name": body.display_name }),
    )?;
    ok(json!({}))
}

async fn delete_device(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((user, device)): Path<(String, String)>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    remove_device_of(&services, &admin, &user, &OwnedDeviceId::from(device)).await?;
    ok(json!({}))
}

/// Ends one session of a user (its device and token go) and records it; shared with the console.
pub(crate) async fn remove_device_of(
    services: &Services,
    admin: &Admin,
    user: &UserId,
    device_id: &ruma::DeviceId,
) -> Result<(), ApiError> {
    // An OAuth session's device ends with its grant, so its refresh token dies too.
    match services.oauth.grant_of_device(user, device_id)? {
        Some((grant_id, _)) => {
            services.oauth.end_grant(&services.users, &grant_id).await?;
        }
        None => services.users.remove_device(user, device_id).await?,
    }
    admin.audit(services, "device.delete", &format!("{user}/{device_id}"), json!({}))
}

/// `GET /_synapse/admin/v1/users/{user}/oauth_sessions`: the user's OAuth 2.0 sessions (grants):
/// which client holds which device, with what scope, since when.
async fn oauth_sessions(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let sessions: Vec<Value> = services
        .oauth
        .sessions(&services.users, &user)?
        .into_iter()
        .map(|(grant_id, grant)| {
            let client = services.oauth.client(&grant.client_id).ok().flatten();
            json!({
                "session_id": grant_id,
                "client_id": grant.client_id,
                "client_name": client.as_ref().and_then(|c| c.client_name.clone()),
                "client_uri": client.as_ref().map(|c| c.client_uri.clone()),
                "device_id": grant.device_id,
                "scope": grant.scope.join(" "),
                "created_ts": grant.created_ts,
            })
        })
        .collect();
    ok(json!({ "total": sessions.len(), "sessions": sessions }))
}

/// `DELETE /_synapse/admin/v1/users/{user}/oauth_sessions/{session}`: ends one (its device, its
/// access and refresh tokens).
async fn end_oauth_session(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((user, session)): Path<(String, String)>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let owned = services.oauth.sessions(&services.users, &user)?.into_iter().any(|(id, _)| id == session);
    if !owned {
        return Err(Error::not_found("No such OAuth session").into());
    }
    services.oauth.end_grant(&services.users, &session).await?;
    admin.audit(&services, "oauth.session_end", user.as_str(), json!({ "session_id": session }))?;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteDevices {
    devices: Vec<String>,
}

async fn delete_devices(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<DeleteDevices>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    for device in &body.devices {
        services.users.remove_device(&user, &OwnedDeviceId::from(device.as_str())).await?;
    }
    admin.audit(&services, "device.delete", user.as_str(), json!({ "devices": body.devices }))?;
    ok(json!({}))
}

async fn whois(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let mut devices = serde_json::Map::new();
    for (device_id, device) in services.users.devices(&user)? {
        let connection =
            json!({ "ip": device.last_seen_ip, "last_seen": device.last_seen_ts, "user_agent": Value::Null });
        devices.insert(device_id.to_string(), json!({ "sessions": [{ "connections": [connection] }] }));
    }
    ok(json!({ "user_id": user, "devices": devices }))
}

async fn joined_rooms(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let rooms = services.rooms.rooms_of(&user, "join")?;
    ok(json!({ "total": rooms.len(), "joined_rooms": rooms }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAs {
    valid_until_ms: Option<u64>,
}

/// `POST /_synapse/admin/v1/users/{user_id}/login`: an access token of the user (a new device
/// named "admin login"), e.g. to act for a departed agent.
async fn login_as(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<LoginAs>,
) -> Answer {
    let (user, account) = existing(&services, &user)?;
    if user == admin.0.user_id {
        return Err(Error::BadState("Cannot use admin API to login as self".into()).into());
    }
    if account.deactivated {
        return Err(Error::BadState("the account is deactivated".into()).into());
    }
    if body.valid_until_ms.is_some_and(|until| until <= crate::users::token_clock_ms()) {
        return Err(Error::invalid_param("valid_until_ms is in the past").into());
    }
    let session = services.users.login(&user, None, Some("admin login".to_owned()), None, None).await?;
    if let Some(until) = body.valid_until_ms {
        services.users.expire_token_at(&user, &session.device_id, until).await?;
    }
    admin.audit(&services, "user.login_as", user.as_str(), json!({ "device_id": session.device_id }))?;
    ok(json!({ "access_token": session.access_token }))
}

/// How long an admin's permission to replace cross-signing keys without UIA lasts (Synapse's).
const KEY_REPLACEMENT_WINDOW_MS: u64 = 10 * 60 * 1000;

/// `POST /_synapse/admin/v1/users/{user_id}/_allow_cross_signing_replacement_without_uia`: for
/// the next ten minutes the user may upload new cross-signing keys without UIA;
/// `{ updatable_without_uia_before_ms }`.
async fn allow_key_replacement(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    let until = crate::time::now_ms() + KEY_REPLACEMENT_WINDOW_MS;
    services.users.allow_key_replacement(&user, until).await?;
    admin.audit(&services, "user.allow_cross_signing_replacement", user.as_str(), json!({ "until_ms": until }))?;
    ok(json!({ "updatable_without_uia_before_ms": until }))
}

async fn set_shadow_ban(services: &Services, admin: &Admin, raw: &str, value: bool) -> Answer {
    let (user, _) = existing(services, raw)?;
    if value && user == admin.0.user_id {
        return Err(Error::BadState("You may not shadow-ban yourself".into()).into());
    }
    services.users.set_restriction(&user, Restriction::ShadowBanned, value).await?;
    admin.audit(services, if value { "user.shadow_ban" } else { "user.lift_shadow_ban" }, user.as_str(), json!({}))?;
    ok(json!({}))
}

/// `POST /_synapse/admin/v1/users/{user_id}/shadow_ban`: the user's messages, state events and
/// invites are answered as sent and reach nobody; `DELETE` lifts it.
async fn shadow_ban(State(services): State<Arc<Services>>, admin: Admin, Path(user): Path<String>) -> Answer {
    set_shadow_ban(&services, &admin, &user, true).await
}

async fn lift_shadow_ban(State(services): State<Arc<Services>>, admin: Admin, Path(user): Path<String>) -> Answer {
    set_shadow_ban(&services, &admin, &user, false).await
}

async fn get_rate_override(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (_, account) = existing(&services, &user)?;
    ok(match account.rate_override {
        Some(limit) => json!({ "messages_per_second": limit.per_second, "burst_count": limit.burst }),
        None => json!({}),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateOverride {
    #[serde(default)]
    messages_per_second: f64,
    #[serde(default)]
    burst_count: u32,
}

/// `POST …/override_ratelimit`: the account's own limit for media uploads (the per-account
/// limit this server applies); both 0 (the default) means unlimited.
async fn set_rate_override(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<RateOverride>,
) -> Answer {
    let (user, _) = existing(&services, &user)?;
    if !body.messages_per_second.is_finite() || body.messages_per_second < 0.0 {
        return Err(Error::invalid_param("messages_per_second must be a non-negative number").into());
    }
    let limit = crate::config::RateLimit { per_second: body.messages_per_second, burst: body.burst_count };
    services.users.set_rate_override(&user, Some(limit)).await?;
    let out = json!({ "messages_per_second": limit.per_second, "burst_count": limit.burst });
    admin.audit(&services, "user.override_ratelimit", user.as_str(), out.clone())?;
    ok(out)
}

async fn delete_rate_override(State(services): State<Arc<Services>>, admin: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = existing(&services, &user)?;
    services.users.set_rate_override(&user, None).await?;
    admin.audit(&services, "user.delete_ratelimit_override", user.as_str(), json!({}))?;
    ok(json!({}))
}
