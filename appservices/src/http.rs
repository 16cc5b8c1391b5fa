//! What the appservice serves: the Application Service API the homeserver calls (transactions,
//! ping, user and alias queries), the JSON REST API (callers authenticate with their Matrix
//! access token, checked with the homeserver's `/account/whoami`, or with an OpenID token of
//! their own homeserver, and must be joined to the
//! room — for a library, to the folder a path resolves to, with the power level the operation
//! needs there), and the rooms' ICS feeds.

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        FromRequestParts, Path, Query, State,
    },
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    bot,
    rights::Role,
    service::{EntryEdit, Failure, NewEntry, NewTask, TaskEdit, Which, Workspace},
    tasks::Progress,
};

type Ws = Arc<Workspace>;

/// Largest body accepted (transactions carry at most 100 events of 64 KiB).
const MAX_BODY: usize = 8 << 20;

pub fn router(ws: Ws) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user}", get(unknown))
        .route("/_matrix/app/v1/rooms/{alias}", get(unknown))
        .route("/api/v1/rooms/{room}/tasks", get(list_tasks).post(create_task))
        .route("/api/v1/rooms/{room}/tasks/{id}", axum::routing::patch(edit_task))
        .route("/api/v1/rooms/{room}/tasks/{id}/done", post(complete_task))
        .route("/api/v1/rooms/{room}/tasks/{id}/progress", post(task_progress))
        .route("/api/v1/rooms/{room}/tasks/{id}/assignees", post(assign_task))
        .route("/api/v1/rooms/{room}/calendar", get(list_calendar).post(create_entry))
        .route("/api/v1/rooms/{room}/calendar/{id}", axum::routing::patch(edit_entry).delete(delete_entry))
        .route("/api/v1/rooms/{room}/calendar/{id}/rsvp", post(rsvp))
        .route("/api/v1/rooms/{room}/calendar/{id}/skip", post(skip_occurrence))
        .route("/api/v1/libraries/{library}/files", get(list_files).post(add_file).delete(delete_file))
        .route("/api/v1/libraries/{library}/folders", post(make_folder))
        .route("/api/v1/libraries/{library}/files/lock", post(lock_file))
        .route("/api/v1/libraries/{library}/files/move", post(move_file))
        .route("/api/v1/libraries/{library}/files/history", get(file_history))
        .route("/calendar/{file}", get(ics_feed))
        .route("/widgets/tasks", get(crate::widgets::tasks_page))
        .route("/widgets/calendar", get(crate::widgets::calendar_page))
        .route("/widgets/library", get(crate::widgets::library_page))
        .route("/widgets/common.js", get(crate::widgets::common_script))
        .route("/widgets/tasks.js", get(crate::widgets::tasks_script))
        .route("/widgets/calendar.js", get(crate::widgets::calendar_script))
        .route("/widgets/library.js", get(crate::widgets::library_script))
        .route("/widgets/widget.css", get(crate::widgets::style))
        .fallback(|| async { error(404, "M_UNRECOGNIZED", "unknown endpoint") })
        .method_not_allowed_fallback(|| async { error(405, "M_UNRECOGNIZED", "method not allowed here") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(ws)
}

/// An error of the API's own checks (one message: these are read by programs, not people).
fn fail(status: u16, errcode: &'static str, message: &str) -> Failure {
    Failure::new(status, errcode, message, message)
}

fn error(status: u16, errcode: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({ "errcode": errcode, "error": message }))).into_response()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error(self.status, self.errcode, &self.en)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// The homeserver's own calls carry the `hs_token`.
fn homeserver(ws: &Workspace, headers: &HeaderMap) -> Result<(), Failure> {
    match bearer(headers) {
        None => Err(fail(401, "M_UNAUTHORIZED", "missing hs_token")),
        Some(token) if crate::rights::same_secret(token, &ws.hs_token) => Ok(()),
        Some(_) => Err(fail(403, "M_FORBIDDEN", "wrong hs_token")),
    }
}

fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    parsed.map(|Json(v)| v).map_err(|rejection| match rejection {
        JsonRejection::JsonSyntaxError(e) => fail(400, "M_NOT_JSON", &e.body_text()),
        JsonRejection::MissingJsonContentType(e) => fail(400, "M_NOT_JSON", &e.body_text()),
        // A body over [`MAX_BODY`]: too large, not malformed.
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            fail(413, "M_TOO_LARGE", &format!("the body exceeds {MAX_BODY} bytes"))
        }
        other => fail(400, "M_BAD_JSON", &other.body_text()),
    })
}

/// The path's parameters, refused with a Matrix error body (axum's own rejection is plain
/// text) when they do not decode, as a room id of invalid UTF-8 does not.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Params(value)),
            Err(rejection) => Err(fail(400, "M_INVALID_PARAM", &rejection.body_text())),
        }
    }
}

/// What a handler answers: its JSON, or a Matrix error body.
type Answer = Result<Response, Failure>;

fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    parsed.map(|Query(v)| v).map_err(|rejection| fail(400, "M_INVALID_PARAM", &rejection.body_text()))
}

fn ok(value: Value) -> Answer {
    Ok(Json(value).into_response())
}

fn created(value: Value) -> Answer {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn transaction(
    State(ws): State<Ws>,
    Params(txn): Params<String>,
    headers: HeaderMap,
    parsed: Result<Json<Value>, JsonRejection>,
) -> Answer {
    homeserver(&ws, &headers)?;
    let transaction = body(parsed)?;
    if ws.store.read(|s| s.txns.contains(&txn)) {
        return ok(json!({}));
    }
    let events = transaction["events"].as_array().ok_or_else(|| fail(400, "M_BAD_JSON", "events must be a list"))?;
    for event in events {
        if let Err(bot::Retry(reason)) = bot::handle(&ws, event).await {
            tracing::warn!(%txn, %reason, "transaction refused until the homeserver answers again");
            return Err(fail(503, "M_UNKNOWN", &format!("the homeserver could not be reached: {reason}")));
        }
    }
    // Recorded once every event is handled: a crash before this makes the homeserver send the
    // transaction again, and handling is idempotent.
    ws.store
        .update(|s| s.txns.push_back(txn))
        .map_err(|e| fail(500, "M_UNKNOWN", &format!("cannot record the transaction: {e}")))?;
    ok(json!({}))
}

async fn ping(State(ws): State<Ws>, headers: HeaderMap) -> Answer {
    homeserver(&ws, &headers)?;
    ok(json!({}))
}

/// The bot provisions no users or rooms on demand.
async fn unknown(State(ws): State<Ws>, headers: HeaderMap) -> Answer {
    homeserver(&ws, &headers)?;
    Err(fail(404, "M_NOT_FOUND", "this appservice provisions nothing on demand"))
}

/// The one answer for a room the caller may not use, whether the room exists or not, the bot
/// is in it or not, or the caller is not joined: nothing tells these apart.
fn not_member() -> Failure {
    fail(403, "M_FORBIDDEN", "you are not a member of this room, or it does not exist")
}

/// The caller's user id: from an access token of our homeserver (`Bearer`, checked with its
/// `/account/whoami`), or from an OpenID token of their own homeserver (`OpenID <server>
/// <token>`, confirmed by that server: see [`crate::openid`]), so agents of every allowed node
/// and widgets, which hold no access token of ours, use the same API.
async fn caller(ws: &Workspace, headers: &HeaderMap) -> Result<String, Failure> {
    let missing = || fail(401, "M_MISSING_TOKEN", "a Matrix access token or an OpenID token is required");
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| fail(401, "M_UNKNOWN_TOKEN", "unreadable Authorization header"))?;
    if let Some(openid) = value.strip_prefix("OpenID ") {
        let (server, token) = openid
            .trim()
            .split_once(' ')
            .ok_or_else(|| fail(401, "M_MISSING_TOKEN", "OpenID credentials are `OpenID <server name> <token>`"))?;
        return ws.openid.user(server, token.trim()).await;
    }
    let token = bearer(headers).ok_or_else(missing)?;
    ws.matrix.whoami(token).await.map_err(|e| match e.status {
        401 => fail(401, "M_UNKNOWN_TOKEN", "the homeserver does not know this access token"),
        _ => fail(502, "M_UNKNOWN", &format!("homeserver error: {e}")),
    })
}

