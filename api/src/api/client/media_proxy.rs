//! The content scanner API of Element's matrix-content-scanner, served by Hemicycle itself so that
//! clients configured for a scanner work unchanged: `/_matrix/media_proxy/unstable/{download,
//! thumbnail,scan}/{server}/{mediaId}`, `POST …/scan_encrypted` and `…/download_encrypted` (the
//! attachment's `file` object, in clear or as an `encrypted_body` for `GET …/public_key`).
//!
//! Answers and errors are the reference scanner's: `{"clean", "info"}`, errors as `{"reason",
//! "info"}` (with the Matrix `errcode`/`error` beside them). Unlike the reference, which answers
//! from its cache to anyone once a file was scanned, every request is authenticated before any
//! verdict is looked at: the verdicts are the media service's, the same the media endpoints use.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http::{request::Parts, StatusCode};
use ruma::{OwnedServerName, UInt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, TokenUse},
    },
    error::Error,
    media::{antivirus::Antivirus, antivirus_crypto::EncryptedFile},
    services::Services,
};

const PREFIX: &str = "/_matrix/media_proxy/unstable";
/// How long a download waits for a reserved id's upload or a remote server, as the media
/// endpoints' default `timeout_ms`.
const WAIT: Duration = Duration::from_secs(20);
/// Largest request body of the POST endpoints (a `file` object is well under 1 KiB).
const MAX_BODY: usize = 64 * 1024;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{PREFIX}/download/{{server_name}}/{{media_id}}"), get(download))
        .route(&format!("{PREFIX}/thumbnail/{{server_name}}/{{media_id}}"), get(thumbnail))
        .route(&format!("{PREFIX}/scan/{{server_name}}/{{media_id}}"), get(scan))
        .route(&format!("{PREFIX}/scan_encrypted"), post(scan_encrypted))
        .route(&format!("{PREFIX}/download_encrypted"), post(download_encrypted))
        .route(&format!("{PREFIX}/public_key"), get(public_key))
}

/// An error as the reference scanner writes it: `reason` and `info`, plus the Matrix keys.
struct McsError(ApiError);

impl McsError {
    fn new(status: StatusCode, reason: &str, info: impl Into<String>) -> Self {
        Self(ApiError::new(status, reason, info.into()))
    }
}

impl From<Error> for McsError {
    fn from(error: Error) -> Self {
        // Another server that cannot give the file: the scanner's "request failed".
        if let Error::RemoteUnreachable(info) = &error {
            return Self::new(StatusCode::BAD_GATEWAY, "MCS_MEDIA_REQUEST_FAILED", info.clone());
        }
        Self(ApiError::from(error))
    }
}

impl From<ApiError> for McsError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for McsError {
    fn into_response(self) -> Response {
        let mut api = self.0;
        let reason = api.body["errcode"].clone();
        // An infected file in the reference scanner's words, which its clients may show; the
        // Matrix `error` beside it names the signature.
        let info = match reason.as_str() {
            Some("MCS_MEDIA_NOT_CLEAN") => json!("***VIRUS DETECTED***"),
            _ => api.body["error"].clone(),
        };
        api.body["reason"] = reason;
        api.body["info"] = info;
        api.into_response()
    }
}

