//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use crate::{config::AccountValidityConfig, db::Database};
use regex::Regex;
use std::sync::Arc;
use tokio::sync::Notify;

pub struct AccountValidity {
    pub(crate) db: Arc<Database>,
    pub(crate) config: Option<AccountValidityConfig>,
    pub(crate) exclude: Vec<Regex>,
    /// Whether renewal emails can go out at all (`email.smtp_host` is set).
    pub(crate) mail_relay: bool,
    pub(crate) wake: Notify,
    /// Serializes read-modify-writes of the records (renewals, mails, admin changes are rare).
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// Wrong renewal codes typed per account since its last code (`send_links = false`).
    pub(crate) code_failures: std::sync::Mutex<std::collections::HashMap<ruma::OwnedUserId, u32>>,
    /// Told of renewals: a renewed account joins the discovery room again.
    pub(crate) discovery: Arc<crate::users::discovery::state::Discovery>,
}
