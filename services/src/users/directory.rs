//! Accounts from the LDAP directory (`[ldap]`, docs/ldap.md).
//!
//! The directory is the authority for its users: their passwords are checked by binding to it
//! (never stored here), their display name, address and admin flag are refreshed from it at each
//! sign-in and sync, and an account whose entry is gone is deactivated by the sync. The LDAP
//! protocol and the sync's rules live in `hemicycle_bridges::ldap`; this module stores what they
//! decide, through the same services the client API uses.
//!
//! The directory manages only the accounts it made. A local account of the same name (a
//! break-glass admin made with `hemicycle user create`, any account registered locally) is never
//! taken over by a sync or a sign-in, only by an operator's `hemicycle ldap link`; the bridge's
//! own user and users an appservice holds exclusively are never the directory's, even then.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hemicycle_bridges::ldap::{
    directory::Entry,
    sync::{Accounts, Existing, RoomView, Summary},
    AuthError, Directory,
};
use ruma::{OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::Map;

pub use super::tables::DirectoryLink;
use super::{Account, Users};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
    services::Services,
};

/// The error for password changes of directory accounts.
pub const MANAGED: &str = "this account's password is managed by the directory (LDAP): change it there";

/// The `admin` of audit entries written by operator commands (`hemicycle ldap …`).
pub const CLI_ADMIN: &str = "hemicycle-cli";

/// Every refused directory sign-in answers after this long from its start, whether the name is
/// unknown (one search) or the password wrong (a search and a bind), so timing tells nothing.
const DENIED_AFTER: Duration = Duration::from_millis(400);

impl DirectoryLink {
    fn of(entry: &Entry) -> Self {
        Self { dn: entry.dn.clone(), uid: entry.uid.clone(), mail: entry.mail.clone() }
    }
}

/// The directory client and the lock that keeps two syncs from running at once.
pub struct Ldap {
    pub client: Directory,
    sync_lock: tokio::sync::Mutex<()>,
}

impl Ldap {
    pub fn new(client: Directory) -> Self {
        Self { client, sync_lock: tokio::sync::Mutex::new(()) }
    }
}

fn denied() -> Error {
    Error::forbidden("invalid username or password")
}

fn unavailable(reason: String) -> Error {
    tracing::warn!(%reason, "directory sign-in impossible");
    Error::DirectoryUnavailable(format!("the directory (LDAP) cannot be reached, try again later: {reason}"))
}

impl Users {
    /// A directory account's password check: a bind as its entry (see [`DENIED_AFTER`]).
    pub(super) async fn check_directory_password(
        &self,
        user: &UserId,
        account: &Account,
        password: &str,
    ) -> Result<()> {
        let start = Instant::now();
        let (Some(ldap), Some(link)) = (&self.directory, &account.directory) else {
            tokio::time::sleep_until((start + DENIED_AFTER).into()).await;
            return Err(denied());
        };
        match ldap.client.authenticate(&link.uid, password).await {
            Ok(entry) if !account.deactivated && entry.localpart == user.localpart() => {
                self.clear_failures(user);
                Ok(())
            }
            Ok(_) | Err(AuthError::Denied) => {
                self.record_failure(user);
                tokio::time::sleep_until((start + DENIED_AFTER).into()).await;
                Err(denied())
            }
            Err(AuthError::Unavailable(reason)) => Err(unavailable(reason)),
        }
    }

    /// Refuses password changes of directory accounts.
    pub fn ensure_local_password(&self, user: &UserId) -> Result<()> {
        match self.account(user)? {
            Some(account) if account.directory.is_some() => Err(Error::forbidden(MANAGED)),
            _ => Ok(()),
        }
    }

