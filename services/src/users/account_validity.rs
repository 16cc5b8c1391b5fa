//! Expiring accounts, as the state's messenger runs them (Tchap's email account validity, itself
//! Synapse's legacy `account_validity`): each account is valid for `period` after registration or
//! renewal; renewal emails go out `send_renewal_email_at` before the end, each with a link that
//! pushes the expiry a period further; an expired account gets `403 ORG_MATRIX_EXPIRED_ACCOUNT` on
//! every client request but the few that renew or log out (the check is in the API's
//! authentication); past `deactivate_after` it is deactivated as `user deactivate` does it.
//!
//! Timers cost nothing while idle: the due time of every account's next step (a mail, a
//! deactivation) is kept in an index ordered by time, and one task sleeps until its first entry,
//! woken early by a [`Notify`] whenever an expiry changes. Records are durable (one column family
//! per mapping); the link's token is stored only as its SHA-256.
//!
//! Time is [`crate::users::token_clock_ms`], so tests move it with the same hook as token
//! lifetimes; with that hook set, `SIGUSR2` tells the task the clock moved.

pub mod state;

use std::{sync::Arc, time::Duration};

use regex::Regex;
use ruma::{OwnedUserId, UserId};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use self::state::AccountValidity;
pub use super::tables::Validity;
use crate::{
    config::AccountValidityConfig,
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    services::Services,
    users::{token_clock_ms, TokenOwner},
};

/// What following a renewal link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed until this time.
    Renewed(u64),
    /// The link was used already; the account is valid until this time.
    AlreadyUsed(u64),
    /// No such link (or a link replaced by a later email).
    Invalid,
}

/// How long a failed renewal email waits before it is tried again.
const MAIL_RETRY_MS: u64 = 10 * 60 * 1000;
/// How long a failing step (a deactivation that errs) waits before it is tried again.
const STEP_RETRY_MS: u64 = 60 * 1000;
/// The longest single sleep of the task: bounds how far a changed system clock (a suspended
/// machine) can delay a step; an idle server wakes once a day for nothing.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Wrong codes an account may type before its code stops working (a new email gives a new one):
/// an 8-digit code is short enough to guess given unlimited tries.
const MAX_CODE_FAILURES: u32 = 5;

fn due_key(due: u64, user: &UserId) -> Vec<u8> {
    let mut key = due.to_be_bytes().to_vec();
    key.extend_from_slice(user.as_bytes());
    key
}

impl AccountValidity {
    /// `config` absent: accounts never expire and nothing here runs.
    pub fn new(
        db: Arc<Database>,
        config: Option<AccountValidityConfig>,
        mail_relay: bool,
        discovery: Arc<crate::users::discovery::state::Discovery>,
    ) -> Result<Self> {
        let mut exclude = Vec::new();
        for pattern in config.iter().flat_map(|c| &c.exclude) {
            let anchored = format!("^(?:{pattern})$");
            exclude.push(Regex::new(&anchored).map_err(|e| {
                Error::Internal(format!("account_validity.exclude: {pattern:?} is not a regular expression: {e}"))
            })?);
        }
        Ok(Self {
            db,
            config,
            exclude,
            mail_relay,
            wake: Notify::new(),
            lock: tokio::sync::Mutex::new(()),
            code_failures: Default::default(),
            discovery,
        })
    }

    pub fn config(&self) -> Option<&AccountValidityConfig> {
        self.config.as_ref()
    }

    fn period_ms(&self) -> u64 {
        self.config.as_ref().map_or(0, |c| c.period.as_millis())
    }

    fn offsets(&self) -> Vec<u64> {
        self.config.iter().flat_map(|c| &c.send_renewal_email_at).map(|d| d.as_millis()).collect()
    }

    /// Whether the `exclude` patterns spare this account.
    fn excluded_by_pattern(&self, user: &UserId) -> bool {
        self.exclude.iter().any(|re| re.is_match(user.as_str()))
    }

    pub fn get(&self, user: &UserId) -> Result<Option<Validity>> {
        Ok(self.db.tables.users.userid_validity.get(&user.to_owned())?.map(|Json(v)| v))
    }

