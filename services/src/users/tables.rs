//! The users tables and the records they keep. Accounts, devices and sessions, profiles, account data, filters, addresses, registration tokens and account validity.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use std::collections::BTreeMap;

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What we keep about an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// PHC string of the argon2id hash; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// Deactivated with `erase: true`: the user's messages are shown pruned to anyone who was not
    /// in the room when they were sent.
    #[serde(default)]
    pub erased: bool,
    /// Deactivation still has rooms to leave; set in the same write as `deactivated` and cleared
    /// once every room is left, so an interrupted deactivation finishes at the next start.
    #[serde(default)]
    pub leaving_rooms: bool,
    /// Locked by an admin (`PUT /admin/lock`): every request answers 401 `M_USER_LOCKED`.
    #[serde(default)]
    pub locked: bool,
    /// Suspended by an admin (`PUT /admin/suspend`): the account may read and leave but not act
    /// in rooms (403 `M_USER_SUSPENDED`).
    #[serde(default)]
    pub suspended: bool,
    /// Shadow-banned by an admin: the account's messages, state events and invites are answered
    /// as if sent but reach nobody.
    #[serde(default)]
    pub shadow_banned: bool,
    /// An admin's rate limit for this account's media uploads instead of `rate_limits`
    /// (`per_second` and `burst` both 0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_override: Option<hemicycle_core::config::RateLimit>,
    pub created_ts: u64,
    /// Made or taken over by the LDAP directory, which then holds its password, name, address
    /// and admin flag (`users::directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryLink>,
    /// Synapse's user types (`bot`, `support`) an admin may set; none for regular accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// Until when (ms) the account may replace its cross-signing keys without user-interactive
    /// auth: an admin allows it for a while (MSC3967), e.g. for an agent whose password lives in
    /// the directory and who lost every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_keys_until_ms: Option<u64>,
}

/// A device (a login session) of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    /// SHA-256 of the device's current access token, so the token entry can be removed with it.
    pub token_hash: Vec<u8>,
    /// SHA-256 of the device's current refresh token, when the client asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_hash: Option<Vec<u8>>,
    /// SHA-256 of the refresh token the current pair was refreshed with, kept working until the
    /// new access or refresh token is first used (the spec's rule, so a client that lost the
    /// answer of `/refresh`, or refreshed twice at once, can refresh again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_refresh_hash: Option<Vec<u8>>,
    /// SHA-256 of the access token a refresh replaced, kept working until the new one is first
    /// used (or expires): a client's requests already under way with it when another of its
    /// requests refreshed are not turned into a hard logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_token_hash: Option<Vec<u8>>,
}

/// Whom an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenOwner {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// When a refreshable access token stops working (ms since the epoch); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// The appservice whose `as_token` made this request (its sender or a user it masquerades
    /// as); never stored with a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appservice: Option<String>,
}

/// What ties an account to its directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryLink {
    pub dn: String,
    /// The uid as the directory spells it (what a password check binds with).
    pub uid: String,
    /// The address the directory gave, so a change replaces it (addresses the user added stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
}

/// Stored account data: the content and the stream position of its last change.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AccountDataRecord {
    pub content: Value,
    pub pos: u64,
}

/// What is kept per account (`userid_validity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Validity {
    /// When the account expires (ms since the epoch, on [`token_clock_ms`]).
    pub expiration_ts: u64,
    /// The offsets (ms before expiry) whose renewal email went out, or is not to go out, in this
    /// period; cleared by a renewal.
    #[serde(default)]
    pub mailed: Vec<u64>,
    /// SHA-256 of the token of the latest renewal link, and when that link was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_used_ts: Option<u64>,
    /// After a failed mail, when it is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_mail_at: Option<u64>,
    /// The time under which the account sits in `dueuserid_userid`, so a change moves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<u64>,
}

/// What a validated address is for: a session opened for one cannot serve the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    AddToAccount,
    ResetPassword,
    /// Registering an account that will have the address.
    Register,
}

/// A validation session (`sid_threepidsession`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationSession {
    pub purpose: Purpose,
    pub(crate) client_secret_hash: Vec<u8>,
    pub address: String,
    pub(crate) token_hash: Vec<u8>,
    pub(crate) expires_ts: u64,
    pub(crate) send_attempt: u64,
    pub(crate) validated_ts: Option<u64>,
}

/// An address on an account (`useridmediumaddress_threepid`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreepidRecord {
    pub added_at: u64,
    pub validated_at: u64,
}

/// An address just bound to an account, whichever way (`pos_boundthreepid`): kept until the
/// third-party invites of it have been taken up, so that a crash in between loses none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundThreepid {
    pub user: OwnedUserId,
    pub medium: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub uses_allowed: Option<u64>,
    /// Uses counted (Synapse's `completed`; `pending` is always 0 here).
    pub completed: u64,
    /// When the token stops working (ms since the epoch).
    pub expiry_time: Option<u64>,
}

