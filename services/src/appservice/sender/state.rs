//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use ruma::OwnedRoomId;
use serde_json::Value;
use std::collections::HashMap;

/// Shared state of the appservice tasks.
#[derive(Default)]
pub struct AppserviceSender {
    /// Woken by a successful ping: a backing-off task retries at once.
    pub retry_now: tokio::sync::Notify,
    /// Typing, receipts, presence and to-device messages for appservices with
    /// `receive_ephemeral`, by appservice id, until a transaction takes them (and records them
    /// with itself). Held in memory only: after a restart the next typing notice or receipt says
    /// the same, and to-device messages are still in the devices' inboxes.
    pub(crate) ephemeral: std::sync::Mutex<HashMap<String, Vec<Value>>>,
    pub(crate) ephemeral_ready: tokio::sync::Notify,
    pub(crate) started: std::sync::OnceLock<u64>,
    /// (appservice id, room) → whether the room concerns it, as of the room's state snapshot
    /// (members and aliases are state): a typing notice, receipt or presence change checks a
    /// room with one read instead of scanning its members.
    pub(crate) interest: std::sync::Mutex<HashMap<(String, OwnedRoomId), (u64, bool)>>,
}
