//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use crate::{config::DelayedEventsConfig, db::Database};
use std::{collections::HashSet, sync::Arc};
use tokio::sync::Notify;

pub struct DelayedEvents {
    pub(crate) db: Arc<Database>,
    pub(crate) config: Option<DelayedEventsConfig>,
    pub(crate) wake: Notify,
    /// Serializes changes of the records (the owner's limit is counted under it).
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// Delay ids being sent right now: no longer restartable or cancellable, as Synapse's
    /// `is_processed`.
    pub(crate) firing: std::sync::Mutex<HashSet<String>>,
}
