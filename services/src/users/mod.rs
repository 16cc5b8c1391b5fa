//! Accounts, devices and access tokens.
//!
//! Passwords are hashed with argon2id (off the async runtime: hashing is deliberately slow); access
//! tokens are 32 random bytes handed to the client once and stored only as their SHA-256, so a copy
//! of the database gives no one a session.

pub mod account_data;
pub mod account_validity;
pub mod deactivation;
pub mod directory;
pub mod discovery;
pub mod email_lookup;
pub mod filters;
pub mod hide_profile;
pub mod password;
pub mod password_policy;
pub mod profile;
pub mod registration_tokens;
pub mod tables;
pub mod threepid;
pub mod totp;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use rand::{Rng, RngExt};
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

pub use self::tables::{Account, Device, TokenOwner};
use crate::{
    db::{codec::prefix, codec::Json, Batch, Database, Recent},
    error::{Error, Result},
    stream::{wait_durable, Audience, Cleanup, Writer},
    time::now_ms,
};

impl Account {
    /// A new, active account with no admin restriction.
    pub fn new(password_hash: Option<String>, admin: bool) -> Self {
        Self {
            password_hash,
            admin,
            deactivated: false,
            erased: false,
            leaving_rooms: false,
            locked: false,
            suspended: false,
            shadow_banned: false,
            rate_override: None,
            created_ts: now_ms(),
            directory: None,
            user_type: None,
            replace_keys_until_ms: None,
        }
    }
}

/// What an admin may restrict on an account.
#[derive(Debug, Clone, Copy)]
pub enum Restriction {
    Locked,
    Suspended,
    ShadowBanned,
}

/// A session's tokens as a login, a registration or a refresh hands them out.
pub struct Session {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    /// The refresh token and the access token's lifetime, when the client asked for them.
    pub refresh: Option<(String, std::time::Duration)>,
}

/// Test hook: a file holding how many milliseconds the clock of access-token lifetimes runs ahead
/// of the system clock (read at each use), so that a test moves past an expiry instead of waiting
/// for it. Never set in production (not `HEMICYCLE_*`: those are configuration keys).
pub const TOKEN_CLOCK_OFFSET_ENV: &str = "FAULT_HEMICYCLE_TOKEN_CLOCK_OFFSET_FILE";

