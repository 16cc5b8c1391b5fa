//! MatrixRTC discovery (MSC4143): the transports (SFUs) clients may use for calls, from
//! `[matrix_rtc] transports`, at `GET /_matrix/client/v1/rtc/transports` (and its unstable path)
//! and as `org.matrix.msc4143.rtc_foci` in `/.well-known/matrix/client`, where Element Call
//! looks first: without one it refuses to start ("MISSING_MATRIX_RTC_FOCUS").
//!
//! Also the built-in LiveKit authorisation service (`[matrix_rtc.livekit]`, `crate::rtc`) at
//! [`LIVEKIT_PREFIX`]: `POST …/get_token`, the legacy `POST …/sfu/get`, `POST
//! …/delegate_delayed_leave` and the SFU's webhook `POST …/sfu_webhook`, with the request and
//! answer shapes and the errors of element-hq/lk-jwt-service, which Element Call speaks.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, client_ip, read_body, TokenUse},
    },
    ratelimit::Action,
    rtc::{room_alias, Delegation, Identity, Presence, Refusal, TokenRequest, LEGACY_SLOT},
    services::Services,
};

/// Where the built-in LiveKit authorisation service is served: its `livekit_service_url` is
/// the client API's base URL followed by this.
pub const LIVEKIT_PREFIX: &str = "/_hemicycle/livekit";

/// A token request is a few ids and a token: anything much larger is not one.
const MAX_TOKEN_REQUEST: u64 = 16 * 1024;

/// A webhook event describes one room and one participant.
const MAX_WEBHOOK: u64 = 64 * 1024;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v1/rtc/transports", get(transports))
        .route("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", get(transports))
        .route("/.well-known/matrix/client", get(well_known_client))
        .route(&format!("{LIVEKIT_PREFIX}/get_token"), post(get_token))
        .route(&format!("{LIVEKIT_PREFIX}/sfu/get"), post(sfu_get))
        .route(&format!("{LIVEKIT_PREFIX}/delegate_delayed_leave"), post(delegate_delayed_leave))
        .route(&format!("{LIVEKIT_PREFIX}/sfu_webhook"), post(sfu_webhook))
        .route(&format!("{LIVEKIT_PREFIX}/healthz"), get(healthz))
}

/// The transports announced: those configured, else, with the built-in authorisation service
/// on, a LiveKit transport pointing at it.
fn announced(services: &Services) -> Vec<Value> {
    let configured = &services.config.matrix_rtc.transports;
    if !configured.is_empty() {
        return configured.iter().map(|t| Value::Object(t.clone())).collect();
    }
    match &services.livekit {
        Some(_) => vec![json!({
            "type": "livekit",
            "livekit_service_url": format!("{}{LIVEKIT_PREFIX}", services.config.client_base_url()),
        })],
        None => Vec::new(),
    }
}

/// The transports, under `rtc_transports` (the key Synapse answers with and matrix-js-sdk's
/// `_unstable_getRTCTransports` reads). With none, 404 `M_UNRECOGNIZED`, as Synapse answers
/// without MSC4143: Element Call then looks for `org.matrix.msc4143.rtc_foci` in the well-known
/// file at the server name (which a proxy may serve), whereas any 200 answer is final to it and,
/// without a LiveKit transport, ends in "MISSING_MATRIX_RTC_FOCUS".
async fn transports(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let transports = announced(&services);
    if transports.is_empty() {
        return Err(ApiError::unrecognized_path());
    }
    Ok(Json(json!({ "rtc_transports": transports })))
}

/// `/.well-known/matrix/client`: the client API's URL and, when there are transports, the RTC
/// foci.
async fn well_known_client(State(services): State<Arc<Services>>) -> Json<Value> {
    let mut answer = json!({ "m.homeserver": { "base_url": services.config.client_base_url() } });
    let transports = announced(&services);
    if !transports.is_empty() {
        answer["org.matrix.msc4143.rtc_foci"] = json!(transports);
    }
    Json(answer)
}

