//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use ruma::{push::Ruleset, OwnedUserId};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

/// Evaluation state shared with sync and the push rule endpoints.
pub struct Evaluator {
    pub(crate) rules: Mutex<HashMap<OwnedUserId, CachedRules>>,
    pub(crate) evaluated: watch::Sender<u64>,
    /// Users who have (or had) a pusher: only their notifications are queued for a gateway, and
    /// looking this up in memory spares a database scan per notified member. It only grows while
    /// the server runs (a stale entry costs one scan), so it cannot miss a new pusher.
    pub(crate) may_push: Mutex<std::collections::HashSet<OwnedUserId>>,
    /// Serializes pusher changes (a pushkey moving between users touches two users' entries).
    pub(crate) pusher_writes: Mutex<()>,
}
/// A user's rules, and whether they are the spec's defaults for that user. Default rules depend
/// on the user only through their user id (`.m.rule.invite_for_me`, `.m.rule.is_user_mention`),
/// so an event that names none of them has one outcome for all such users: it is evaluated once
/// per event instead of once per member.
#[derive(Clone)]
pub struct CachedRules {
    pub(crate) rules: Arc<Ruleset>,
    pub(crate) default: bool,
    /// For each rule in the order `rules.iter()` gives them, its slot among the server
    /// defaults when it is one as it stands for every user (not changed by the user, nor naming
    /// them): one result per event and slot serves every member whose rules hold it, such as
    /// a member who only added a keyword of their own.
    pub(crate) shared: Arc<Vec<Option<u8>>>,
    /// Whether a rule of the user's reads a key of the event beyond the members the default
    /// rules read (`RuleInput`): only then is the whole event flattened for them.
    pub(crate) reads_whole_event: bool,
}