/// The clock access-token lifetimes are measured on (refreshable tokens, an admin's login-as
/// token with `valid_until_ms`, OpenID tokens): [`now_ms`], moved by the [`TOKEN_CLOCK_OFFSET_ENV`] hook.
pub fn token_clock_ms() -> u64 {
    static OFFSET_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let offset = OFFSET_FILE
        .get_or_init(|| std::env::var_os(TOKEN_CLOCK_OFFSET_ENV).map(Into::into))
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    now_ms().saturating_add(offset)
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

/// How long a `/login/get_token` token may be used (Synapse's two minutes).
pub const LOGIN_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// How long an OpenID token proves its user's identity (Synapse's one hour).
pub const OPENID_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// A new random access token: 32 bytes from the OS-seeded CSPRNG.
fn new_access_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("hct_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn new_device_id() -> OwnedDeviceId {
    random_string(10, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ").into()
}

/// A random password for accounts created without one (printed once to the operator).
pub fn random_password() -> String {
    random_string(24, b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
}

/// Lock stripes for per-user account, device and token writes.
const USER_STRIPES: usize = 64;
/// Wrong passwords allowed before each further attempt on that account must wait.
const FREE_FAILURES: u32 = 5;
/// The longest wait after repeated wrong passwords.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How often a device's last use is written to disk (it is kept in memory in between).
const LAST_SEEN_EVERY_MS: u64 = 60_000;

/// A device's last use: when (ms) and from which address.
type LastSeen = (u64, Option<String>);

/// Wrong passwords for one account.
struct Failures {
    count: u32,
    last: Instant,
}

pub struct Users {
    db: Arc<Database>,
    /// Device removals go on the stream: they change the user's device list, which everyone
    /// sharing a room with them syncs.
    writer: Arc<Writer>,
    server_name: OwnedServerName,
    /// Serializes the check-then-insert of account creation, so two registrations of one name
    /// cannot both succeed.
    create_lock: Mutex<()>,
    /// Every read-modify-write of one user's account, devices and tokens holds that user's stripe,
    /// so a login, a rename, a logout, a password change and a deactivation never interleave (an
    /// interleaving could leave a token no logout deletes, or undo a deactivation).
    stripes: crate::locks::Striped,
    /// Bounds argon2 work in flight: each verification costs ~19 MiB and a core for a moment.
    hashing: tokio::sync::Semaphore,
    failures: Mutex<HashMap<OwnedUserId, Failures>>,
    /// A hash to verify against when the account has none, so an unknown user costs the same time.
    dummy_hash: tokio::sync::OnceCell<String>,
    /// Last use of each device (ms, address), ahead of the disk by at most [`LAST_SEEN_EVERY_MS`].
    seen: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), LastSeen>>,
    /// The LDAP directory when `[ldap]` is enabled: it checks its users' passwords.
    directory: Option<directory::Ldap>,
    /// `[password_policy]`: every password set through [`Users::create`] and
    /// [`Users::set_password`] keeps it, whichever path (client, admin, console, command line).
    password_policy: password_policy::PasswordPolicy,
    /// `[account_validity]`: a new account gets its expiry in the write that creates it.
    validity: Option<Arc<account_validity::AccountValidity>>,
    /// `directory.discovery_room`: told of every new or reactivated account, which joins it.
    discovery: Option<Arc<discovery::state::Discovery>>,
    /// What authenticating a token read (its session, device and account), kept while none of
    /// their tables has been written ([`Recent`]). Every request authenticates, and a message
    /// send read the three records and then the account again (shadow-ban flag): 6 % of a busy
    /// server's time in point reads and JSON decodes (docs/performance.md). No write site
    /// invalidates anything, so none can forget to: a logout, a locked account or a refreshed
    /// token moves a generation, and the next request reads the tables again.
    recent_tokens: Recent<Vec<u8>, Arc<TokenRead>>,
    /// Accounts read, kept while no account has been written.
    recent_accounts: Recent<OwnedUserId, Option<Arc<Account>>>,
}

/// Entries kept of each kind of recent record ([`Users::recent_tokens`], [`Users::recent_accounts`]).
const RECENT_ENTRIES: usize = 100_000;

struct TokenRead {
    owner: TokenOwner,
    device: Option<Device>,
    account: Option<Arc<Account>>,
}

impl Users {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>, server_name: OwnedServerName) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            db,
            writer,
            server_name,
            create_lock: Mutex::new(()),
            stripes: crate::locks::Striped::new(USER_STRIPES),
            hashing: tokio::sync::Semaphore::new(cores),
            failures: Mutex::new(HashMap::new()),
            dummy_hash: tokio::sync::OnceCell::new(),
            seen: Mutex::new(HashMap::new()),
            directory: None,
            password_policy: Default::default(),
            validity: None,
            discovery: None,
            recent_tokens: Recent::new(RECENT_ENTRIES),
            recent_accounts: Recent::new(RECENT_ENTRIES),
        }
    }

    /// Refuses new passwords that break these rules (`[password_policy]`).
    pub fn with_password_policy(mut self, policy: password_policy::PasswordPolicy) -> Self {
        self.password_policy = policy;
        self
    }

    /// Gives new accounts an expiry (`[account_validity]`).
    pub fn with_validity(mut self, validity: Arc<account_validity::AccountValidity>) -> Self {
        self.validity = Some(validity);
        self
    }

    /// Tells the discovery room's task of new and reactivated accounts.
    pub fn with_discovery(mut self, discovery: Arc<discovery::state::Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Names an account to the discovery room's task (it joins or leaves as the account's state
    /// now says).
    pub(crate) fn discovery_touch(&self, user: &UserId) {
        if let Some(discovery) = &self.discovery {
            discovery.touch(user);
        }
    }

    pub fn password_policy(&self) -> &password_policy::PasswordPolicy {
        &self.password_policy
    }

    /// Signs the directory's users in through it (`[ldap]` enabled).
    pub fn with_directory(mut self, directory: Option<hemicycle_bridges::ldap::Directory>) -> Self {
        self.directory = directory.map(directory::Ldap::new);
        self
    }

    pub fn directory(&self) -> Option<&directory::Ldap> {
        self.directory.as_ref()
    }

    pub(crate) async fn lock_user(&self, user: &UserId) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes.lock(user).await
    }

    async fn hash_password(&self, password: String) -> Result<String> {
        let _permit = self.hashing.acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
        password::hash(password).await
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    /// The user id for a localpart, checked against the spec's grammar for new user ids.
    pub fn user_id_for_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        if !valid {
            return Err(Error::InvalidUsername(
                "user names may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'".to_owned(),
            ));
        }
        let id = format!("@{localpart}:{}", self.server_name);
        if id.len() > 255 {
            return Err(Error::InvalidUsername("user id longer than 255 bytes".to_owned()));
        }
        OwnedUserId::try_from(id).map_err(|e| Error::InvalidUsername(e.to_string()))
    }

    /// Reads a login identifier: a localpart or a full user id of this server.
    pub fn parse_login_user(&self, user: &str) -> Result<OwnedUserId> {
        if user.starts_with('@') {
            let id = UserId::parse(user.to_lowercase())
                .map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?;
            if !self.is_local(&id) {
                return Err(Error::forbidden("this user is not from this server"));
            }
            Ok(id)
        } else {
            self.user_id_for_localpart(&user.to_lowercase())
                .map_err(|_| Error::forbidden("invalid username or password"))
        }
    }

    pub fn account(&self, user: &UserId) -> Result<Option<Account>> {
        Ok(self.account_shared(user)?.map(|a| a.as_ref().clone()))
    }

    /// The account, from [`Users::recent_accounts`] while no account has been written.
    fn account_shared(&self, user: &UserId) -> Result<Option<Arc<Account>>> {
        let table = &self.db.tables.users.userid_account;
        self.recent_accounts
            .get_or_read(user, table.generation(), || Ok(table.get(&user.to_owned())?.map(|Json(a)| Arc::new(a))))
    }

    /// The session, device and account of a token hash, from [`Users::recent_tokens`] while
    /// their three tables are unchanged (the sum of their generations moves with a write to any).
    fn token_read(&self, hash: &[u8]) -> Result<Arc<TokenRead>> {
        let tables = &self.db.tables.users;
        let generation = tables.tokenhash_session.generation()
            + tables.userdeviceid_device.generation()
            + tables.userid_account.generation();
        self.recent_tokens.get_or_read(hash, generation, || {
            let owner = tables.tokenhash_session.get(&hash.to_vec())?.map(|Json(o)| o).ok_or(Error::UnknownToken)?;
            let device = self.device(&owner.user_id, &owner.device_id)?;
            let account = tables.userid_account.get(&owner.user_id)?.map(|Json(a)| Arc::new(a));
            Ok(Arc::new(TokenRead { owner, device, account }))
        })
    }

    /// Whether the id is taken (deactivated ids stay taken: ids are never reused).
    pub fn exists(&self, user: &UserId) -> Result<bool> {
        Ok(self.db.tables.users.userid_account.contains(&user.to_owned())?)
    }

    /// Whether the account exists and is active.
    pub fn is_active(&self, user: &UserId) -> Result<bool> {
        Ok(self.account(user)?.is_some_and(|a| !a.deactivated))
    }

    pub async fn create(&self, localpart: &str, password: Option<String>, admin: bool) -> Result<OwnedUserId> {
        let user = self.user_id_for_localpart(localpart)?;
        if self.exists(&user)? {
            return Err(Error::UserInUse);
        }
        let password_hash = match password {
            Some(p) => {
                self.password_policy.check(&p)?;
                Some(self.hash_password(p).await?)
            }
            None => None,
        };
        let _guard = self.create_lock.lock().expect("create lock not poisoned");
        if self.exists(&user)? {
            return Err(Error::UserInUse);
        }
        let account = Account::new(password_hash, admin);
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user, &Json(account));
        self.db.tables.users.userid_profile.insert(
            &mut batch,
            &user,
            &Json([("displayname".to_owned(), serde_json::Value::String(localpart.to_owned()))].into()),
        );
        if let Some(validity) = &self.validity {
            validity.on_create(&mut batch, &user);
        }
        self.db.commit(batch)?;
        if let Some(validity) = &self.validity {
            validity.changed();
        }
        self.discovery_touch(&user);
        Ok(user)
    }

    /// Creates a password-less account named `display_name` (else its localpart) together with
    /// whatever `extra` writes for it (an upstream sign-in's address and provider link), in one
    /// write: a crash leaves all of it or none of it, never an account without what finds it
    /// again — which the next sign-in would answer with a second account. `extra` runs under the
    /// creation lock, so its checks (an address already taken) see every account made before.
    pub fn create_with(
        &self,
        localpart: &str,
        display_name: Option<String>,
        extra: impl FnOnce(&mut Batch, &UserId) -> Result<()>,
    ) -> Result<OwnedUserId> {
        let user = self.user_id_for_localpart(localpart)?;
        let _guard = self.create_lock.lock().expect("create lock not poisoned");
        if self.exists(&user)? {
            return Err(Error::UserInUse);
        }
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user, &Json(Account::new(None, false)));
        let name = display_name.unwrap_or_else(|| localpart.to_owned());
        self.db.tables.users.userid_profile.insert(
            &mut batch,
            &user,
            &Json([("displayname".to_owned(), serde_json::Value::String(name))].into()),
        );
        if let Some(validity) = &self.validity {
            validity.on_create(&mut batch, &user);
        }
        extra(&mut batch, &user)?;
        self.db.commit(batch)?;
        if let Some(validity) = &self.validity {
            validity.changed();
        }
        self.discovery_touch(&user);
        Ok(user)
    }

    /// Checks a password. Every failure (unknown user, no password, deactivated, mismatch) is the
    /// same `M_FORBIDDEN` after the same argon2 work, so neither the answer nor its timing tells
    /// which accounts exist. After [`FREE_FAILURES`] wrong passwords an account's further attempts
    /// wait, doubling up to [`MAX_BACKOFF`] (`429 M_LIMIT_EXCEEDED`): guessing costs the guesser,
    /// whichever endpoint (login or a UIA password stage) it goes through.
    pub async fn check_password(&self, user: &UserId, password: &str) -> Result<()> {
        let denied = || Error::forbidden("invalid username or password");
        self.check_backoff(user)?;
        let account = self.account(user)?;
        if let Some(account) = account.as_ref().filter(|a| a.directory.is_some()) {
            return self.check_directory_password(user, account, password).await;
        }
        let account = account.filter(|a| !a.deactivated);
        let stored = account.and_then(|a| a.password_hash);
        let hash = match &stored {
            Some(hash) => hash.clone(),
            None => self.dummy_hash.get_or_try_init(|| self.hash_password(random_password())).await?.clone(),
        };
        let verified = {
            let _permit = self.hashing.acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
            password::verify(password.to_owned(), hash).await?
        };
        let mut failures = self.failures.lock().expect("password failures");
        if verified && stored.is_some() {
            failures.remove(user);
            return Ok(());
        }
        drop(failures);
        self.record_failure(user);
        Err(denied())
    }

    /// Counts a wrong password against the account (see [`Users::check_password`]).
    pub(crate) fn record_failure(&self, user: &UserId) {
        let mut failures = self.failures.lock().expect("password failures");
        let entry = failures.entry(user.to_owned()).or_insert(Failures { count: 0, last: Instant::now() });
        entry.count += 1;
        entry.last = Instant::now();
    }

    pub(crate) fn clear_failures(&self, user: &UserId) {
        self.failures.lock().expect("password failures").remove(user);
    }

    pub(crate) fn check_backoff(&self, user: &UserId) -> Result<()> {
        let failures = self.failures.lock().expect("password failures");
        let Some(f) = failures.get(user) else { return Ok(()) };
        if f.count < FREE_FAILURES {
            return Ok(());
        }
        let wait = Duration::from_secs(1u64 << (f.count - FREE_FAILURES).min(10)).min(MAX_BACKOFF);
        let elapsed = f.last.elapsed();
        if elapsed < wait {
            return Err(Error::LimitExceeded { retry_after: wait - elapsed });
        }
        Ok(())
    }

    /// Sets a new password; when `logout_others` is set, every device but `keep` is logged out.
    pub async fn set_password(
        &self,
        user: &UserId,
        password: String,
        logout_others: bool,
        keep: Option<&DeviceId>,
    ) -> Result<()> {
        self.ensure_local_password(user)?;
        self.password_policy.check(&password)?;
        let hash = self.hash_password(password).await?;
        let user = user.to_owned();
        let keep = keep.map(ToOwned::to_owned);
        self.write_removing_devices(
            &user,
            |d| logout_others && Some(d) != keep.as_deref(),
            |tables, batch| {
                // Read under the user's lock: a deactivation that just happened is not undone.
                let Json(mut account) =
                    tables.users.userid_account.get(&user)?.ok_or_else(|| Error::not_found("no such user"))?;
                if account.deactivated {
                    return Err(Error::forbidden("this account has been deactivated"));
                }
                if account.directory.is_some() {
                    return Err(Error::forbidden(directory::MANAGED));
                }
                account.password_hash = Some(hash);
                tables.users.userid_account.insert(batch, &user, &Json(account));
                Ok(())
            },
        )
        .await
    }

    /// Deactivates an account for good: no password, no devices, no profile. The id stays
    /// reserved. The account is marked as still leaving its rooms in the same write; see
    /// `users::deactivation`, which leaves them and then calls [`Users::rooms_left`].
    pub async fn deactivate(&self, user: &UserId, erase: bool) -> Result<()> {
        let user = user.to_owned();
        self.write_removing_devices(
            &user,
            |_| true,
            |tables, batch| {
                let Json(mut account) =
                    tables.users.userid_account.get(&user)?.ok_or_else(|| Error::not_found("no such user"))?;
                account.deactivated = true;
                account.erased |= erase;
                account.leaving_rooms = true;
                account.password_hash = None;
                tables.users.userid_account.insert(batch, &user, &Json(account));
                tables.users.userid_profile.remove(batch, &user);
                Ok(())
            },
        )
        .await
    }

    /// Reactivates a deactivated account (an operator's decision: the directory never does it by
    /// itself). Its display name starts again as its localpart; a local account gets no password
    /// back (reset one), a directory account signs in through the directory again.
    pub async fn reactivate(&self, user: &UserId) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        if !account.deactivated {
            return Err(Error::BadState(format!("{user} is not deactivated")));
        }
        if account.leaving_rooms {
            return Err(Error::BadState(format!("{user} is still leaving its rooms; try again in a moment")));
        }
        account.deactivated = false;
        account.erased = false;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.tables.users.userid_profile.insert(
            &mut batch,
            &user.to_owned(),
            &Json([("displayname".to_owned(), serde_json::Value::String(user.localpart().to_owned()))].into()),
        );
        self.db.commit(batch)?;
        self.discovery_touch(user);
        Ok(())
    }

    /// Makes an account a server admin or not (a directory account's flag follows
    /// `ldap.admin_filter` again at its next sign-in or sync).
    pub async fn set_admin(&self, user: &UserId, admin: bool) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        account.admin = admin;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Lets the account replace its cross-signing keys without UIA until `until_ms`.
    pub async fn allow_key_replacement(&self, user: &UserId, until_ms: u64) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        account.replace_keys_until_ms = Some(until_ms);
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Closes the window [`Users::allow_key_replacement`] opened (a replacement used it).
    pub async fn end_key_replacement(&self, user: &UserId) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let Some(mut account) = self.account(user)? else { return Ok(()) };
        if account.replace_keys_until_ms.take().is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Sets (or clears) the account's user type.
    pub async fn set_user_type(&self, user: &UserId, user_type: Option<String>) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        account.user_type = user_type;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    /// The admin's rate limit for the account, if any.
    pub fn rate_override(&self, user: &UserId) -> Result<Option<crate::config::RateLimit>> {
        Ok(self.account(user)?.and_then(|a| a.rate_override))
    }

    /// Sets (or, with `None`, removes) the account's rate limit override.
    pub async fn set_rate_override(&self, user: &UserId, limit: Option<crate::config::RateLimit>) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        account.rate_override = limit;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Whether the account is shadow-banned (its sends are answered but dropped).
    pub fn is_shadow_banned(&self, user: &UserId) -> Result<bool> {
        Ok(self.account_shared(user)?.is_some_and(|a| a.shadow_banned))
    }

    /// The event id answered to a shadow-banned sender: derived from the request, so a retried
    /// transaction gets the same one, and shaped like a real one.
    pub fn fake_event_id(&self, seed: &str) -> ruma::OwnedEventId {
        let digest = Sha256::digest(seed.as_bytes());
        let id = format!("${}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest));
        ruma::OwnedEventId::try_from(id).expect("a valid event id")
    }

    /// Sets an admin flag of a local account (`locked` or `suspended`); returns its new value.
    pub async fn set_restriction(&self, user: &UserId, flag: Restriction, value: bool) -> Result<bool> {
        let _guard = self.lock_user(user).await;
        let mut account = self.account(user)?.ok_or_else(|| Error::not_found("no such user"))?;
        match flag {
            Restriction::Locked => account.locked = value,
            Restriction::Suspended => account.suspended = value,
            Restriction::ShadowBanned => account.shadow_banned = value,
        }
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(value)
    }

    /// Records that a deactivated account has left every room.
    pub async fn rooms_left(&self, user: &UserId) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let Some(mut account) = self.account(user)? else { return Ok(()) };
        if !account.leaving_rooms {
            return Ok(());
        }
        account.leaving_rooms = false;
        let mut batch = Batch::new();
        self.db.tables.users.userid_account.insert(&mut batch, &user.to_owned(), &Json(account));
        self.db.commit(batch)?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<(OwnedUserId, Account)>> {
        self.db.tables.users.userid_account.iter().map(|r| r.map(|(u, Json(a))| (u, a)).map_err(Error::from)).collect()
    }

    /// Opens a session: creates (or takes over) the device and issues a fresh access token, which is
    /// returned to the caller and never stored in clear. With `refresh` (the access token's
    /// lifetime) the token expires and a refresh token comes with it.
    pub async fn login(
        &self,
        user: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        ip: Option<IpAddr>,
        refresh: Option<std::time::Duration>,
    ) -> Result<Session> {
        self.open_session(user, device_id, display_name, ip, refresh, true).await
    }

    /// Opens a session whose access token expires after `lifetime` and comes with no refresh
    /// token of this API: the OAuth 2.0 authorization server keeps its own refresh tokens (bound
    /// to the client and the grant) and renews the token with [`Users::rotate_access_token`].
    pub async fn login_expiring(
        &self,
        user: &UserId,
        device_id: OwnedDeviceId,
        display_name: Option<String>,
        ip: Option<IpAddr>,
        lifetime: std::time::Duration,
    ) -> Result<Session> {
        self.open_session(user, Some(device_id), display_name, ip, Some(lifetime), false).await
    }

    /// Replaces the access token of `device` — which must still hold the token hashed as
    /// `current` — with a new one that expires after `lifetime`; with `keep_current` the old one
    /// works until the new one is first used (see [`Device::previous_token_hash`]), else it stops
    /// in the same write. `M_UNKNOWN_TOKEN` when the device is gone or holds another token
    /// (logged out, or taken over by another sign-in).
    pub async fn rotate_access_token(
        &self,
        user: &UserId,
        device_id: &DeviceId,
        current: &[u8],
        lifetime: std::time::Duration,
        keep_current: bool,
    ) -> Result<(String, Vec<u8>)> {
        let _guard = self.lock_user(user).await;
        let key = (user.to_owned(), device_id.to_owned());
        let Some(Json(mut device)) = self.db.tables.users.userdeviceid_device.get(&key)? else {
            return Err(Error::UnknownToken);
        };
        if device.token_hash != current || !self.is_active(user)? {
            return Err(Error::UnknownToken);
        }
        let token = new_access_token();
        let hash = token_hash(&token);
        let mut batch = Batch::new();
        self.replace_access_token(&mut batch, &mut device, hash.clone(), keep_current);
        self.issue(&mut batch, user, device_id, &mut device, &hash, Some(lifetime), false);
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(device));
        self.db.commit(batch)?;
        Ok((token, hash))
    }

    /// Whom an access token was issued to, without counting it as a use (token revocation).
    pub fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        Ok(self.db.tables.users.tokenhash_session.get(&token_hash(token))?.map(|Json(o)| o))
    }

    /// When the device last made a request (ms), from memory or, after a restart, the disk.
    pub fn last_seen_ms(&self, user: &UserId, device_id: &DeviceId) -> Result<Option<u64>> {
        let key = (user.to_owned(), device_id.to_owned());
        if let Some((ts, _)) = self.seen.lock().expect("last seen").get(&key) {
            return Ok(Some(*ts));
        }
        Ok(self.device(user, device_id)?.and_then(|d| d.last_seen_ts))
    }

    async fn open_session(
        &self,
        user: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        ip: Option<IpAddr>,
        refresh: Option<std::time::Duration>,
        refresh_token: bool,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(new_device_id);
        if device_id.as_str().is_empty() || device_id.as_str().len() > 255 {
            return Err(Error::invalid_param("device_id must be 1 to 255 bytes"));
        }
        let token = new_access_token();
        let hash = token_hash(&token);
        let key = (user.to_owned(), device_id.clone());
        let _guard = self.lock_user(user).await;
        if !self.is_active(user)? {
            return Err(Error::forbidden("this account has been deactivated"));
        }
        let mut batch = Batch::new();
        let existing = self.db.tables.users.userdeviceid_device.get(&key)?.map(|Json(d)| d);
        if let Some(old) = &existing {
            for token in std::iter::once(&old.token_hash).chain(&old.previous_token_hash) {
                self.db.tables.users.tokenhash_session.remove(&mut batch, token);
            }
            for refresh in old.refresh_hash.iter().chain(&old.previous_refresh_hash) {
                self.db.tables.users.refreshhash_session.remove(&mut batch, refresh);
            }
        }
        let mut device = Device {
            display_name: display_name.or_else(|| existing.and_then(|d| d.display_name)),
            last_seen_ip: ip.map(|ip| ip.to_string()),
            last_seen_ts: Some(now_ms()),
            token_hash: hash.clone(),
            refresh_hash: None,
            previous_refresh_hash: None,
            previous_token_hash: None,
        };
        let refresh = self.issue(&mut batch, user, &device_id, &mut device, &hash, refresh, refresh_token);
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(device));
        self.db.commit(batch)?;
        Ok(Session { device_id, access_token: token, refresh })
    }

    /// Makes a device's access token stop working at `at_ms` (an admin's login-as token with
    /// `valid_until_ms`); it then answers like an expired refreshable token.
    pub async fn expire_token_at(&self, user: &UserId, device_id: &DeviceId, at_ms: u64) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let key = (user.to_owned(), device_id.to_owned());
        let device =
            self.db.tables.users.userdeviceid_device.get(&key)?.ok_or_else(|| Error::not_found("no such device"))?.0;
        let mut owner = self
            .db
            .tables
            .users
            .tokenhash_session
            .get(&device.token_hash)?
            .ok_or_else(|| Error::not_found("the device has no access token"))?
            .0;
        owner.expires_at_ms = Some(at_ms);
        let mut batch = Batch::new();
        self.db.tables.users.tokenhash_session.insert(&mut batch, &device.token_hash, &Json(owner));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Makes `new` the device's access token. The token it replaces keeps working until `new` is
    /// first used when `keep_current` (a refresh with the current refresh token: the client may
    /// have requests under way with it — matrix-sdk refreshes once for all its requests, and a
    /// request that failed with the old token just before may refresh again at once; Synapse too
    /// keeps it until it expires); the one kept before it ends now. Without `keep_current` (a
    /// repeated refresh: the replaced token was never used) it ends now and the kept one stays.
    fn replace_access_token(&self, batch: &mut Batch, device: &mut Device, new: Vec<u8>, keep_current: bool) {
        let tokens = &self.db.tables.users.tokenhash_session;
        let replaced = std::mem::replace(&mut device.token_hash, new);
        if keep_current {
            if let Some(older) = device.previous_token_hash.replace(replaced) {
                tokens.remove(batch, &older);
            }
        } else {
            tokens.remove(batch, &replaced);
        }
    }

    /// Writes the access token entry (`hash`) of `device`, expiring after `refresh` when given,
    /// and then, with `refresh_token`, a refresh token of this API.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device_id: &DeviceId,
        device: &mut Device,
        hash: &[u8],
        refresh: Option<std::time::Duration>,
        refresh_token: bool,
    ) -> Option<(String, std::time::Duration)> {
        let owner = |expires_at_ms| TokenOwner {
            user_id: user.to_owned(),
            device_id: device_id.to_owned(),
            expires_at_ms,
            appservice: None,
        };
        let expires = refresh.map(|lifetime| token_clock_ms().saturating_add(lifetime.as_millis() as u64));
        self.db.tables.users.tokenhash_session.insert(batch, &hash.to_vec(), &Json(owner(expires)));
        let lifetime = refresh.filter(|_| refresh_token)?;
        let refresh_token = new_access_token();
        let refresh_hash = token_hash(&refresh_token);
        self.db.tables.users.refreshhash_session.insert(batch, &refresh_hash, &Json(owner(None)));
        device.refresh_hash = Some(refresh_hash);
        Some((refresh_token, lifetime))
    }

    /// `POST /user/{id}/openid/request_token`: a token proving to a third party (widget,
    /// Element Call, integration manager) who the user is, valid for [`OPENID_LIFETIME`].
    pub fn openid_token(&self, user: &UserId) -> Result<(String, std::time::Duration)> {
        let token = new_access_token();
        let mut batch = Batch::new();
        let expiry = token_clock_ms().saturating_add(OPENID_LIFETIME.as_millis() as u64);
        self.db.tables.users.openidhash_user.insert(&mut batch, &token_hash(&token), &Json((user.to_owned(), expiry)));
        self.db.commit(batch)?;
        Ok((token, OPENID_LIFETIME))
    }

    /// The user an unexpired OpenID token was issued to (expired ones are dropped on sight).
    pub fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        let hash = token_hash(token);
        let Some(Json((user, expiry))) = self.db.tables.users.openidhash_user.get(&hash)? else {
            return Err(Error::UnknownToken);
        };
        if token_clock_ms() >= expiry || !self.is_active(&user)? {
            let mut batch = Batch::new();
            self.db.tables.users.openidhash_user.remove(&mut batch, &hash);
            self.db.write_unsynced(batch)?;
            return Err(Error::UnknownToken);
        }
        Ok(user)
    }

    /// `POST /login/get_token`: a single-use token signing a new device in as `user`.
    pub fn login_token(&self, user: &UserId) -> Result<(String, std::time::Duration)> {
        let token = new_access_token();
        let mut batch = Batch::new();
        let expiry = now_ms().saturating_add(LOGIN_TOKEN_LIFETIME.as_millis() as u64);
        self.db.tables.users.loginhash_user.insert(&mut batch, &token_hash(&token), &Json((user.to_owned(), expiry)));
        self.db.commit(batch)?;
        Ok((token, LOGIN_TOKEN_LIFETIME))
    }

    /// Uses up a login token: its user when it is known, unexpired and the account active.
    pub async fn take_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let refused = || Error::forbidden("invalid or expired login token");
        let hash = token_hash(token);
        let Some(Json((user, expiry))) = self.db.tables.users.loginhash_user.get(&hash)? else { return Err(refused()) };
        let _guard = self.lock_user(&user).await;
        // Read again under the lock: of two concurrent uses, one wins.
        if self.db.tables.users.loginhash_user.get(&hash)?.is_none() {
            return Err(refused());
        }
        let mut batch = Batch::new();
        self.db.tables.users.loginhash_user.remove(&mut batch, &hash);
        self.db.commit(batch)?;
        if token_clock_ms() >= expiry || !self.is_active(&user)? {
            return Err(refused());
        }
        Ok(user)
    }

    /// `POST /refresh`: trades a refresh token for a new access token and a new refresh token.
    /// The old access token stops working at once; the old refresh token, as the spec says, only
    /// once the new access or refresh token is used: until then it may refresh again (the pair it
    /// got then replaces the unused one), so an answer lost on the way, or two refreshes of one
    /// client at once, do not log the client out.
    pub async fn refresh(&self, refresh_token: &str, lifetime: std::time::Duration) -> Result<Session> {
        let old_hash = token_hash(refresh_token);
        let owner =
            self.db.tables.users.refreshhash_session.get(&old_hash)?.map(|Json(o)| o).ok_or(Error::UnknownToken)?;
        let _guard = self.lock_user(&owner.user_id).await;
        let key = (owner.user_id.clone(), owner.device_id.clone());
        let Some(Json(mut device)) = self.db.tables.users.userdeviceid_device.get(&key)? else {
            return Err(Error::UnknownToken);
        };
        let current = device.refresh_hash.as_deref() == Some(old_hash.as_slice());
        let repeated = device.previous_refresh_hash.as_deref() == Some(old_hash.as_slice());
        if !(current || repeated) || !self.is_active(&owner.user_id)? {
            return Err(Error::UnknownToken);
        }
        let mut batch = Batch::new();
        let refreshes = &self.db.tables.users.refreshhash_session;
        if current {
            // The current refresh token is used: the one before it is done with.
            if let Some(older) = device.previous_refresh_hash.take() {
                refreshes.remove(&mut batch, &older);
            }
            device.previous_refresh_hash = Some(old_hash);
        } else if let Some(unused) = &device.refresh_hash {
            // A repeat with the previous token: the pair it got last time was never used.
            refreshes.remove(&mut batch, unused);
        }
        let token = new_access_token();
        let hash = token_hash(&token);
        self.replace_access_token(&mut batch, &mut device, hash.clone(), current);
        let refresh =
            self.issue(&mut batch, &owner.user_id, &owner.device_id, &mut device, &hash, Some(lifetime), true);
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(device));
        self.db.commit(batch)?;
        Ok(Session { device_id: owner.device_id, access_token: token, refresh })
    }

    /// Resolves an access token to its owner. The token entry alone is not trusted: its device
    /// must still exist with this very token, and the account must be active. Records the
    /// device's last use (`ip`, now), written to disk at most once a minute.
    pub fn authenticate(&self, token: &str, ip: Option<IpAddr>) -> Result<TokenOwner> {
        let hash = token_hash(token);
        let read = self.token_read(&hash)?;
        let owner = &read.owner;
        let device =
            read.device.as_ref().filter(|d| d.token_hash == hash || d.previous_token_hash.as_ref() == Some(&hash));
        let account = read.account.as_deref();
        if device.is_none() || account.is_none_or(|a| a.deactivated) {
            return Err(Error::UnknownToken);
        }
        if account.is_some_and(|a| a.locked) {
            return Err(Error::UserLocked);
        }
        if owner.expires_at_ms.is_some_and(|expiry| token_clock_ms() >= expiry) {
            return Err(Error::ExpiredToken);
        }
        if device.as_ref().is_some_and(|d| {
            d.token_hash == hash && (d.previous_refresh_hash.is_some() || d.previous_token_hash.is_some())
        }) {
            self.retire_previous_refresh(&owner.user_id, &owner.device_id, &hash)?;
        }
        let now = now_ms();
        let ip = ip.map(|ip| ip.to_string());
        let key = (owner.user_id.clone(), owner.device_id.clone());
        let stored = device.and_then(|d| d.last_seen_ts).unwrap_or(0);
        self.seen.lock().expect("last seen").insert(key, (now, ip));
        if now.saturating_sub(stored) >= LAST_SEEN_EVERY_MS {
            self.persist_last_seen(&owner.user_id, &owner.device_id)?;
        }
        Ok(owner.clone())
    }

    /// The first use of a refreshed access token ends the refresh token it was refreshed with
    /// and the access token it replaced. Skipped when another change of the user holds the lock:
    /// the next use does it.
    fn retire_previous_refresh(&self, user: &UserId, device: &DeviceId, token: &[u8]) -> Result<()> {
        let Some(_guard) = self.stripes.try_lock(user) else { return Ok(()) };
        let key = (user.to_owned(), device.to_owned());
        let Some(Json(mut record)) = self.db.tables.users.userdeviceid_device.get(&key)? else { return Ok(()) };
        if record.token_hash != token {
            return Ok(());
        }
        if record.previous_refresh_hash.is_none() && record.previous_token_hash.is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        if let Some(previous) = record.previous_refresh_hash.take() {
            self.db.tables.users.refreshhash_session.remove(&mut batch, &previous);
        }
        if let Some(previous) = record.previous_token_hash.take() {
            self.db.tables.users.tokenhash_session.remove(&mut batch, &previous);
        }
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Writes a device's in-memory last use to disk (no lock needed: only the two `last_seen`
    /// fields change, on a fresh read, and a concurrent logout's removal wins since the device
    /// is then gone and nothing is written).
    fn persist_last_seen(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        let key = (user.to_owned(), device.to_owned());
        let Some((ts, ip)) = self.seen.lock().expect("last seen").get(&key).cloned() else { return Ok(()) };
        let Some(_guard) = self.stripes.try_lock(user) else { return Ok(()) };
        let Some(Json(mut record)) = self.db.tables.users.userdeviceid_device.get(&key)? else { return Ok(()) };
        record.last_seen_ts = Some(ts);
        record.last_seen_ip = ip.or(record.last_seen_ip);
        let mut batch = Batch::new();
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(record));
        self.db.write_unsynced(batch)?;
        Ok(())
    }

    pub fn device(&self, user: &UserId, device: &DeviceId) -> Result<Option<Device>> {
        Ok(self.db.tables.users.userdeviceid_device.get(&(user.to_owned(), device.to_owned()))?.map(|Json(d)| d))
    }

    /// The user's devices, with their latest use (which may be ahead of the disk).
    pub fn devices(&self, user: &UserId) -> Result<Vec<(OwnedDeviceId, Device)>> {
        let seen = self.seen.lock().expect("last seen");
        self.db
            .tables
            .users
            .userdeviceid_device
            .scan_prefix(prefix(&user.to_owned()))
            .map(|r| {
                r.map(|((_, d), Json(mut dev))| {
                    if let Some((ts, ip)) = seen.get(&(user.to_owned(), d.clone())) {
                        if dev.last_seen_ts.is_none_or(|stored| stored < *ts) {
                            dev.last_seen_ts = Some(*ts);
                            dev.last_seen_ip = ip.clone().or(dev.last_seen_ip);
                        }
                    }
                    (d, dev)
                })
                .map_err(Error::from)
            })
            .collect()
    }

    pub async fn set_device_display_name(&self, user: &UserId, device: &DeviceId, name: Option<String>) -> Result<()> {
        let key = (user.to_owned(), device.to_owned());
        let _guard = self.lock_user(user).await;
        let mut record =
            self.db.tables.users.userdeviceid_device.get(&key)?.ok_or_else(|| Error::not_found("no such device"))?.0;
        record.display_name = name;
        let mut batch = Batch::new();
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        Ok(())
    }

    /// A device with no access token, created by an application service for one of its users
    /// (it acts on it with `device_id`); `false` when the device already existed.
    pub async fn create_device_without_token(
        &self,
        user: &UserId,
        device: &DeviceId,
        display_name: Option<String>,
    ) -> Result<bool> {
        let key = (user.to_owned(), device.to_owned());
        let _guard = self.lock_user(user).await;
        if self.db.tables.users.userdeviceid_device.get(&key)?.is_some() {
            return Ok(false);
        }
        let record = Device {
            display_name,
            last_seen_ip: None,
            last_seen_ts: None,
            token_hash: Vec::new(),
            refresh_hash: None,
            previous_refresh_hash: None,
            previous_token_hash: None,
        };
        let mut batch = Batch::new();
        self.db.tables.users.userdeviceid_device.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// Logs a device out: its token stops working at once and the device is forgotten.
    pub async fn remove_device(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        self.write_removing_devices(user, |d| d == device, |_, _| Ok(())).await
    }

    /// Logs out every device of the user.
    pub async fn remove_all_devices(&self, user: &UserId) -> Result<()> {
        self.write_removing_devices(user, |_| true, |_, _| Ok(())).await
    }

    /// Writes `also` together with the removal of the selected devices: their tokens, to-device
    /// inboxes and keys go in the same batch, and when any device goes, the user's device list
    /// change is recorded on the stream so users sharing a room with them hear of it.
    async fn write_removing_devices(
        &self,
        user: &UserId,
        select: impl Fn(&DeviceId) -> bool,
        also: impl FnOnce(&crate::db::tables::Tables, &mut Batch) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.lock_user(user).await;
        let removed: Vec<_> = self.devices(user)?.into_iter().filter(|(id, _)| select(id)).collect();
        let tables = &self.db.tables;
        // Scans first, outside the writer's queue lock (the user's own lock keeps them current).
        let mut removals = Batch::new();
        also(tables, &mut removals)?;
        for (device_id, device) in &removed {
            for entry in tables
                .ephemeral
                .useriddevicepos_todevice
                .scan_prefix(crate::ephemeral::to_device::inbox(user, device_id))
            {
                tables.ephemeral.useriddevicepos_todevice.remove(&mut removals, &entry?.0);
            }
            tables.keys.remove_device_into(&mut removals, user, device_id)?;
            for token in std::iter::once(&device.token_hash).chain(&device.previous_token_hash) {
                tables.users.tokenhash_session.remove(&mut removals, token);
            }
            for refresh in device.refresh_hash.iter().chain(&device.previous_refresh_hash) {
                tables.users.refreshhash_session.remove(&mut removals, refresh);
            }
            // A device's pushers end with it (its queued notifications are dropped by the sender).
            for entry in tables.push.useridpushkey_pusher.scan_prefix(prefix(&user.to_owned())) {
                let ((owner, app_id, pushkey), Json(pusher)) = entry?;
                if pusher.device_id == *device_id {
                    tables
                        .push
                        .useridpushkey_pusher
                        .remove(&mut removals, &(owner.clone(), app_id.clone(), pushkey.clone()));
                    tables.push.appidpushkey_userid.remove(&mut removals, &(app_id, pushkey, owner));
                }
            }
            tables.users.userdeviceid_device.remove(&mut removals, &(user.to_owned(), device_id.clone()));
            // Its transaction ids may be many (one per message sent): dropped later, in bounded
            // batches, by the pruning task rather than in this one write.
            tables.users.userdeviceid_departed.insert(
                &mut removals,
                &(user.to_owned(), device_id.clone()),
                &crate::db::codec::Be64(now_ms()),
            );
        }
        let durable = self.writer.submit_with(&self.db, removals, |batch, pos| {
            if removed.is_empty() {
                return Ok(Cleanup::default());
            }
            tables.keys.record_change_into(batch, pos, user);
            Ok(Cleanup { wake: Audience::SharedWith(user.to_owned()), ..Default::default() })
        })?;
        wait_durable(durable).await?;
        let mut seen = self.seen.lock().expect("last seen");
        for (device_id, _) in &removed {
            seen.remove(&(user.to_owned(), device_id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        db::{codec::Json, Batch},
        error::Error,
    };

    /// Authentication keeps what it read for the requests that follow, yet a write to the
    /// token's session, device or account by any path (here straight to the tables, as no
    /// service would) is seen by the very next request: the copy is used only while none of the
    /// three tables has been written.
    #[tokio::test]
    async fn authentication_sees_every_write_to_what_it_read() {
        let (_dir, services) = crate::services::testing::open(|_| {});
        let users = &services.users;
        let alice = users.create("alice", None, false).await.expect("alice");
        let token = users.login(&alice, None, None, None, None).await.expect("login").access_token;
        for _ in 0..2 {
            assert_eq!(users.authenticate(&token, None).expect("authenticated").user_id, alice);
        }
        let tables = &services.db.tables.users;
        let Json(mut account) = tables.userid_account.get(&alice).unwrap().expect("account");
        account.locked = true;
        let mut batch = Batch::new();
        tables.userid_account.insert(&mut batch, &alice, &Json(account.clone()));
        services.db.commit(batch).unwrap();
        assert!(matches!(users.authenticate(&token, None), Err(Error::UserLocked)));
        assert!(users.account(&alice).unwrap().expect("account").locked);
        account.locked = false;
        let mut batch = Batch::new();
        tables.userid_account.insert(&mut batch, &alice, &Json(account));
        services.db.commit(batch).unwrap();
        assert_eq!(users.authenticate(&token, None).expect("unlocked").user_id, alice);
        let mut batch = Batch::new();
        tables.tokenhash_session.remove(&mut batch, &super::token_hash(&token));
        services.db.commit(batch).unwrap();
        assert!(matches!(users.authenticate(&token, None), Err(Error::UnknownToken)));
    }
}
