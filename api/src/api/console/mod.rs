//! The admins' web console under `/_hemicycle/console`: server-rendered HTML pages (maud, so
//! every value is escaped by construction) for operators who would rather not script the admin
//! API. It is a thin layer too: reads go to the services, and every change goes through the same
//! functions as the admin API's handlers (`api::admin::*`), which also write the audit log.
//!
//! Security: the session is an ordinary access token of a device named "Hemicycle console", kept
//! in an `HttpOnly`, `SameSite=Strict` cookie scoped to the console's path; every change is a
//! `POST` carrying a CSRF token derived from the session token and is refused when the browser
//! says it comes from another site. Every answer carries a strict Content-Security-Policy (no
//! inline script or style), `nosniff`, `no-referrer` and `no-store`.

mod accounts;
mod antivirus;
mod network;
mod network_pairs;
mod node;
mod peers;
mod proposals;
mod rooms;
mod second_factor;
mod session;
mod validity;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use http::{header, request::Parts, HeaderValue, Method, StatusCode};
use maud::{html, Markup, DOCTYPE};

pub use self::session::Session;
use super::error::ApiError;
use crate::{error::Error, services::Services};

/// Where the console lives; every link and the cookie's path derive from it.
pub const BASE: &str = "/_hemicycle/console";

/// The policy every console answer carries: scripts and styles only from the console's own
/// files (none inline), nothing framed, forms only to the console.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");

/// What a console handler answers: a page (or a redirect), or an error page.
pub type Page = Result<Response, Failure>;