    /// Creates the account of a directory entry (no password: the directory checks it). With
    /// `durable` the write waits for the disk; a sync writes without and syncs once at the end.
    async fn create_from_directory(
        &self,
        threepids: &super::threepid::Threepids,
        entry: &Entry,
        durable: bool,
    ) -> Result<OwnedUserId> {
        let user = self.user_id_for_localpart(&entry.localpart)?;
        let _guard = self.create_lock.lock().expect("create lock not poisoned");
        if self.exists(&user)? {
            return Err(Error::UserInUse);
        }
        let account = Account { directory: Some(DirectoryLink::of(entry)), ..Account::new(None, entry.admin) };
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user, &Json(account));
        let name = entry.name.clone().unwrap_or_else(|| entry.localpart.clone());
        self.db.tables.users.userid_profile.insert(
            &mut batch,
            &user,
            &Json([("displayname".to_owned(), serde_json::Value::String(name))].into()),
        );
        if let Some(mail) = &entry.mail {
            if let Err(error) = threepids.add_into(&mut batch, &user, "email", mail) {
                tracing::warn!(%user, %mail, %error, "directory address not added");
            }
        }
        // Directory accounts expire only when `directory_accounts_expire` says so; they then get
        // their first expiry in the write that makes them, as other accounts do.
        let validity = self.validity.as_ref().filter(|v| v.config().is_some_and(|c| c.directory_accounts_expire));
        if let Some(validity) = validity {
            validity.on_create(&mut batch, &user);
        }
        if durable {
            self.db.commit(batch)?;
        } else {
            self.db.write_unsynced(batch)?;
        }
        // The directory's address is bound like any other: its third-party invites are taken up.
        threepids.wake_bound();
        if let Some(validity) = validity {
            validity.changed();
        }
        self.discovery_touch(&user);
        Ok(user)
    }

    /// Ties the account to its entry and sets its admin flag; returns the link it had. An
    /// account the directory did not make is refused unless `takeover` (the operator's `hemicycle
    /// ldap link`): taking it over wipes its password and sets its admin flag from the directory.
    async fn link_directory(&self, user: &UserId, entry: &Entry, takeover: bool) -> Result<Option<DirectoryLink>> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        if account.directory.is_none() && !takeover {
            return Err(Error::forbidden(format!(
                "{user} is a local account the directory did not create: `hemicycle ldap link` hands it to the directory"
            )));
        }
        let old = account.directory.replace(DirectoryLink::of(entry));
        if old.as_ref() == account.directory.as_ref() && account.admin == entry.admin {
            return Ok(old);
        }
        if old.is_none() {
            tracing::warn!(%user, dn = %entry.dn, "local account linked to the directory by an operator");
        }
        account.admin = entry.admin;
        account.password_hash = None;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(old)
    }
}

/// Why the directory may never make or manage the user of `localpart`: the bridge's own user, a
/// user an appservice holds exclusively (its sender included). `None` for any other name.
pub fn reserved(services: &Services, localpart: &str) -> Option<String> {
    if localpart == services.config.ldap.bridge_user {
        return Some("the LDAP bridge's own user (ldap.bridge_user)".to_owned());
    }
    let user = services.users.user_id_for_localpart(localpart).ok()?;
    services
        .appservices
        .exclusive_owner_of_user(&user)
        .map(|service| format!("held exclusively by appservice `{}`", service.registration.id))
}

/// The login name to search the directory with: a full user id of ours stands for its
/// localpart, whose escapes are undone (`jos=c3=a9` → `josé`).
fn login_name(services: &Services, name: &str) -> Result<String> {
    let name = name.trim();
    if name.starts_with('@') {
        let user = services.users.parse_login_user(name)?;
        return Ok(hemicycle_bridges::ldap::localpart::unmap(user.localpart()));
    }
    Ok(name.to_owned())
}

