//! Turning service errors into the spec's error bodies and status codes.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::error::Error;

/// An error as it goes on the wire: a status and a Matrix error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &str, error: impl Into<String>) -> Self {
        Self { status, body: json!({ "errcode": errcode, "error": error.into() }), retry_after: None }
    }

    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "an access token is required")
    }

    pub fn not_json(reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", format!("the body is not valid JSON: {reason}"))
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", format!("the request body exceeds {limit} bytes"))
    }

    pub fn unrecognized_path() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "unrecognized request")
    }

    pub fn unrecognized_method() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "method not allowed on this endpoint")
    }

    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        use StatusCode as S;
        let (status, code) = match &error {
            Error::Forbidden(_) => (S::FORBIDDEN, "M_FORBIDDEN"),
            Error::NotFound(_) => (S::NOT_FOUND, "M_NOT_FOUND"),
            Error::InvalidParam(_) => (S::BAD_REQUEST, "M_INVALID_PARAM"),
            Error::MissingParam(_) => (S::BAD_REQUEST, "M_MISSING_PARAM"),
            Error::BadJson(_) => (S::BAD_REQUEST, "M_BAD_JSON"),
            Error::InvalidUsername(_) => (S::BAD_REQUEST, "M_INVALID_USERNAME"),
            Error::UserInUse => (S::BAD_REQUEST, "M_USER_IN_USE"),
            Error::GuestAccessForbidden => (S::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            Error::UnknownToken | Error::ExpiredToken => (S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Error::ThreepidDenied(_) => (S::FORBIDDEN, "M_THREEPID_DENIED"),
            Error::UserLocked => (S::UNAUTHORIZED, "M_USER_LOCKED"),
            Error::UserSuspended => (S::FORBIDDEN, "M_USER_SUSPENDED"),
            Error::PasswordRefused { errcode, .. } => (S::BAD_REQUEST, *errcode),
            Error::ExpiredAccount => (S::FORBIDDEN, "ORG_MATRIX_EXPIRED_ACCOUNT"),
            Error::ThreepidAuthFailed(_) => (S::BAD_REQUEST, "M_THREEPID_AUTH_FAILED"),
            Error::ThreepidInUse => (S::BAD_REQUEST, "M_THREEPID_IN_USE"),
            Error::ThreepidNotFound => (S::BAD_REQUEST, "M_THREEPID_NOT_FOUND"),
            Error::LimitExceeded { .. } => (S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            Error::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Error::Unrecognized(_) => (S::NOT_FOUND, "M_UNRECOGNIZED"),
            Error::UnsupportedRoomVersion(_) => (S::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
            Error::RoomInUse(_) => (S::CONFLICT, "M_ROOM_IN_USE"),
            Error::AliasTakenAtCreation(_) => (S::BAD_REQUEST, "M_ROOM_IN_USE"),
            Error::BadAlias(_) => (S::BAD_REQUEST, "M_BAD_ALIAS"),
            Error::BadState(_) => (S::BAD_REQUEST, "M_UNKNOWN"),
            Error::Refused(_) => (S::FORBIDDEN, "M_UNKNOWN"),
            Error::ServerManaged(_) => (S::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
            Error::Exclusive(_) => (S::BAD_REQUEST, "M_EXCLUSIVE"),
            Error::AppserviceUnreachable { status, errcode, .. } => {
                (S::from_u16(*status).unwrap_or(S::BAD_GATEWAY), *errcode)
            }
            Error::RemoteUnreachable(reason) => {
                tracing::warn!(%reason, "answering 502: another server did not answer usefully");
                (S::BAD_GATEWAY, "M_UNKNOWN")
            }
            Error::DirectoryUnavailable(_) => (S::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            Error::Unauthorized(_) => (S::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Error::IncompatibleRoomVersion(_) => (S::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION"),
            Error::WrongRoomKeysVersion { .. } => (S::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
            Error::CannotOverwriteMedia(_) => (S::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
            Error::NotYetUploaded(_) => (S::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
            Error::NotClean(_) => (S::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"),
            Error::MimeTypeForbidden(_) => (S::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"),
            Error::ScannerUnavailable(_) => (S::SERVICE_UNAVAILABLE, "MCS_SCANNER_UNAVAILABLE"),
            Error::FailedToDecrypt(_) => (S::BAD_REQUEST, "MCS_MEDIA_FAILED_TO_DECRYPT"),
            Error::Uia(challenge) => {
                return Self { status: S::UNAUTHORIZED, body: challenge.body.clone(), retry_after: None };
            }
            Error::Database(_) | Error::Internal(_) => {
                tracing::error!(%error, "request failed");
                (S::INTERNAL_SERVER_ERROR, "M_UNKNOWN")
            }
        };
        let message = match &error {
            Error::Database(_) | Error::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        };
        let mut api = Self::new(status, code, message);
        match error {
            Error::LimitExceeded { retry_after } => {
                api.body["retry_after_ms"] = json!(retry_after.as_millis() as u64);
                api.retry_after = Some(retry_after);
            }
            Error::UnknownToken => api.body["soft_logout"] = json!(false),
            Error::ExpiredToken | Error::UserLocked => api.body["soft_logout"] = json!(true),
            Error::WrongRoomKeysVersion { current, .. } => api.body["current_version"] = json!(current),
            Error::IncompatibleRoomVersion(version) => api.body["room_version"] = json!(version),
            // The content scanner's own keys too, so its clients read these refusals on the
            // media endpoints as they read the scanner's.
            Error::NotClean(_)
            | Error::MimeTypeForbidden(_)
            | Error::ScannerUnavailable(_)
            | Error::FailedToDecrypt(_) => {
                api.body["reason"] = api.body["errcode"].clone();
                api.body["info"] = api.body["error"].clone();
                if matches!(error, Error::ScannerUnavailable(_)) {
                    api.retry_after = Some(std::time::Duration::from_secs(30));
                }
            }
            Error::AppserviceUnreachable { extra: Some(serde_json::Value::Object(extra)), .. } => {
                for (key, value) in extra {
                    api.body[key] = value;
                }
            }
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
