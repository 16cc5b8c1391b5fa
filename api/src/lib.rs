//! Hemicycle's HTTP layer: the client, federation and admin APIs, the console and the listeners.
//! Handlers are thin: they parse a ruma request, call a service of `hemicycle-services` and return
//! a ruma response.

pub mod api;
pub mod server;

/// The layers below, under the names the handlers use (`crate::rooms`, `crate::error`, …).
pub use hemicycle_services::{
    admin, appservice, audit, config, db, ephemeral, error, federation, keys, locks, media, metrics, network, oauth,
    push, ratelimit, reports, retention, rooms, rtc, search, server_keys, services, spaces, stream, sync, telemetry,
    time, uia, users,
};
