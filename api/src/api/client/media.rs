//! Content repository: uploads (streamed to disk), create-then-upload, downloads and thumbnails
//! (streamed from disk), configuration; and the deprecated unauthenticated `/_matrix/media/v3`
//! reads, served only when `media.legacy_unauthenticated` allows.
//!
//! Uploads cannot use the [`Ruma`] extractor (it reads the whole body into memory), so they
//! authenticate with [`authenticate`] and feed the body frame by frame to the media store.
//! Downloads parse their request with [`Ruma`] but answer with a file stream, not a ruma response.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Router,
};
use http::{header, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use ruma::{
    api::{
        client::{
            authenticated_media,
            media::{self, create_content, create_content_async, create_mxc_uri},
        },
        path_builder::PathBuilder,
        IncomingRequest,
    },
    media::Method as RumaMethod,
    MilliSecondsSinceUnixEpoch, OwnedServerName, UInt,
};
use tokio_util::io::ReaderStream;

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, drain, AuthRequirement, RouterExt, Ruma, RumaResponse, TokenUse},
    },
    error::{Error, Result},
    media::{storage::Upload, thumbnail::Method, Content},
    ratelimit::Action,
    services::Services,
    users::TokenOwner,
};

/// Chunk size of download streams.
const READ_CHUNK: usize = 64 * 1024;

/// The spec's list of content types that are safe to show inline (client-server API, "Serving
/// inline content"); anything else — notably HTML and SVG, which can run script — is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Forbids anything served from the media repository to run script or load other resources,
/// should a browser render it anyway.
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let mut router = router
        .ruma(config)
        .ruma(legacy_config)
        .ruma(create)
        .ruma(preview_url)
        .ruma(legacy_preview_url)
        .route_all::<create_content::v3::Request>(post(upload))
        .route_all::<create_content_async::v3::Request>(put(upload_reserved));
    router = get_route(router, download);
    router = get_route(router, download_as);
    router = get_route(router, thumbnail);
    router = get_route(router, legacy_download);
    router = get_route(router, legacy_download_as);
    get_route(router, legacy_thumbnail)
}

/// Registers a method router on every path a ruma endpoint declares.
trait RouteAll {
    fn route_all<R: IncomingRequest>(self, method: axum::routing::MethodRouter<Arc<Services>>) -> Self;
}

impl RouteAll for Router<Arc<Services>> {
    fn route_all<R: IncomingRequest>(mut self, method: axum::routing::MethodRouter<Arc<Services>>) -> Self {
        for path in R::PATH_BUILDER.all_paths() {
            self = self.route(path, method.clone());
        }
        self
    }
}

