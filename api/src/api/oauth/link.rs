//! The device authorization grant's page (RFC 8628 section 3.3): where a person, on a device that
//! has a browser, enters (or scans) the code another device shows, signs in — with the node's
//! password or through an upstream provider — and allows it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use http::StatusCode;
use maud::html;

use super::{
    pages::{document, refusal_page, respond, Lang, Text},
    BASE,
};
use crate::{
    api::{console, ruma::client_ip},
    oauth::DeviceRequest,
    ratelimit::Action,
    services::Services,
};

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route(&format!("{BASE}/link"), get(link_page).post(link))
}

fn page(
    services: &Services,
    lang: Lang,
    code: &str,
    found: Option<&DeviceRequest>,
    error: Option<Text>,
    status: StatusCode,
) -> Response {
    let providers = services.upstreams.list();
    let content = html! {
        @if let Some(error) = error { p.error role="alert" { (lang.t(error)) } }
        @match found {
            None => {
                form.stack method="get" action=(format!("{BASE}/link")) {
                    input type="hidden" name="lang" value=(lang.code());
                    label for="code" { (lang.t(Text::UserCode)) }
                    input #code name="code" type="text" autocomplete="off" required autofocus value=(code);
                    button type="submit" { (lang.t(Text::Continue)) }
                }
            }
            Some(request) => {
                @let client = services.oauth.client(&request.client_id).ok().flatten();
                @let name = client.map(|c| c.client_name.unwrap_or(c.client_uri)).unwrap_or_default();
                p { strong { (name) } " " (lang.t(Text::Asks)) " " strong { (services.config.server_name.as_str()) } "." }
                p { (lang.t(Text::Means)) }
                p { (lang.t(Text::Session)) " " code { (request.device_id.as_str()) } }
                @for (id, label) in &providers {
                    form.stack method="post" action=(format!("{BASE}/upstream/start")) {
                        input type="hidden" name="link" value=(code);
                        input type="hidden" name="provider" value=(id);
                        input type="hidden" name="lang" value=(lang.code());
                        button type="submit" { (lang.t(Text::SignInWith)) " " (label) }
                    }
                }
                form.stack method="post" action=(format!("{BASE}/link")) {
                    input type="hidden" name="code" value=(code);
                    input type="hidden" name="lang" value=(lang.code());
                    @if services.config.oauth.password {
                        @if !providers.is_empty() { p { (lang.t(Text::Or)) } }
                        label for="username" { (lang.t(Text::Username)) }
                        input #username name="username" type="text" autocomplete="username" required autofocus;
                        label for="password" { (lang.t(Text::Password)) }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        button type="submit" name="action" value="allow" { (lang.t(Text::Allow)) }
                    }
                    button type="submit" name="action" value="deny" formnovalidate { (lang.t(Text::Cancel)) }
                }
            }
        }
    };
    respond(status, document(lang, lang.t(Text::LinkTitle), None, content), &super::pages::provider_sources(services))
}

/// Back from an upstream provider the person signed in with on this page: the device's request
/// is allowed as theirs (if it still waits).
pub fn after_upstream(
    services: &Services,
    lang: Lang,
    user: &ruma::UserId,
    user_code: &str,
    provider: &str,
) -> Response {
    let found = match services.oauth.device_request(user_code) {
        Ok(found) => found,
        Err(_) => return refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    };
    match (found, services.oauth.answer_device_request(user_code, Some(user))) {
        (Some((_, request)), Ok(true)) => {
            let details = serde_json::json!({ "client_id": request.client_id, "device_id": request.device_id, "method": format!("upstream:{provider}"), "grant": "device_code" });
            if let Err(error) = services.audit.record(user.as_str(), "oauth.sign_in", user.as_str(), details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            let content = html! { p.notice role="status" { (lang.t(Text::Linked)) } };
            respond(StatusCode::OK, document(lang, lang.t(Text::LinkTitle), None, content), &[])
        }
        (_, Ok(_)) => page(services, lang, user_code, None, Some(Text::UnknownCode), StatusCode::NOT_FOUND),
        (_, Err(_)) => refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// `GET /link[?code=]`.
async fn link_page(State(services): State<Arc<Services>>, request: Request) -> Response {
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let lang = Lang::pick(&query, request.headers());
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    let code = query.get("code").map(|c| c.trim()).unwrap_or("");
    if code.is_empty() {
        return page(&services, lang, "", None, None, StatusCode::OK);
    }
    match services.oauth.device_request(code) {
        Ok(Some((_, request))) => page(&services, lang, code, Some(&request), None, StatusCode::OK),
        Ok(None) => page(&services, lang, code, None, Some(Text::UnknownCode), StatusCode::NOT_FOUND),
        Err(_) => refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// `POST /link`: the person's password and answer.
async fn link(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let fields = match console::read_form(&parts, body, &services).await {
        Ok(fields) => fields,
        Err(failure) => return failure.into_response(),
    };
    let lang = Lang::pick(&fields, &parts.headers);
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    if console::refuse_cross_site(&parts).is_err() {
        return refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN);
    }
    let code = fields.get("code").map(|c| c.trim()).unwrap_or("");
    let found = match services.oauth.device_request(code) {
        Ok(Some((_, request))) => request,
        Ok(None) => return page(&services, lang, code, None, Some(Text::UnknownCode), StatusCode::NOT_FOUND),
        Err(_) => return refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    };
    let done = |text| {
        let content = html! { p.notice role="status" { (lang.t(text)) } };
        respond(StatusCode::OK, document(lang, lang.t(Text::LinkTitle), None, content), &[])
    };
    if fields.get("action").map(String::as_str) == Some("deny") {
        return match services.oauth.answer_device_request(code, None) {
            Ok(_) => done(Text::Declined),
            Err(_) => refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
        };
    }
    if !services.config.oauth.password {
        return page(&services, lang, code, Some(&found), Some(Text::Missing), StatusCode::FORBIDDEN);
    }
    let name = fields.get("username").map(|v| v.trim()).unwrap_or("");
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    let key = services.users.parse_login_user(name).map(|u| u.to_string()).unwrap_or_else(|_| name.to_lowercase());
    let limited = services.rate_limiter.check(Action::Login, &key).is_err()
        || client_ip(&parts, &services)
            .is_some_and(|ip| services.rate_limiter.check(Action::Login, &ip.to_string()).is_err());
    if limited {
        return page(&services, lang, code, Some(&found), Some(Text::TooMany), StatusCode::TOO_MANY_REQUESTS);
    }
    let user = match crate::users::directory::password_login(&services, name, password).await {
        Ok(user) => user,
        Err(_) => {
            let details =
                serde_json::json!({ "client_id": found.client_id, "reason": "password", "grant": "device_code" });
            if let Err(error) = services.audit.record(&key, "oauth.sign_in_refused", &key, details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            return page(&services, lang, code, Some(&found), Some(Text::WrongPassword), StatusCode::FORBIDDEN);
        }
    };
    match services.oauth.answer_device_request(code, Some(&*user)) {
        Ok(true) => {
            let details = serde_json::json!({ "client_id": found.client_id, "device_id": found.device_id, "method": "password", "grant": "device_code" });
            if let Err(error) = services.audit.record(user.as_str(), "oauth.sign_in", user.as_str(), details) {
                tracing::warn!(%error, "audit log entry not written");
            }
            done(Text::Linked)
        }
        Ok(false) => page(&services, lang, code, None, Some(Text::UnknownCode), StatusCode::NOT_FOUND),
        Err(_) => refusal_page(lang, Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    }
}
