//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use ruma::OwnedUserId;
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio::sync::Notify;

/// Wake-ups and per-pusher backoff of the sender.
#[derive(Default)]
pub struct PushSender {
    pub(crate) wake: Notify,
    pub(crate) backoff: Mutex<HashMap<PusherKey, (Instant, Duration)>>,
}
/// A pusher's identity: (user, app id, pushkey).
pub type PusherKey = (OwnedUserId, String, String);
