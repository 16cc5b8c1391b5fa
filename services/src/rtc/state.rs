//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use crate::config::LiveKitConfig;
use std::collections::HashMap;
use tokio::sync::mpsc;

pub struct LiveKit {
    pub(crate) config: LiveKitConfig,
    pub(crate) secret: String,
    /// The SFU's room API (`http(s)://…`, from the `ws(s)://` URL clients are given).
    pub(crate) api_url: String,
    pub(crate) http: reqwest::Client,
    /// Delayed leave events handed to us, by (LiveKit room, identity): the channel of the task
    /// that keeps each one pending while its participant is on the SFU.
    pub(crate) delegations: std::sync::Mutex<HashMap<(String, String), mpsc::UnboundedSender<Presence>>>,
}
/// What the SFU's webhooks say of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Joined,
    Left,
}
