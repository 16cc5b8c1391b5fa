//! The admin API under `/_synapse/admin`, with Synapse's paths, parameters and response shapes so
//! existing tools (synapse-admin, Ketesa, operators' scripts) work unchanged. Every endpoint but
//! `server_version` needs a server admin's access token (403 `M_FORBIDDEN` otherwise); every change is written to the
//! audit log (`crate::audit`). Synapse's shapes are not in ruma, so these handlers read and write
//! JSON themselves, still through Matrix error bodies.

mod account_validity;
pub(crate) mod antivirus;
pub(crate) mod destinations;
mod lookups;
pub(crate) mod media;
mod memberships;
pub(crate) mod reports;
pub(crate) mod room_actions;
pub(crate) mod rooms;
pub(crate) mod tokens;
pub(crate) mod users;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use http::{request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{
    error::ApiError,
    ruma::{authenticate, TokenUse},
};
use crate::{error::Error, services::Services, users::TokenOwner};

type AdminRouter = Router<Arc<Services>>;

/// What an admin handler answers.
pub type Answer = Result<Response, ApiError>;

pub fn ok(body: Value) -> Answer {
    Ok(Json(body).into_response())
}

/// The authenticated server admin making the request.
pub struct Admin(pub TokenOwner);

impl FromRequestParts<Arc<Services>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, ApiError> {
        let owner = authenticate(parts, services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
        if !services.users.account(&owner.user_id)?.is_some_and(|a| a.admin && !a.deactivated) {
            return Err(Error::forbidden("You are not a server admin").into());
        }
        Ok(Admin(owner))
    }
}

impl Admin {
    /// Writes an audit entry for a change this admin made.
    pub fn audit(&self, services: &Services, action: &str, target: &str, details: Value) -> Result<(), ApiError> {
        services.audit.record(self.0.user_id.as_str(), action, target, details).map_err(ApiError::from)
    }
}

/// A JSON body (an empty body reads as `{}`): `M_NOT_JSON` when it does not parse, `M_BAD_JSON`
/// naming the field when a field has the wrong type, `M_TOO_LARGE` past `limits.max_request_size`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Services>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, ApiError> {
        let limit = services.config.limits.max_request_size;
        let bytes =
            axum::body::to_bytes(request.into_body(), limit as usize).await.map_err(|_| ApiError::too_large(limit))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let value: Value = serde_json::from_slice(bytes).map_err(ApiError::not_json)?;
        serde_path_to_error::deserialize(value)
            .map(Body)
            .map_err(|e| Error::BadJson(format!("{}: {}", e.path(), e.inner())).into())
    }
}

/// The query string, with typed reads that answer `400 M_INVALID_PARAM` naming the parameter.
pub struct Params(HashMap<String, String>);

impl FromRequestParts<Arc<Services>> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Services>) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(form_urlencoded::parse(query.as_bytes()).into_owned().collect()))
    }
}

impl Params {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn num(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.str(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::invalid_param(format!("{name} must be a non-negative integer")).into())
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(Error::invalid_param(format!("{name} must be true or false")).into()),
        }
    }

    /// `from` and `limit` (default `limit`: 100).
    pub fn page(&self) -> Result<(usize, usize), ApiError> {
        let from = self.num("from")?.unwrap_or(0) as usize;
        let limit = self.num("limit")?.unwrap_or(100) as usize;
        Ok((from, limit))
    }

    /// `dir`: `f` (default) or `b`: whether to reverse the order.
    pub fn backwards(&self) -> Result<bool, ApiError> {
        match self.str("dir") {
            None | Some("f") => Ok(false),
            Some("b") => Ok(true),
            Some(_) => Err(Error::invalid_param("dir must be f or b").into()),
        }
    }
}

/// Sorts admin list rows by one field, numbers by value and text alphabetically.
pub fn sort_by_field(rows: &mut [Value], field: &str) {
    let key = |v: &Value| (v[field].as_u64().unwrap_or(0), v[field].as_str().unwrap_or("").to_owned());
    rows.sort_by_key(key);
}

/// A local user who exists, from a path: 400 `M_INVALID_PARAM` when the id is not one of ours,
/// 404 `M_NOT_FOUND` when there is no such account.
pub fn existing_user(services: &Services, raw: &str) -> Result<(ruma::OwnedUserId, crate::users::Account), ApiError> {
    let user = ruma::UserId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?;
    if !services.users.is_local(&user) {
        return Err(Error::invalid_param("Can only look up local users").into());
    }
    let account = services.users.account(&user)?.ok_or_else(|| Error::not_found("User not found"))?;
    Ok((user, account))
}

/// One page of `rows` as Synapse pages admin lists: the page and the next `from`, if any.
pub fn paginate<T>(rows: Vec<T>, from: usize, limit: usize) -> (Vec<T>, Option<usize>) {
    let total = rows.len();
    let page: Vec<T> = rows.into_iter().skip(from).take(limit).collect();
    let next = (from + page.len() < total && limit > 0).then_some(from + page.len());
    (page, next)
}

/// Public, as in Synapse: admin UIs show the version before anyone signs in.
async fn server_version() -> Answer {
    ok(json!({ "server_version": format!("Hemicycle/{}", env!("CARGO_PKG_VERSION")) }))
}

/// `GET /_synapse/admin/v1/audit` (Hemicycle's): the audit log, newest first.
async fn audit_log(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Answer {
    let (from, limit) = params.page()?;
    let all = services.audit.list()?;
    let total = all.len();
    let (page, next) = paginate(all, from, limit);
    let entries: Vec<Value> = page
        .into_iter()
        .map(|(id, e)| json!({ "id": id, "ts": e.ts, "admin": e.admin, "action": e.action, "target": e.target, "details": e.details }))
        .collect();
    let mut body = json!({ "entries": entries, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    ok(body)
}

/// Every admin route; other `/_synapse/admin` paths get the client API's 404 `M_UNRECOGNIZED`
/// (405 for a known path with another method).
pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = router
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v1/audit", get(audit_log));
    let router = antivirus::routes(router);
    let areas: [fn(AdminRouter) -> AdminRouter; 10] = [
        users::routes,
        account_validity::routes,
        memberships::routes,
        rooms::routes,
        room_actions::routes,
        reports::routes,
        tokens::routes,
        destinations::routes,
        media::routes,
        lookups::routes,
    ];
    areas.into_iter().fold(router, |router, area| area(router))
}

/// The created status for upserts that made something new.
pub fn created(body: Value) -> Answer {
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
