//! Signing in and out of the console. A session is an ordinary access token of a device named
//! [`DEVICE_NAME`], made by `Users::login` (random, stored only as its hash) after the same
//! password check as `/login` (local accounts and LDAP alike), and only for active server admins.
//! The cookie holds the token; signing out removes the device, so the token dies with it.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use hmac::{Hmac, Mac};
use http::{header, request::Parts, HeaderValue, StatusCode};
use maud::{html, Markup};
use sha2::Sha256;

use super::{document, Change, Failure, Page, Query, BASE};
use crate::{api::ruma::client_ip, ratelimit::Action, services::Services, users::TokenOwner};

/// The name of the devices the console's sessions are, as the user's device list shows them.
pub const DEVICE_NAME: &str = "Hemicycle console";

/// How long a console session lasts: a working day, after which the admin signs in again (the
/// access token expires; the cookie goes at the same time).
const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The session cookie's name.
const COOKIE: &str = "hemicycle_console";

/// What the CSRF token is derived for, so the same key could never yield it for another use.
const CSRF_PURPOSE: &[u8] = b"hemicycle console csrf v1";

/// What confirmations after a change are signed for.
const NOTICE_PURPOSE: &[u8] = b"hemicycle console notice v1\n";

/// A signed-in server admin.
pub struct Session {
    pub user_id: ruma::OwnedUserId,
    pub owner: TokenOwner,
    /// The session token (the cookie's value): the key the CSRF token is derived with.
    token: String,
}

impl Session {
    /// The session of a request: its cookie's token must be live and belong to an active admin.
    /// None when there is no such session (no cookie, signed out, demoted, deactivated).
    fn read(parts: &Parts, services: &Services) -> Option<Session> {
        let token = cookie(parts)?;
        let owner = services.users.authenticate(&token, client_ip(parts, services)).ok()?;
        let account = services.users.account(&owner.user_id).ok()??;
        if !account.admin || account.deactivated {
            return None;
        }
        Some(Session { user_id: owner.user_id.clone(), owner, token })
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.token.as_bytes()).expect("HMAC takes any key length");
        mac.update(CSRF_PURPOSE);
        mac
    }

    /// The CSRF token of this session: HMAC-SHA256 of a fixed purpose keyed with the session
    /// token, hex. Only pages served to this session carry it; another site cannot read it.
    pub fn csrf(&self) -> String {
        self.mac().finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn notice_mac(&self, message: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.token.as_bytes()).expect("HMAC takes any key length");
        mac.update(NOTICE_PURPOSE);
        mac.update(message.as_bytes());
        mac
    }

    /// The signature of a confirmation shown after a change (hex HMAC-SHA256, session-keyed).
    pub fn sign_notice(&self, message: &str) -> String {
        self.notice_mac(message).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a confirmation's signature is this session's, compared in constant time.
    pub fn notice_matches(&self, message: &str, signature: &str) -> bool {
        decode_hex(signature).is_some_and(|bytes| self.notice_mac(message).verify_slice(&bytes).is_ok())
    }

    /// Whether a submitted CSRF token is this session's, compared in constant time.
    pub fn csrf_matches(&self, given: &str) -> bool {
        let Some(bytes) = decode_hex(given) else { return false };
        self.mac().verify_slice(&bytes).is_ok()
    }

    /// The hidden field every console form carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf()); }
    }

    /// Reads the session of a change, refused as the client API refuses a request: no cookie is
    /// `401 M_MISSING_TOKEN`, a token the server does not know (signed out, expired) `401
    /// M_UNKNOWN_TOKEN`, a live token of an account that is not an active admin `403 M_FORBIDDEN`.
    pub(super) fn required(parts: &Parts, services: &Services) -> Result<Self, Failure> {
        if let Some(session) = Self::read(parts, services) {
            return Ok(session);
        }
        let Some(token) = cookie(parts) else {
            return Err(Failure::new(StatusCode::UNAUTHORIZED, "You are not signed in."));
        };
        if services.users.authenticate(&token, client_ip(parts, services)).is_err() {
            return Err(Failure {
                errcode: "M_UNKNOWN_TOKEN",
                ..Failure::new(StatusCode::UNAUTHORIZED, "Your session ended: sign in again.")
            });
        }
        Err(Failure::new(StatusCode::FORBIDDEN, "The console is for server admins only."))
    }
}

/// A page's visitor, signed in or not.
pub struct MaybeSession(Option<Session>);

impl FromRequestParts<Arc<Services>> for MaybeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Self::Rejection> {
        Ok(MaybeSession(Session::read(parts, services)))
    }
}

