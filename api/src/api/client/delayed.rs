//! Delayed events (MSC4140) at the paths Synapse serves: `?org.matrix.msc4140.delay=MS` on
//! `PUT /rooms/{room}/send/…` and `PUT /rooms/{room}/state/…` schedules the event and answers
//! `{"delay_id"}`; `/_matrix/client/unstable/org.matrix.msc4140/delayed_events…` lists, gets,
//! restarts, cancels and sends them. Restart, cancel and send take the delay id alone, with no
//! access token (the delay id is the capability): an SFU's authorisation service restarts a
//! call member's leave that way.

use std::sync::Arc;

use axum::{
    extract::{FromRequest, Path, Request, State},
    response::{IntoResponse, Response},
    routing::{get, on, post, MethodFilter},
    Json, Router,
};
use http::StatusCode;
use ruma::api::{
    client::{message::send_message_event, state::send_state_event},
    path_builder::PathBuilder,
    Metadata,
};
use serde_json::{json, Value};

use super::rooms;
use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, client_ip, read_body, Ruma, RumaResponse, TokenUse},
    },
    error::Error,
    ratelimit,
    rooms::{delayed::AddRefused, NewEvent},
    services::Services,
};

const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/// Registers the send and state routes (with and without a delay) and the management routes.
pub fn routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    for path in send_message_event::v3::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, on(MethodFilter::PUT, send_message));
    }
    for path in send_state_event::v3::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, on(MethodFilter::PUT, send_state));
        // An empty state key is sent as `/state/{type}/` or `/state/{type}` (see `ruma.rs`).
        if let Some(stem) = path.strip_suffix("/{state_key}") {
            router = router.route(stem, on(MethodFilter::PUT, send_state));
            router = router.route(&format!("{stem}/"), on(MethodFilter::PUT, send_state));
        }
    }
    router
        .route(PREFIX, get(list))
        .route(&format!("{PREFIX}/{{delay_id}}"), get(get_one).post(update))
        .route(&format!("{PREFIX}/{{delay_id}}/{{action}}"), post(action))
}

/// The `org.matrix.msc4140.delay` query parameter, when given.
fn delay_param(request: &Request) -> Result<Option<u64>, ApiError> {
    let query = request.uri().query().unwrap_or("");
    let Some((_, value)) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "org.matrix.msc4140.delay")
    else {
        return Ok(None);
    };
    value.parse::<u64>().map(Some).map_err(|_| {
        Error::invalid_param("org.matrix.msc4140.delay must be a non-negative integer of milliseconds").into()
    })
}

fn refused(refusal: AddRefused) -> ApiError {
    match refusal {
        AddRefused::Disabled => {
            ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Sending delayed events has been disallowed")
        }
        AddRefused::TooLong { requested_ms, max_delay_ms } => {
            // Synapse's errcode and message, with the fields earlier revisions answered, which
            // Element Call (matrix-js-sdk) reads to shorten its delay and try again.
            let mut error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE",
                format!("The requested delay ({requested_ms}ms) exceeds the allowed maximum ({max_delay_ms}ms)"),
            );
            error.body["org.matrix.msc4140.errcode"] = json!("M_MAX_DELAY_EXCEEDED");
            error.body["org.matrix.msc4140.max_delay"] = json!(max_delay_ms);
            error.body["max_delay"] = json!(max_delay_ms);
            error
        }
        AddRefused::Other(error) => error.into(),
    }
}

fn content_of(raw: &ruma::serde::Raw<impl Sized>) -> Result<Value, ApiError> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::BadJson(e.to_string()).into())
}

