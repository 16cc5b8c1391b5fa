//! The edge between HTTP and the services: ruma request types in, ruma response types out.
//!
//! [`Ruma`] extracts any ruma `IncomingRequest` (body size limit, JSON check, access token, path
//! arguments), and [`RouterExt::ruma`] registers a handler on every path and method the request
//! type's metadata declares, so no path is ever written by hand.

use std::{future::Future, net::IpAddr, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{on, MethodFilter},
    Router,
};
use bytes::{Bytes, BytesMut};
use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use ruma::api::{
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
    IncomingRequest, OutgoingResponse,
};

use super::error::ApiError;
use crate::{error::Error, services::Services, users::TokenOwner};

/// Whether an endpoint needs, accepts or ignores an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    Required,
    Optional,
    Ignored,
    /// A federation request: an X-Matrix signature of another server.
    Server,
}

/// Maps ruma's authentication schemes to what the server must check.
pub trait AuthRequirement {
    const TOKEN: TokenUse;
}
impl AuthRequirement for AccessToken {
    const TOKEN: TokenUse = TokenUse::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const TOKEN: TokenUse = TokenUse::Optional;
}
impl AuthRequirement for AppserviceToken {
    const TOKEN: TokenUse = TokenUse::Required;
}
impl AuthRequirement for AppserviceTokenOptional {
    const TOKEN: TokenUse = TokenUse::Optional;
}
impl AuthRequirement for NoAuthentication {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthRequirement for NoAccessToken {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthRequirement for ruma::api::federation::authentication::ServerSignatures {
    const TOKEN: TokenUse = TokenUse::Server;
}

/// A parsed request with who sent it.
pub struct Ruma<R> {
    pub body: R,
    /// The token's owner, for endpoints that take an access token and got a valid one.
    pub owner: Option<TokenOwner>,
    pub client_ip: Option<IpAddr>,
    /// The server that signed a federation request.
    pub origin: Option<ruma::OwnedServerName>,
    /// Holds one of the origin's inbound request slots while the request runs.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<R> Ruma<R> {
    /// The authenticated sender; endpoints declared with a required token always have one.
    pub fn sender(&self) -> Result<&TokenOwner, Error> {
        self.owner.as_ref().ok_or(Error::UnknownToken)
    }
}

fn access_token(parts: &http::request::Parts) -> Result<Option<String>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::missing_token())?;
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Some(token.trim().to_owned()))
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => Err(ApiError::missing_token()),
            // Another scheme (Basic from a proxy, say) carries no Matrix token.
            _ => Ok(None),
        };
    }
    let query = parts.uri.query().unwrap_or("");
    Ok(form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned()))
}

/// The client's address: the TCP peer, or — when the peer is one of `listen.trusted_proxies` —
/// the address the proxy names (`X-Forwarded-For`, else `Forwarded: for=`): the rightmost entry
/// that is not itself a trusted proxy, since only the entries our proxies appended can be trusted.
pub fn client_ip(parts: &http::request::Parts, services: &Services) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
    let trusted = &services.config.listen.trusted_proxies;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in parts.headers.get_all("x-forwarded-for") {
        hops.extend(value.to_str().unwrap_or("").split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok()));
    }
    if hops.is_empty() {
        for value in parts.headers.get_all(header::FORWARDED) {
            for element in value.to_str().unwrap_or("").split([',', ';']) {
                let Some((key, addr)) = element.trim().split_once('=') else { continue };
                if !key.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                let addr = addr.trim().trim_matches('"');
                // `for="[2001:db8::1]:4711"` or `for=192.0.2.60:4711`.
                let host = match addr.strip_prefix('[') {
                    Some(rest) => rest.split(']').next().unwrap_or(""),
                    None => addr.split(':').next().unwrap_or(""),
                };
                if let Ok(ip) = host.parse() {
                    hops.push(ip);
                }
            }
        }
    }
    Some(hops.into_iter().rev().find(|ip| !is_trusted(*ip)).unwrap_or(peer))
}