    /// Gives a new account its first expiry, in the batch that creates it (see `Users::create`);
    /// the caller calls [`AccountValidity::changed`] once the batch is committed.
    pub fn on_create(&self, batch: &mut Batch, user: &UserId) {
        if self.config.is_none() || self.excluded_by_pattern(user) {
            return;
        }
        let validity = Validity {
            expiration_ts: token_clock_ms().saturating_add(self.period_ms()),
            mailed: Vec::new(),
            token_hash: None,
            token_used_ts: None,
            retry_mail_at: None,
            due: None,
        };
        self.write(batch, user, None, validity, token_clock_ms());
    }

    /// Tells the task an expiry changed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// When the account's next step is due: the earliest renewal email not sent yet (while the
    /// account is still valid and email goes out), its expiry, else its deactivation.
    fn next_due(&self, v: &Validity, now: u64, mails: bool) -> Option<u64> {
        let config = self.config.as_ref()?;
        let mut due: Option<u64> = None;
        if mails && now < v.expiration_ts {
            for offset in self.offsets() {
                if !v.mailed.contains(&offset) {
                    let at = v.expiration_ts.saturating_sub(offset).max(v.retry_mail_at.unwrap_or(0));
                    due = Some(due.map_or(at, |d| d.min(at)));
                }
            }
        }
        // The expiry itself: the account leaves the discovery room then.
        if now < v.expiration_ts {
            due = Some(due.map_or(v.expiration_ts, |d| d.min(v.expiration_ts)));
        }
        if let Some(after) = config.deactivate_after {
            let at = v.expiration_ts.saturating_add(after.as_millis());
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        due
    }

    /// Writes a record and moves its entry in the due index.
    fn write(&self, batch: &mut Batch, user: &UserId, old: Option<&Validity>, mut new: Validity, now: u64) {
        let tables = &self.db.tables;
        if let Some(old_due) = old.and_then(|o| o.due) {
            tables.users.dueuserid_userid.remove(batch, &due_key(old_due, user));
        }
        new.due = self.next_due(&new, now, self.mails_on());
        if let Some(due) = new.due {
            tables.users.dueuserid_userid.insert(batch, &due_key(due, user), &Json(user.to_owned()));
        }
        tables.users.userid_validity.insert(batch, &user.to_owned(), &Json(new));
    }

    /// Whether renewal emails carry links (else short codes typed in the client).
    pub fn sends_links(&self) -> bool {
        self.config.as_ref().is_none_or(|c| c.send_links)
    }

    /// The stored key of a renewal token: a link's long token alone; a short code together with
    /// its account, so a code renews only the account whose access token comes with it (two
    /// accounts may well get the same 8 digits).
    fn token_key(&self, user: &UserId, token: &str) -> Vec<u8> {
        match self.sends_links() {
            true => hash(token),
            false => hash(&format!("{user}\n{token}")),
        }
    }

    fn mails_on(&self) -> bool {
        self.mail_relay
    }

    /// The account's expiry, when it has one.
    pub fn expiry_of(&self, user: &UserId) -> Result<Option<u64>> {
        Ok(self.get(user)?.map(|v| v.expiration_ts))
    }

    /// Whether the account is past its expiry (an account without a record never is).
    pub fn is_expired(&self, user: &UserId) -> Result<bool> {
        Ok(self.config.is_some() && self.get(user)?.is_some_and(|v| v.expiration_ts <= token_clock_ms()))
    }

    /// An admin's change (`POST /_synapse/admin/v1/account_validity/validity`, the console): the
    /// expiry becomes `expiration_ts` (now plus a period when absent); `renewal_emails: false`
    /// sends none for this period. An outstanding renewal link stops working.
    pub async fn set(&self, user: &UserId, expiration_ts: Option<u64>, renewal_emails: bool) -> Result<u64> {
        if self.config.is_none() {
            return Err(Error::forbidden("account validity is not enabled on this server"));
        }
        let _guard = self.lock.lock().await;
        let now = token_clock_ms();
        let old = self.get(user)?;
        let expiration_ts = expiration_ts.unwrap_or_else(|| now.saturating_add(self.period_ms()));
        let mut batch = Batch::new();
        if let Some(token_hash) = old.as_ref().and_then(|o| o.token_hash.clone()) {
            self.db.tables.users.renewalhash_userid.remove(&mut batch, &token_hash);
        }
        let new = Validity {
            expiration_ts,
            mailed: if renewal_emails { Vec::new() } else { self.offsets() },
            token_hash: None,
            token_used_ts: None,
            retry_mail_at: None,
            due: None,
        };
        self.write(&mut batch, user, old.as_ref(), new, now);
        self.db.commit(batch)?;
        self.changed();
        self.discovery.touch(user);
        Ok(expiration_ts)
    }

    /// Follows a renewal link: a fresh token renews the account for a period from now (once; a
    /// second click answers [`Renewal::AlreadyUsed`] and changes nothing).
    ///
    /// With short codes (`send_links = false`) the code counts only with `requester`, the account
    /// whose access token came with the request; after [`MAX_CODE_FAILURES`] wrong codes the
    /// account's code stops working.
    pub async fn renew_with_token(&self, token: &str, requester: Option<&UserId>) -> Result<Renewal> {
        let token_hash = match (self.sends_links(), requester) {
            (true, _) => hash(token),
            (false, Some(requester)) => self.token_key(requester, token),
            (false, None) => return Ok(Renewal::Invalid),
        };
        let Some(Json(user)) = self.db.tables.users.renewalhash_userid.get(&token_hash)? else {
            if let (false, Some(requester)) = (self.sends_links(), requester) {
                self.code_failed(requester).await?;
            }
            return Ok(Renewal::Invalid);
        };
        if !self.sends_links() && requester != Some(&*user) {
            return Ok(Renewal::Invalid);
        }
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(&user)? else { return Ok(Renewal::Invalid) };
        if old.token_hash.as_deref() != Some(token_hash.as_slice()) {
            return Ok(Renewal::Invalid);
        }
        if old.token_used_ts.is_some() {
            return Ok(Renewal::AlreadyUsed(old.expiration_ts));
        }
        let now = token_clock_ms();
        let expiration_ts = now.saturating_add(self.period_ms());
        let new = Validity {
            expiration_ts,
            mailed: Vec::new(),
            token_hash: old.token_hash.clone(),
            token_used_ts: Some(now),
            retry_mail_at: None,
            due: None,
        };
        let mut batch = Batch::new();
        self.write(&mut batch, &user, Some(&old), new, now);
        self.db.commit(batch)?;
        self.changed();
        self.discovery.touch(&user);
        self.code_failures.lock().expect("code failures").remove(&user);
        tracing::info!(%user, expiration_ts, "account renewed by its emailed link");
        Ok(Renewal::Renewed(expiration_ts))
    }

    /// A new renewal token for the account (the previous link stops working); `None` when the
    /// account has no expiry.
    async fn issue_token(&self, user: &UserId) -> Result<Option<(String, u64)>> {
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(user)? else { return Ok(None) };
        let token = match self.sends_links() {
            true => super::random_password(),
            false => super::random_string(8, b"0123456789"),
        };
        let token_hash = self.token_key(user, &token);
        self.code_failures.lock().expect("code failures").remove(user);
        let mut batch = Batch::new();
        if let Some(previous) = &old.token_hash {
            self.db.tables.users.renewalhash_userid.remove(&mut batch, previous);
        }
        self.db.tables.users.renewalhash_userid.insert(&mut batch, &token_hash, &Json(user.to_owned()));
        let new = Validity { token_hash: Some(token_hash), token_used_ts: None, ..old.clone() };
        self.write(&mut batch, user, Some(&old), new, token_clock_ms());
        self.db.commit(batch)?;
        Ok(Some((token, old.expiration_ts)))
    }

    /// Counts a wrong code typed by `user`; at [`MAX_CODE_FAILURES`] their code stops working.
    async fn code_failed(&self, user: &UserId) -> Result<()> {
        let failures = {
            let mut all = self.code_failures.lock().expect("code failures");
            let count = all.entry(user.to_owned()).or_default();
            *count += 1;
            *count
        };
        if failures < MAX_CODE_FAILURES {
            return Ok(());
        }
        tracing::warn!(%user, "too many wrong renewal codes: the code stops working");
        self.code_failures.lock().expect("code failures").remove(user);
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(user)? else { return Ok(()) };
        let Some(token_hash) = old.token_hash.clone() else { return Ok(()) };
        let mut batch = Batch::new();
        self.db.tables.users.renewalhash_userid.remove(&mut batch, &token_hash);
        let new = Validity { token_hash: None, token_used_ts: None, ..old.clone() };
        self.write(&mut batch, user, Some(&old), new, token_clock_ms());
        Ok(self.db.commit(batch)?)
    }

    /// Records the outcome of the renewal email for `offsets` of the period ending at
    /// `expiration_ts` (ignored if the account was renewed meanwhile).
    async fn mailed(&self, user: &UserId, expiration_ts: u64, offsets: &[u64], sent: bool) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(user)? else { return Ok(()) };
        if old.expiration_ts != expiration_ts {
            return Ok(());
        }
        let now = token_clock_ms();
        let mut new = old.clone();
        if sent {
            new.mailed.extend(offsets.iter().filter(|o| !old.mailed.contains(o)));
            new.retry_mail_at = None;
        } else {
            new.retry_mail_at = Some(now.saturating_add(MAIL_RETRY_MS));
        }
        let mut batch = Batch::new();
        self.write(&mut batch, user, Some(&old), new, now);
        Ok(self.db.commit(batch)?)
    }

