//! Hemicycle, a Matrix homeserver for public administrations: the binary's crate. The server is
//! built in layers, each its own crate: `hemicycle-core` (configuration, errors, the typed-table
//! store), `hemicycle-services` (the domains), `hemicycle-api` (HTTP). This crate puts them under
//! one name for the binary, the tests and the load generator.
//!
//! See `docs/architecture.md` for how a request and an event travel through them.

pub use hemicycle_api::{api, server};
pub use hemicycle_services::{
    admin, appservice, audit, config, db, ephemeral, error, federation, keys, locks, media, metrics, network, push,
    ratelimit, reports, rooms, rtc, search, server_keys, services, spaces, stream, sync, telemetry, time, uia, users,
};
