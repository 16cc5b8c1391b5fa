//! The directory sync: compare the directory with the accounts, make a plan, apply it.
//!
//! Everything is read first (the whole directory, the accounts, the rooms) and nothing is changed
//! until the plan is complete, so a directory error mid-read changes nothing; a plan that would
//! deactivate more than `max_deactivate_ratio` of the directory's accounts is refused whole.
//! The directory only ever manages the accounts it made (or an operator linked with `hemicycle
//! ldap link`): an entry named like a local account, the bridge's own user or a user an
//! appservice holds exclusively is reported and left alone.
//! The homeserver applies the plan through [`Accounts`], so this module holds the rules and the
//! homeserver its storage.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    future::Future,
};

use futures::StreamExt;

use super::{
    config::LdapConfig,
    directory::{Entry, Snapshot},
};

/// An account as the homeserver has it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub localpart: String,
    /// Made by the directory, or linked to it by an operator (its password lives there).
    pub managed: bool,
    pub deactivated: bool,
    pub name: Option<String>,
    pub mail: Option<String>,
    pub admin: bool,
}

/// A room a group maps to, as the homeserver sees it.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub room_id: String,
    /// Local members by localpart: `join`, `invite`, `leave`, `ban`, `knock`.
    pub members: HashMap<String, String>,
    /// The bridge user's membership.
    pub bridge: Option<String>,
    pub bridge_can_invite: bool,
    pub bridge_can_kick: bool,
    /// Rooms a space lists (`m.space.child`), for mappings with `space_children`.
    pub children: Vec<String>,
}

/// What the homeserver does for the sync. Errors are messages for the run's summary.
pub trait Accounts: Send + Sync {
    fn accounts(&self) -> impl Future<Output = Result<Vec<Existing>, String>> + Send;
    /// Why the directory may never make or manage this user (e.g. an appservice holds it
    /// exclusively), or `None`. The bridge's own user is refused by the sync itself.
    fn reserved(&self, localpart: &str) -> Option<String>;
    /// The room for an id or alias.
    fn room(&self, room: &str) -> impl Future<Output = Result<RoomView, String>> + Send;
    /// Creates the bridge's user when it does not exist yet.
    fn ensure_bridge_user(&self) -> impl Future<Output = Result<(), String>> + Send;
    fn accept_invite(&self, room_id: &str) -> impl Future<Output = Result<(), String>> + Send;
    fn create(&self, entry: &Entry) -> impl Future<Output = Result<(), String>> + Send;
    /// Refreshes the name, mail and admin flag of a directory account.
    fn update(&self, entry: &Entry) -> impl Future<Output = Result<(), String>> + Send;
    /// Deactivates the account and logs out every device.
    fn deactivate(&self, localpart: &str) -> impl Future<Output = Result<(), String>> + Send;
    fn invite(&self, room_id: &str, localpart: &str, join: bool) -> impl Future<Output = Result<(), String>> + Send;
    fn kick(&self, room_id: &str, localpart: &str, reason: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Makes every change of the run durable.
    fn flush(&self) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(Entry),
    Update(Entry),
    Deactivate(String),
    AcceptInvite(String),
    Add { room: String, localpart: String, join: bool },
    Remove { room: String, localpart: String, reason: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create(e) => {
                write!(f, "create {} ({}) from {}", e.localpart, e.name.as_deref().unwrap_or("-"), e.dn)
            }
            Action::Update(e) => write!(
                f,
                "update {}: name {}, mail {}, admin {}",
                e.localpart,
                e.name.as_deref().unwrap_or("-"),
                e.mail.as_deref().unwrap_or("-"),
                e.admin
            ),
            Action::Deactivate(l) => write!(f, "deactivate {l} (gone from the directory or outside the filter)"),
            Action::AcceptInvite(r) => write!(f, "bridge user joins {r}"),
            Action::Add { room, localpart, join: true } => write!(f, "join {localpart} into {room}"),
            Action::Add { room, localpart, join: false } => write!(f, "invite {localpart} to {room}"),
            Action::Remove { room, localpart, reason } => write!(f, "remove {localpart} from {room} ({reason})"),
        }
    }
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub dry_run: bool,
    pub created: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub memberships_added: usize,
    pub memberships_removed: usize,
    pub errors: Vec<String>,
    /// Entries left alone because their user is not the directory's to manage: a local account
    /// it did not create, the bridge's user, a user an appservice holds exclusively.
    pub not_linked: Vec<String>,
    /// Every action, in order (printed by a dry run).
    pub actions: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "dry run, nothing changed; would do: " } else { "" };
        writeln!(
            f,
            "ldap sync ({would}{} created, {} updated, {} deactivated, {} memberships added, {} removed, {} errors, \
             {} not linked)",
            self.created,
            self.updated,
            self.deactivated,
            self.memberships_added,
            self.memberships_removed,
            self.errors.len(),
            self.not_linked.len()
        )?;
        if self.dry_run {
            for action in &self.actions {
                writeln!(f, "  {action}")?;
            }
        }
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        for entry in &self.not_linked {
            writeln!(f, "  not linked: {entry}")?;
        }
        Ok(())
    }
}