/// `m.login.password` when `[ldap]` is enabled. Local accounts that keep a password (admins made
/// with `hemicycle user create`, every local account with `local_password_fallback`) are checked
/// here, so they sign in while the directory is down; everyone else through the directory, the
/// first sign-in creating the account.
pub async fn password_login(services: &Services, name: &str, password: &str) -> Result<OwnedUserId> {
    let users = &services.users;
    let Some(ldap) = users.directory() else {
        let user = users.parse_login_user(name)?;
        users.check_password(&user, password).await?;
        return Ok(user);
    };
    let local = users.parse_login_user(name).ok();
    if let Some(user) = &local {
        if let Some(account) = users.account(user)? {
            let keeps_password = account.directory.is_none()
                && account.password_hash.is_some()
                && (account.admin || services.config.ldap.local_password_fallback);
            if keeps_password || account.directory.is_some() {
                users.check_password(user, password).await?;
                if account.directory.is_some() {
                    refresh_on_login(services, user, &ldap.client, &account).await;
                }
                return Ok(user.clone());
            }
        }
        users.check_backoff(user)?;
    }
    let start = Instant::now();
    let refuse = || async {
        if let Some(user) = &local {
            users.record_failure(user);
        }
        tokio::time::sleep_until((start + DENIED_AFTER).into()).await;
        denied()
    };
    let entry = match ldap.client.authenticate(&login_name(services, name)?, password).await {
        Ok(entry) => entry,
        Err(AuthError::Denied) => return Err(refuse().await),
        Err(AuthError::Unavailable(reason)) => return Err(unavailable(reason)),
    };
    let user = users.user_id_for_localpart(&entry.localpart)?;
    if local.as_ref().is_some_and(|l| *l != user) {
        return Err(refuse().await);
    }
    // The directory signs in only the users it manages: not the bridge's or an appservice's,
    // not a local account it did not create (the operator links one with `hemicycle ldap link`).
    if let Some(reason) = reserved(services, &entry.localpart) {
        tracing::warn!(%user, dn = %entry.dn, %reason, "directory sign-in refused: the directory never manages this user");
        return Err(refuse().await);
    }
    match users.account(&user)? {
        Some(account) if account.deactivated => return Err(refuse().await),
        Some(account) if account.directory.is_none() => {
            tracing::warn!(
                %user, dn = %entry.dn,
                "directory sign-in refused: a local account the directory did not create has this name \
                 (`hemicycle ldap link` hands it to the directory)"
            );
            return Err(refuse().await);
        }
        Some(_) => apply_entry(services, &user, &entry, false).await?,
        None => match users.create_from_directory(&services.threepids, &entry, true).await {
            Ok(_) => tracing::info!(%user, dn = %entry.dn, "account created at first directory sign-in"),
            // Two first sign-ins at once: the other one created it (a local account made
            // meanwhile is refused by `link_directory`).
            Err(Error::UserInUse) => apply_entry(services, &user, &entry, false).await?,
            Err(e) => return Err(e),
        },
    }
    users.clear_failures(&user);
    Ok(user)
}