    /// Moves the account's next step to `at` (after a step that failed).
    async fn postpone(&self, user: &UserId, at: u64) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(user)? else { return Ok(()) };
        let mut batch = Batch::new();
        if let Some(due) = old.due {
            self.db.tables.users.dueuserid_userid.remove(&mut batch, &due_key(due, user));
        }
        self.db.tables.users.dueuserid_userid.insert(&mut batch, &due_key(at, user), &Json(user.to_owned()));
        let new = Validity { due: Some(at), ..old };
        self.db.tables.users.userid_validity.insert(&mut batch, &user.to_owned(), &Json(new));
        Ok(self.db.commit(batch)?)
    }

    /// Drops the account's record (deactivated, or exempt from expiry).
    async fn forget(&self, user: &UserId) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some(old) = self.get(user)? else { return Ok(()) };
        let mut batch = Batch::new();
        if let Some(due) = old.due {
            self.db.tables.users.dueuserid_userid.remove(&mut batch, &due_key(due, user));
        }
        if let Some(token_hash) = &old.token_hash {
            self.db.tables.users.renewalhash_userid.remove(&mut batch, token_hash);
        }
        self.db.tables.users.userid_validity.remove(&mut batch, &user.to_owned());
        Ok(self.db.commit(batch)?)
    }

    /// The earliest entry of the due index.
    fn first_due(&self) -> Result<Option<(u64, OwnedUserId)>> {
        match self.db.tables.users.dueuserid_userid.iter().next() {
            Some(entry) => {
                let (key, Json(user)) = entry?;
                let due = u64::from_be_bytes(key[..8].try_into().map_err(|_| Error::Internal("bad due key".into()))?);
                Ok(Some((due, user)))
            }
            None => Ok(None),
        }
    }
}