/// Pages need a session; without one the browser goes to the sign-in page.
impl FromRequestParts<Arc<Services>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Response> {
        Session::read(parts, services).ok_or_else(|| Redirect::to(&format!("{BASE}/login")).into_response())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// The session token from the `Cookie` header(s).
fn cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached us over HTTPS: `public_baseurl` says so (TLS ends at a proxy in
/// front of the client listener), or one of `listen.trusted_proxies` says so in
/// `X-Forwarded-Proto`. The cookie is then `Secure`.
pub(super) fn over_tls(parts: &Parts, services: &Services) -> bool {
    let base_https = services.config.public_baseurl.as_deref().is_some_and(|u| u.starts_with("https://"));
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|ip| services.config.listen.trusted_proxies.iter().any(|c| c.contains(ip)));
    let forwarded_https = parts.headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes() == b"https");
    base_https || (from_proxy && forwarded_https)
}

/// The `Set-Cookie` value: the token, or an expired empty cookie when `token` is none.
fn set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let mut value = match token {
        Some(token) => format!("{COOKIE}={token}; Max-Age={}", SESSION_LIFETIME.as_secs()),
        None => format!("{COOKIE}=; Max-Age=0"),
    };
    value.push_str(&format!("; HttpOnly; SameSite=Strict; Path={BASE}"));
    if secure {
        value.push_str("; Secure");
    }
    HeaderValue::from_str(&value).expect("tokens are URL-safe text")
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(&format!("{BASE}/login"), get(login_page).post(login)).route(&format!("{BASE}/logout"), post(logout))
}

/// The sign-in page, with the reason of a refusal or a confirmation (signed out).
fn login_form(message: Option<&str>, notice: Option<&str>, status: StatusCode) -> Response {
    let content = html! {
        @if let Some(message) = message {
            p.error role="alert" { (message) }
        }
        @if let Some(notice) = notice {
            p.notice role="status" { (notice) }
        }
        p { "Sign in with the Matrix account of a server admin of this node (a directory account works too)." }
        form.stack method="post" action=(format!("{BASE}/login")) {
            label for="username" { "User name or Matrix ID" }
            input #username name="username" type="text" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    };
    (status, Html(document("Sign in", None, content).into_string())).into_response()
}

async fn login_page(MaybeSession(session): MaybeSession, query: Query) -> Response {
    if session.is_some() {
        return Redirect::to(BASE).into_response();
    }
    let notice = query.get("signed_out").map(|_| "Signed out.");
    login_form(None, notice, StatusCode::OK)
}

/// `POST /login`: the password check of `/login` (rate limited, LDAP included), then only
/// active server admins get a session.
async fn login(State(services): State<Arc<Services>>, request: axum::extract::Request) -> Page {
    let (parts, body) = request.into_parts();
    super::refuse_cross_site(&parts)?;
    let fields = super::read_form(&parts, body, &services).await?;
    let name = fields.get("username").map(|v| v.trim()).unwrap_or("");
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    if name.is_empty() || password.is_empty() {
        return Ok(login_form(Some("Enter a user name and a password."), None, StatusCode::BAD_REQUEST));
    }
    let users = &services.users;
    let key = users.parse_login_user(name).map(|u| u.to_string()).unwrap_or_else(|_| name.to_lowercase());
    services.rate_limiter.check(Action::Login, &key)?;
    let user = match crate::users::directory::password_login(&services, name, password).await {
        Ok(user) => user,
        Err(crate::error::Error::Forbidden(_)) => {
            let message = "Sign-in refused: wrong user name or password, or the account is deactivated.";
            return Ok(login_form(Some(message), None, StatusCode::FORBIDDEN));
        }
        Err(other) => return Err(other.into()),
    };
    match users.account(&user)? {
        Some(account) if account.admin && !account.deactivated => {}
        Some(account) if account.deactivated => {
            return Ok(login_form(Some("Sign-in refused: this account is deactivated."), None, StatusCode::FORBIDDEN));
        }
        _ => {
            let message = "Sign-in refused: this account is not a server admin. The console is for server admins only.";
            return Ok(login_form(Some(message), None, StatusCode::FORBIDDEN));
        }
    }
    // An expiring token (its refresh token is never handed out): the session ends by itself.
    let ip = client_ip(&parts, &services);
    let session = users.login(&user, None, Some(DEVICE_NAME.to_owned()), ip, Some(SESSION_LIFETIME)).await?;
    services.audit.record(
        user.as_str(),
        "console.sign_in",
        user.as_str(),
        serde_json::json!({ "device_id": session.device_id }),
    )?;
    let mut response = Redirect::to(BASE).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(Some(&session.access_token), over_tls(&parts, &services)));
    Ok(response)
}

/// `POST /logout`: the session's device is removed (its token no longer works anywhere) and the
/// cookie cleared.
async fn logout(State(services): State<Arc<Services>>, change: Change) -> Page {
    let session = &change.session;
    services.users.remove_device(&session.user_id, &session.owner.device_id).await?;
    let mut response = Redirect::to(&format!("{BASE}/login?signed_out=1")).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(None, change.secure));
    Ok(response)
}