/// After a directory account's password check: its name, address and admin flag from the entry.
async fn refresh_on_login(services: &Services, user: &UserId, directory: &Directory, account: &Account) {
    let Some(link) = &account.directory else { return };
    match directory.entry_for(&link.uid).await {
        Ok(Some(entry)) => {
            if let Err(error) = apply_entry(services, user, &entry, false).await {
                tracing::warn!(%user, %error, "profile not refreshed from the directory");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%user, %error, "profile not refreshed from the directory"),
    }
}

/// Brings an existing account in line with its entry: link, admin flag, display name (in its
/// rooms too), directory address. A local account is linked only with `takeover`.
async fn apply_entry(services: &Services, user: &UserId, entry: &Entry, takeover: bool) -> Result<()> {
    let old = services.users.link_directory(user, entry, takeover).await?;
    if let Some(name) = &entry.name {
        let profile = services.profiles.get(user)?;
        if profile.get("displayname").and_then(|v| v.as_str()) != Some(name.as_str()) {
            services.profiles.set_field(user, "displayname", Some(serde_json::Value::String(name.clone())))?;
            services.rooms.refresh_profile(user).await?;
        }
    }
    let old_mail = old.and_then(|l| l.mail);
    if entry.mail != old_mail {
        if let Some(old) = &old_mail {
            services.threepids.remove(user, "email", old)?;
        }
        if let Some(mail) = &entry.mail {
            match services.threepids.add(user, "email", mail) {
                Ok(()) => {}
                Err(error) => tracing::warn!(%user, %mail, %error, "directory address not added"),
            }
        }
    }
    Ok(())
}

/// `hemicycle ldap link USER`: the operator hands a local account to the directory. Its entry
/// (by the uid its localpart maps from, within `ldap.filter`) then owns its password (the local
/// one is wiped), name, address and admin flag. Never for the bridge's own user or a user an
/// appservice holds exclusively. Audited.
pub async fn link(services: &Services, user: &UserId) -> Result<String> {
    let ldap = enabled(services)?;
    if let Some(reason) = reserved(services, user.localpart()) {
        return Err(Error::forbidden(format!("refused: {user} is {reason}; the directory never manages it")));
    }
    let account = services.users.account(user)?.ok_or_else(|| Error::not_found(format!("{user} has no account")))?;
    if let Some(link) = &account.directory {
        return Err(Error::BadState(format!("{user} is linked to the directory already ({})", link.dn)));
    }
    if account.deactivated {
        return Err(Error::BadState(format!("{user} is deactivated: `hemicycle user reactivate` it first")));
    }
    let uid = hemicycle_bridges::ldap::localpart::unmap(user.localpart());
    let entry = ldap
        .client
        .entry_for(&uid)
        .await
        .map_err(|e| Error::DirectoryUnavailable(format!("the directory (LDAP) cannot be read: {}", e.0)))?
        .filter(|entry| entry.localpart == user.localpart())
        .ok_or_else(|| {
            Error::not_found(format!("no single directory entry within ldap.base and ldap.filter maps to {user}"))
        })?;
    apply_entry(services, user, &entry, true).await?;
    services.audit.record(
        CLI_ADMIN,
        "ldap.link",
        user.as_str(),
        serde_json::json!({ "dn": entry.dn, "admin": entry.admin, "was_admin": account.admin }),
    )?;
    Ok(format!(
        "linked {user} to {}: the directory now holds its password (the local one is gone), name, address and \
         admin flag (admin: {})",
        entry.dn,
        if entry.admin { "yes" } else { "no" }
    ))
}

fn enabled(services: &Services) -> Result<&Ldap> {
    services.users.directory().ok_or_else(|| Error::BadState("LDAP is not enabled ([ldap] enabled = false)".into()))
}

/// `hemicycle ldap sync [--dry-run]` and the periodic sync: one run at a time.
pub async fn sync(services: &Services, dry_run: bool) -> Result<Summary> {
    sync_with(services, dry_run, None).await
}

/// [`sync`], with `max_deactivate_ratio` instead of `ldap.max_deactivate_ratio` for this run
/// (`hemicycle ldap sync --max-deactivate-ratio R`, audited).
pub async fn sync_with(services: &Services, dry_run: bool, max_deactivate_ratio: Option<f64>) -> Result<Summary> {
    let ldap = enabled(services)?;
    let mut config = services.config.ldap.clone();
    if let Some(ratio) = max_deactivate_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::invalid_param(format!("--max-deactivate-ratio {ratio}: a share between 0 and 1")));
        }
        config.max_deactivate_ratio = ratio;
    }
    let _running = ldap.sync_lock.lock().await;
    let snapshot = ldap.client.snapshot().await.map_err(|e| e.0);
    let result = hemicycle_bridges::ldap::sync::run(&config, snapshot, &ServerAccounts(services), dry_run)
        .await
        .map_err(|e| Error::BadState(e.to_string()));
    if let Some(ratio) = max_deactivate_ratio {
        let outcome = match &result {
            Ok(summary) => serde_json::json!({ "deactivated": summary.deactivated }),
            Err(e) => serde_json::json!({ "failed": e.to_string() }),
        };
        services.audit.record(
            CLI_ADMIN,
            "ldap.sync",
            "directory",
            serde_json::json!({
                "max_deactivate_ratio": ratio,
                "configured_ratio": services.config.ldap.max_deactivate_ratio,
                "dry_run": dry_run,
                "outcome": outcome,
            }),
        )?;
    }
    result
}

/// Runs the sync every `ldap.sync_interval_s` (when above 0), from start-up on.
pub fn spawn_periodic(services: Arc<Services>) {
    let interval = services.config.ldap.sync_interval_s;
    if !services.config.ldap.enabled || interval == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(interval));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match sync(&services, false).await {
                Ok(summary) => tracing::info!(summary = %summary.to_string().trim_end(), "periodic ldap sync"),
                Err(error) => tracing::error!(%error, "periodic ldap sync failed"),
            }
        }
    });
}

/// The homeserver's side of the sync.
struct ServerAccounts<'a>(&'a Services);

impl ServerAccounts<'_> {
    fn user(&self, localpart: &str) -> Result<OwnedUserId, String> {
        self.0.users.user_id_for_localpart(localpart).map_err(|e| e.to_string())
    }

    fn bridge(&self) -> Result<OwnedUserId, String> {
        self.user(&self.0.config.ldap.bridge_user)
    }

    fn room_id(&self, room: &str) -> Result<ruma::OwnedRoomId, String> {
        if room.starts_with('#') {
            let alias = RoomAliasId::parse(room).map_err(|e| format!("invalid alias: {e}"))?;
            let record = self.0.rooms.resolve_alias(&alias).map_err(|e| e.to_string())?;
            return record.map(|r| r.room_id).ok_or_else(|| "no such alias on this server".to_owned());
        }
        RoomId::parse(room).map_err(|e| format!("invalid room id: {e}"))
    }
}