/// Checks the request's access token as `usage` demands and returns its owner. Shared by [`Ruma`]
/// and the handlers that stream their body (media uploads) and so cannot use the extractor.
pub fn authenticate(
    parts: &http::request::Parts,
    services: &Services,
    usage: TokenUse,
) -> Result<Option<TokenOwner>, ApiError> {
    // An endpoint that takes no token ignores whatever Authorization header comes with it;
    // federation requests are checked once their body is read.
    if matches!(usage, TokenUse::Ignored | TokenUse::Server) {
        return Ok(None);
    }
    match (usage, access_token(parts)?) {
        (TokenUse::Required, None) => Err(ApiError::missing_token()),
        (TokenUse::Required | TokenUse::Optional, Some(token)) => {
            if let Some(service) = services.appservices.by_token(&token) {
                return appservice_owner(parts, services, service).map(Some);
            }
            let owner = services.users.authenticate(&token, client_ip(parts, services))?;
            crate::users::account_validity::check_request(services, &owner, parts.uri.path())?;
            Ok(Some(owner))
        }
        _ => Ok(None),
    }
}

/// Who a request made with an appservice's `as_token` acts for: its sender, or the user named by
/// the `user_id` query parameter (masquerading) when that user is in its namespaces and
/// registered; on the device named by `device_id` (MSC4326, or MSC3202's unstable name) when it
/// is one of that user's devices.
fn appservice_owner(
    parts: &http::request::Parts,
    services: &Services,
    service: &crate::appservice::Appservice,
) -> Result<TokenOwner, ApiError> {
    let query = parts.uri.query().unwrap_or("");
    let param =
        |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let user = match param("user_id") {
        Some(raw) => ruma::OwnedUserId::try_from(raw.as_str())
            .map_err(|e| Error::invalid_param(format!("user_id is not a user id: {e}")))?,
        None => service.sender.clone(),
    };
    if !service.claims_user(&user) {
        return Err(Error::forbidden("the application service cannot act for a user outside its namespaces").into());
    }
    if user != service.sender && !services.users.exists(&user)? {
        return Err(Error::forbidden("the application service has not registered this user").into());
    }
    let device_id = match param("device_id").or_else(|| param("org.matrix.msc3202.device_id")) {
        Some(device) => {
            let device: ruma::OwnedDeviceId = device.into();
            if services.users.device(&user, &device)?.is_none() {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN_DEVICE", "the user has no such device"));
            }
            device
        }
        None => APPSERVICE_DEVICE.into(),
    };
    Ok(TokenOwner { user_id: user, device_id, expires_at_ms: None, appservice: Some(service.registration.id.clone()) })
}

/// The device an appservice's request acts on when it names none.
pub const APPSERVICE_DEVICE: &str = "APPSERVICE";

/// Bytes of an oversized body read and discarded before answering 413, so ordinary clients that
/// are still sending see the error instead of a reset connection. Memory use stays constant.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// What a federation request body may weigh: a full transaction (50 PDUs of at most 64 KiB each)
/// and its EDUs fit, whatever the client API's `limits.max_request_size`.
const FEDERATION_BODY_LIMIT: u64 = 50 * crate::rooms::MAX_PDU_BYTES as u64 + 1024 * 1024;

/// Reads the whole body, refusing more than `limit` bytes (announced or actual) with M_TOO_LARGE.
pub async fn read_body(parts: &http::request::Parts, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let announced =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        drain(body).await;
        return Err(ApiError::too_large(limit));
    }
    let mut body = body;
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", format!("could not read the body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() as u64 + data.len() as u64 > limit {
                drain(body).await;
                return Err(ApiError::too_large(limit));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// Reads and discards what is left of a refused body (up to a bound), so the client sees the error.
pub async fn drain(mut body: Body) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

fn deserialization_error(error: FromHttpRequestError) -> ApiError {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => ApiError::unrecognized_method(),
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            ApiError::from(Error::BadJson(format!("the body does not match this endpoint: {e}")))
        }
        other => ApiError::from(Error::invalid_param(other.to_string())),
    }
}