/// An error shown as an HTML page with its status: what went wrong, in the service's words.
/// A client that does not ask for HTML gets a Matrix error body instead.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
    /// The Matrix error code, for clients that read JSON.
    pub errcode: &'static str,
    /// How long to wait before trying again, for `M_LIMIT_EXCEEDED` (too many wrong one-time
    /// codes): `retry_after_ms` in JSON, `Retry-After` in both.
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let errcode = match status {
            StatusCode::UNAUTHORIZED => "M_MISSING_TOKEN",
            StatusCode::FORBIDDEN => "M_FORBIDDEN",
            StatusCode::NOT_FOUND => "M_NOT_FOUND",
            StatusCode::PAYLOAD_TOO_LARGE => "M_TOO_LARGE",
            StatusCode::BAD_REQUEST => "M_INVALID_PARAM",
            _ => "M_UNRECOGNIZED",
        };
        Self { status, message: message.into(), errcode, retry_after_ms: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        let message = error.body["error"].as_str().unwrap_or("the request failed").to_owned();
        let errcode = match error.errcode() {
            "M_FORBIDDEN" => "M_FORBIDDEN",
            "M_NOT_FOUND" => "M_NOT_FOUND",
            "M_INVALID_PARAM" => "M_INVALID_PARAM",
            "M_MISSING_PARAM" => "M_MISSING_PARAM",
            "M_USER_IN_USE" => "M_USER_IN_USE",
            "M_INVALID_USERNAME" => "M_INVALID_USERNAME",
            "M_LIMIT_EXCEEDED" => "M_LIMIT_EXCEEDED",
            "M_TOO_LARGE" => "M_TOO_LARGE",
            _ => "M_UNKNOWN",
        };
        let retry_after_ms = error.body["retry_after_ms"].as_u64();
        let message = match retry_after_ms {
            Some(ms) => format!("{message}: try again in {} s.", ms.div_ceil(1000)),
            None => message,
        };
        Self { status: error.status, message, errcode, retry_after_ms }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.error role="alert" { (self.message) }
            p { a href=(BASE) { "Back to the console" } }
        };
        let mut response = (self.status, Html(document(title, None, body).into_string())).into_response();
        if let Some(ms) = self.retry_after_ms {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Whether the client reads HTML (browsers say so in `Accept` for every page and form).
fn wants_html(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

/// A link inside the console with query parameters, each percent-encoded.
pub fn link(path: &str, query: &[(&str, &str)]) -> String {
    let mut out = format!("{BASE}{path}");
    if !query.is_empty() {
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        out.push('?');
        out.push_str(&encoded);
    }
    out
}

/// After a change, back to a page with a confirmation (Post/Redirect/Get, so reloading the page
/// does not repeat the change). The confirmation is signed for the session, so a link made
/// elsewhere cannot show an admin a message of its own choosing.
pub fn done<'a>(session: &Session, path: &str, mut query: Vec<(&'a str, &'a str)>, message: &'a str) -> Page {
    let signature = session.sign_notice(message);
    query.push(("ok", message));
    let mut target = link(path, &query);
    target.push_str("&sig=");
    target.push_str(&signature);
    Ok(Redirect::to(&target).into_response())
}

/// The sections of the navigation: (path, label).
const SECTIONS: [(&str, &str); 12] = [
    ("", "This node"),
    ("/peers", "Peers"),
    ("/network", "Network"),
    ("/proposals", "Proposals and notices"),
    ("/rooms", "Rooms"),
    ("/users", "Users"),
    ("/tokens", "Registration tokens"),
    ("/media", "Media"),
    ("/antivirus", "Antivirus"),
    ("/reports", "Event reports"),
    ("/audit", "Audit log"),
    ("/second-factor", "Second factor"),
];

/// The whole HTML document around a page's content; with a session, the navigation and the
/// sign-out button.
fn document(title: &str, session: Option<(&Session, &str)>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon file: an empty one, so browsers do not ask for /favicon.ico.
                link rel="icon" href="data:,";
                title { (title) " · Hemicycle console" }
                link rel="stylesheet" href=(format!("{BASE}/static/console.css"));
                script src=(format!("{BASE}/static/console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to main content" }
                header {
                    p.brand { "Hemicycle console" }
                    @if let Some((session, current)) = session {
                        nav aria-label="Console sections" {
                            ul {
                                @for (path, label) in SECTIONS {
                                    li {
                                        @if path == current {
                                            a href=(format!("{BASE}{path}")) aria-current="page" { (label) }
                                        } @else {
                                            a href=(format!("{BASE}{path}")) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action=(format!("{BASE}/logout")) {
                            (session.csrf_field())
                            button type="submit" { "Sign out " span.who { (session.user_id.as_str()) } }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A signed-in page: the document with the navigation, the confirmation of the last change
/// (`?ok=`) and the page's content.
pub fn page(session: &Session, section: &str, title: &str, notice: Option<&str>, content: Markup) -> Page {
    let content = html! {
        @if let Some(notice) = notice {
            p.notice role="status" { (notice) }
        }
        (content)
    };
    Ok(Html(document(title, Some((session, section)), content).into_string()).into_response())
}

/// The query string of a console page.
pub struct Query(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Failure> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Query(form_urlencoded::parse(query.as_bytes()).into_owned().collect()))
    }
}

impl Query {
    /// A parameter, trimmed; none when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Where a paged list starts (`from`, default 0): 400 when it is not a number.
    pub fn from(&self) -> Result<usize, Failure> {
        self.get("from").map_or(Ok(0), |v| v.parse().map_err(|_| Failure::bad_request("from must be a whole number.")))
    }

    /// The confirmation a change redirected with, when signed for this session.
    pub fn notice(&self, session: &Session) -> Option<&str> {
        let message = self.get("ok")?;
        session.notice_matches(message, self.get("sig")?).then_some(message)
    }
}

/// A change submitted from a console form: the signed-in admin and the form's fields, once the
/// request is known to come from the console itself (same-site, CSRF token of this session).
pub struct Change {
    pub session: Session,
    /// Whether the request came over HTTPS (see `session::over_tls`).
    pub secure: bool,
    fields: HashMap<String, String>,
}

impl FromRequest<Arc<Services>> for Change {
    type Rejection = Failure;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, Failure> {
        let (parts, body) = request.into_parts();
        refuse_cross_site(&parts)?;
        let session = Session::required(&parts, services)?;
        let secure = session::over_tls(&parts, services);
        let fields = read_form(&parts, body, services).await?;
        let given = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !session.csrf_matches(given) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or does not match this session: reload the page and try again.",
            ));
        }
        Ok(Change { session, secure, fields })
    }
}

impl Change {
    /// A field, trimmed; none when absent or empty.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A field the form must carry: 400 naming it otherwise.
    pub fn required(&self, name: &str, label: &str) -> Result<&str, Failure> {
        self.field(name).ok_or_else(|| Failure::bad_request(format!("{label} is required.")))
    }

    /// A field kept as typed (passwords: spaces count).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A checkbox: ticked when present.
    pub fn ticked(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The names after `prefix` of the ticked checkboxes named `prefix…` (a list to choose
    /// from, such as the servers a notice goes to), sorted.
    pub fn ticked_with_prefix(&self, prefix: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self.fields.keys().filter_map(|name| name.strip_prefix(prefix)).collect();
        out.sort_unstable();
        out
    }

    /// An optional non-negative whole number.
    pub fn number(&self, name: &str, label: &str) -> Result<Option<u64>, Failure> {
        self.field(name)
            .map(|v| v.parse().map_err(|_| Failure::bad_request(format!("{label} must be a whole number."))))
            .transpose()
    }

    /// The second factor a dangerous change asks for (deactivation, room shutdown, approving
    /// another node's proposal): the `totp` field must carry a fresh one-time code of the admin,
    /// when they have enrolled one (always, under `console.require_second_factor`). A wrong or
    /// replayed code is 403 and nothing changes.
    pub fn second_factor(&self, services: &Services) -> Result<(), Failure> {
        let user = &self.session.user_id;
        if !services.totp.enrolled(user)? {
            if services.config.console.require_second_factor {
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    "This change needs a second factor: enrol one first (Second factor page).",
                ));
            }
            return Ok(());
        }
        let code = self
            .field("totp")
            .ok_or_else(|| Failure::new(StatusCode::FORBIDDEN, "This change needs your one-time code."))?;
        services.totp.check(user, code)?;
        Ok(())
    }

    /// The acting admin, as the admin API's shared functions take it.
    pub fn admin(&self) -> super::admin::Admin {
        super::admin::Admin(self.session.owner.clone())
    }
}

/// Refuses a change the browser says comes from another site: `Sec-Fetch-Site` other than
/// `same-origin`, or an `Origin` whose host is not the one the request was sent to. Under
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` with form posts, so that value is
/// only accepted when `Sec-Fetch-Site: same-origin` vouches for the request.
pub(crate) fn refuse_cross_site(parts: &Parts) -> Result<(), Failure> {
    let refused = || Failure::new(StatusCode::FORBIDDEN, "Changes are only accepted from the console's own pages.");
    let site = parts.headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if site.is_some_and(|site| site != b"same-origin") {
        return Err(refused());
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if origin == "null" {
            return if site.is_some() { Ok(()) } else { Err(refused()) };
        }
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(refused());
        }
    }
    Ok(())
}

/// Reads an `application/x-www-form-urlencoded` body, capped at `limits.max_request_size`.
pub(crate) async fn read_form(
    parts: &Parts,
    body: axum::body::Body,
    services: &Services,
) -> Result<HashMap<String, String>, Failure> {
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(Failure::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Console changes are sent as HTML forms."));
    }
    let limit = services.config.limits.max_request_size;
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| Failure::new(StatusCode::PAYLOAD_TOO_LARGE, format!("The form exceeds {limit} bytes.")))?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Adds the console's security headers to every answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let html = wants_html(request.headers());
    let mut response = next.run(request).await;
    if let (false, Some(failure)) = (html, response.extensions().get::<Failure>().cloned()) {
        let mut body = serde_json::json!({ "errcode": failure.errcode, "error": failure.message });
        if let Some(ms) = failure.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        response = (failure.status, axum::Json(body)).into_response();
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Answers a console path or method that does not exist with an error page.
async fn not_found(method: Method) -> Failure {
    if method == Method::GET || method == Method::POST {
        Failure::new(StatusCode::NOT_FOUND, "There is no such console page.")
    } else {
        Failure::new(StatusCode::METHOD_NOT_ALLOWED, "The console only answers GET and POST.")
    }
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

type ConsoleRouter = Router<Arc<Services>>;

/// Mounts the console on `router`; its answers all carry the security headers.
pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    node::started();
    let console = Router::new()
        .route(&format!("{BASE}/static/console.css"), get(stylesheet))
        .route(&format!("{BASE}/static/console.js"), get(script))
        .route(&format!("{BASE}/{{*rest}}"), get(not_found).post(not_found));
    let areas: [fn(ConsoleRouter) -> ConsoleRouter; 6] =
        [session::routes, node::routes, peers::routes, rooms::routes, accounts::routes, validity::routes];
    let console = areas.into_iter().fold(console, |router, area| area(router));
    let console = antivirus::routes(console);
    let console = network::routes(console);
    let console = network_pairs::routes(console);
    let console = second_factor::routes(console);
    let console = proposals::routes(console);
    router.merge(console.layer(middleware::from_fn(security_headers)))
}

/// A form's hidden CSRF field and a submit button, for the one-button forms of tables.
pub fn button_form(
    session: &Session,
    action: &str,
    hidden: &[(&str, &str)],
    label: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(format!("{BASE}{action}")) data-confirm=[confirm] {
            (session.csrf_field())
            @for (name, value) in hidden {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" { (label) }
        }
    }
}

/// The one-time code field of a dangerous change's form.
pub fn totp_field(id: &str) -> Markup {
    html! {
        label for=(id) { "One-time code (if you enrolled a second factor)" }
        input id=(id) name="totp" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6";
    }
}

/// How many rows a console list shows at once.
pub const PAGE_SIZE: usize = 100;

/// Links to the previous and next pages of a list at `path`, keeping its other parameters.
pub fn pager(
    label: &str,
    path: &str,
    params: &[(&str, &str)],
    from: usize,
    size: usize,
    next: Option<usize>,
) -> Markup {
    let at = |start: usize| {
        let start = start.to_string();
        let mut query = params.to_vec();
        query.push(("from", &start));
        link(path, &query)
    };
    html! {
        @if from > 0 || next.is_some() {
            nav.pager aria-label=(label) {
                @if from > 0 { a href=(at(from.saturating_sub(size))) { "Previous page" } " " }
                @if let Some(next) = next { a href=(at(next)) { "Next page" } }
            }
        }
    }
}

/// A timestamp (ms since the epoch) as UTC text, or a dash.
pub fn when(ms: Option<u64>) -> String {
    let Some(ms) = ms.filter(|ms| *ms > 0) else { return "—".to_owned() };
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration in milliseconds, readable.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 if ms > 0 => format!("{ms} ms"),
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_well() {
        assert_eq!(when(Some(0)), "—");
        assert_eq!(when(Some(1_700_000_000_000)), "2023-11-14 22:13:20 UTC");
        assert_eq!(when(Some(951_782_400_000)), "2000-02-29 00:00:00 UTC");
        assert_eq!(duration(1500), "1 s");
        assert_eq!(duration(90_000), "1 min 30 s");
        assert_eq!(duration(3 * 86_400_000 + 7_200_000), "3 d 2 h");
    }
}