/// An admin's second factor (RFC 6238 TOTP, enrolled in the console).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The shared secret (20 random bytes).
    pub secret: Vec<u8>,
    /// Whether a code made from it was shown back: until then the secret is pending and guards
    /// nothing.
    pub confirmed: bool,
    /// The last time step a code was accepted for: that code, and every older one, is spent.
    pub last_step: u64,
    /// Wrong (or replayed) codes in a row since the last good one, and when the last came: past
    /// a few, each further attempt waits (users/totp.rs), so six digits cannot be guessed.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub failed_ms: u64,
}

hemicycle_core::tables! {
    /// The users column families.
    pub struct Tables {
        /// Admins' TOTP secrets (docs/console.md).
        pub userid_totp: Table<OwnedUserId, Json<TotpRecord>>,
        pub userid_account: Table<OwnedUserId, Json<Account>>,
        /// Profile fields (`displayname`, `avatar_url`, extended fields) as one JSON object.
        pub userid_profile: Table<OwnedUserId, Json<BTreeMap<String, serde_json::Value>>>,
        pub userdeviceid_device: Table<(OwnedUserId, OwnedDeviceId), Json<Device>>,
        /// Removed devices → when (ms): what they leave behind (client transaction ids) is dropped
        /// by the pruning task after `retention.departed_devices` (`crate::retention`).
        pub userdeviceid_departed: Table<(OwnedUserId, OwnedDeviceId), Be64>,
        /// sha256(access token) → its user and device; tokens themselves are never stored.
        pub tokenhash_session: Table<Vec<u8>, Json<TokenOwner>>,
        /// sha256(refresh token) → its user and device; like access tokens, never stored in clear.
        pub refreshhash_session: Table<Vec<u8>, Json<TokenOwner>>,
        /// sha256(OpenID token) → (user, expiry ms): tokens a user hands to a widget or integration
        /// manager, which checks them with `/_matrix/federation/v1/openid/userinfo`.
        pub openidhash_user: Table<Vec<u8>, Json<(OwnedUserId, u64)>>,
        /// sha256(login token) → (user, expiry ms): single-use tokens from `/login/get_token` that
        /// sign a new device in with `m.login.token`.
        pub loginhash_user: Table<Vec<u8>, Json<(OwnedUserId, u64)>>,
        /// Account → its expiry, the renewal emails sent this period, its latest renewal link (`[account_validity]`).
        pub userid_validity: Table<OwnedUserId, Json<Validity>>,
        /// SHA-256(renewal link token) → the account it renews.
        pub renewalhash_userid: Table<Vec<u8>, Json<OwnedUserId>>,
        /// (due time as big-endian u64, user) → user: when each account's next validity step (a renewal
        /// email, a deactivation) is due, read in time order by one task.
        pub dueuserid_userid: Table<Vec<u8>, Json<OwnedUserId>>,
        /// Email validation sessions by id (only hashes of the client secret and token).
        pub sid_threepidsession: Table<String, Json<ValidationSession>>,
        /// SHA-256 of (purpose, client secret, address) → (session id, last `send_attempt`): a
        /// repeated attempt gets the same session and no second email.
        pub attempthash_sid: Table<Vec<u8>, Json<(String, u64)>>,
        /// (user, medium, address) → when it was added and validated.
        pub useridmediumaddress_threepid: Table<(OwnedUserId, String, String), Json<ThreepidRecord>>,
        /// (medium, address) → the account it belongs to (one account per address).
        pub mediumaddress_userid: Table<(String, String), OwnedUserId>,
        /// Addresses just bound, in order, until their third-party invites are taken up.
        pub pos_boundthreepid: Table<Be64, Json<BoundThreepid>>,
        /// (user, room id or "" for global, event type) → content.
        pub useridroomidtype_accountdata: Table<(OwnedUserId, String, String), Json<AccountDataRecord>>,
        /// (user, stream position) → (room or "", type) of an account data change, for sync.
        pub useridpos_accountdata: Table<(OwnedUserId, Be64), Json<(String, String)>>,
        /// (user, filter id) → filter definition JSON.
        pub useridfilterid_filter: Table<(OwnedUserId, String), Json<serde_json::Value>>,
        /// Registration tokens made by admins: token → uses allowed and made, expiry.
        pub token_registrationtoken: Table<String, Json<RegistrationToken>>,
        /// The discovery room's alias (`directory.discovery_room`) → the room id it last resolved
        /// to, known at the next start before the alias is resolved again.
        pub discoveryalias_roomid: Table<String, OwnedRoomId>,
    }
}