async fn send_message(State(services): State<Arc<Services>>, request: Request) -> Response {
    let delay = match delay_param(&request) {
        Ok(delay) => delay,
        Err(error) => return error.into_response(),
    };
    let request = match Ruma::<send_message_event::v3::Request>::from_request(request, &services).await {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let Some(delay) = delay else {
        return rooms::send_message(services, request).await.map(RumaResponse).map_err(ApiError::from).into_response();
    };
    let result = async {
        let owner = request.sender()?.user_id.clone();
        let body = request.body;
        let event = NewEvent::message(body.event_type.to_string().into(), content_of(&body.body)?);
        let delay_id =
            services.delayed_events.add(&services, &owner, &body.room_id, event, delay).await.map_err(refused)?;
        Ok::<_, ApiError>(Json(json!({ "delay_id": delay_id })))
    };
    result.await.into_response()
}

async fn send_state(State(services): State<Arc<Services>>, request: Request) -> Response {
    let delay = match delay_param(&request) {
        Ok(delay) => delay,
        Err(error) => return error.into_response(),
    };
    let request = match Ruma::<send_state_event::v3::Request>::from_request(request, &services).await {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let Some(delay) = delay else {
        return rooms::send_state(services, request).await.map(RumaResponse).map_err(ApiError::from).into_response();
    };
    let result = async {
        let owner = request.sender()?.user_id.clone();
        let body = request.body;
        let event = NewEvent::state(body.event_type.clone(), body.state_key.clone(), content_of(&body.body)?);
        let delay_id =
            services.delayed_events.add(&services, &owner, &body.room_id, event, delay).await.map_err(refused)?;
        Ok::<_, ApiError>(Json(json!({ "delay_id": delay_id })))
    };
    result.await.into_response()
}

/// `GET …/delayed_events`: the caller's scheduled events.
async fn list(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    let owner = authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let events = services.delayed_events.list(&owner.user_id)?;
    let events: Vec<Value> = events.iter().map(|(id, record)| record.to_json(id)).collect();
    Ok(Json(json!({ "delayed_events": events })))
}

/// `GET …/delayed_events/{delay_id}`: one of the caller's scheduled events.
async fn get_one(
    State(services): State<Arc<Services>>,
    Path(delay_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    let owner = authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let record = services.delayed_events.get(&delay_id)?.filter(|r| r.owner == owner.user_id);
    let record = record.ok_or_else(|| Error::not_found("Delayed event not found"))?;
    Ok(Json(record.to_json(&delay_id)))
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Restart,
    Send,
}

/// Runs an action named by the delay id alone. Rate limited per client address first: the id is
/// the only secret, so whoever tries ids must not get far.
async fn run(
    services: &Services,
    parts: &http::request::Parts,
    delay_id: &str,
    action: Action,
) -> Result<Json<Value>, ApiError> {
    if let Some(ip) = client_ip(parts, services) {
        services.rate_limiter.check(ratelimit::Action::DelayedEventAction, &ip.to_string())?;
    }
    let delayed = &services.delayed_events;
    match action {
        Action::Cancel => delayed.cancel(delay_id).await?,
        Action::Restart => delayed.restart(delay_id).await?,
        Action::Send => delayed.send_now(services, delay_id).await?,
    }
    Ok(Json(json!({})))
}

/// `POST …/delayed_events/{delay_id}` with `{"action": "cancel" | "restart" | "send"}` (the
/// earlier revision of the MSC, still served by Synapse).
async fn update(
    State(services): State<Arc<Services>>,
    Path(delay_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts, body, services.config.limits.max_request_size).await?;
    let body: Value = serde_json::from_slice(&bytes).map_err(ApiError::not_json)?;
    if !body.is_object() {
        return Err(Error::BadJson("the body must be a JSON object".into()).into());
    }
    let action = match body.get("action") {
        None => return Err(Error::MissingParam("'action' is missing".into()).into()),
        Some(Value::String(a)) if a == "cancel" => Action::Cancel,
        Some(Value::String(a)) if a == "restart" => Action::Restart,
        Some(Value::String(a)) if a == "send" => Action::Send,
        Some(_) => {
            return Err(Error::invalid_param("'action' is not one of 'cancel', 'restart', 'send'").into());
        }
    };
    run(&services, &parts, &delay_id, action).await
}

/// `POST …/delayed_events/{delay_id}/cancel|restart|send`.
async fn action(
    State(services): State<Arc<Services>>,
    Path((delay_id, action)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    let action = match action.as_str() {
        "cancel" => Action::Cancel,
        "restart" => Action::Restart,
        "send" => Action::Send,
        _ => return Err(ApiError::unrecognized_path()),
    };
    run(&services, &parts, &delay_id, action).await
}