/// Why a run changed nothing at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the directory could not be read, nothing changed: {0}")]
    Directory(String),
    #[error("the accounts could not be read, nothing changed: {0}")]
    Accounts(String),
    #[error(
        "refused: this run would deactivate {would} of {active} directory accounts (more than \
         ldap.max_deactivate_ratio = {ratio}); nothing changed. Check ldap.base and ldap.filter; \
         if these departures are real, allow them for this run only with \
         `hemicycle ldap sync --max-deactivate-ratio R` (R between 0 and 1)"
    )]
    TooManyDeactivations { would: usize, active: usize, ratio: f64 },
}

/// The plan and the problems found making it.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub errors: Vec<String>,
    /// Entries whose user the directory may not manage (see [`Summary::not_linked`]).
    pub not_linked: Vec<String>,
}

/// Compares the directory with the accounts and rooms.
pub async fn plan(
    config: &LdapConfig,
    snapshot: &Snapshot,
    existing: &[Existing],
    accounts: &impl Accounts,
) -> Result<Plan, SyncError> {
    let mut plan = Plan::default();
    for (dn, error) in &snapshot.unmapped {
        plan.errors.push(format!("{dn}: {error}; no account"));
    }
    let existing: HashMap<&str, &Existing> = existing.iter().map(|e| (e.localpart.as_str(), e)).collect();
    let mut by_localpart: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in &snapshot.entries {
        by_localpart.entry(entry.localpart.as_str()).or_default().push(entry);
    }
    let mut members_ok: BTreeSet<&str> = BTreeSet::new();
    for (localpart, entries) in &by_localpart {
        let [entry] = entries.as_slice() else {
            let dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
            plan.errors.push(format!("{} map to the same user {localpart}; all skipped", dns.join(" and ")));
            continue;
        };
        let reserved = if *localpart == config.bridge_user {
            Some("the LDAP bridge's own user (ldap.bridge_user)".to_owned())
        } else {
            accounts.reserved(localpart)
        };
        if let Some(reason) = reserved {
            plan.not_linked.push(format!("{localpart} ({}): {reason}; the directory never manages it", entry.dn));
            continue;
        }
        match existing.get(localpart) {
            None => plan.actions.push(Action::Create((*entry).clone())),
            // A deactivated account comes back only through `hemicycle user reactivate`.
            Some(account) if account.deactivated => continue,
            // Taking a local account over would wipe its password and set its admin flag from
            // the directory (a break-glass admin made with `hemicycle user create`): only an
            // operator decides that.
            Some(account) if !account.managed => {
                plan.not_linked.push(format!(
                    "{localpart} ({}): a local account the directory did not create; left alone \
                     (`hemicycle ldap link {localpart}` hands it to the directory)",
                    entry.dn
                ));
                continue;
            }
            Some(account) => {
                let changed = account.name != entry.name
                    || (entry.mail.is_some() && account.mail != entry.mail)
                    || account.admin != entry.admin;
                if changed {
                    plan.actions.push(Action::Update((*entry).clone()));
                }
            }
        }
        members_ok.insert(localpart);
    }
    let active: Vec<&&Existing> = existing.values().filter(|e| e.managed && !e.deactivated).collect();
    let mut leaving = BTreeSet::new();
    for account in &active {
        if !by_localpart.contains_key(account.localpart.as_str()) {
            leaving.insert(account.localpart.clone());
        }
    }
    if leaving.len() as f64 > config.max_deactivate_ratio * active.len() as f64 {
        return Err(SyncError::TooManyDeactivations {
            would: leaving.len(),
            active: active.len(),
            ratio: config.max_deactivate_ratio,
        });
    }
    plan.actions.extend(leaving.iter().cloned().map(Action::Deactivate));
    plan_groups(config, snapshot, &existing, &members_ok, &leaving, accounts, &mut plan).await;
    Ok(plan)
}

