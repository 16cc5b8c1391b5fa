//! Hemicycle, a Matrix homeserver for public administrations.
//!
//! See `docs/architecture.md` for how a request and an event travel through these modules.

pub mod admin;
pub mod api;
pub mod appservice;
pub mod audit;
pub mod config;
pub mod db;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod keys;
pub mod locks;
pub mod media;
pub mod metrics;
pub mod push;
pub mod ratelimit;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod server;
pub mod server_keys;
pub mod services;
pub mod spaces;
pub mod stream;
pub mod sync;
pub mod telemetry;
pub mod uia;
pub mod users;
