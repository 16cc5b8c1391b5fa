//! The OAuth 2.0 API's HTTP side: discovery (`/_matrix/client/v1/auth_metadata` and the unstable
//! paths clients still try), and the authorization server's own endpoints under [`BASE`]:
//! dynamic client registration, the authorization endpoint (the sign-in page, `pages.rs`), the
//! token endpoint and revocation. Errors of these endpoints are OAuth errors
//! (`{"error": "invalid_grant", "error_description": …}`, RFC 6749 section 5.2), not Matrix ones.
//! With `[oauth] enabled = false` every one of them answers like an unknown path.

mod account;
mod link;
mod pages;
mod upstream;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use http::{header, HeaderValue, StatusCode};
use ruma::api::client::discovery::get_authorization_server_metadata;
use serde_json::{json, Value};

use super::{error::ApiError, ruma::RouterExt};
use crate::{
    error::{Error, Result},
    oauth::{ErrorCode, OauthError, Tokens, DEVICE_CODE_LIFETIME_S, DEVICE_GRANT, DEVICE_POLL_INTERVAL_S},
    ratelimit::Action,
    services::Services,
};

pub use account::{action_url, CROSS_SIGNING_RESET};

/// Where the authorization server's endpoints live.
pub const BASE: &str = "/_hemicycle/oauth2";

/// The issuer: the client API's public base URL (RFC 8414: https, no query or fragment).
pub fn issuer(services: &Services) -> String {
    format!("{}/", services.config.client_base_url())
}

fn endpoint(services: &Services, path: &str) -> String {
    format!("{}{BASE}{path}", services.config.client_base_url())
}

/// An OAuth error as the RFCs put it on the wire: 400 (401 for an unknown client), a JSON body
/// with `error` and `error_description`, never cached.
struct OauthResponse(OauthError);

impl IntoResponse for OauthResponse {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = json!({ "error": self.0.code.as_str(), "error_description": self.0.description });
        no_store((status, Json(body)).into_response())
    }
}

fn invalid_request(description: impl Into<String>) -> OauthResponse {
    OauthResponse(OauthError::new(ErrorCode::InvalidRequest, description))
}

/// Token answers and errors must not be cached (RFC 6749 section 5.1).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(auth_metadata)
        .route("/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", get(auth_issuer))
        .route(&format!("{BASE}/register"), post(register))
        .route(&format!("{BASE}/token"), post(token))
        .route(&format!("{BASE}/revoke"), post(revoke))
        .route(&format!("{BASE}/device"), post(device_authorization))
        .merge(pages::routes())
        .merge(upstream::routes())
        .merge(account::routes())
        .merge(link::routes())
}

/// The server metadata (RFC 8414 with the spec's additions), or `404 M_UNRECOGNIZED` while
/// `[oauth]` is off — which is how clients learn to use `/login` instead.
fn metadata(services: &Services) -> Value {
    json!({
        "issuer": issuer(services),
        "authorization_endpoint": endpoint(services, "/authorize"),
        "token_endpoint": endpoint(services, "/token"),
        "registration_endpoint": endpoint(services, "/register"),
        "revocation_endpoint": endpoint(services, "/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
        "device_authorization_endpoint": endpoint(services, "/device"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["urn:matrix:client:api:*", "urn:matrix:client:device:*"],
        "ui_locales_supported": ["fr", "en"],
        "account_management_uri": format!("{}{}", services.config.client_base_url(), account::ACCOUNT),
        "account_management_actions_supported": account::ACTIONS,
        // OpenID Connect Prompt Create: `prompt=create` opens the registration form.
        "prompt_values_supported": if pages::registration(services).is_some() { json!(["create"]) } else { json!([]) },
    })
}

async fn auth_metadata(
    services: Arc<Services>,
    _: super::ruma::Ruma<get_authorization_server_metadata::v1::Request>,
) -> Result<get_authorization_server_metadata::v1::Response> {
    if !services.oauth.enabled() {
        return Err(Error::Unrecognized("this server does not use the OAuth 2.0 API".into()));
    }
    let raw = serde_json::value::to_raw_value(&metadata(&services)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_authorization_server_metadata::v1::Response::new(ruma::serde::Raw::from_json(raw)))
}

/// MSC2965's first discovery, which older clients still try before `auth_metadata`.
async fn auth_issuer(State(services): State<Arc<Services>>) -> Response {
    if !services.oauth.enabled() {
        return ApiError::unrecognized_path().into_response();
    }
    Json(json!({ "issuer": issuer(&services) })).into_response()
}

/// Reads a body with the client API's size limit.
async fn body_bytes(
    services: &Services,
    request: Request,
) -> std::result::Result<(http::request::Parts, bytes::Bytes), Response> {
    let (parts, body) = request.into_parts();
    let bytes = super::ruma::read_body(&parts, body, services.config.limits.max_request_size)
        .await
        .map_err(|_| invalid_request("the body is too large").into_response())?;
    Ok((parts, bytes))
}

/// An `application/x-www-form-urlencoded` body (the token and revocation endpoints), each
/// parameter at most once (RFC 6749 section 3.2).
async fn form(
    services: &Services,
    request: Request,
) -> std::result::Result<(http::request::Parts, HashMap<String, String>), Response> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(invalid_request("the parameters must be sent as application/x-www-form-urlencoded").into_response());
    }
    let (parts, bytes) = body_bytes(services, request).await?;
    let mut fields = HashMap::new();
    for (key, value) in form_urlencoded::parse(&bytes) {
        if fields.insert(key.clone().into_owned(), value.into_owned()).is_some() {
            return Err(invalid_request(format!("{key} is given more than once")).into_response());
        }
    }
    Ok((parts, fields))
}