/// A mapped room: its view, the localparts wanted in it (→ joined rather than invited), and the
/// groups naming it.
type Target = (RoomView, BTreeMap<String, bool>, Vec<String>);

/// Memberships: each mapped room (and a space's children when asked) gets exactly the members of
/// its groups among the directory's accounts; other users of the room are left alone.
async fn plan_groups(
    config: &LdapConfig,
    snapshot: &Snapshot,
    existing: &HashMap<&str, &Existing>,
    members_ok: &BTreeSet<&str>,
    leaving: &BTreeSet<String>,
    accounts: &impl Accounts,
    plan: &mut Plan,
) {
    let mut rooms: BTreeMap<String, Target> = BTreeMap::new();
    for group in &config.groups {
        let members = snapshot.groups.get(&group.dn).cloned().unwrap_or_default();
        let mut targets = Vec::new();
        match accounts.room(&group.room).await {
            Ok(view) => {
                if group.space_children {
                    for child in &view.children {
                        match accounts.room(child).await {
                            Ok(child) => targets.push(child),
                            Err(e) => plan.errors.push(format!("{child} (in {}): {e}", group.room)),
                        }
                    }
                }
                targets.push(view);
            }
            Err(e) => {
                plan.errors.push(format!("{} (group {}): {e}", group.room, group.dn));
                continue;
            }
        }
        for view in targets {
            let slot = rooms.entry(view.room_id.clone()).or_insert_with(|| (view, BTreeMap::new(), Vec::new()));
            slot.2.push(group.dn.clone());
            for member in members.iter().filter(|m| members_ok.contains(m.as_str())) {
                *slot.1.entry(member.clone()).or_default() |= group.join;
            }
        }
    }
    for (room_id, (view, wanted, groups)) in rooms {
        let mut adds = Vec::new();
        for (localpart, join) in &wanted {
            let current = view.members.get(localpart).map(String::as_str);
            let present = match current {
                Some("join") => true,
                Some("invite") => !join,
                // A ban is the room's moderators' decision: the bridge does not lift it.
                Some("ban") => true,
                _ => false,
            };
            if !present {
                adds.push(Action::Add { room: room_id.clone(), localpart: localpart.clone(), join: *join });
            }
        }
        let mut removes = Vec::new();
        for (localpart, membership) in &view.members {
            let managed = existing.get(localpart.as_str()).is_some_and(|e| e.managed && !e.deactivated);
            if managed
                && matches!(membership.as_str(), "join" | "invite")
                && !wanted.contains_key(localpart)
                && !leaving.contains(localpart)
            {
                removes.push(Action::Remove {
                    room: room_id.clone(),
                    localpart: localpart.clone(),
                    reason: format!("left {}", groups.join(", ")),
                });
            }
        }
        if adds.is_empty() && removes.is_empty() {
            continue;
        }
        let bridge = format!("@{}", config.bridge_user);
        match view.bridge.as_deref() {
            Some("join") => {}
            Some("invite") => plan.actions.push(Action::AcceptInvite(room_id.clone())),
            _ => {
                plan.errors.push(format!(
                    "{room_id}: the bridge user {bridge} is not in the room; invite it and give it power to invite and kick"
                ));
                continue;
            }
        }
        if !adds.is_empty() && !view.bridge_can_invite {
            plan.errors.push(format!("{room_id}: the bridge user {bridge} lacks the power to invite"));
            adds.clear();
        }
        if !removes.is_empty() && !view.bridge_can_kick {
            plan.errors.push(format!("{room_id}: the bridge user {bridge} lacks the power to kick"));
            removes.clear();
        }
        plan.actions.extend(adds);
        plan.actions.extend(removes);
    }
}

