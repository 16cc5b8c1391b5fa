//! Integration tests: the real `hemicycle` binary on loopback with a temp RocksDB, driven by
//! matrix-sdk and raw HTTP. One test binary (modules below) keeps link time down.

mod account_validity;
mod accounts;
mod admin_api;
mod antivirus;
mod appservices;
mod calls;
mod cli;
mod common;
mod console;
mod durability;
mod e2ee;
mod element_x;
mod email;
mod errors;
mod ldap;
mod media;
mod metrics;
mod network;
mod oauth;
mod oauth_upstream;
mod password_policy;
mod previews;
mod pushers;
mod review;
mod rooms;
mod search;
mod stream;
mod sync;
mod sync_cost;
mod threads;
mod turn;
mod url_previews;
mod versions;
mod visibility;