/// `POST /register`: dynamic client registration (RFC 7591 as the spec restricts it); 201 with
/// the client id and what was registered.
async fn register(State(services): State<Arc<Services>>, request: Request) -> Response {
    if !services.oauth.enabled() {
        return ApiError::unrecognized_path().into_response();
    }
    let (parts, bytes) = match body_bytes(&services, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if let Some(ip) = super::ruma::client_ip(&parts, &services) {
        if let Err(error) = services.rate_limiter.check(Action::Registration, &ip.to_string()) {
            return ApiError::from(error).into_response();
        }
    }
    let Ok(metadata) = serde_json::from_slice::<Value>(&bytes) else {
        let error = OauthError::new(ErrorCode::InvalidClientMetadata, "the client metadata must be JSON");
        return OauthResponse(error).into_response();
    };
    match services.oauth.register(&metadata) {
        Ok((client_id, client)) => {
            let mut body = json!({
                "client_id": client_id,
                "client_id_issued_at": client.created_ts / 1000,
                "application_type": client.application_type,
                "client_uri": client.client_uri,
                "redirect_uris": client.redirect_uris,
                "grant_types": client.grant_types,
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            });
            for (field, value) in [
                ("client_name", &client.client_name),
                ("logo_uri", &client.logo_uri),
                ("policy_uri", &client.policy_uri),
                ("tos_uri", &client.tos_uri),
            ] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            no_store((StatusCode::CREATED, Json(body)).into_response())
        }
        Err(error) => OauthResponse(error).into_response(),
    }
}

fn token_answer(tokens: Tokens) -> Response {
    let body = json!({
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in.as_secs(),
        "refresh_token": tokens.refresh_token,
        "scope": tokens.scope.join(" "),
    });
    no_store(Json(body).into_response())
}

/// `POST /token`: the `authorization_code` and `refresh_token` grants, for public clients
/// (identified by `client_id`, proven by PKCE and their refresh token).
async fn token(State(services): State<Arc<Services>>, request: Request) -> Response {
    if !services.oauth.enabled() {
        return ApiError::unrecognized_path().into_response();
    }
    let (parts, fields) = match form(&services, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let field = |name: &str| fields.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = field("client_id") else {
        return OauthResponse(OauthError::new(ErrorCode::InvalidClient, "client_id is required")).into_response();
    };
    let client = match services.oauth.client(client_id) {
        Ok(Some(client)) => client,
        Ok(None) => return OauthResponse(OauthError::new(ErrorCode::InvalidClient, "unknown client")).into_response(),
        Err(error) => return OauthResponse(error.into()).into_response(),
    };
    let Some(grant_type) = field("grant_type") else {
        return invalid_request("grant_type is required").into_response();
    };
    if !client.grant_types.iter().any(|g| g == grant_type) {
        let error = match grant_type {
            "authorization_code" | "refresh_token" | DEVICE_GRANT => OauthError::new(
                ErrorCode::UnauthorizedClient,
                format!("the client did not register the {grant_type} grant"),
            ),
            other => OauthError::new(ErrorCode::UnsupportedGrantType, format!("unsupported grant type {other}")),
        };
        return OauthResponse(error).into_response();
    }
    let result = match grant_type {
        "authorization_code" => {
            let (Some(code), Some(redirect_uri), Some(verifier)) =
                (field("code"), field("redirect_uri"), field("code_verifier"))
            else {
                return invalid_request("code, redirect_uri and code_verifier are required").into_response();
            };
            let ip = super::ruma::client_ip(&parts, &services);
            services.oauth.exchange_code(&services.users, client_id, code, redirect_uri, verifier, ip).await
        }
        "refresh_token" => {
            let Some(refresh_token) = field("refresh_token") else {
                return invalid_request("refresh_token is required").into_response();
            };
            services.oauth.refresh(&services.users, client_id, refresh_token).await
        }
        DEVICE_GRANT => {
            let Some(device_code) = field("device_code") else {
                return invalid_request("device_code is required").into_response();
            };
            let ip = super::ruma::client_ip(&parts, &services);
            services.oauth.exchange_device_code(&services.users, client_id, device_code, ip).await
        }
        other => Err(OauthError::new(ErrorCode::UnsupportedGrantType, format!("unsupported grant type {other}"))),
    };
    match result {
        Ok(tokens) => token_answer(tokens),
        Err(error) => {
            if error.code == ErrorCode::InvalidGrant {
                tracing::info!(client_id, grant_type, reason = %error.description, "OAuth token request refused");
            }
            OauthResponse(error).into_response()
        }
    }
}

/// `POST /device` (RFC 8628 section 3.1): a device asks to be signed in from another one.
async fn device_authorization(State(services): State<Arc<Services>>, request: Request) -> Response {
    if !services.oauth.enabled() {
        return ApiError::unrecognized_path().into_response();
    }
    let (_, fields) = match form(&services, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let Some(client_id) = fields.get("client_id").filter(|c| !c.is_empty()) else {
        return OauthResponse(OauthError::new(ErrorCode::InvalidClient, "client_id is required")).into_response();
    };
    let scope = fields.get("scope").map(String::as_str).unwrap_or("");
    match services.oauth.request_device_code(client_id, scope) {
        Ok((device_code, request)) => {
            let link = endpoint(&services, "/link");
            let complete = format!(
                "{link}?{}",
                form_urlencoded::Serializer::new(String::new()).append_pair("code", &request.user_code).finish()
            );
            no_store(
                Json(json!({
                    "device_code": device_code,
                    "user_code": request.user_code,
                    "verification_uri": link,
                    "verification_uri_complete": complete,
                    "expires_in": DEVICE_CODE_LIFETIME_S,
                    "interval": DEVICE_POLL_INTERVAL_S,
                }))
                .into_response(),
            )
        }
        Err(error) => OauthResponse(error).into_response(),
    }
}

/// `POST /revoke` (RFC 7009): the session of an access or refresh token ends; an unknown or
/// already revoked token is answered 200 too, so the answer tells nothing of what exists.
async fn revoke(State(services): State<Arc<Services>>, request: Request) -> Response {
    if !services.oauth.enabled() {
        return ApiError::unrecognized_path().into_response();
    }
    let (_, fields) = match form(&services, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let Some(token) = fields.get("token").filter(|t| !t.is_empty()) else {
        return invalid_request("token is required").into_response();
    };
    match services.oauth.revoke(&services.users, token).await {
        Ok(Some((user, device))) => {
            let details = json!({ "device_id": device, "client_id": fields.get("client_id") });
            if let Err(error) = services.audit.record(user.as_str(), "oauth.revoke", user.as_str(), details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            no_store(Json(json!({})).into_response())
        }
        Ok(None) => no_store(Json(json!({})).into_response()),
        Err(error) => OauthResponse(error.into()).into_response(),
    }
}