/// Registers a GET handler that parses a ruma request but answers with a raw (streamed) response.
fn get_route<R, F, Fut>(router: Router<Arc<Services>>, handler: F) -> Router<Arc<Services>>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: AuthRequirement,
    F: Fn(Arc<Services>, Ruma<R>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send,
{
    router.route_all::<R>(get(move |State(services): State<Arc<Services>>, request: Ruma<R>| async move {
        handler(services, request).await.map_err(ApiError::from)
    }))
}

fn upload_size(services: &Services) -> UInt {
    UInt::try_from(services.media.max_upload_size()).unwrap_or(UInt::MAX)
}

/// `GET /_matrix/client/v1/media/config`
pub async fn config(
    services: Arc<Services>,
    _: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> Result<authenticated_media::get_media_config::v1::Response> {
    Ok(authenticated_media::get_media_config::v1::Response::new(upload_size(&services)))
}

/// `GET /_matrix/client/v1/media/preview_url`
pub async fn preview_url(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> Result<authenticated_media::get_media_preview::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let preview = crate::media::preview::preview(&services, &user, &request.body.url).await?;
    authenticated_media::get_media_preview::v1::Response::from_serialize(&preview)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// `GET /_matrix/media/v3/preview_url` (deprecated; authenticated like the new one)
#[allow(deprecated)]
pub async fn legacy_preview_url(
    services: Arc<Services>,
    request: Ruma<media::get_media_preview::v3::Request>,
) -> Result<media::get_media_preview::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let preview = crate::media::preview::preview(&services, &user, &request.body.url).await?;
    media::get_media_preview::v3::Response::from_serialize(&preview).map_err(|e| Error::Internal(e.to_string()))
}

/// `GET /_matrix/media/v3/config` (deprecated)
// Serving the deprecated endpoints is the point of this handler.
#[allow(deprecated)]
pub async fn legacy_config(
    services: Arc<Services>,
    _: Ruma<media::get_media_config::v3::Request>,
) -> Result<media::get_media_config::v3::Response> {
    legacy_allowed(&services)?;
    Ok(media::get_media_config::v3::Response::new(upload_size(&services)))
}

/// `POST /_matrix/media/v1/create`: reserves a media id for a later `PUT` upload.
pub async fn create(
    services: Arc<Services>,
    request: Ruma<create_mxc_uri::v1::Request>,
) -> Result<create_mxc_uri::v1::Response> {
    let sender = request.sender()?;
    if !services.appservices.exempt_from_rate_limits(sender) {
        let custom = services.users.rate_override(&sender.user_id)?;
        services.rate_limiter.check_with(Action::MediaUpload, sender.user_id.as_str(), custom)?;
    }
    let (uri, expires) = services.media.reserve(&sender.user_id)?;
    let mut response = create_mxc_uri::v1::Response::new(uri);
    response.unused_expires_at =
        Some(MilliSecondsSinceUnixEpoch(UInt::try_from(expires).map_err(|e| Error::Internal(e.to_string()))?));
    Ok(response)
}

/// What an upload request says besides its body.
struct UploadRequest {
    owner: TokenOwner,
    content_type: Option<String>,
    filename: Option<String>,
}

fn upload_request(services: &Services, parts: &http::request::Parts) -> Result<UploadRequest, ApiError> {
    let owner = authenticate(parts, services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    if !services.appservices.exempt_from_rate_limits(&owner) {
        let custom = services.users.rate_override(&owner.user_id)?;
        services.rate_limiter.check_with(Action::MediaUpload, owner.user_id.as_str(), custom)?;
    }
    let content_type = match parts.headers.get(header::CONTENT_TYPE) {
        Some(value) => Some(
            value.to_str().map_err(|_| Error::invalid_param("the Content-Type header is not valid ASCII"))?.to_owned(),
        ),
        None => None,
    };
    let query = parts.uri.query().unwrap_or("");
    let filename = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "filename")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    Ok(UploadRequest { owner, content_type, filename })
}

/// Streams the body into a new file of the media store; refuses (and stores nothing) past
/// `media.max_upload_size`, announced or actual.
async fn receive(services: &Services, parts: &http::request::Parts, mut body: Body) -> Result<Upload, ApiError> {
    let limit = services.media.max_upload_size();
    let announced =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        drain(body).await;
        return Err(ApiError::too_large(limit));
    }
    let mut upload = services.media.begin_upload().await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", format!("could not read the body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if let Err(e) = upload.write(&data).await {
                drop(upload);
                if matches!(e, Error::TooLarge(_)) {
                    drain(body).await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(upload)
}

/// `POST /_matrix/media/v3/upload`
async fn upload(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let meta = upload_request(&services, &parts)?;
    let upload = receive(&services, &parts, body).await?;
    let uri = services.media.create_with_content(&meta.owner.user_id, upload, meta.content_type, meta.filename).await?;
    Ok(RumaResponse(create_content::v3::Response::new(uri)).into_response())
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the upload to an id from `/create`.
async fn upload_reserved(
    State(services): State<Arc<Services>>,
    params: RawPathParams,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let mut server_name = None;
    let mut media_id = None;
    for (key, value) in &params {
        match key {
            "server_name" => server_name = Some(value.to_owned()),
            "media_id" => media_id = Some(value.to_owned()),
            _ => {}
        }
    }
    let server_name = OwnedServerName::try_from(server_name.unwrap_or_default())
        .map_err(|e| Error::invalid_param(format!("bad server name: {e}")))?;
    let media_id = media_id.unwrap_or_default();
    let meta = upload_request(&services, &parts)?;
    // Refuse before reading a byte when the id cannot take this upload.
    services.media.check_reserved(&meta.owner.user_id, &server_name, &media_id)?;
    let upload = receive(&services, &parts, body).await?;
    services
        .media
        .upload_reserved(&meta.owner.user_id, &server_name, &media_id, upload, meta.content_type, meta.filename)
        .await?;
    // ruma 0.16 offers no constructor for this empty response.
    Ok(axum::Json(serde_json::json!({})).into_response())
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content::v1::Request>,
) -> Result<Response> {
    let r = request.body;
    let content = content(&services, &r.server_name, &r.media_id, r.timeout_ms).await?;
    Ok(serve(content, None))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_as_filename::v1::Request>,
) -> Result<Response> {
    let r = request.body;
    let content = content(&services, &r.server_name, &r.media_id, r.timeout_ms).await?;
    Ok(serve(content, Some(r.filename)))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    let r = request.body;
    serve_thumbnail(&services, &r.server_name, &r.media_id, (r.width, r.height), r.method, r.timeout_ms).await
}

/// The legacy endpoints answer as if the media did not exist when they are switched off, as
/// Synapse does for media under its authenticated-media freeze.
fn legacy_allowed(services: &Services) -> Result<()> {
    if services.config.media.legacy_unauthenticated {
        Ok(())
    } else {
        Err(Error::not_found("unauthenticated media endpoints are disabled; use /_matrix/client/v1/media"))
    }
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated)
// Serving the deprecated endpoints is the point of this handler.
#[allow(deprecated)]
async fn legacy_download(services: Arc<Services>, request: Ruma<media::get_content::v3::Request>) -> Result<Response> {
    legacy_allowed(&services)?;
    let r = request.body;
    let content = content(&services, &r.server_name, &r.media_id, r.timeout_ms).await?;
    Ok(serve(content, None))
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated)
// Serving the deprecated endpoints is the point of this handler.
#[allow(deprecated)]
async fn legacy_download_as(
    services: Arc<Services>,
    request: Ruma<media::get_content_as_filename::v3::Request>,
) -> Result<Response> {
    legacy_allowed(&services)?;
    let r = request.body;
    let content = content(&services, &r.server_name, &r.media_id, r.timeout_ms).await?;
    Ok(serve(content, Some(r.filename)))
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated)
// Serving the deprecated endpoints is the point of this handler.
#[allow(deprecated)]
async fn legacy_thumbnail(
    services: Arc<Services>,
    request: Ruma<media::get_content_thumbnail::v3::Request>,
) -> Result<Response> {
    legacy_allowed(&services)?;
    let r = request.body;
    serve_thumbnail(&services, &r.server_name, &r.media_id, (r.width, r.height), r.method, r.timeout_ms).await
}

/// The thumbnail method a request asks for (scale when it names none).
pub(crate) fn thumbnail_method(method: Option<RumaMethod>) -> Result<Method> {
    match method {
        None | Some(RumaMethod::Scale) => Ok(Method::Scale),
        Some(RumaMethod::Crop) => Ok(Method::Crop),
        Some(other) => Err(Error::invalid_param(format!("unknown thumbnail method {}", other.as_str()))),
    }
}

/// The thumbnail size a request asks for; both sides must be positive.
pub(crate) fn thumbnail_size(width: UInt, height: UInt) -> Result<(u32, u32)> {
    if width == UInt::MIN || height == UInt::MIN {
        return Err(Error::BadState("thumbnail width and height must be positive".into()));
    }
    let side = |v: UInt| u32::try_from(u64::from(v)).unwrap_or(u32::MAX);
    Ok((side(width), side(height)))
}

/// Opens a media's contents, fetching it from its origin server first when it is another's.
pub(crate) async fn content(
    services: &Services,
    server: &ruma::ServerName,
    media_id: &str,
    timeout: Duration,
) -> Result<Content> {
    crate::federation::media::ensure_cached(services, server, media_id, timeout).await?;
    services.media.content(server, media_id, timeout).await
}

pub(crate) async fn serve_thumbnail(
    services: &Services,
    server_name: &ruma::ServerName,
    media_id: &str,
    (width, height): (UInt, UInt),
    method: Option<RumaMethod>,
    timeout: Duration,
) -> Result<Response> {
    let method = thumbnail_method(method)?;
    let size = thumbnail_size(width, height)?;
    // Thumbnails of another server's media are made here from the cached original.
    crate::federation::media::ensure_cached(services, server_name, media_id, timeout).await?;
    let content = services.media.thumbnail(server_name, media_id, size, method, timeout).await?;
    Ok(serve(content, None))
}

/// The media type without parameters, lower-cased (`Text/HTML; charset=x` → `text/html`).
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A file name fit for a header: no quotes, backslashes, path separators or control characters.
fn sanitize_filename(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\' | '/' | ';'))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `Content-Disposition`: inline only for the safe types, with the file name as RFC 6266 wants it
/// (quoted when ASCII, `filename*=utf-8''…` percent-encoded otherwise).
fn content_disposition(content_type: &str, filename: Option<&str>) -> HeaderValue {
    let kind = if INLINE_TYPES.contains(&essence(content_type).as_str()) { "inline" } else { "attachment" };
    let name = filename.map(sanitize_filename).filter(|n| !n.is_empty());
    let value = match name {
        None => kind.to_owned(),
        Some(name) if name.is_ascii() => format!("{kind}; filename=\"{name}\""),
        Some(name) => {
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{kind}; filename*=utf-8''{encoded}")
        }
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// Answers with the file streamed from disk and the headers that keep browsers from treating it
/// as part of the web client.
pub(crate) fn serve(content: Content, filename: Option<String>) -> Response {
    let content_type = content.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition = content_disposition(&content_type, filename.as_deref().or(content.filename.as_deref()));
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = Body::from_stream(ReaderStream::with_capacity(content.file, READ_CHUNK));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content.size));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("cross-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_inline_only_for_safe_types_and_names_are_clean() {
        assert_eq!(content_disposition("image/png", Some("a.png")), "inline; filename=\"a.png\"");
        assert_eq!(content_disposition("Text/Plain; charset=utf-8", None), "inline");
        assert_eq!(content_disposition("text/html", Some("x.html")), "attachment; filename=\"x.html\"");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            content_disposition("application/pdf", Some("../\"evil\"\r\nX: y.pdf")),
            "attachment; filename=\"..evilX: y.pdf\""
        );
        assert_eq!(content_disposition("image/png", Some("été.png")), "inline; filename*=utf-8''%C3%A9t%C3%A9.png");
    }
}