/// The caller's user id, who must be joined to `room` (a room the bot is in).
async fn member(ws: &Workspace, headers: &HeaderMap, room: &str) -> Result<String, Failure> {
    let user = caller(ws, headers).await?;
    if ws.view(room).is_none() {
        return Err(not_member());
    }
    match ws.is_joined(room, &user).await {
        Ok(true) => Ok(user),
        Ok(false) => Err(not_member()),
        Err(f) => Err(f),
    }
}

/// The caller's user id, who must be joined to `room` and allowed to send messages there: what
/// changes a room's tasks and calendar needs what a command would.
async fn writer(ws: &Workspace, headers: &HeaderMap, room: &str) -> Result<String, Failure> {
    let user = member(ws, headers, room).await?;
    ws.require_speaker(room, &user).await?;
    Ok(user)
}

fn request_seed() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn list_tasks(State(ws): State<Ws>, Params(room): Params<String>, headers: HeaderMap) -> Answer {
    member(&ws, &headers, &room).await?;
    let view = ws.view(&room).unwrap_or_default();
    let now = ws.clock.now();
    let tasks: Vec<Value> = view
        .tasks
        .values()
        .map(|t| {
            let mut v = serde_json::to_value(t).expect("task serializes");
            v["late"] = json!(t.is_late(now, ws.zone()));
            v
        })
        .collect();
    ok(json!({ "tasks": tasks }))
}

async fn create_task(
    State(ws): State<Ws>,
    Params(room): Params<String>,
    headers: HeaderMap,
    parsed: Result<Json<NewTask>, JsonRejection>,
) -> Answer {
    let user = writer(&ws, &headers, &room).await?;
    let task = ws.add_task(&room, &user, &request_seed(), body(parsed)?).await?;
    created(json!({ "task": task }))
}

async fn complete_task(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let task = ws.set_progress(&room, &id, Progress::Completed).await?;
    ok(json!({ "task": task }))
}