// The bodies are read as lk-jwt-service reads them: every field optional (a missing one is
// `M_BAD_JSON` with lk-jwt-service's message), an unknown one refused as `M_NOT_JSON` (its
// decoder disallows unknown fields); the fields it accepts and ignores are accepted here too.

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct OpenIdToken {
    access_token: String,
    matrix_server_name: String,
    #[allow(dead_code)]
    token_type: String,
    #[allow(dead_code)]
    expires_in: i64,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Member {
    id: String,
    claimed_user_id: String,
    claimed_device_id: String,
}

/// `POST …/get_token`'s body (lk-jwt-service's `SFURequest`), and `…/delegate_delayed_leave`'s.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct GetTokenBody {
    room_id: String,
    slot_id: String,
    openid_token: OpenIdToken,
    member: Member,
    delay_id: String,
    delay_timeout: i64,
    /// Deprecated, ignored by lk-jwt-service too: the client API is found by the server name.
    #[allow(dead_code)]
    delay_cs_api_url: String,
}

/// `POST …/sfu/get`'s body (lk-jwt-service's `LegacySFURequest`).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct SfuGetBody {
    room: String,
    openid_token: OpenIdToken,
    device_id: String,
    delay_id: String,
    delay_timeout: i64,
    #[allow(dead_code)]
    delay_cs_api_url: String,
}

fn bad_json(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
}

/// The service (404 when it is off), the caller's rate limit, and the body, bounded and parsed
/// (`M_NOT_JSON` for a body that is not the request's JSON, as lk-jwt-service answers).
async fn token_request<T: for<'de> Deserialize<'de>>(
    services: &Services,
    request: Request,
) -> Result<(&crate::rtc::LiveKit, T), ApiError> {
    let livekit = services.livekit.as_ref().ok_or_else(ApiError::unrecognized_path)?;
    let (parts, body) = request.into_parts();
    if let Some(ip) = client_ip(&parts, services) {
        services.rate_limiter.check(Action::RtcToken, &ip.to_string())?;
    }
    let bytes = read_body(&parts, body, MAX_TOKEN_REQUEST).await?;
    let body = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Error reading request"))?;
    Ok((livekit, body))
}

/// The delayed leave handed over with a request: `delay_id` and `delay_timeout` (ms) together,
/// or neither.
fn delegation(delay_id: &str, delay_timeout: i64) -> Result<Option<Delegation<'_>>, ApiError> {
    match (delay_id.is_empty(), delay_timeout > 0) {
        (true, false) => Ok(None),
        (false, true) => {
            Ok(Some(Delegation { delay_id, timeout: Duration::from_millis(delay_timeout.unsigned_abs()) }))
        }
        _ => Err(bad_json("The request body is missing `delay_id` or `delay_timeout`")),
    }
}

fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unauthorized => {
            ApiError::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "The request could not be authorised.")
        }
        Refusal::Sfu(error) => {
            tracing::error!(%error, "the SFU did not open a call's room");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Unable to create room on SFU")
        }
        Refusal::Delegation(message) => bad_json(message),
        Refusal::NotFullAccess => bad_json(NOT_FULL_ACCESS),
        Refusal::TooManyDelegations => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many delayed leaves are delegated for users of this server",
        ),
        Refusal::Internal => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Internal Server Error"),
    }
}

const NOT_FULL_ACCESS: &str = "Delegation of delayed events is only supported for full access users";

fn answer(result: Result<crate::rtc::Grant, Refusal>) -> Response {
    match result {
        Ok(grant) => Json(json!({ "url": grant.url, "jwt": grant.jwt })).into_response(),
        Err(error) => refusal(error).into_response(),
    }
}

/// `POST …/get_token`: a token for one member of one MatrixRTC slot of a room.
async fn get_token(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (livekit, body) = token_request::<GetTokenBody>(&services, request).await?;
    let request = member_request(&body, Endpoint::GetToken)?;
    let delegation = delegation(&body.delay_id, body.delay_timeout)?;
    Ok(answer(livekit.grant(&services, request, delegation).await))
}

/// Which endpoint a `/get_token` body came to: lk-jwt-service words two of its refusals
/// differently at `delegate_delayed_leave` (without the "a").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    GetToken,
    DelegateDelayedLeave,
}