/// The caller's account: required, and checked before anything is read or looked up.
fn caller(services: &Services, parts: &Parts) -> Result<(), McsError> {
    authenticate(parts, services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    Ok(())
}

fn server_name(value: &str) -> Result<OwnedServerName, McsError> {
    OwnedServerName::try_from(value)
        .map_err(|_| McsError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Malformed media ID"))
}

/// The antivirus: the scanner's API is served only where files are scanned.
fn scanning(services: &Services) -> Result<&Arc<Antivirus>, McsError> {
    services.media.antivirus().ok_or_else(|| {
        Error::Unrecognized("the content scanner is not enabled on this server ([antivirus] clamd)".into()).into()
    })
}

/// `GET …/download/{serverName}/{mediaId}`: the file, once it scanned clean.
async fn download(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    parts: Parts,
) -> Result<Response, McsError> {
    caller(&services, &parts)?;
    scanning(&services)?;
    let server = server_name(&server)?;
    let content = super::media::content(&services, &server, &media_id, WAIT).await?;
    Ok(super::media::serve(content, None))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: UInt,
    height: UInt,
    method: Option<ruma::media::Method>,
}

/// `GET …/thumbnail/{serverName}/{mediaId}?width&height&method`: a thumbnail of a file that
/// scanned clean.
async fn thumbnail(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    query: Result<Query<ThumbnailQuery>, axum::extract::rejection::QueryRejection>,
    parts: Parts,
) -> Result<Response, McsError> {
    caller(&services, &parts)?;
    scanning(&services)?;
    let server = server_name(&server)?;
    let Query(query) = query.map_err(|e| Error::invalid_param(format!("bad thumbnail parameters: {e}")))?;
    Ok(super::media::serve_thumbnail(&services, &server, &media_id, (query.width, query.height), query.method, WAIT)
        .await?)
}

/// The scan endpoints' answer: an infected file is a 200 with `clean: false`, every other
/// refusal an error.
fn scan_answer(outcome: Result<(), Error>) -> Result<Response, McsError> {
    match outcome {
        Ok(()) => Ok(axum::Json(json!({ "clean": true, "info": "File is clean" })).into_response()),
        Err(Error::NotClean(_)) => {
            Ok(axum::Json(json!({ "clean": false, "info": "***VIRUS DETECTED***" })).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET …/scan/{serverName}/{mediaId}`
async fn scan(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    parts: Parts,
) -> Result<Response, McsError> {
    caller(&services, &parts)?;
    scanning(&services)?;
    let server = server_name(&server)?;
    crate::federation::media::ensure_cached(&services, &server, &media_id, WAIT).await?;
    scan_answer(services.media.screen(&server, &media_id, WAIT).await)
}

/// The `file` of a POST body, decrypted first when it came as an `encrypted_body`.
fn encrypted_file(antivirus: &Antivirus, body: &Bytes) -> Result<EncryptedFile, McsError> {
    let malformed = |info: String| McsError::new(StatusCode::BAD_REQUEST, "MCS_MALFORMED_JSON", info);
    if body.len() > MAX_BODY {
        return Err(malformed("the request body is too large".into()));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if !body.is_object() {
        return Err(malformed("Body must be a dictionary".into()));
    }
    let body = match body.get("encrypted_body") {
        None | Some(Value::Null) => body,
        Some(encrypted) => antivirus
            .body_decryption()
            .decrypt(encrypted)
            .map_err(|e| McsError::new(StatusCode::FORBIDDEN, "MCS_BAD_DECRYPTION", format!("Bad decryption: {e}")))?,
    };
    let file = body.get("file").ok_or_else(|| malformed("'file' is a required property".into()))?;
    EncryptedFile::from_json(file).map_err(|e| malformed(e.0))
}

/// Finds the attachment named by a POST body, fetching it from its server when it is another's.
async fn attachment(services: &Services, body: &Bytes) -> Result<(OwnedServerName, String, EncryptedFile), McsError> {
    let file = encrypted_file(scanning(services)?, body)?;
    let (server, media_id) = file
        .media_path()
        .ok_or_else(|| McsError::new(StatusCode::BAD_REQUEST, "MCS_MALFORMED_JSON", "Malformed media ID"))?;
    let server = server_name(server)?;
    let media_id = media_id.to_owned();
    crate::federation::media::ensure_cached(services, &server, &media_id, WAIT).await?;
    Ok((server, media_id, file))
}

/// `POST …/scan_encrypted`: scans the decrypted attachment.
async fn scan_encrypted(
    State(services): State<Arc<Services>>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, McsError> {
    caller(&services, &parts)?;
    scanning(&services)?;
    let (server, media_id, file) = attachment(&services, &body).await?;
    scan_answer(services.media.screen_encrypted(&server, &media_id, &file, WAIT).await.map(|_| ()))
}

/// `POST …/download_encrypted`: the attachment, still encrypted, once its decrypted contents
/// scanned clean.
async fn download_encrypted(
    State(services): State<Arc<Services>>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, McsError> {
    caller(&services, &parts)?;
    scanning(&services)?;
    let (server, media_id, file) = attachment(&services, &body).await?;
    let content = services.media.screen_encrypted(&server, &media_id, &file, WAIT).await?;
    Ok(super::media::serve(content, None))
}

/// `GET …/public_key`: the key `encrypted_body` is encrypted to (no authentication, as in the
/// reference: it is public).
async fn public_key(State(services): State<Arc<Services>>) -> Result<Response, McsError> {
    let key = scanning(&services)?.body_decryption().public_key();
    Ok(axum::Json(json!({ "public_key": key })).into_response())
}
