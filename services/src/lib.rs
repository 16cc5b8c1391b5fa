//! Hemicycle's domain services: what a Matrix homeserver does, free of HTTP. Each domain owns its
//! records and tables; [`services::Services`] holds them all for the HTTP layer (`hemicycle-api`)
//! and the background workers.
//!
//! See `docs/architecture.md` for how a request and an event travel through these modules.

pub use hemicycle_core::{config, error, locks, ratelimit, telemetry, time};

pub mod admin;
pub mod appservice;
pub mod audit;
pub mod db;
pub mod ephemeral;
pub mod federation;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod network;
pub mod oauth;
pub mod push;
pub mod reports;
pub mod retention;
pub mod rooms;
pub mod rtc;
pub mod search;
pub mod server_keys;
pub mod services;
pub mod spaces;
pub mod stream;
pub mod sync;
pub mod uia;
pub mod users;
