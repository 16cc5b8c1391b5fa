//! The bottom layer of Hemicycle: configuration, errors, time, locks, rate limits, telemetry set-up
//! and the typed-table store. It knows no domain: the services crate declares the tables and the
//! records, the API crate the HTTP.

pub mod config;
pub mod db;
pub mod error;
pub mod locks;
pub mod ratelimit;
pub mod telemetry;
pub mod time;
