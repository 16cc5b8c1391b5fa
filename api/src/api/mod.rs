//! The HTTP layer: routing, request extraction, error bodies, CORS. Handlers are thin: they parse a
//! ruma request, call a service and return a ruma response.

pub mod admin;
pub mod admin_room;
pub mod client;
pub mod console;
pub mod error;
pub mod federation;
pub mod oauth;
pub mod ruma;

use std::sync::Arc;

use axum::{response::IntoResponse, Router};
use http::{header, Method};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

use self::error::ApiError;
use crate::services::Services;

/// The federation router, served on `listen.federation` (HTTPS).
pub fn federation_router(services: Arc<Services>) -> Router {
    federation::routes(Router::new())
        .fallback(|| async { ApiError::unrecognized_path() })
        .method_not_allowed_fallback(|| async { ApiError::unrecognized_method() })
        .layer(axum::middleware::from_fn_with_state(services.clone(), crate::metrics::track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "internal server error").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::request_span))
        .with_state(services)
}

/// The client-facing router with every endpoint, the spec's 404/405 answers and CORS.
pub fn router(services: Arc<Services>) -> Router {
    // The spec asks for exactly these CORS headers on every response, so browsers' web clients work.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ]);
    oauth::routes(console::routes(admin::routes(client::routes(Router::new()))))
        .fallback(|| async { ApiError::unrecognized_path() })
        .method_not_allowed_fallback(|| async { ApiError::unrecognized_method() })
        .layer(axum::middleware::from_fn_with_state(services.clone(), crate::metrics::track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "internal server error").into_response()
        }))
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::request_span))
        .with_state(services)
}