/// Whether the account is exempt from expiry: an `exclude` pattern, an application service's
/// exclusive namespace, or (unless `directory_accounts_expire`) an account the directory manages.
pub fn exempt(services: &Services, user: &UserId) -> Result<bool> {
    let validity = &services.account_validity;
    let Some(config) = validity.config() else { return Ok(true) };
    if validity.excluded_by_pattern(user) || services.appservices.exclusive_owner_of_user(user).is_some() {
        return Ok(true);
    }
    let managed = services.users.account(user)?.is_some_and(|a| a.directory.is_some());
    Ok(managed && !config.directory_accounts_expire)
}

/// Tchap's user info (`GET /_matrix/client/r0/user/{userId}/info`, and the federation query
/// `user_info` other nodes ask): whether a user of this node is expired and whether deactivated,
/// so a client can say why a colleague does not answer. A name this node never gave is neither,
/// as the reference answers.
pub fn user_info(services: &Services, user: &UserId) -> Result<serde_json::Value> {
    let account = services.users.account(user)?;
    let deactivated = account.as_ref().is_some_and(|a| a.deactivated);
    let expired =
        !deactivated && account.is_some() && services.account_validity.is_expired(user)? && !exempt(services, user)?;
    Ok(serde_json::json!({ "expired": expired, "deactivated": deactivated }))
}

/// [`user_info`] of a user of another server, asked of that server (the federation query
/// `user_info`). A server that cannot say (one without the query, or away) makes it `None`.
pub async fn remote_user_info(services: &Services, user: &UserId) -> Option<serde_json::Value> {
    use ruma::api::federation::query::get_custom_information::v1::Request;
    let params = [("user_id".to_owned(), user.to_string())].into();
    let asked = services.federation.send(user.server_name(), Request::new("user_info".to_owned(), params)).await;
    match asked {
        Ok(response) => {
            let flag = |key: &str| response.body.get(key).and_then(serde_json::Value::as_bool);
            match (flag("expired"), flag("deactivated")) {
                (Some(expired), Some(deactivated)) => {
                    Some(serde_json::json!({ "expired": expired, "deactivated": deactivated }))
                }
                _ => None,
            }
        }
        Err(error) => {
            tracing::debug!(%user, %error, "user info not answered by the user's server");
            None
        }
    }
}

