//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use crate::config::LiveKitConfig;
use std::{collections::HashMap, sync::Mutex, time::Instant};
use tokio::sync::mpsc;

pub struct LiveKit {
    pub(crate) config: LiveKitConfig,
    pub(crate) secret: String,
    /// The SFU's room API (`http(s)://…`, from the `ws(s)://` URL clients are given).
    pub(crate) api_url: String,
    pub(crate) http: reqwest::Client,
    /// Delayed leave events handed to us, by (LiveKit room, identity): the task that keeps each
    /// one pending while its participant is on the SFU. Their records are in the rtc table;
    /// this map and that table change together, under this lock.
    pub(crate) delegations: Mutex<HashMap<(String, String), Keeper>>,
    /// Other servers' client API base URLs found by their `/.well-known/matrix/client`, with
    /// when they were found.
    pub(crate) client_apis: Mutex<HashMap<String, (String, Instant)>>,
}

/// The task keeping one delegated leave: which delegation it keeps, and where to tell it what
/// the SFU says of its participant (dropping the sender ends it, when a newer delegation
/// replaces it).
pub(crate) struct Keeper {
    pub(crate) id: String,
    /// The participant's server, counted against [`MAX_DELEGATIONS_PER_SERVER`](crate::rtc::delegation).
    pub(crate) server: String,
    pub(crate) signals: mpsc::UnboundedSender<Presence>,
}

/// What the SFU's webhooks say of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Joined,
    Left,
}