/// The checks of a `/get_token` body (shared with `delegate_delayed_leave`, which takes the same
/// body) and the token request it makes.
fn member_request(body: &GetTokenBody, endpoint: Endpoint) -> Result<TokenRequest<'_>, ApiError> {
    let get_token = endpoint == Endpoint::GetToken;
    if body.room_id.is_empty() || body.slot_id.is_empty() {
        return Err(bad_json("The request body is missing `room_id` or `slot_id`"));
    }
    let member = &body.member;
    if member.id.is_empty() || member.claimed_user_id.is_empty() || member.claimed_device_id.is_empty() {
        return Err(bad_json(if get_token {
            "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`"
        } else {
            "The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`"
        }));
    }
    let token = &body.openid_token;
    if token.access_token.is_empty() || token.matrix_server_name.is_empty() {
        return Err(bad_json(if get_token {
            "The request body `openid_token` is missing a `access_token` or `matrix_server_name`"
        } else {
            "The request body `openid_token` is missing `access_token` or `matrix_server_name`"
        }));
    }
    Ok(TokenRequest {
        openid_token: &token.access_token,
        matrix_server_name: &token.matrix_server_name,
        claimed_user_id: Some(&member.claimed_user_id),
        room: room_alias(&body.room_id, &body.slot_id),
        identity: Identity::Member { device_id: &member.claimed_device_id, member_id: &member.id },
    })
}

/// `POST …/sfu/get` (before MatrixRTC slots): a token for a room's call, the identity being
/// `<user id>:<device id>`.
async fn sfu_get(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (livekit, body) = token_request::<SfuGetBody>(&services, request).await?;
    if body.room.is_empty() {
        return Err(bad_json("Missing room parameter"));
    }
    let token = &body.openid_token;
    if token.access_token.is_empty() || token.matrix_server_name.is_empty() {
        return Err(bad_json("Missing OpenID token parameters"));
    }
    let delegation = delegation(&body.delay_id, body.delay_timeout)?;
    let request = TokenRequest {
        openid_token: &token.access_token,
        matrix_server_name: &token.matrix_server_name,
        claimed_user_id: None,
        room: room_alias(&body.room, LEGACY_SLOT),
        identity: Identity::Legacy { device_id: &body.device_id },
    };
    Ok(answer(livekit.grant(&services, request, delegation).await))
}

/// `POST …/delegate_delayed_leave`: `/get_token`'s body with `delay_id` and `delay_timeout`
/// required, from a participant already on the SFU; answers `{}`.
async fn delegate_delayed_leave(
    State(services): State<Arc<Services>>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (livekit, body) = token_request::<GetTokenBody>(&services, request).await?;
    let request = member_request(&body, Endpoint::DelegateDelayedLeave)?;
    let Some(delegation) = delegation(&body.delay_id, body.delay_timeout)? else {
        return Err(bad_json("The request body is missing `delay_id` or `delay_timeout`"));
    };
    livekit.delegate_leave(&services, request, delegation).await.map_err(|error| match error {
        // Here lk-jwt-service forbids rather than calls the request malformed.
        Refusal::NotFullAccess => ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", NOT_FULL_ACCESS),
        other => refusal(other),
    })?;
    Ok(Json(json!({})))
}

/// `GET …/healthz`, as lk-jwt-service serves it for load balancers: 200 while the service is on.
async fn healthz(State(services): State<Arc<Services>>) -> Result<StatusCode, ApiError> {
    services.livekit.as_ref().ok_or_else(ApiError::unrecognized_path)?;
    Ok(StatusCode::OK)
}

/// The SFU's webhook (LiveKit posts its room events here when configured with this URL):
/// participants joining and leaving drive the delegated delayed leaves. Answered 401
/// `M_UNAUTHORIZED` unless signed as LiveKit signs webhooks.
async fn sfu_webhook(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>, ApiError> {
    let livekit = services.livekit.as_ref().ok_or_else(ApiError::unrecognized_path)?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts, body, MAX_WEBHOOK).await?;
    let authorization = parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !livekit.verify_webhook(authorization, &bytes) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "The webhook is not signed by the SFU"));
    }
    let event: Value = serde_json::from_slice(&bytes).map_err(ApiError::not_json)?;
    let presence = match event["event"].as_str() {
        Some("participant_joined") => Presence::Joined,
        Some("participant_left" | "participant_connection_aborted") => Presence::Left,
        _ => return Ok(Json(json!({}))),
    };
    let (Some(room), Some(identity)) = (event["room"]["name"].as_str(), event["participant"]["identity"].as_str())
    else {
        return Err(bad_json("The webhook names no room or participant"));
    };
    livekit.participant(room, identity, presence);
    Ok(Json(json!({})))
}