fn text(e: Error) -> String {
    e.to_string()
}

impl Accounts for ServerAccounts<'_> {
    async fn accounts(&self) -> Result<Vec<Existing>, String> {
        let services = self.0;
        let mut out = Vec::new();
        for (user, account) in services.users.list().map_err(text)? {
            let name = services
                .profiles
                .get(&user)
                .map_err(text)?
                .get("displayname")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            out.push(Existing {
                localpart: user.localpart().to_owned(),
                managed: account.directory.is_some(),
                deactivated: account.deactivated,
                name,
                mail: account.directory.and_then(|l| l.mail),
                admin: account.admin,
            });
        }
        Ok(out)
    }

    fn reserved(&self, localpart: &str) -> Option<String> {
        reserved(self.0, localpart)
    }

    async fn room(&self, room: &str) -> Result<RoomView, String> {
        let rooms = &self.0.rooms;
        let room_id = self.room_id(room)?;
        if !rooms.exists(&room_id).map_err(text)? {
            return Err("this server is not in the room".to_owned());
        }
        let bridge = self.bridge()?;
        let mut members = std::collections::HashMap::new();
        let mut bridge_membership = None;
        for (user, record) in rooms.members(&room_id).map_err(text)? {
            if user == bridge {
                bridge_membership = Some(record.membership.clone());
            }
            if self.0.users.is_local(&user) {
                members.insert(user.localpart().to_owned(), record.membership);
            }
        }
        let power = rooms.power(&room_id).map_err(text)?;
        let own = power.of_user(&bridge);
        let children =
            rooms.space_children(&room_id, false).map_err(text)?.into_iter().map(|c| c.room_id.to_string()).collect();
        Ok(RoomView {
            room_id: room_id.to_string(),
            members,
            bridge: bridge_membership,
            bridge_can_invite: own >= power.invite,
            bridge_can_kick: own >= power.kick,
            children,
        })
    }

    async fn ensure_bridge_user(&self) -> Result<(), String> {
        let localpart = &self.0.config.ldap.bridge_user;
        match self.0.users.create(localpart, None, false).await {
            Ok(user) => {
                tracing::info!(%user, "ldap bridge user created; give it power in the rooms its groups map to");
                Ok(())
            }
            Err(Error::UserInUse) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn accept_invite(&self, room_id: &str) -> Result<(), String> {
        let room = RoomId::parse(room_id).map_err(|e| e.to_string())?;
        self.0.rooms.join(&room, &self.bridge()?, None).await.map(drop).map_err(text)
    }

    async fn create(&self, entry: &Entry) -> Result<(), String> {
        self.0.users.create_from_directory(&self.0.threepids, entry, false).await.map(drop).map_err(text)
    }

    async fn update(&self, entry: &Entry) -> Result<(), String> {
        apply_entry(self.0, &self.user(&entry.localpart)?, entry, false).await.map_err(text)
    }

    async fn deactivate(&self, localpart: &str) -> Result<(), String> {
        super::deactivation::deactivate(self.0, &self.user(localpart)?, false).await.map_err(text)
    }

    async fn invite(&self, room_id: &str, localpart: &str, join: bool) -> Result<(), String> {
        let room = RoomId::parse(room_id).map_err(|e| e.to_string())?;
        let user = self.user(localpart)?;
        let rooms = &self.0.rooms;
        let current = rooms.membership(&user, &room).map_err(text)?.map(|m| m.membership);
        if current.as_deref() != Some("invite") {
            rooms.set_membership(&room, &self.bridge()?, &user, "invite", None, Map::new()).await.map_err(text)?;
        }
        if join {
            rooms.join(&room, &user, None).await.map_err(text)?;
        }
        Ok(())
    }

    async fn kick(&self, room_id: &str, localpart: &str, reason: &str) -> Result<(), String> {
        let room = RoomId::parse(room_id).map_err(|e| e.to_string())?;
        let user = self.user(localpart)?;
        self.0.rooms.kick(&room, &self.bridge()?, &user, Some(reason.to_owned())).await.map(drop).map_err(text)
    }

    async fn flush(&self) -> Result<(), String> {
        self.0.db.sync_wal().map_err(|e| e.to_string())
    }
}
