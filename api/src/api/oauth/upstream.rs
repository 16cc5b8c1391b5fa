//! Signing in through an upstream OpenID Connect provider, for the OAuth API's sign-in page and
//! for legacy clients' `m.login.sso` (`/login/sso/redirect`): the browser is sent to the provider
//! with its sign-in bound to it by a cookie, comes back to [`CALLBACK`], and goes on to the
//! client — with an authorization code, or (legacy) after a confirmation page, with a login token.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http::{header, HeaderValue, StatusCode};
use maud::html;

use super::{
    pages::{back_to_client, check, document, refusal_page, respond, Lang, Text},
    BASE,
};
use crate::{
    api::{console, error::ApiError},
    oauth::{
        tables::Origin,
        upstream::{self, UpstreamRefusal},
    },
    services::Services,
};

/// Where providers send the browser back.
pub const CALLBACK: &str = "/_hemicycle/oauth2/upstream/callback";
/// The cookie binding a sign-in's `state` to the browser that started it (`SameSite=Lax`: the
/// provider's redirect back is a cross-site top-level navigation).
const COOKIE: &str = "hemicycle_upstream";

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(&format!("{BASE}/upstream/start"), post(start_from_page))
        .route(CALLBACK, get(callback))
        .route("/_matrix/client/v3/login/sso/redirect", get(sso_redirect))
        .route("/_matrix/client/r0/login/sso/redirect", get(sso_redirect))
        .route("/_matrix/client/v3/login/sso/redirect/{idp}", get(sso_redirect_with))
        .route("/_matrix/client/unstable/org.matrix.msc2858/login/sso/redirect/{idp}", get(sso_redirect_with))
}

fn callback_url(services: &Services) -> String {
    format!("{}{CALLBACK}", services.config.client_base_url())
}

fn set_cookie(services: &Services, value: Option<&str>) -> HeaderValue {
    let mut cookie = match value {
        Some(state) => format!("{COOKIE}={state}; Max-Age=900"),
        None => format!("{COOKIE}=; Max-Age=0"),
    };
    cookie.push_str(&format!("; HttpOnly; SameSite=Lax; Path={BASE}/upstream"));
    if services.config.client_base_url().starts_with("https://") {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("states are URL-safe")
}

fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// Sends the browser to the provider.
async fn go_to_provider(services: &Services, lang: Lang, provider: &str, origin: Origin, register: bool) -> Response {
    match upstream::start(services, provider, &callback_url(services), origin, register).await {
        Ok((location, state)) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, value);
            }
            headers.insert(header::SET_COOKIE, set_cookie(services, Some(&state)));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(refusal) => refused(services, lang, None, &refusal),
    }
}

/// `POST /upstream/start`: the sign-in page's provider button, with the authorization request
/// in its hidden fields (checked again before anything is stored).
async fn start_from_page(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let params = match console::read_form(&parts, body, &services).await {
        Ok(fields) => fields,
        Err(failure) => return failure.into_response(),
    };
    let lang = Lang::pick(&params, &parts.headers);
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    if console::refuse_cross_site(&parts).is_err() {
        return refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN);
    }
    let provider = params.get("provider").cloned().unwrap_or_default();
    if let Some(return_query) = params.get("account") {
        // From the account pages: no authorization request, back to the page asked for.
        return go_to_provider(&services, lang, &provider, super::account::origin(return_query), false).await;
    }
    if let Some(user_code) = params.get("link") {
        // From the device grant's page: the request must still be waiting for an answer.
        return match services.oauth.device_request(user_code) {
            Ok(Some(_)) => {
                let origin = Origin::Link { user_code: user_code.clone() };
                go_to_provider(&services, lang, &provider, origin, false).await
            }
            Ok(None) => refusal_page(lang, Text::UnknownCode, StatusCode::NOT_FOUND),
            Err(_) => refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
        };
    }
    if let Err(response) = check(&services, &params, lang) {
        return *response;
    }
    let carried =
        super::pages::CARRIED.iter().filter_map(|k| params.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
    go_to_provider(&services, lang, &provider, Origin::Oauth { params: carried }, false).await
}

/// `GET /login/sso/redirect[/{idp}]?redirectUrl=[&action=login|register]`: `m.login.sso` for
/// legacy clients, through the first (or the named) upstream provider. `action` is MSC3824's
/// hint of what the person came for: `register` asks a provider that can for its sign-up page.
async fn sso_redirect(State(services): State<Arc<Services>>, request: Request) -> Response {
    let first = services.upstreams.list().first().map(|(id, _)| id.to_string());
    sso(services, request, first).await
}

async fn sso_redirect_with(
    State(services): State<Arc<Services>>,
    Path(idp): Path<String>,
    request: Request,
) -> Response {
    sso(services, request, Some(idp)).await
}

async fn sso(services: Arc<Services>, request: Request, provider: Option<String>) -> Response {
    let params: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let lang = Lang::pick(&params, request.headers());
    let Some(provider) = provider.filter(|p| services.upstreams.list().iter().any(|(id, _)| id == p)) else {
        return ApiError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such identity provider").into_response();
    };
    let Some(redirect_url) = params.get("redirectUrl").filter(|u| u.starts_with("https://") || u.contains("://"))
    else {
        return ApiError::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", "redirectUrl is required").into_response();
    };
    let register = match params.get("action").map(String::as_str) {
        None | Some("login") => false,
        Some("register") => true,
        Some(_) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "action must be login or register")
                .into_response()
        }
    };
    go_to_provider(&services, lang, &provider, Origin::Sso { redirect_url: redirect_url.clone() }, register).await
}