impl<R> FromRequest<Arc<Services>> for Ruma<R>
where
    R: IncomingRequest + Send,
    R::Authentication: AuthRequirement,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let mut path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, services).await {
            Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
            Err(e) => return Err(Error::invalid_param(format!("bad path parameter: {e}")).into()),
        };
        // Routes registered without a trailing empty segment (see `register`) leave it out.
        path_args.resize(path_arg_count::<R>().max(path_args.len()), String::new());
        let client_ip = client_ip(&parts, services);
        let owner = authenticate(&parts, services, R::Authentication::TOKEN)?;
        let limit = if R::Authentication::TOKEN == TokenUse::Server {
            services.config.limits.max_request_size.max(FEDERATION_BODY_LIMIT)
        } else {
            services.config.limits.max_request_size
        };
        let mut bytes = read_body(&parts, body, limit).await?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                bytes = Bytes::from_static(b"{}");
            } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                return Err(ApiError::not_json(e));
            }
        }
        let http_request = http::Request::from_parts(parts, bytes);
        let (origin, permit) = if R::Authentication::TOKEN == TokenUse::Server {
            let origin = services.federation.verify_request(&http_request).await?;
            let permit = services.federation.inbound_permit(&origin).ok_or_else(|| {
                ApiError::from(Error::LimitExceeded { retry_after: std::time::Duration::from_secs(1) })
            })?;
            (Some(origin), Some(permit))
        } else {
            (None, None)
        };
        // Some ruma deserializers panic on malformed input (e.g. a login body without `type`);
        // that is bad JSON from the client, not a server fault.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            R::try_from_http_request(http_request, &path_args)
        }))
        .map_err(|_| ApiError::from(Error::BadJson("the body does not match this endpoint".into())))?;
        let body = parsed.map_err(deserialization_error)?;
        Ok(Self { body, owner, client_ip, origin, _permit: permit })
    }
}

/// Serializes a ruma response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                parts
                    .headers
                    .entry(header::CONTENT_TYPE)
                    .or_insert(header::HeaderValue::from_static("application/json"));
                Response::from_parts(parts, Body::from(body.freeze()))
            }
            Err(e) => ApiError::from(Error::Internal(format!("response serialization failed: {e}"))).into_response(),
        }
    }
}

/// A handler for a ruma endpoint: `async fn(Arc<Services>, Ruma<Request>) -> Result<Response, Error>`.
pub trait RumaHandler<R>: Clone + Send + Sync + 'static {
    fn register(self, router: Router<Arc<Services>>) -> Router<Arc<Services>>;
}

impl<R, F, Fut> RumaHandler<R> for F
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: AuthRequirement,
    R::OutgoingResponse: Send,
    F: Fn(Arc<Services>, Ruma<R>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R::OutgoingResponse, Error>> + Send,
{
    fn register(self, mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
        let filter = method_filter(&R::METHOD);
        let mut paths: Vec<String> = Vec::new();
        for path in R::PATH_BUILDER.all_paths() {
            paths.push(path.to_owned());
            // An empty state key is sent as `/state/{type}/` or `/state/{type}`, which the router
            // cannot match against `{state_key}`; serve both forms with an empty last argument.
            if let Some(stem) = path.strip_suffix("/{state_key}") {
                paths.push(stem.to_owned());
                paths.push(format!("{stem}/"));
            }
        }
        for path in paths {
            let handler = self.clone();
            router = router.route(
                &path,
                on(filter, move |State(services): State<Arc<Services>>, request: Ruma<R>| async move {
                    handler(services, request).await.map(RumaResponse).map_err(ApiError::from)
                }),
            );
        }
        router
    }
}

/// How many path arguments the endpoint's (first) path declares.
fn path_arg_count<R: IncomingRequest>() -> usize {
    R::PATH_BUILDER.all_paths().next().map_or(0, |p| p.matches('{').count())
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        Method::HEAD => MethodFilter::HEAD,
        _ => MethodFilter::OPTIONS,
    }
}

/// Registers ruma handlers on a router.
pub trait RouterExt {
    fn ruma<R, H: RumaHandler<R>>(self, handler: H) -> Self;
}

impl RouterExt for Router<Arc<Services>> {
    fn ruma<R, H: RumaHandler<R>>(self, handler: H) -> Self {
        handler.register(self)
    }
}
