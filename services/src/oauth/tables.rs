//! The oauth tables and the records they keep: registered clients, authorization codes and
//! grants (one per signed-in OAuth session), with their refresh tokens, and the sessions of the
//! account pages.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{codec::Json, Table};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};

/// A client registered with dynamic client registration (RFC 7591), as validated: only public
/// clients (no secret), so the client id identifies it and PKCE proves who redeems a code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// `web` or `native`: which redirect URIs it may use.
    pub application_type: String,
    /// Exactly as registered; an authorization request must name one of them (a native client's
    /// loopback URI with any port).
    pub redirect_uris: Vec<String>,
    /// The grants it may use, among those this server supports.
    pub grant_types: Vec<String>,
    pub client_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    pub created_ts: u64,
    /// Whether a session was ever opened for it; a registration never used for a while is
    /// forgotten (`sweep.rs`). Records from before this field count as used: never forgotten.
    #[serde(default = "used_before_tracking")]
    pub used: bool,
}

fn used_before_tracking() -> bool {
    true
}

/// An authorization code handed to a client's redirect URI, kept by its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Code {
    pub client_id: String,
    /// The redirect URI of the authorization request: the token request must repeat it.
    pub redirect_uri: String,
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// The scope tokens granted, as the client asked for them.
    pub scope: Vec<String>,
    /// BASE64URL(SHA-256(code_verifier)) (PKCE, `S256` only).
    pub code_challenge: String,
    pub expires_ms: u64,
    /// Set when the code was exchanged: the grant it made, which a second use revokes (RFC 6749
    /// section 4.1.2: a code used twice may have been stolen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

/// A signed-in OAuth session: which client holds which device of which user, and the hashes
/// of its current tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub scope: Vec<String>,
    pub created_ts: u64,
    /// SHA-256 of the device's access token as this grant last issued it: the device must still
    /// hold it for a refresh to work (a logout or another sign-in on the device ends the grant).
    pub access_hash: Vec<u8>,
    /// When the current token pair was issued (ms).
    pub issued_ms: u64,
    /// SHA-256 of the current refresh token.
    pub refresh_hash: Vec<u8>,
    /// SHA-256 of the refresh token the current pair replaced: presented again while the current
    /// pair is unused, it is a retry after a lost answer and is honoured (the spec asks for it);
    /// presented after that, the session is taken as stolen and ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_refresh_hash: Option<Vec<u8>>,
}

/// Where a sign-in through an upstream provider returns once the provider answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An authorization request of this server's OAuth API: its parameters, checked again.
    Oauth { params: Vec<(String, String)> },
    /// `m.login.sso` of the legacy API: the client's `redirectUrl`, which gets a login token.
    Sso { redirect_url: String },
    /// The account management pages: the query of the page to show once signed in.
    Account { return_query: String },
    /// The device authorization grant's page: the user code of the request the person allows by
    /// signing in.
    Link { user_code: String },
}

/// A sign-in sent to an upstream provider and not back yet, kept by the SHA-256 of its `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamSession {
    pub provider: String,
    pub nonce: String,
    /// The PKCE verifier of our request to the provider.
    pub verifier: String,
    pub expires_ms: u64,
    pub origin: Origin,
}

/// A device authorization request (RFC 8628): a device waiting for a person to allow it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub client_id: String,
    pub scope: Vec<String>,
    pub device_id: OwnedDeviceId,
    pub user_code: String,
    pub expires_ms: u64,
    /// When the client last asked for its tokens (for `slow_down`).
    #[serde(default)]
    pub last_poll_ms: u64,
    /// Set when a person allowed it: whose session it becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<OwnedUserId>,
    #[serde(default)]
    pub denied: bool,
}

/// A session of the account pages: a device of the user whose access token only the pages handed
/// out (in their cookie). Only these open the pages, so that a client's access token — which a
/// thief may hold — cannot approve what the pages guard, such as a cross-signing reset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageSession {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub expires_ms: u64,
}

hemicycle_core::tables! {
    /// The oauth column families.
    pub struct Tables {
        /// Registered clients by client id.
        pub clientid_client: Table<String, Json<Client>>,
        /// SHA-256(authorization code) → the code's request and, once used, its grant.
        pub codehash_code: Table<Vec<u8>, Json<Code>>,
        /// Grant id → the session it is.
        pub grantid_grant: Table<String, Json<Grant>>,
        /// SHA-256(refresh token) → grant id, for the current and the previous refresh token.
        pub refreshhash_grantid: Table<Vec<u8>, String>,
        /// (user, device) → grant id: the OAuth session a device is, for revocation by access
        /// token, the session lists and a sign-in that reuses the device.
        pub useriddevice_grantid: Table<(OwnedUserId, OwnedDeviceId), String>,
        /// SHA-256(state) → a sign-in waiting for an upstream provider's answer.
        pub statehash_upstream: Table<Vec<u8>, Json<UpstreamSession>>,
        /// (provider id, subject) → the account a person of an upstream provider signs in to,
        /// fixed at their first sign-in (their address may change later).
        pub providersubject_userid: Table<(String, String), OwnedUserId>,
        /// SHA-256(device code) → a device authorization request.
        pub devicecodehash_request: Table<Vec<u8>, Json<DeviceRequest>>,
        /// User code (as typed, without its dash) → SHA-256 of its device code.
        pub usercode_devicecodehash: Table<String, Vec<u8>>,
        /// SHA-256(access token of an account page session) → the session.
        pub pagetokenhash_session: Table<Vec<u8>, Json<PageSession>>,
    }
}