/// The page that says why a person of a provider is not signed in, and the audit log entry.
fn refused(services: &Services, lang: Lang, provider: Option<&str>, refusal: &UpstreamRefusal) -> Response {
    let (text, detail, status) = match refusal {
        UpstreamRefusal::Provider(detail) => (Text::ProviderFailed, Some(detail.clone()), StatusCode::BAD_GATEWAY),
        UpstreamRefusal::UnknownState => (Text::UnknownState, None, StatusCode::BAD_REQUEST),
        UpstreamRefusal::NoEmail => (Text::NoEmail, None, StatusCode::FORBIDDEN),
        UpstreamRefusal::UnverifiedEmail => (Text::UnverifiedEmail, None, StatusCode::FORBIDDEN),
        UpstreamRefusal::OtherNode(server) => (Text::OtherNode, Some(server.clone()), StatusCode::FORBIDDEN),
        UpstreamRefusal::NoAccount => (Text::NoAccount, None, StatusCode::FORBIDDEN),
        UpstreamRefusal::Deactivated => (Text::DeactivatedAccount, None, StatusCode::FORBIDDEN),
    };
    if let Some(provider) = provider {
        let details = serde_json::json!({ "provider": provider, "reason": format!("{refusal:?}") });
        if let Err(error) =
            services.audit.record(&format!("upstream:{provider}"), "oauth.sign_in_refused", provider, details)
        {
            tracing::warn!(%error, "audit log entry not written");
        }
    }
    let content = html! {
        p.error role="alert" { (lang.t(text)) @if let Some(detail) = &detail { " " strong { (detail) } } }
        p { (lang.t(Text::Back)) }
    };
    let mut response = respond(status, document(lang, lang.t(Text::Refused), None, content), &[]);
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(services, None));
    response
}

/// `GET /upstream/callback`: the provider's answer.
async fn callback(State(services): State<Arc<Services>>, request: Request) -> Response {
    let params: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let lang = Lang::pick(&params, request.headers());
    let state = params.get("state").cloned().unwrap_or_default();
    if state.is_empty() || cookie(request.headers()).as_deref() != Some(state.as_str()) {
        return refused(&services, lang, None, &UpstreamRefusal::UnknownState);
    }
    let Some(code) = params.get("code") else {
        let error = params.get("error").cloned().unwrap_or_else(|| "no code".into());
        return refused(&services, lang, None, &UpstreamRefusal::Provider(error));
    };
    let (session, identity) = match upstream::finish(
        &services,
        &state,
        code,
        params.get("iss").map(String::as_str),
        &callback_url(&services),
    )
    .await
    {
        Ok(done) => done,
        Err(refusal) => return refused(&services, lang, None, &refusal),
    };
    let provider = session.provider.as_str();
    let user = match upstream::account_for(&services, provider, &identity).await {
        Ok(user) => user,
        Err(refusal) => return refused(&services, lang, Some(provider), &refusal),
    };
    let method = format!("upstream:{provider}");
    let mut response = match session.origin {
        Origin::Oauth { params } => {
            let params: HashMap<String, String> = params.into_iter().collect();
            let lang = Lang::pick(&params, request.headers());
            let checked = match check(&services, &params, lang) {
                Ok(checked) => checked,
                Err(response) => return *response,
            };
            let code = match services.oauth.issue_code(&checked, &user) {
                Ok(code) => code,
                Err(error) => return ApiError::from(error).into_response(),
            };
            let details =
                serde_json::json!({ "client_id": checked.client_id, "device_id": checked.device_id, "method": method });
            if let Err(error) = services.audit.record(user.as_str(), "oauth.sign_in", user.as_str(), details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            back_to_client(&checked.target.url(&[("code", &code)]))
        }
        Origin::Account { return_query } => super::account::after_upstream(&services, &user, &return_query).await,
        Origin::Link { user_code } => super::link::after_upstream(&services, lang, &user, &user_code, provider),
        Origin::Sso { redirect_url } => {
            let (token, _) = match services.users.login_token(&user) {
                Ok(token) => token,
                Err(error) => return ApiError::from(error).into_response(),
            };
            let details = serde_json::json!({ "method": method, "legacy": "m.login.sso" });
            if let Err(error) = services.audit.record(user.as_str(), "oauth.sign_in", user.as_str(), details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            let separator = if redirect_url.contains('?') { '&' } else { '?' };
            let target = format!(
                "{redirect_url}{separator}{}",
                form_urlencoded::Serializer::new(String::new()).append_pair("loginToken", &token).finish()
            );
            let host = redirect_url.split("://").nth(1).and_then(|r| r.split(['/', '?', '#']).next()).unwrap_or("");
            // As Synapse does: the person confirms where their session goes, so a link made by
            // someone else cannot hand that someone a login token.
            let content = html! {
                p { (lang.t(Text::ContinueTo)) " " strong { (host) } "." }
                p { a.button href=(target) { (lang.t(Text::Continue)) } }
            };
            respond(StatusCode::OK, document(lang, lang.t(Text::Title), None, content), &[])
        }
    };
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&services, None));
    response
}