/// Runs a sync: reads, plans, and (unless `dry_run`) applies. Account changes run several at a
/// time (their writes share fsyncs); membership changes run in plan order.
pub async fn run(
    config: &LdapConfig,
    snapshot: Result<Snapshot, String>,
    accounts: &impl Accounts,
    dry_run: bool,
) -> Result<Summary, SyncError> {
    let snapshot = snapshot.map_err(SyncError::Directory)?;
    let existing = accounts.accounts().await.map_err(SyncError::Accounts)?;
    let plan = plan(config, &snapshot, &existing, accounts).await?;
    for entry in &plan.not_linked {
        tracing::warn!(%entry, "ldap sync: directory entry not linked to its user");
    }
    let mut summary = Summary { dry_run, errors: plan.errors, not_linked: plan.not_linked, ..Default::default() };
    for action in &plan.actions {
        summary.actions.push(action.to_string());
    }
    if dry_run {
        for action in &plan.actions {
            count(&mut summary, action);
        }
        return Ok(summary);
    }
    if let Err(e) = accounts.ensure_bridge_user().await {
        summary.errors.push(format!("cannot create the bridge user: {e}"));
    }
    let (account_actions, room_actions): (Vec<_>, Vec<_>) = plan
        .actions
        .into_iter()
        .partition(|a| matches!(a, Action::Create(_) | Action::Update(_) | Action::Deactivate(_)));
    let results: Vec<(Action, Result<(), String>)> = futures::stream::iter(account_actions)
        .map(|action| async move {
            let result = match &action {
                Action::Create(entry) => accounts.create(entry).await,
                Action::Update(entry) => accounts.update(entry).await,
                Action::Deactivate(localpart) => accounts.deactivate(localpart).await,
                _ => Ok(()),
            };
            (action, result)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (action, result) in results {
        record(&mut summary, &action, result);
    }
    if let Err(e) = accounts.flush().await {
        summary.errors.push(format!("cannot make the account changes durable: {e}"));
    }
    let mut refused_rooms = BTreeSet::new();
    for action in room_actions {
        let room = match &action {
            Action::AcceptInvite(room) | Action::Add { room, .. } | Action::Remove { room, .. } => room.clone(),
            _ => continue,
        };
        if refused_rooms.contains(&room) {
            continue;
        }
        let result = match &action {
            Action::AcceptInvite(room) => accounts.accept_invite(room).await,
            Action::Add { room, localpart, join } => accounts.invite(room, localpart, *join).await,
            Action::Remove { room, localpart, reason } => accounts.kick(room, localpart, reason).await,
            _ => Ok(()),
        };
        if result.is_err() && matches!(action, Action::AcceptInvite(_)) {
            refused_rooms.insert(room);
        }
        record(&mut summary, &action, result);
    }
    tracing::info!(
        created = summary.created,
        updated = summary.updated,
        deactivated = summary.deactivated,
        memberships_added = summary.memberships_added,
        memberships_removed = summary.memberships_removed,
        errors = summary.errors.len(),
        not_linked = summary.not_linked.len(),
        "ldap sync finished"
    );
    Ok(summary)
}

fn count(summary: &mut Summary, action: &Action) {
    match action {
        Action::Create(_) => summary.created += 1,
        Action::Update(_) => summary.updated += 1,
        Action::Deactivate(_) => summary.deactivated += 1,
        Action::AcceptInvite(_) => {}
        Action::Add { .. } => summary.memberships_added += 1,
        Action::Remove { .. } => summary.memberships_removed += 1,
    }
}

fn record(summary: &mut Summary, action: &Action, result: Result<(), String>) {
    match result {
        Ok(()) => count(summary, action),
        Err(e) => {
            tracing::warn!(%action, error = %e, "ldap sync step failed");
            summary.errors.push(format!("{action}: {e}"));
        }
    }
}
