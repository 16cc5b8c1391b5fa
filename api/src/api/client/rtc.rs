//! MatrixRTC discovery (MSC4143): the transports (SFUs) clients may use for calls, from
//! `[matrix_rtc] transports`, at `GET /_matrix/client/v1/rtc/transports` (and its unstable path)
//! and as `org.matrix.msc4143.rtc_foci` in `/.well-known/matrix/client`, where Element Call
//! looks first: without one it refuses to start ("MISSING_MATRIX_RTC_FOCUS").

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, TokenUse},
    },
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v1/rtc/transports", get(transports))
        .route("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", get(transports))
        .route("/.well-known/matrix/client", get(well_known_client))
}

/// The configured transports, as written (Synapse answers `{}` when there are none).
async fn transports(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let transports = &services.config.matrix_rtc.transports;
    if transports.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "transports": transports })))
}

/// `/.well-known/matrix/client`: the client API's URL and, when transports are configured,
/// the RTC foci.
async fn well_known_client(State(services): State<Arc<Services>>) -> Json<Value> {
    let mut answer = json!({ "m.homeserver": { "base_url": services.config.client_base_url() } });
    let transports = &services.config.matrix_rtc.transports;
    if !transports.is_empty() {
        answer["org.matrix.msc4143.rtc_foci"] = json!(transports);
    }
    Json(answer)
}
