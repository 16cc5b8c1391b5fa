//! The account management pages (the spec's account management URL, v1.18): the person's
//! sessions (devices, with the OAuth client each one is), ending one, their profile, approving a
//! cross-signing reset and deactivating the account — the actions OAuth clients such as Element X
//! deep-link to (`org.matrix.devices_list`, `org.matrix.device_view`, `org.matrix.device_delete`,
//! `org.matrix.profile`, `org.matrix.cross_signing_reset`, `org.matrix.account_deactivate`, and
//! MSC4191's unstable `org.matrix.sessions_list`, `session_view`, `session_end`).
//!
//! A browser session is, as in the console, an access token of a device of its own kept in an
//! `HttpOnly` cookie (`SameSite=Lax`, so that coming back from an upstream provider finds it);
//! only tokens the pages handed out are taken (a client's access token is not: the pages approve
//! what UIA guards, which a stolen token must not reach); every change is a `POST` carrying a
//! CSRF token derived from it, from this site only.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use hmac::{Hmac, Mac};
use http::{header, HeaderValue, StatusCode};
use maud::{html, Markup};
use sha2::Sha256;

use super::{
    pages::{document, refusal_page, respond, Lang, Text},
    BASE,
};
use crate::{
    api::{console, ruma::client_ip},
    error::Error,
    oauth::tables::Origin,
    services::Services,
    users::TokenOwner,
};

/// Where the pages live (the account management URL).
pub const ACCOUNT: &str = "/_hemicycle/oauth2/account";
const COOKIE: &str = "hemicycle_account";
/// The devices the pages' own sessions are.
pub const DEVICE_NAME: &str = "Hemicycle account";
const LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);
const CSRF_PURPOSE: &[u8] = b"hemicycle account csrf v1";

/// The action approving a cross-signing reset (MSC4312), the `m.oauth` UIA stage's URL.
pub const CROSS_SIGNING_RESET: &str = "org.matrix.cross_signing_reset";
/// How long an approved reset waits for the client (MAS's window, and the admin API's).
const RESET_WINDOW_MS: u64 = 10 * 60 * 1000;

/// The action deactivating the account.
const DEACTIVATE: &str = "org.matrix.account_deactivate";

/// The actions the pages answer, stable and unstable.
pub const ACTIONS: [&str; 9] = [
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
    CROSS_SIGNING_RESET,
    DEACTIVATE,
];

/// The account management URL deep-linked to `action`.
pub fn action_url(services: &Services, action: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("action", action).finish();
    format!("{}{ACCOUNT}?{query}", services.config.client_base_url())
}

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(ACCOUNT, get(account))
        .route(&format!("{ACCOUNT}/login"), post(login))
        .route(&format!("{ACCOUNT}/end"), post(end_session))
        .route(&format!("{ACCOUNT}/profile"), post(profile))
        .route(&format!("{ACCOUNT}/cross_signing_reset"), post(allow_reset))
        .route(&format!("{ACCOUNT}/deactivate"), post(deactivate))
}

struct Visitor {
    owner: TokenOwner,
    token: String,
}

impl Visitor {
    fn read(headers: &http::HeaderMap, services: &Services) -> Option<Visitor> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())?;
        if !services.oauth.is_page_session(&token).ok()? {
            return None;
        }
        let owner = services.users.authenticate(&token, None).ok()?;
        Some(Visitor { owner, token })
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.token.as_bytes()).expect("HMAC takes any key length");
        mac.update(CSRF_PURPOSE);
        mac
    }

    fn csrf(&self) -> String {
        self.mac().finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn csrf_matches(&self, given: &str) -> bool {
        let bytes: Option<Vec<u8>> = (given.len().is_multiple_of(2) && given.is_ascii())
            .then(|| (0..given.len()).step_by(2).map(|i| u8::from_str_radix(&given[i..i + 2], 16).ok()).collect())
            .flatten();
        bytes.is_some_and(|b| self.mac().verify_slice(&b).is_ok())
    }
}

