//! Registration tokens: list, query, create, update, delete.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ok, Admin, Answer, Body, Params};
use crate::{api::error::ApiError, error::Error, services::Services, users::registration_tokens::RegistrationToken};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/registration_tokens", get(list))
        .route("/_synapse/admin/v1/registration_tokens/new", post(create))
        .route("/_synapse/admin/v1/registration_tokens/{token}", get(query).put(update).delete(delete))
}

fn token_json(token: &str, record: &RegistrationToken) -> Value {
    json!({
        "token": token,
        "uses_allowed": record.uses_allowed,
        "pending": 0,
        "completed": record.completed,
        "expiry_time": record.expiry_time,
    })
}

async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let tokens: Vec<Value> =
        services.registration_tokens.list(params.bool("valid")?)?.iter().map(|(t, r)| token_json(t, r)).collect();
    ok(json!({ "registration_tokens": tokens }))
}

async fn query(State(services): State<Arc<Services>>, _: Admin, Path(token): Path<String>) -> Answer {
    let record =
        services.registration_tokens.get(&token)?.ok_or_else(|| Error::not_found("No such registration token"))?;
    ok(token_json(&token, &record))
}

/// Synapse's fields; others are ignored, as Synapse ignores them.
#[derive(Deserialize)]
struct New {
    token: Option<String>,
    uses_allowed: Option<u64>,
    expiry_time: Option<u64>,
    length: Option<u64>,
}

async fn create(State(services): State<Arc<Services>>, admin: Admin, Body(body): Body<New>) -> Answer {
    let (token, record) =
        create_token(&services, &admin, body.token, body.length, body.uses_allowed, body.expiry_time)?;
    ok(token_json(&token, &record))
}

/// Makes a registration token (given, or random of `length`) and records it; shared with the
/// console.
pub(crate) fn create_token(
    services: &Services,
    admin: &Admin,
    token: Option<String>,
    length: Option<u64>,
    uses_allowed: Option<u64>,
    expiry_time: Option<u64>,
) -> Result<(String, RegistrationToken), ApiError> {
    let (token, record) = services.registration_tokens.create(token, length, uses_allowed, expiry_time)?;
    admin.audit(
        services,
        "registration_token.create",
        &token,
        json!({ "uses_allowed": record.uses_allowed, "expiry_time": record.expiry_time }),
    )?;
    Ok((token, record))
}

/// A field that may be absent (unchanged), `null` (unlimited, never) or a non-negative integer.
fn nullable(body: &Map<String, Value>, key: &str) -> Result<Option<Option<u64>>, ApiError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_u64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| Error::invalid_param(format!("{key} must be a non-negative integer or null")).into()),
    }
}

async fn update(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(token): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> Answer {
    // Only these two change; the rest of the record an admin UI sends back (`token`, `pending`,
    // `completed`) is ignored, as Synapse does.
    let record = services.registration_tokens.update(
        &token,
        nullable(&body, "uses_allowed")?,
        nullable(&body, "expiry_time")?,
    )?;
    let changed: Map<String, Value> =
        body.into_iter().filter(|(k, _)| matches!(k.as_str(), "uses_allowed" | "expiry_time")).collect();
    admin.audit(&services, "registration_token.update", &token, Value::Object(changed))?;
    ok(token_json(&token, &record))
}

async fn delete(State(services): State<Arc<Services>>, admin: Admin, Path(token): Path<String>) -> Answer {
    delete_token(&services, &admin, &token)?;
    ok(json!({}))
}

/// Deletes a registration token and records it; shared with the console.
pub(crate) fn delete_token(services: &Services, admin: &Admin, token: &str) -> Result<(), ApiError> {
    services.registration_tokens.delete(token)?;
    admin.audit(services, "registration_token.delete", token, json!({}))
}