/// Whether an expired account may still make this request: logging out, and the account
/// validity routes themselves (asking for a mail, renewing, asking whether it is valid).
fn allowed_while_expired(path: &str) -> bool {
    (path.starts_with("/_matrix/client/")
        && (path.ends_with("/logout") || path.ends_with("/logout/all") || path.contains("/account_validity/")))
        || path.starts_with("/_synapse/client/email_account_validity/")
}

/// The API's check on every authenticated request: `403 ORG_MATRIX_EXPIRED_ACCOUNT` for an
/// expired account (not for an application service acting, nor for the routes that renew or log
/// out). The token stays valid: renewing gives the account back.
pub fn check_request(services: &Services, owner: &TokenOwner, path: &str) -> Result<()> {
    if services.account_validity.config().is_none() || owner.appservice.is_some() || allowed_while_expired(path) {
        return Ok(());
    }
    if services.account_validity.is_expired(&owner.user_id)? && !exempt(services, &owner.user_id)? {
        return Err(Error::ExpiredAccount);
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM UTC` of a time in ms (the civil calendar from days since the epoch).
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Mails the account a renewal link, to every email address on it (none: nothing is sent, an
/// admin renews it). The link's token replaces any earlier one.
pub async fn send_renewal_mail(services: &Services, user: &UserId) -> Result<()> {
    let validity = &services.account_validity;
    let Some(config) = validity.config() else {
        return Err(Error::forbidden("account validity is not enabled on this server"));
    };
    if !services.threepids.sends_email() {
        return Err(Error::forbidden("this server does not send email"));
    }
    let addresses: Vec<String> =
        services.threepids.list(user)?.into_iter().filter(|(m, _, _)| m == "email").map(|(_, a, _)| a).collect();
    if addresses.is_empty() {
        return Ok(());
    }
    let Some((token, expiration_ts)) = validity.issue_token(user).await? else {
        return Err(Error::BadState(format!("{user} has no expiration time")));
    };
    let name = services.profiles.get(user)?.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
    let name = name.unwrap_or_else(|| user.to_string());
    let when = format_utc(expiration_ts);
    let server = &services.config.server_name;
    let body = if validity.sends_links() {
        let link = format!(
            "{}/_matrix/client/unstable/account_validity/renew?token={}",
            services.config.client_base_url(),
            form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        );
        format!(
            "Bonjour {name},\n\nVotre compte {user} sur {server} expire le {when}.\n\
             Pour le garder, ouvrez ce lien :\n{link}\n\n---\n\n\
             Hello {name},\n\nYour account {user} on {server} expires on {when}.\n\
             To keep it, open this link:\n{link}\n"
        )
    } else {
        format!(
            "Bonjour {name},\n\nVotre compte {user} sur {server} expire le {when}.\n\
             Pour le garder, saisissez ce code dans votre application : {token}\n\n---\n\n\
             Hello {name},\n\nYour account {user} on {server} expires on {when}.\n\
             To keep it, type this code in your app: {token}\n"
        )
    };
    for address in addresses {
        services.threepids.send_email(&address, &config.renew_email_subject, body.clone()).await?;
    }
    tracing::info!(%user, "renewal email sent");
    Ok(())
}

/// Gives every active local account that has no expiry yet one period from now (the feature
/// was just turned on, or accounts predate it), then starts the task that mails and deactivates.
pub async fn start(services: Arc<Services>) -> Result<()> {
    let validity = &services.account_validity;
    if validity.config().is_none() {
        return Ok(());
    }
    let mut batch = Batch::new();
    let mut given = 0;
    for (user, account) in services.users.list()? {
        if !account.deactivated && validity.get(&user)?.is_none() && !exempt(&services, &user)? {
            validity.on_create(&mut batch, &user);
            given += 1;
        }
    }
    services.db.commit(batch)?;
    if given > 0 {
        tracing::info!(given, "accounts given their first expiry");
    }
    // Test hook only: the clock moved (see `users::TOKEN_CLOCK_OFFSET_ENV`).
    let mut clock_moved = match std::env::var_os(super::TOKEN_CLOCK_OFFSET_ENV) {
        Some(_) => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
                .map_err(|e| Error::Internal(format!("SIGUSR2 handler: {e}")))?,
        ),
        None => None,
    };
    tokio::spawn(async move {
        loop {
            let wake = services.account_validity.wake.notified();
            // One reading of the clock: read again below, it could pass `due` in between, and the
            // subtraction would overflow (a panic ending this task, or a wrap to the longest sleep).
            let now = token_clock_ms();
            let sleep = match services.account_validity.first_due() {
                Ok(Some((due, user))) if due <= now => {
                    if let Err(error) = step(&services, &user).await {
                        tracing::warn!(%user, %error, "account validity step failed; trying again later");
                        let at = token_clock_ms().saturating_add(STEP_RETRY_MS);
                        if let Err(error) = services.account_validity.postpone(&user, at).await {
                            tracing::error!(%user, %error, "could not postpone an account validity step");
                            tokio::time::sleep(Duration::from_millis(STEP_RETRY_MS)).await;
                        }
                    }
                    continue;
                }
                Ok(Some((due, _))) => Duration::from_millis(due.saturating_sub(now)).min(MAX_SLEEP),
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    tracing::error!(%error, "reading the account validity schedule failed");
                    Duration::from_millis(STEP_RETRY_MS)
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = async { clock_moved.as_mut()?.recv().await }, if clock_moved.is_some() => {}
            }
        }
    });
    Ok(())
}

/// One due step of one account: a renewal email, or its deactivation.
async fn step(services: &Services, user: &UserId) -> Result<()> {
    let validity = &services.account_validity;
    let Some(record) = validity.get(user)? else { return Ok(()) };
    let active = services.users.account(user)?.is_some_and(|a| !a.deactivated);
    if !active || exempt(services, user)? {
        return validity.forget(user).await;
    }
    let now = token_clock_ms();
    let config = validity.config().expect("records exist only when enabled");
    if let Some(after) = config.deactivate_after {
        if now >= record.expiration_ts.saturating_add(after.as_millis()) {
            tracing::info!(%user, expired_at = record.expiration_ts, "deactivating an account expired for too long");
            crate::users::deactivation::deactivate(services, user, false).await?;
            services.audit.record(
                services.config.server_name.as_str(),
                "user.deactivate_expired",
                user.as_str(),
                serde_json::json!({ "expiration_ts": record.expiration_ts }),
            )?;
            return validity.forget(user).await;
        }
    }
    let due: Vec<u64> = validity
        .offsets()
        .into_iter()
        .filter(|o| !record.mailed.contains(o) && record.expiration_ts.saturating_sub(*o) <= now)
        .collect();
    if now < record.expiration_ts && !due.is_empty() && record.retry_mail_at.is_none_or(|at| at <= now) {
        // One email, even when several offsets passed at once (a server that was down).
        let sent = match send_renewal_mail(services, user).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%user, %error, "a renewal email could not be sent");
                false
            }
        };
        return validity.mailed(user, record.expiration_ts, &due, sent).await;
    }
    if now >= record.expiration_ts {
        // Expired: hidden from the directory, so out of the discovery room until renewed.
        services.discovery.touch(user);
    }
    // Nothing else due (the expiry itself, or the record changed since it was read): file it
    // again.
    let _guard = validity.lock.lock().await;
    let Some(old) = validity.get(user)? else { return Ok(()) };
    let mut batch = Batch::new();
    validity.write(&mut batch, user, Some(&old), old.clone(), now);
    Ok(services.db.commit(batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_a_calendar_says() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_796_565_600_000), "2026-12-06 14:00 UTC");
    }

    #[test]
    fn expired_accounts_may_only_renew_and_log_out() {
        for path in [
            "/_matrix/client/v3/logout",
            "/_matrix/client/r0/logout/all",
            "/_matrix/client/unstable/account_validity/send_mail",
            "/_matrix/client/unstable/account_validity/validity",
            "/_synapse/client/email_account_validity/send_mail",
        ] {
            assert!(allowed_while_expired(path), "{path}");
        }
        for path in ["/_matrix/client/v3/sync", "/_matrix/client/v3/account/whoami", "/_synapse/admin/v1/users"] {
            assert!(!allowed_while_expired(path), "{path}");
        }
    }
}