/// The cookie carrying a page session (none: cleared).
pub fn set_cookie(services: &Services, token: Option<&str>) -> HeaderValue {
    let mut value = match token {
        Some(token) => format!("{COOKIE}={token}; Max-Age={}", LIFETIME.as_secs()),
        None => format!("{COOKIE}=; Max-Age=0"),
    };
    value.push_str(&format!("; HttpOnly; SameSite=Lax; Path={ACCOUNT}"));
    if services.config.client_base_url().starts_with("https://") {
        value.push_str("; Secure");
    }
    HeaderValue::from_str(&value).expect("tokens are URL-safe")
}

/// Opens a page session for `user` (after a password or an upstream sign-in).
pub async fn open_session(
    services: &Services,
    user: &ruma::UserId,
    ip: Option<std::net::IpAddr>,
) -> Result<String, Error> {
    let session = services.users.login(user, None, Some(DEVICE_NAME.to_owned()), ip, Some(LIFETIME)).await?;
    let expires_ms = crate::time::now_ms().saturating_add(LIFETIME.as_millis() as u64);
    services.oauth.record_page_session(&session.access_token, user, &session.device_id, expires_ms)?;
    Ok(session.access_token)
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn query_of(request: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// The sign-in form of the pages, keeping the page asked for.
fn sign_in(services: &Services, lang: Lang, return_query: &str, error: Option<Text>, status: StatusCode) -> Response {
    let providers = services.upstreams.list();
    let content = html! {
        @if let Some(error) = error { p.error role="alert" { (lang.t(error)) } }
        p { (lang.t(Text::AccountIntro)) " " strong { (services.config.server_name.as_str()) } "." }
        @for (id, label) in &providers {
            form.stack method="post" action=(format!("{BASE}/upstream/start")) {
                input type="hidden" name="account" value=(return_query);
                input type="hidden" name="provider" value=(id);
                input type="hidden" name="lang" value=(lang.code());
                button type="submit" { (lang.t(Text::SignInWith)) " " (label) }
            }
        }
        @if services.config.oauth.password {
            form.stack method="post" action=(format!("{ACCOUNT}/login")) {
                input type="hidden" name="return" value=(return_query);
                input type="hidden" name="lang" value=(lang.code());
                label for="username" { (lang.t(Text::Username)) }
                input #username name="username" type="text" autocomplete="username" required autofocus;
                label for="password" { (lang.t(Text::Password)) }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { (lang.t(Text::Title)) }
            }
        }
    };
    respond(
        status,
        document(lang, lang.t(Text::AccountTitle), None, content),
        &super::pages::provider_sources(services),
    )
}

/// `GET /account?action=…&device_id=…`.
async fn account(State(services): State<Arc<Services>>, request: Request) -> Response {
    let query = query_of(&request);
    let lang = Lang::pick(&query, request.headers());
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    let return_query = request.uri().query().unwrap_or("").to_owned();
    let Some(visitor) = Visitor::read(request.headers(), &services) else {
        return sign_in(&services, lang, &return_query, None, StatusCode::OK);
    };
    let action = query.get("action").map(String::as_str).unwrap_or("org.matrix.devices_list");
    let device = query.get("device_id").map(String::as_str);
    let notice = query.get("ok").map(|done| match done.as_str() {
        "reset" => lang.t(Text::ResetAllowed),
        _ => lang.t(Text::SessionEnded),
    });
    let content = match action {
        "org.matrix.profile" => profile_page(&services, lang, &visitor),
        CROSS_SIGNING_RESET => reset_page(&services, lang, &visitor),
        DEACTIVATE => deactivate_page(lang, &visitor, None),
        "org.matrix.device_view"
        | "org.matrix.session_view"
        | "org.matrix.device_delete"
        | "org.matrix.session_end" => sessions_page(&services, lang, &visitor, device),
        _ => sessions_page(&services, lang, &visitor, None),
    };
    let content = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        nav aria-label=(lang.t(Text::AccountTitle)) {
            ul {
                li { a href=(format!("{ACCOUNT}?action=org.matrix.devices_list")) { (lang.t(Text::Sessions)) } }
                li { a href=(format!("{ACCOUNT}?action=org.matrix.profile")) { (lang.t(Text::Profile)) } }
                li { a href=(format!("{ACCOUNT}?action={DEACTIVATE}")) { (lang.t(Text::DeactivateTitle)) } }
            }
        }
        (content)
    };
    respond(StatusCode::OK, document(lang, lang.t(Text::AccountTitle), None, content), &[])
}

/// The person's sessions (or one of them), each with a button that ends it.
fn sessions_page(services: &Services, lang: Lang, visitor: &Visitor, only: Option<&str>) -> Markup {
    let user = &visitor.owner.user_id;
    let devices = services.users.devices(user).unwrap_or_default();
    let shown: Vec<_> = devices.iter().filter(|(id, _)| only.is_none_or(|only| id.as_str() == only)).collect();
    html! {
        h2 { (lang.t(Text::Sessions)) }
        @if shown.is_empty() { p { (lang.t(Text::NoSession)) } }
        ul {
            @for (id, device) in shown {
                @let client = services.oauth.grant_of_device(user, id).ok().flatten()
                    .and_then(|(_, g)| services.oauth.client(&g.client_id).ok().flatten())
                    .map(|c| c.client_name.unwrap_or(c.client_uri));
                li {
                    strong { (device.display_name.clone().unwrap_or_else(|| id.to_string())) }
                    " — " code { (id.as_str()) }
                    @if let Some(client) = client { " — " (lang.t(Text::Through)) " " (client) }
                    " — " (lang.t(Text::LastSeen)) " " (console::when(device.last_seen_ts))
                    @if *id != visitor.owner.device_id {
                        form.inline method="post" action=(format!("{ACCOUNT}/end")) {
                            input type="hidden" name="csrf" value=(visitor.csrf());
                            input type="hidden" name="device_id" value=(id.as_str());
                            button.danger type="submit" { (lang.t(Text::EndSession)) }
                        }
                    }
                }
            }
        }
    }
}

fn profile_page(services: &Services, lang: Lang, visitor: &Visitor) -> Markup {
    let name = services
        .profiles
        .get(&visitor.owner.user_id)
        .ok()
        .and_then(|fields| fields.get("displayname").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    html! {
        h2 { (lang.t(Text::Profile)) }
        p { code { (visitor.owner.user_id.as_str()) } }
        form.stack method="post" action=(format!("{ACCOUNT}/profile")) {
            input type="hidden" name="csrf" value=(visitor.csrf());
            label for="displayname" { (lang.t(Text::DisplayName)) }
            input #displayname name="displayname" type="text" value=(name) required;
            button type="submit" { (lang.t(Text::Save)) }
        }
    }
}

/// Approving a cross-signing reset: what it does, whether one is approved now, the button.
fn reset_page(services: &Services, lang: Lang, visitor: &Visitor) -> Markup {
    let until = services
        .users
        .account(&visitor.owner.user_id)
        .ok()
        .flatten()
        .and_then(|a| a.replace_keys_until_ms)
        .filter(|until| *until > crate::time::now_ms());
    html! {
        h2 { (lang.t(Text::ResetTitle)) }
        p { (lang.t(Text::ResetIntro)) }
        p { strong { (lang.t(Text::ResetWarning)) } }
        @if let Some(until) = until {
            p { (lang.t(Text::ResetOpenUntil)) " " (console::when(Some(until))) }
        }
        form.stack method="post" action=(format!("{ACCOUNT}/cross_signing_reset")) {
            input type="hidden" name="csrf" value=(visitor.csrf());
            input type="hidden" name="lang" value=(lang.code());
            button.danger type="submit" { (lang.t(Text::AllowReset)) }
        }
    }
}

/// `POST /account/cross_signing_reset`: for the next ten minutes the person's clients may
/// replace the account's cross-signing keys without further authentication — once, since the
/// replacement closes the window (`/keys/device_signing/upload`).
async fn allow_reset(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (visitor, _, lang) = match change(&services, request).await {
        Ok(change) => change,
        Err(response) => return *response,
    };
    let user = &visitor.owner.user_id;
    let until = crate::time::now_ms().saturating_add(RESET_WINDOW_MS);
    if services.users.allow_key_replacement(user, until).await.is_err() {
        return refusal_page(lang, Text::Failed, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let details = serde_json::json!({ "until_ms": until, "from": "account page" });
    if let Err(error) =
        services.audit.record(user.as_str(), "oauth.cross_signing_reset_allowed", user.as_str(), details)
    {
        tracing::warn!(%error, "audit log entry not written");
    }
    see_other(&format!("{ACCOUNT}?action={CROSS_SIGNING_RESET}&ok=reset&lang={}", lang.code()))
}

/// Deactivating the account: what it does, and the Matrix ID to type to confirm it.
fn deactivate_page(lang: Lang, visitor: &Visitor, error: Option<Text>) -> Markup {
    html! {
        h2 { (lang.t(Text::DeactivateTitle)) }
        @if let Some(error) = error { p.error role="alert" { (lang.t(error)) } }
        p { (lang.t(Text::DeactivateIntro)) }
        form.stack method="post" action=(format!("{ACCOUNT}/deactivate")) {
            input type="hidden" name="csrf" value=(visitor.csrf());
            input type="hidden" name="lang" value=(lang.code());
            label for="confirm" { (lang.t(Text::DeactivateConfirm)) " " code { (visitor.owner.user_id.as_str()) } }
            input #confirm name="confirm" type="text" autocomplete="off" required;
            button.danger type="submit" { (lang.t(Text::Deactivate)) }
        }
    }
}

/// `POST /account/deactivate`: once the person typed their Matrix ID, the account is deactivated
/// as `/account/deactivate` does it (every session ends, every room is left, the addresses are
/// freed) — the OAuth API's way, since its clients hold no password for that endpoint's UIA.
async fn deactivate(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (visitor, fields, lang) = match change(&services, request).await {
        Ok(change) => change,
        Err(response) => return *response,
    };
    let user = visitor.owner.user_id.clone();
    let typed = fields.get("confirm").map(|v| v.trim()).unwrap_or("");
    let confirmed = services.users.parse_login_user(typed).is_ok_and(|typed| typed == user);
    if !confirmed {
        let page = deactivate_page(lang, &visitor, Some(Text::DeactivateMismatch));
        return respond(StatusCode::BAD_REQUEST, document(lang, lang.t(Text::AccountTitle), None, page), &[]);
    }
    if let Err(error) = crate::users::deactivation::deactivate(&services, &user, false).await {
        tracing::warn!(%user, %error, "deactivation from the account page failed");
        return refusal_page(lang, Text::Failed, StatusCode::INTERNAL_SERVER_ERROR);
    }
    tracing::info!(%user, "deactivated from the account page");
    let details = serde_json::json!({ "from": "account page" });
    if let Err(error) = services.audit.record(user.as_str(), "oauth.account_deactivate", user.as_str(), details) {
        tracing::warn!(%error, "audit log entry not written");
    }
    let content = html! { p.notice role="status" { (lang.t(Text::Deactivated)) } };
    let mut response = respond(StatusCode::OK, document(lang, lang.t(Text::AccountTitle), None, content), &[]);
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&services, None));
    response
}

/// `POST /account/login`: the password, then a page session.
async fn login(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let fields = match console::read_form(&parts, body, &services).await {
        Ok(fields) => fields,
        Err(failure) => return failure.into_response(),
    };
    let lang = Lang::pick(&fields, &parts.headers);
    if !services.oauth.enabled() || !services.config.oauth.password {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    if console::refuse_cross_site(&parts).is_err() {
        return refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN);
    }
    let return_query = fields.get("return").cloned().unwrap_or_default();
    let name = fields.get("username").map(|v| v.trim()).unwrap_or("");
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    let key = services.users.parse_login_user(name).map(|u| u.to_string()).unwrap_or_else(|_| name.to_lowercase());
    if services.rate_limiter.check(crate::ratelimit::Action::Login, &key).is_err() {
        return sign_in(&services, lang, &return_query, Some(Text::TooMany), StatusCode::TOO_MANY_REQUESTS);
    }
    let user = match crate::users::directory::password_login(&services, name, password).await {
        Ok(user) => user,
        Err(_) => return sign_in(&services, lang, &return_query, Some(Text::WrongPassword), StatusCode::FORBIDDEN),
    };
    let token = match open_session(&services, &user, client_ip(&parts, &services)).await {
        Ok(token) => token,
        Err(_) => {
            return sign_in(&services, lang, &return_query, Some(Text::Failed), StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    let mut response = see_other(&format!("{ACCOUNT}?{return_query}"));
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&services, Some(&token)));
    response
}

/// A change from the pages: the session and the form, once known to come from them.
async fn change(
    services: &Services,
    request: Request,
) -> Result<(Visitor, HashMap<String, String>, Lang), Box<Response>> {
    let (parts, body) = request.into_parts();
    let fields = console::read_form(&parts, body, services).await.map_err(|f| Box::new(f.into_response()))?;
    let lang = Lang::pick(&fields, &parts.headers);
    if console::refuse_cross_site(&parts).is_err() {
        return Err(Box::new(refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN)));
    }
    let visitor = Visitor::read(&parts.headers, services).ok_or_else(|| Box::new(see_other(ACCOUNT)))?;
    if !visitor.csrf_matches(fields.get("csrf").map(String::as_str).unwrap_or("")) {
        return Err(Box::new(refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN)));
    }
    Ok((visitor, fields, lang))
}

/// `POST /account/end`: ends one of the person's sessions (an OAuth grant with its tokens, or a
/// legacy device).
async fn end_session(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (visitor, fields, lang) = match change(&services, request).await {
        Ok(change) => change,
        Err(response) => return *response,
    };
    let user = &visitor.owner.user_id;
    let Some(device) = fields.get("device_id").filter(|d| !d.is_empty()) else {
        return refusal_page(lang, Text::NoSession, StatusCode::BAD_REQUEST);
    };
    let device: ruma::OwnedDeviceId = device.as_str().into();
    let ended = match services.oauth.grant_of_device(user, &device) {
        Ok(Some((grant_id, _))) => services.oauth.end_grant(&services.users, &grant_id).await.map(|_| ()),
        Ok(None) => services.users.remove_device(user, &device).await,
        Err(error) => Err(error),
    };
    if ended.is_err() {
        return refusal_page(lang, Text::Failed, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let details = serde_json::json!({ "device_id": device, "from": "account page" });
    if let Err(error) = services.audit.record(user.as_str(), "oauth.session_end", user.as_str(), details) {
        tracing::warn!(%error, "audit log entry not written");
    }
    see_other(&format!("{ACCOUNT}?action=org.matrix.devices_list&ok=1"))
}

/// `POST /account/profile`: a new display name, in the profile and the member events.
async fn profile(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (visitor, fields, lang) = match change(&services, request).await {
        Ok(change) => change,
        Err(response) => return *response,
    };
    let user = &visitor.owner.user_id;
    let name = fields.get("displayname").map(|v| v.trim()).unwrap_or("");
    if name.is_empty() || name.len() > 256 {
        return refusal_page(lang, Text::Failed, StatusCode::BAD_REQUEST);
    }
    let saved = services.profiles.set_field(user, "displayname", Some(serde_json::Value::String(name.to_owned())));
    if saved.is_err() || services.rooms.refresh_profile(user).await.is_err() {
        return refusal_page(lang, Text::Failed, StatusCode::INTERNAL_SERVER_ERROR);
    }
    see_other(&format!("{ACCOUNT}?action=org.matrix.profile"))
}

/// After an upstream sign-in started from the pages: a page session, then the page asked for.
pub async fn after_upstream(services: &Services, user: &ruma::UserId, return_query: &str) -> Response {
    match open_session(services, user, None).await {
        Ok(token) => {
            let mut response = see_other(&format!("{ACCOUNT}?{return_query}"));
            response.headers_mut().insert(header::SET_COOKIE, set_cookie(services, Some(&token)));
            response
        }
        Err(_) => refusal_page(Lang::En, Text::Failed, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Which origin an upstream sign-in started from the pages returns to.
pub fn origin(return_query: &str) -> Origin {
    Origin::Account { return_query: return_query.to_owned() }
}
