//! Media: an uploader's files, details, quarantine, deletion by id, by age and size, and purging
//! the cache of other servers' media.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use ruma::{OwnedServerName, ServerName};
use serde_json::{json, Value};

use super::{ok, paginate, Admin, Answer, Params};
use crate::{api::error::ApiError, error::Error, media::MediaRecord, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/media", get(list_of_user).delete(delete_of_user))
        .route("/_synapse/admin/v1/media/{server}/{media_id}", get(details).delete(delete_one))
        .route("/_synapse/admin/v1/media/quarantine/{server}/{media_id}", post(quarantine))
        .route("/_synapse/admin/v1/media/unquarantine/{server}/{media_id}", post(unquarantine))
        .route("/_synapse/admin/v1/media/delete", post(delete_before))
        .route("/_synapse/admin/v1/media/{server}/delete", post(delete_before_of_server))
        .route("/_synapse/admin/v1/media/protect/{media_id}", post(protect))
        .route("/_synapse/admin/v1/media/unprotect/{media_id}", post(unprotect))
        .route("/_synapse/admin/v1/purge_media_cache", post(purge_remote))
        .route("/_synapse/admin/v1/statistics/users/media", get(statistics))
        .route("/_synapse/admin/v1/room/{room_id}/media", get(room_media))
        .route("/_synapse/admin/v1/room/{room_id}/media/quarantine", post(quarantine_room_media))
        .route("/_synapse/admin/v1/user/{user_id}/media/quarantine", post(quarantine_user_media))
}

fn media_json(media_id: &str, record: &MediaRecord) -> Value {
    json!({
        "media_id": media_id,
        "media_type": record.content_type,
        "media_length": record.file.as_ref().map(|f| f.size),
        "upload_name": record.filename,
        "created_ts": record.created_ts,
        "last_access_ts": Value::Null,
        "quarantined_by": record.quarantined_by,
        "safe_from_quarantine": record.safe_from_quarantine,
    })
}

/// A server name from a path or form: 400 `M_INVALID_PARAM` when it is not one.
pub(crate) fn server(raw: &str) -> Result<OwnedServerName, ApiError> {
    ServerName::parse(raw).map_err(|e| Error::invalid_param(format!("invalid server name: {e}")).into())
}

fn local_user(services: &Services, raw: &str) -> Result<ruma::OwnedUserId, ApiError> {
    super::existing_user(services, raw).map(|(user, _)| user)
}