/// `PATCH …/tasks/{id} {"description"?, "due"?, "assignees"?, "title"?}`: a task edited on the
/// board (the fields given are replaced; `"due": ""` removes the due date).
async fn edit_task(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<TaskEdit>, JsonRejection>,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let task = ws.edit_task(&room, &id, body(parsed)?).await?;
    ok(json!({ "task": task }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressChange {
    progress: Progress,
}

/// `POST …/tasks/{id}/progress {"progress": "in-process"}`: a task moved on the board.
async fn task_progress(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<ProgressChange>, JsonRejection>,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let task = ws.set_progress(&room, &id, body(parsed)?.progress).await?;
    ok(json!({ "task": task }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignees {
    assignees: Vec<String>,
}

async fn assign_task(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<Assignees>, JsonRejection>,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let task = ws.assign(&room, &id, &body(parsed)?.assignees).await?;
    ok(json!({ "task": task }))
}

#[derive(Deserialize)]
struct Window {
    from: Option<String>,
    to: Option<String>,
}

fn instant(text: Option<&str>, default: DateTime<Utc>, name: &str) -> Result<DateTime<Utc>, Failure> {
    match text {
        None => Ok(default),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| fail(400, "M_INVALID_PARAM", &format!("{name} is not an RFC 3339 date-time"))),
    }
}

async fn list_calendar(
    State(ws): State<Ws>,
    Params(room): Params<String>,
    window: Result<Query<Window>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    member(&ws, &headers, &room).await?;
    let window = query(window)?;
    let now = ws.clock.now();
    let from = instant(window.from.as_deref(), now, "from")?;
    let to = instant(window.to.as_deref(), now + Duration::days(30), "to")?;
    if from >= to || to - from > Duration::days(3660) {
        return Err(fail(400, "M_INVALID_PARAM", "from must be before to, at most ten years apart"));
    }
    let occurrences = ws.occurrences(&room, from, to)?;
    let view = ws.view(&room).unwrap_or_default();
    let entries: Vec<_> = view.entries.values().collect();
    ok(json!({ "entries": entries, "occurrences": occurrences }))
}

async fn create_entry(
    State(ws): State<Ws>,
    Params(room): Params<String>,
    headers: HeaderMap,
    parsed: Result<Json<NewEntry>, JsonRejection>,
) -> Answer {
    let user = writer(&ws, &headers, &room).await?;
    let entry = ws.add_entry(&room, &user, &request_seed(), body(parsed)?).await?;
    created(json!({ "entry": entry }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rsvp {
    response: String,
}

async fn rsvp(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<Rsvp>, JsonRejection>,
) -> Answer {
    let user = writer(&ws, &headers, &room).await?;
    let entry = ws.rsvp(&room, &id, &user, &body(parsed)?.response).await?;
    ok(json!({ "entry": entry }))
}

/// `PATCH …/calendar/{uid} {"title"?, "start"?, "duration_minutes"?, "location"?,
/// "description"?}`: an entry edited in the calendar widget, as `!cal edit` edits it.
async fn edit_entry(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<EntryEdit>, JsonRejection>,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let entry = ws.edit_entry(&room, &id, body(parsed)?).await?;
    ok(json!({ "entry": entry }))
}

/// `DELETE …/calendar/{uid}`: the entry and all its occurrences, as `!cal rm`.
async fn delete_entry(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    ws.delete_entry(&room, &id).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Skip {
    /// The occurrence's start, as the calendar listing gives it (RFC 3339).
    start: String,
}

/// `POST …/calendar/{uid}/skip {"start": "2026-12-09T09:00:00Z"}`: that occurrence removed
/// (an `exdate`), as `!cal skip`.
async fn skip_occurrence(
    State(ws): State<Ws>,
    Params((room, id)): Params<(String, String)>,
    headers: HeaderMap,
    parsed: Result<Json<Skip>, JsonRejection>,
) -> Answer {
    writer(&ws, &headers, &room).await?;
    let start = body(parsed)?.start;
    let at = instant(Some(start.as_str()), ws.clock.now(), "start")?;
    let (entry, _) = ws.skip_occurrence(&room, &id, Which::At(at)).await?;
    ok(json!({ "entry": entry }))
}

#[derive(Deserialize)]
struct FeedQuery {
    token: Option<String>,
}

/// `GET /calendar/{roomId}.ics?token=…`: the token is the subscriber's secret, and it only
/// works while they are still joined to the room.
async fn ics_feed(
    State(ws): State<Ws>,
    Params(file): Params<String>,
    parsed: Result<Query<FeedQuery>, QueryRejection>,
) -> Answer {
    let room = file.strip_suffix(".ics").ok_or_else(|| fail(404, "M_NOT_FOUND", "feeds end in .ics"))?;
    let token = query(parsed)?.token.ok_or_else(|| fail(401, "M_MISSING_TOKEN", "the feed's token is required"))?;
    let feed = ws
        .feed(&token)
        .filter(|f| f.room == room)
        .ok_or_else(|| fail(403, "M_FORBIDDEN", "unknown or revoked feed token"))?;
    match ws.matrix.membership(room, &feed.user).await {
        Ok(Some(m)) if m == "join" => {}
        Ok(_) => return Err(fail(403, "M_FORBIDDEN", "the feed's owner left the room")),
        Err(e) => return Err(fail(502, "M_UNKNOWN", &format!("homeserver error: {e}"))),
    }
    let view = ws.view(room).ok_or_else(|| fail(404, "M_NOT_FOUND", "the bot is not in this room"))?;
    let entries: Vec<_> = view.entries.values().cloned().collect();
    let name = if view.name.is_empty() { room.to_owned() } else { view.name.clone() };
    let body = crate::ics::calendar(&name, &ws.config.server_name, &entries);
    Ok(([(header::CONTENT_TYPE, "text/calendar; charset=utf-8")], body).into_response())
}

#[derive(Deserialize)]
struct FilePath {
    /// A folder (`a/b`, empty: the top) for listings; a file (`a/b/name.pdf`) otherwise.
    #[serde(default)]
    path: String,
}

/// A library request: the caller, and the path asked for. The caller's rights are checked in
/// the folder the path resolves to, by the operation.
async fn library_request(
    ws: &Workspace,
    headers: &HeaderMap,
    library: &str,
    parsed: Result<Query<FilePath>, QueryRejection>,
) -> Result<(String, String), Failure> {
    let user = caller(ws, headers).await?;
    if !ws.view(library).is_some_and(|v| v.space && v.tree) {
        return Err(not_member());
    }
    Ok((user, query(parsed)?.path))
}

/// The folder at `dir` in `library`. A path that does not resolve is `404` only for members of
/// the library's top folder; to others it is the same refusal as an unknown library.
async fn resolve(ws: &Workspace, user: &str, library: &str, dir: &str) -> Result<String, Failure> {
    match ws.folder(library, dir) {
        Ok(folder) => Ok(folder),
        Err(failure) if failure.transient => Err(failure),
        Err(failure) => match ws.is_joined(library, user).await? {
            true => Err(failure),
            false => Err(not_member()),
        },
    }
}

/// The folder and file name of `path` in `library`.
async fn split_path(ws: &Workspace, user: &str, library: &str, path: &str) -> Result<(String, String), Failure> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if name.is_empty() {
        return Err(fail(400, "M_INVALID_PARAM", "path names no file"));
    }
    Ok((resolve(ws, user, library, dir).await?, name.to_owned()))
}

/// A refusal of the folder's own rights check, as the API answers it: not being joined to the
/// folder is the same answer as an unknown library.
async fn require(ws: &Workspace, folder: &str, user: &str, need: Role) -> Result<(), Failure> {
    if ws.role(folder, user).await? == Role::Outsider {
        return Err(not_member());
    }
    ws.require(folder, user, need).await
}

/// A branch as the API shows it: with the file event's id.
fn file_json(id: &str, branch: &crate::library::Branch) -> Value {
    let mut v = serde_json::to_value(branch).expect("branch serializes");
    v["event_id"] = json!(id);
    v
}

/// `GET /api/v1/libraries/{library}/files?path=a/b`: a folder's sub-folders and active files.
async fn list_files(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed).await?;
    let folder = resolve(&ws, &user, &library, &path).await?;
    require(&ws, &folder, &user, Role::Viewer).await?;
    let view = ws.view(&folder).unwrap_or_default();
    let folders: Vec<Value> = view
        .children
        .keys()
        .map(|room| json!({ "room_id": room, "name": ws.view(room).map(|v| v.name).unwrap_or_default() }))
        .collect();
    let files: Vec<Value> = view.branches.iter().filter(|(_, b)| b.active).map(|(id, b)| file_json(id, b)).collect();
    ok(json!({ "room_id": folder, "folders": folders, "files": files, "encrypted": view.encrypted }))
}

/// `DELETE /api/v1/libraries/{library}/files?path=a/name.pdf`.
async fn delete_file(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed).await?;
    let (folder, name) = split_path(&ws, &user, &library, &path).await?;
    require(&ws, &folder, &user, Role::Editor).await?;
    ws.remove_file(&user, &folder, &name, &request_seed()).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTo {
    /// The target folder's path (`a/b`; empty or `.` for the top).
    to: String,
}

/// `POST /api/v1/libraries/{library}/files/move?path=a/name.pdf` `{"to": "b"}`: as `!doc mv`;
/// the caller must be an editor of both folders.
async fn move_file(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed_query: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
    parsed: Result<Json<MoveTo>, JsonRejection>,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed_query).await?;
    let to = body(parsed)?.to;
    let (folder, name) = split_path(&ws, &user, &library, &path).await?;
    let target = resolve(&ws, &user, &library, &to).await?;
    require(&ws, &folder, &user, Role::Editor).await?;
    require(&ws, &target, &user, Role::Editor).await?;
    ws.move_file(&user, &folder, &name, &target, &request_seed()).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lock {
    locked: bool,
}

/// `POST /api/v1/libraries/{library}/files/lock?path=a/name.pdf` `{"locked": true}`.
async fn lock_file(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed_query: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
    parsed: Result<Json<Lock>, JsonRejection>,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed_query).await?;
    let lock = body(parsed)?;
    let (folder, name) = split_path(&ws, &user, &library, &path).await?;
    require(&ws, &folder, &user, Role::Editor).await?;
    let branch = ws.set_locked(&user, &folder, &name, lock.locked).await?;
    ok(json!({ "file": branch }))
}

/// `GET /api/v1/libraries/{library}/files/history?path=a/name.pdf`: versions, newest first.
async fn file_history(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed).await?;
    let (folder, name) = split_path(&ws, &user, &library, &path).await?;
    require(&ws, &folder, &user, Role::Viewer).await?;
    let versions: Vec<Value> =
        ws.history(&user, &folder, &name).await?.iter().map(|(id, b)| file_json(id, b)).collect();
    ok(json!({ "versions": versions }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFolder {
    name: String,
}

/// `POST /api/v1/libraries/{library}/folders?path=a` `{"name": "b"}`: a folder made in `a` (the
/// top when empty), as `!doc mkdir a/b` makes it; the caller must be an editor of `a`.
async fn make_folder(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed_query: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
    parsed: Result<Json<NewFolder>, JsonRejection>,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed_query).await?;
    let name = body(parsed)?.name;
    let parent = resolve(&ws, &user, &library, &path).await?;
    require(&ws, &parent, &user, Role::Viewer).await?;
    // A folder of an encrypted library is encrypted too, as `!doc mkdir` makes it.
    let encrypted = ws.view(&parent).is_some_and(|v| v.encrypted);
    let room = ws.create_tree(&name, &user, Some(&parent), &request_seed(), encrypted).await?;
    created(json!({ "room_id": room }))
}

/// A file already uploaded to the media repository, to be filed: the `url` of a clear file, or
/// the `file` object (RFC: Matrix's `EncryptedFile`) of one encrypted by the client, whose key
/// the appservice passes on without using.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFile {
    url: Option<String>,
    file: Option<Value>,
    #[serde(default)]
    info: Option<Value>,
}

/// `POST /api/v1/libraries/{library}/files?path=a/name.pdf` `{"url": "mxc://…", "info"?}`: the
/// file filed as `!doc` and a linked room's files are (a new version when the name is there);
/// the caller must be an editor of `a`.
async fn add_file(
    State(ws): State<Ws>,
    Params(library): Params<String>,
    parsed_query: Result<Query<FilePath>, QueryRejection>,
    headers: HeaderMap,
    parsed: Result<Json<NewFile>, JsonRejection>,
) -> Answer {
    let (user, path) = library_request(&ws, &headers, &library, parsed_query).await?;
    let new = body(parsed)?;
    let mxc = |v: Option<&str>| v.is_some_and(|u| u.starts_with("mxc://") && u.len() < 512);
    let mut source = match (&new.url, &new.file) {
        (Some(url), None) if mxc(Some(url)) => json!({ "url": url }),
        (None, Some(file)) if file.is_object() && mxc(file["url"].as_str()) => json!({ "file": file }),
        _ => return Err(fail(400, "M_INVALID_PARAM", "give either url or file, with an mxc:// URI")),
    };
    if let Some(info) = new.info.filter(Value::is_object) {
        source["info"] = info;
    }
    let (folder, name) = split_path(&ws, &user, &library, &path).await?;
    if name.len() > 255 {
        return Err(fail(400, "M_INVALID_PARAM", "the file name is too long"));
    }
    require(&ws, &folder, &user, Role::Viewer).await?;
    // The caller hands the key to us over HTTPS: into a clear library it would reach the servers.
    let (branch, duplicate) = ws.file(&user, &folder, &name, &source, &request_seed(), false).await?;
    created(json!({ "file": branch, "duplicate_of": duplicate }))
}