/// `GET /_synapse/admin/v1/users/{user_id}/media`: `order_by` (`created_ts` default,
/// `media_length`, `upload_name`, `media_type`), `dir`, `from`, `limit`.
async fn list_of_user(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(user): Path<String>,
    params: Params,
) -> Answer {
    let user = local_user(&services, &user)?;
    let (from, limit) = params.page()?;
    let order_by = params.str("order_by").unwrap_or("created_ts");
    let orders = [
        "created_ts",
        "media_length",
        "upload_name",
        "media_type",
        "media_id",
        "last_access_ts",
        "quarantined_by",
        "safe_from_quarantine",
    ];
    if !orders.contains(&order_by) {
        return Err(Error::invalid_param(format!("unknown order_by {order_by:?}")).into());
    }
    let mut rows: Vec<Value> =
        services.media.uploaded_by(&user)?.iter().map(|(id, record)| media_json(id, record)).collect();
    super::sort_by_field(&mut rows, order_by);
    if params.backwards()? {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "media": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    ok(body)
}

async fn delete_of_user(State(services): State<Arc<Services>>, admin: Admin, Path(user): Path<String>) -> Answer {
    let user = local_user(&services, &user)?;
    let server_name = services.config.server_name.clone();
    let ids: Vec<(OwnedServerName, String)> =
        services.media.uploaded_by(&user)?.into_iter().map(|(id, _)| (server_name.clone(), id)).collect();
    let deleted = services.media.delete(&ids).await?;
    admin.audit(&services, "media.delete_of_user", user.as_str(), json!({ "deleted": deleted.len() }))?;
    ok(json!({ "deleted_media": deleted, "total": deleted.len() }))
}

async fn details(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((origin, media_id)): Path<(String, String)>,
) -> Answer {
    let origin = server(&origin)?;
    let record = services.media.known(&origin, &media_id)?;
    let mut info = media_json(&media_id, &record);
    info["user_id"] = json!(record.uploader);
    ok(json!({ "media_info": info }))
}

async fn delete_one(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((origin, media_id)): Path<(String, String)>,
) -> Answer {
    let deleted = delete_local(&services, &admin, &origin, &media_id).await?;
    ok(json!({ "deleted_media": deleted, "total": deleted.len() }))
}

/// Deletes one local file (its thumbnails go, the file leaves the disk with its last reference)
/// and records it; shared with the console. Answers the ids deleted.
pub(crate) async fn delete_local(
    services: &Services,
    admin: &Admin,
    origin: &str,
    media_id: &str,
) -> Result<Vec<String>, ApiError> {
    let origin = server(origin)?;
    if !services.media.is_local(&origin) {
        return Err(Error::BadState("Can only delete local media".into()).into());
    }
    services.media.known(&origin, media_id)?;
    let deleted = services.media.delete(&[(origin.clone(), media_id.to_owned())]).await?;
    admin.audit(services, "media.delete", &format!("mxc://{origin}/{media_id}"), json!({}))?;
    Ok(deleted)
}

/// Quarantines (or releases) one file and records it; shared with the console.
pub(crate) fn set_quarantine(
    services: &Services,
    admin: &Admin,
    origin: &str,
    media_id: &str,
    on: bool,
) -> Result<(), ApiError> {
    let origin = server(origin)?;
    let by = on.then(|| admin.0.user_id.to_string());
    if !services.media.set_quarantine(&origin, media_id, by)? {
        return Err(Error::not_found("media not found").into());
    }
    let action = if on { "media.quarantine" } else { "media.unquarantine" };
    admin.audit(services, action, &format!("mxc://{origin}/{media_id}"), json!({}))
}

async fn quarantine(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((origin, id)): Path<(String, String)>,
) -> Answer {
    set_quarantine(&services, &admin, &origin, &id, true)?;
    ok(json!({}))
}

async fn unquarantine(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((origin, id)): Path<(String, String)>,
) -> Answer {
    set_quarantine(&services, &admin, &origin, &id, false)?;
    ok(json!({}))
}

/// Protects a local media id from bulk quarantines and deletions by age (`POST
/// /_synapse/admin/v1/media/protect/{media_id}`), or lifts it (`unprotect`).
async fn protect(State(services): State<Arc<Services>>, admin: Admin, Path(id): Path<String>) -> Answer {
    set_protected(&services, &admin, &id, true)
}

async fn unprotect(State(services): State<Arc<Services>>, admin: Admin, Path(id): Path<String>) -> Answer {
    set_protected(&services, &admin, &id, false)
}

fn set_protected(services: &Services, admin: &Admin, id: &str, on: bool) -> Answer {
    let origin = services.config.server_name.clone();
    if !services.media.set_protected(&origin, id, on)? {
        return Err(Error::not_found("media not found").into());
    }
    let action = if on { "media.protect" } else { "media.unprotect" };
    admin.audit(services, action, &format!("mxc://{origin}/{id}"), json!({}))?;
    ok(json!({}))
}

/// `POST /_synapse/admin/v1/media/{server}/delete`: the same as `/media/delete`, for this
/// server's name only (Synapse's older path, which synapse-admin calls).
async fn delete_before_of_server(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(origin): Path<String>,
    params: Params,
) -> Answer {
    if server(&origin)? != services.config.server_name {
        return Err(Error::invalid_param("Can only delete local media").into());
    }
    delete_before(State(services), admin, params).await
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=…&size_gt=…&keep_profiles=…`: local media
/// older than `before_ts` (required, ms) and larger than `size_gt` bytes (default 0), except
/// protected media and, unless `keep_profiles=false`, the avatars of local users.
async fn delete_before(State(services): State<Arc<Services>>, admin: Admin, params: Params) -> Answer {
    let before_ts = params.num("before_ts")?.ok_or_else(|| Error::MissingParam("before_ts is required".into()))?;
    let size_gt = params.num("size_gt")?.unwrap_or(0);
    let mut ids = services.media.local_before(before_ts, size_gt)?;
    if params.bool("keep_profiles")?.unwrap_or(true) {
        let mut avatars = std::collections::HashSet::new();
        for (user, _) in services.users.list()? {
            if let Some(url) = services.profiles.get(&user)?.get("avatar_url").and_then(Value::as_str) {
                avatars.insert(url.to_owned());
            }
        }
        ids.retain(|(server, id)| !avatars.contains(&format!("mxc://{server}/{id}")));
    }
    let deleted = services.media.delete(&ids).await?;
    admin.audit(
        &services,
        "media.delete_before",
        "local media",
        json!({ "before_ts": before_ts, "size_gt": size_gt, "deleted": deleted.len() }),
    )?;
    ok(json!({ "deleted_media": deleted, "total": deleted.len() }))
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=…`: other servers' media cached before
/// `before_ts` (fetched again when asked for).
async fn purge_remote(State(services): State<Arc<Services>>, admin: Admin, params: Params) -> Answer {
    let before_ts = params.num("before_ts")?.ok_or_else(|| Error::MissingParam("before_ts is required".into()))?;
    let ids = services.media.remote_before(before_ts)?;
    let deleted = services.media.delete(&ids).await?;
    admin.audit(
        &services,
        "media.purge_remote",
        "remote media",
        json!({ "before_ts": before_ts, "deleted": deleted.len() }),
    )?;
    ok(json!({ "deleted": deleted.len() }))
}

/// `GET /_synapse/admin/v1/statistics/users/media`: per uploader, how many files and bytes;
/// `from_ts`, `until_ts` (upload time), `search_term` (id or display name), `order_by`
/// (`media_length` default, `media_count`, `user_id`, `displayname`), `dir`, `from`, `limit`.
async fn statistics(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let (from, limit) = params.page()?;
    let (since, until) = (params.num("from_ts")?.unwrap_or(0), params.num("until_ts")?.unwrap_or(u64::MAX));
    let order_by = params.str("order_by").unwrap_or("media_length");
    if !["media_length", "media_count", "user_id", "displayname"].contains(&order_by) {
        return Err(Error::invalid_param(format!("unknown order_by {order_by:?}")).into());
    }
    let search = params.str("search_term").map(str::to_lowercase);
    let mut per_user: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (uploader, record) in services.media.local_records()? {
        if record.created_ts < since || record.created_ts > until {
            continue;
        }
        let slot = per_user.entry(uploader.to_string()).or_default();
        slot.0 += 1;
        slot.1 += record.file.as_ref().map_or(0, |f| f.size);
    }
    let mut rows = Vec::new();
    for (user, (count, length)) in per_user {
        let id = ruma::UserId::parse(&user).map_err(|e| Error::Internal(e.to_string()))?;
        let name = services.profiles.get(&id)?.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
        if search.as_ref().is_some_and(|q| {
            !user.to_lowercase().contains(q.as_str())
                && !name.as_deref().unwrap_or("").to_lowercase().contains(q.as_str())
        }) {
            continue;
        }
        rows.push(json!({ "user_id": user, "displayname": name, "media_count": count, "media_length": length }));
    }
    super::sort_by_field(&mut rows, order_by);
    if params.backwards()? {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "users": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    ok(body)
}

/// The media a room's events refer to (`url`, `info.thumbnail_url`, encrypted `file.url`), as
/// (server, media id), each once, in timeline order.
fn media_of_room(services: &Services, room: &ruma::RoomId) -> Result<Vec<(OwnedServerName, String)>, ApiError> {
    if !services.rooms.exists(room)? {
        return Err(Error::not_found("Room not found").into());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for entry in services.rooms.scan_ranges(room, vec![(0, u64::MAX)], true) {
        let (_, event_id) = entry?;
        let Some(event) = services.rooms.client_event(&event_id)? else { continue };
        let content = &event["content"];
        for uri in [&content["url"], &content["info"]["thumbnail_url"], &content["file"]["url"]] {
            let Some((server, id)) =
                uri.as_str().and_then(|u| u.strip_prefix("mxc://")).and_then(|u| u.split_once('/'))
            else {
                continue;
            };
            let Ok(server) = ServerName::parse(server) else { continue };
            if seen.insert((server.clone(), id.to_owned())) {
                out.push((server, id.to_owned()));
            }
        }
    }
    Ok(out)
}

fn room_id(raw: &str) -> Result<ruma::OwnedRoomId, ApiError> {
    ruma::RoomId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")).into())
}

/// `GET /_synapse/admin/v1/room/{room_id}/media`: `{ "local": [mxc…], "remote": [mxc…] }`.
async fn room_media(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = room_id(&room)?;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for (server, id) in media_of_room(&services, &room)? {
        let uri = format!("mxc://{server}/{id}");
        if services.media.is_local(&server) {
            local.push(uri);
        } else {
            remote.push(uri);
        }
    }
    ok(json!({ "local": local, "remote": remote }))
}

/// `POST /_synapse/admin/v1/room/{room_id}/media/quarantine`: quarantines every known media the
/// room refers to; answers how many.
async fn quarantine_room_media(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
) -> Answer {
    let room = room_id(&room)?;
    let media = media_of_room(&services, &room)?;
    quarantine_all(&services, &admin, "media.quarantine_room", room.as_str(), media)
}

/// `POST /_synapse/admin/v1/user/{user_id}/media/quarantine`: quarantines everything a local
/// user uploaded; answers how many.
async fn quarantine_user_media(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
) -> Answer {
    let user = local_user(&services, &user)?;
    let server_name = services.config.server_name.clone();
    let media = services.media.uploaded_by(&user)?.into_iter().map(|(id, _)| (server_name.clone(), id)).collect();
    quarantine_all(&services, &admin, "media.quarantine_user", user.as_str(), media)
}

fn quarantine_all(
    services: &Services,
    admin: &Admin,
    action: &str,
    target: &str,
    media: Vec<(OwnedServerName, String)>,
) -> Answer {
    let by = admin.0.user_id.to_string();
    let mut count = 0;
    for (server, id) in media {
        if services.media.record(&server, &id)?.is_some_and(|r| r.safe_from_quarantine) {
            continue;
        }
        if services.media.set_quarantine(&server, &id, Some(by.clone()))? {
            count += 1;
        }
    }
    admin.audit(services, action, target, json!({ "num_quarantined": count }))?;
    ok(json!({ "num_quarantined": count }))
}
