//! The homeserver as its own OAuth 2.0 authorization server (the Matrix spec's "OAuth 2.0 API":
//! MSC2964, MSC2965, MSC2966, MSC2967): registered clients, authorization codes with PKCE, and
//! grants whose access tokens are ordinary device tokens of `users`, so the whole client API
//! accepts them exactly like the tokens `/login` hands out. The refresh tokens are the grant's
//! own: bound to the client, rotated at each use.
//!
//! How a person proves who they are (the sign-in pages) is the HTTP layer's business; this
//! module starts once it knows the user.

pub mod registration;
pub mod state;
pub mod sweep;
pub mod tables;
pub mod upstream;

use std::{net::IpAddr, sync::Arc};

use base64::Engine;
use rand::Rng;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

pub use self::tables::{Client, Code, DeviceRequest, Grant, PageSession};
use crate::{
    config::OauthConfig,
    db::{
        codec::{prefix, Json},
        Batch, Database,
    },
    error::{Error, Result},
    time::now_ms,
    users::{token_hash, Users},
};

/// The scope token of full client-server API access, stable and as MSC2967 spelt it (which
/// matrix-sdk 0.18 still sends).
pub const API_SCOPES: [&str; 2] = ["urn:matrix:client:api:*", "urn:matrix:org.matrix.msc2967.client:api:*"];
/// The prefixes of the device scope token, stable and unstable.
pub const DEVICE_SCOPE_PREFIXES: [&str; 2] =
    ["urn:matrix:client:device:", "urn:matrix:org.matrix.msc2967.client:device:"];

/// The error codes of RFC 6749 (section 4.1.2.1 and 5.2), RFC 7591 (section 3.2.2) and RFC 8628.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    InvalidRedirectUri,
    InvalidClientMetadata,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::ServerError => "server_error",
        }
    }
}

/// An OAuth error: its code and a description for the developer (`error_description`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OauthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into() }
    }

    fn grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }
}

impl From<Error> for OauthError {
    fn from(error: Error) -> Self {
        tracing::warn!(%error, "OAuth request failed");
        Self::new(ErrorCode::ServerError, "the server could not complete the request")
    }
}

impl From<crate::db::DbError> for OauthError {
    fn from(error: crate::db::DbError) -> Self {
        Error::from(error).into()
    }
}

/// Where an authorization response goes: the client's redirect URI, with the parameters in its
/// query or its fragment (`response_mode`), and the client's `state` echoed.
#[derive(Debug, Clone)]
pub struct RedirectTarget {
    pub redirect_uri: String,
    pub fragment: bool,
    pub state: Option<String>,
}

impl RedirectTarget {
    /// The URI the browser is sent to, carrying `params` and the state.
    pub fn url(&self, params: &[(&str, &str)]) -> String {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        encoded.extend_pairs(params);
        if let Some(state) = &self.state {
            encoded.append_pair("state", state);
        }
        let encoded = encoded.finish();
        let separator = match (self.fragment, self.redirect_uri.contains('?')) {
            (true, _) => '#',
            (false, true) => '&',
            (false, false) => '?',
        };
        format!("{}{separator}{encoded}", self.redirect_uri)
    }

    /// The URI of a refusal (RFC 6749 section 4.1.2.1).
    pub fn error_url(&self, error: &OauthError) -> String {
        self.url(&[("error", error.code.as_str()), ("error_description", &error.description)])
    }
}

/// Why an authorization request cannot even be answered to its client (the sign-in page says it
/// in the person's language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageReason {
    NoClient,
    UnknownClient,
    NoRedirectUri,
    UnregisteredRedirectUri,
    ServerError,
}

/// A refused authorization request: shown to the person when the redirect URI cannot be trusted
/// (unknown client, unregistered URI), else sent back to the client.
#[derive(Debug, Clone)]
pub enum Refusal {
    Page(PageReason),
    Redirect(RedirectTarget, OauthError),
}

/// An authorization request that passed every check: what the sign-in page asks the person to
/// allow.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub client: Client,
    pub target: RedirectTarget,
    pub scope: Vec<String>,
    pub device_id: OwnedDeviceId,
    pub code_challenge: String,
    /// `login_hint` as `mxid:@user:server` (MSC4198) or a plain name, to fill the form in.
    pub login_hint: Option<String>,
}

/// What the token endpoint answers for a granted session.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: std::time::Duration,
    pub scope: Vec<String>,
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub client_id: String,
}

/// The device code grant's type (RFC 8628).
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a device code waits for the person (RFC 8628 suggests minutes).
pub const DEVICE_CODE_LIFETIME_S: u64 = 600;
/// The polling interval announced to devices.
pub const DEVICE_POLL_INTERVAL_S: u64 = 5;

/// A user code: eight letters a person reads and types without confusion (RFC 8628 section
/// 6.1: no vowels, no look-alikes), shown as `ABCD-EFGH`; about 34 bits against guessing
/// within its ten minutes, with sign-ins rate limited.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut rng = rand::rng();
    let letters: String =
        (0..8).map(|_| ALPHABET[rand::RngExt::random_range(&mut rng, 0..ALPHABET.len())] as char).collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A user code as stored: upper case, no dash or spaces (people type it as they like).
pub fn normalize_user_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// A random token: 32 bytes from the OS-seeded CSPRNG, URL-safe, after a prefix naming its use.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a string is 43 to 128 characters of RFC 7636's unreserved set (a code verifier or a
/// S256 challenge).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 section 4.6 with `S256`: BASE64URL(SHA256(verifier)) must be the challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes() == challenge.as_bytes()
}

/// Reads a requested scope: full API access and exactly one device, nothing this server does not
/// know. Returns the device id.
pub fn parse_scope(scope: &str) -> std::result::Result<(Vec<String>, OwnedDeviceId), OauthError> {
    let invalid = |d: String| OauthError::new(ErrorCode::InvalidScope, d);
    let tokens: Vec<String> = scope.split(' ').filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let mut api = false;
    let mut device = None;
    for token in &tokens {
        if API_SCOPES.contains(&token.as_str()) {
            api = true;
        } else if let Some(id) = DEVICE_SCOPE_PREFIXES.iter().find_map(|p| token.strip_prefix(p)) {
            if device.is_some() {
                return Err(invalid("the scope must name exactly one device".to_owned()));
            }
            let valid = !id.is_empty()
                && id.len() <= 255
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !valid {
                return Err(invalid(format!(
                    "device id {id:?}: 1 to 255 characters among A-Z, a-z, 0-9, '-', '.', '_' and '~'"
                )));
            }
            device = Some(OwnedDeviceId::from(id));
        } else {
            return Err(invalid(format!("unknown scope token {token}")));
        }
    }
    if !api {
        return Err(invalid("the scope must include urn:matrix:client:api:*".to_owned()));
    }
    let device =
        device.ok_or_else(|| invalid("the scope must include urn:matrix:client:device:<device id>".to_owned()))?;
    Ok((tokens, device))
}

pub struct Oauth {
    db: Arc<Database>,
    config: OauthConfig,
    /// Serializes the read-check-write of codes and refresh tokens: of two concurrent uses of one
    /// code or refresh token, exactly one wins.
    exchange: tokio::sync::Mutex<()>,
    /// Where the sweep of expired rows goes on at its next pass.
    sweep: std::sync::Mutex<state::SweepCursors>,
}

impl Oauth {
    pub fn new(db: Arc<Database>, config: OauthConfig) -> Self {
        Self { db, config, exchange: tokio::sync::Mutex::new(()), sweep: Default::default() }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Registers a client (RFC 7591); returns its new id and what was registered.
    pub fn register(&self, metadata: &serde_json::Value) -> std::result::Result<(String, Client), OauthError> {
        let client = registration::validate(metadata, now_ms())?;
        let client_id = random_token("").chars().take(26).collect::<String>();
        let mut batch = Batch::new();
        self.db.tables.oauth.clientid_client.insert(&mut batch, &client_id, &Json(client.clone()));
        self.db.commit(batch)?;
        Ok((client_id, client))
    }

    pub fn client(&self, client_id: &str) -> Result<Option<Client>> {
        Ok(self.db.tables.oauth.clientid_client.get(&client_id.to_owned())?.map(|Json(c)| c))
    }

    /// Checks an authorization request's parameters (RFC 6749 section 4.1.1, RFC 7636, the
    /// spec's scopes) in the order that keeps the redirect URI trustworthy: the client and its
    /// redirect URI first (a failure there is shown to the person, never redirected), then the
    /// rest (sent back to the client).
    pub fn check_authorization(
        &self,
        param: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<AuthorizationRequest, Refusal> {
        let client_id = param("client_id").ok_or(Refusal::Page(PageReason::NoClient))?;
        let client = self
            .client(&client_id)
            .map_err(|_| Refusal::Page(PageReason::ServerError))?
            .ok_or(Refusal::Page(PageReason::UnknownClient))?;
        let redirect_uri = param("redirect_uri").ok_or(Refusal::Page(PageReason::NoRedirectUri))?;
        if !registration::redirect_matches(&client, &redirect_uri) {
            return Err(Refusal::Page(PageReason::UnregisteredRedirectUri));
        }
        let fragment = match param("response_mode").as_deref() {
            None | Some("query") => false,
            Some("fragment") => true,
            Some(_) => {
                let target = RedirectTarget { redirect_uri, fragment: false, state: param("state") };
                let error = OauthError::new(ErrorCode::InvalidRequest, "response_mode must be query or fragment");
                return Err(Refusal::Redirect(target, error));
            }
        };
        let target = RedirectTarget { redirect_uri, fragment, state: param("state") };
        let refuse = |code, text: &str| Refusal::Redirect(target.clone(), OauthError::new(code, text));
        if param("response_type").as_deref() != Some("code") {
            return Err(refuse(ErrorCode::UnsupportedResponseType, "response_type must be code"));
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(refuse(
                ErrorCode::UnauthorizedClient,
                "the client did not register the authorization_code grant",
            ));
        }
        match param("code_challenge_method").as_deref() {
            Some("S256") => {}
            None => {
                return Err(refuse(ErrorCode::InvalidRequest, "PKCE is required: code_challenge_method must be S256"))
            }
            Some(_) => return Err(refuse(ErrorCode::InvalidRequest, "transform algorithm not supported: only S256")),
        }
        let code_challenge = param("code_challenge").filter(|c| pkce_shaped(c)).ok_or_else(|| {
            refuse(ErrorCode::InvalidRequest, "code_challenge must be a S256 challenge (43 characters)")
        })?;
        if param("prompt").is_some_and(|p| p.split(' ').any(|p| p == "none")) {
            return Err(refuse(ErrorCode::InvalidRequest, "prompt=none is not supported: the person must sign in"));
        }
        let scope = param("scope").unwrap_or_default();
        let (scope, device_id) = parse_scope(&scope).map_err(|error| Refusal::Redirect(target.clone(), error))?;
        Ok(AuthorizationRequest {
            client_id,
            client,
            target,
            scope,
            device_id,
            code_challenge,
            login_hint: param("login_hint"),
        })
    }

    /// After the person signed in and allowed the request: a single-use code for the client.
    pub fn issue_code(&self, request: &AuthorizationRequest, user: &UserId) -> Result<String> {
        let code = random_token("hcc_");
        let record = Code {
            client_id: request.client_id.clone(),
            redirect_uri: request.target.redirect_uri.clone(),
            user_id: user.to_owned(),
            device_id: request.device_id.clone(),
            scope: request.scope.clone(),
            code_challenge: request.code_challenge.clone(),
            expires_ms: now_ms().saturating_add(self.config.code_lifetime_s.saturating_mul(1000)),
            grant_id: None,
        };
        let mut batch = Batch::new();
        self.db.tables.oauth.codehash_code.insert(&mut batch, &token_hash(&code), &Json(record));
        self.db.commit(batch)?;
        Ok(code)
    }

    /// The `authorization_code` grant: checks the code, its client, its redirect URI and the PKCE
    /// verifier, then opens the session. A code presented a second time ends the session the
    /// first use opened.
    pub async fn exchange_code(
        &self,
        users: &Users,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        ip: Option<IpAddr>,
    ) -> std::result::Result<Tokens, OauthError> {
        if !pkce_shaped(verifier) {
            return Err(OauthError::new(
                ErrorCode::InvalidRequest,
                "code_verifier must be 43 to 128 unreserved characters",
            ));
        }
        let guard = self.exchange.lock().await;
        let hash = token_hash(code);
        let table = &self.db.tables.oauth.codehash_code;
        let Some(Json(mut record)) = table.get(&hash)? else {
            return Err(OauthError::grant("unknown authorization code"));
        };
        if let Some(grant_id) = record.grant_id.clone() {
            drop(guard);
            tracing::warn!(client_id, user = %record.user_id, "an authorization code was used twice: its session is ended");
            self.end_grant(users, &grant_id).await?;
            return Err(OauthError::grant("this authorization code was already used"));
        }
        if now_ms() >= record.expires_ms {
            let mut batch = Batch::new();
            table.remove(&mut batch, &hash);
            self.db.commit(batch)?;
            return Err(OauthError::grant("the authorization code has expired"));
        }
        if record.client_id != client_id {
            return Err(OauthError::grant("the authorization code was issued to another client"));
        }
        if record.redirect_uri != redirect_uri {
            return Err(OauthError::grant("redirect_uri is not the one of the authorization request"));
        }
        if !pkce_matches(verifier, &record.code_challenge) {
            return Err(OauthError::grant("code_verifier does not match the code_challenge"));
        }
        let client =
            self.client(client_id)?.ok_or_else(|| OauthError::new(ErrorCode::InvalidClient, "unknown client"))?;
        let grant_id = random_token("");
        record.grant_id = Some(grant_id.clone());
        let mut batch = Batch::new();
        table.insert(&mut batch, &hash, &Json(record.clone()));
        self.db.commit(batch)?;
        let device_name = client.client_name.clone().unwrap_or_else(|| client.client_uri.clone());
        self.open_grant(users, grant_id, client_id, &record.user_id, &record.device_id, record.scope, device_name, ip)
            .await
    }

    /// Opens a session on `device_id` (a new device, or the user's existing one, which it takes
    /// over: a client that still holds the device's keys signs in again on it) and records the
    /// grant with a fresh refresh token.
    #[allow(clippy::too_many_arguments)]
    async fn open_grant(
        &self,
        users: &Users,
        grant_id: String,
        client_id: &str,
        user: &UserId,
        device_id: &DeviceId,
        scope: Vec<String>,
        device_name: String,
        ip: Option<IpAddr>,
    ) -> std::result::Result<Tokens, OauthError> {
        let lifetime = self.config.access_token_lifetime();
        let tables = &self.db.tables.oauth;
        let key = (user.to_owned(), device_id.to_owned());
        let previous = tables.useriddevice_grantid.get(&key)?;
        let session = users.login_expiring(user, device_id.to_owned(), Some(device_name), ip, lifetime).await.map_err(
            |e| match e {
                Error::Forbidden(reason) => OauthError::grant(reason),
                other => other.into(),
            },
        )?;
        let refresh_token = random_token("hcr_");
        let grant = Grant {
            client_id: client_id.to_owned(),
            user_id: user.to_owned(),
            device_id: device_id.to_owned(),
            scope: scope.clone(),
            created_ts: now_ms(),
            access_hash: token_hash(&session.access_token),
            issued_ms: now_ms(),
            refresh_hash: token_hash(&refresh_token),
            previous_refresh_hash: None,
        };
        let mut batch = Batch::new();
        if let Some(old_id) = previous {
            self.forget_into(&mut batch, &old_id)?;
        }
        if let Some(mut client) = self.client(client_id)?.filter(|c| !c.used) {
            client.used = true;
            tables.clientid_client.insert(&mut batch, &client_id.to_owned(), &Json(client));
        }
        tables.grantid_grant.insert(&mut batch, &grant_id, &Json(grant.clone()));
        tables.refreshhash_grantid.insert(&mut batch, &grant.refresh_hash, &grant_id);
        tables.useriddevice_grantid.insert(&mut batch, &key, &grant_id);
        self.db.commit(batch)?;
        Ok(Tokens {
            access_token: session.access_token,
            refresh_token,
            expires_in: lifetime,
            scope,
            user_id: user.to_owned(),
            device_id: device_id.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    /// The `refresh_token` grant, with rotation: the old refresh token stops working once the new
    /// pair is used. Presented again before that (the answer was lost), it is honoured; after
    /// that, someone else holds a copy, and the session is ended.
    pub async fn refresh(
        &self,
        users: &Users,
        client_id: &str,
        refresh_token: &str,
    ) -> std::result::Result<Tokens, OauthError> {
        let guard = self.exchange.lock().await;
        let tables = &self.db.tables.oauth;
        let hash = token_hash(refresh_token);
        let unknown = || OauthError::grant("unknown, used or revoked refresh token");
        let Some(grant_id) = tables.refreshhash_grantid.get(&hash)? else { return Err(unknown()) };
        let Some(Json(mut grant)) = tables.grantid_grant.get(&grant_id)? else {
            let mut batch = Batch::new();
            tables.refreshhash_grantid.remove(&mut batch, &hash);
            self.db.commit(batch)?;
            return Err(unknown());
        };
        if grant.client_id != client_id {
            return Err(OauthError::grant("the refresh token was issued to another client"));
        }
        let retry = if hash == grant.refresh_hash {
            false
        } else if grant.previous_refresh_hash.as_ref() == Some(&hash) {
            let used = users.last_seen_ms(&grant.user_id, &grant.device_id)?.is_some_and(|seen| seen > grant.issued_ms);
            if used {
                drop(guard);
                tracing::warn!(client_id, user = %grant.user_id, device = %grant.device_id, "a replaced refresh token was used again: the session is ended");
                self.end_grant(users, &grant_id).await?;
                return Err(OauthError::grant("this refresh token was already used: the session has been ended"));
            }
            true
        } else {
            return Err(unknown());
        };
        let lifetime = self.config.access_token_lifetime();
        let (access_token, access_hash) = match users
            .rotate_access_token(&grant.user_id, &grant.device_id, &grant.access_hash, lifetime, !retry)
            .await
        {
            Ok(pair) => pair,
            Err(Error::UnknownToken) => {
                // The device was logged out (or signed in again otherwise): the grant is over.
                let mut batch = Batch::new();
                self.forget_into(&mut batch, &grant_id)?;
                self.db.commit(batch)?;
                return Err(OauthError::grant("the session has ended"));
            }
            Err(other) => return Err(other.into()),
        };
        let new_refresh = random_token("hcr_");
        let new_hash = token_hash(&new_refresh);
        let mut batch = Batch::new();
        if retry {
            // The unused pair the lost answer carried is dropped; the previous token stays the previous one.
            tables.refreshhash_grantid.remove(&mut batch, &grant.refresh_hash);
        } else {
            if let Some(older) = &grant.previous_refresh_hash {
                tables.refreshhash_grantid.remove(&mut batch, older);
            }
            grant.previous_refresh_hash = Some(grant.refresh_hash.clone());
        }
        grant.refresh_hash = new_hash.clone();
        grant.access_hash = access_hash;
        grant.issued_ms = now_ms();
        tables.refreshhash_grantid.insert(&mut batch, &new_hash, &grant_id);
        tables.grantid_grant.insert(&mut batch, &grant_id, &Json(grant.clone()));
        self.db.commit(batch)?;
        Ok(Tokens {
            access_token,
            refresh_token: new_refresh,
            expires_in: lifetime,
            scope: grant.scope,
            user_id: grant.user_id,
            device_id: grant.device_id,
            client_id: grant.client_id,
        })
    }

    /// Token revocation (RFC 7009): an access or refresh token ends its whole session (both
    /// tokens and the device, as the spec asks). Returns whose session it was; none for an
    /// unknown token, which is not an error.
    pub async fn revoke(&self, users: &Users, token: &str) -> Result<Option<(OwnedUserId, OwnedDeviceId)>> {
        let tables = &self.db.tables.oauth;
        let hash = token_hash(token);
        if let Some(grant_id) = tables.refreshhash_grantid.get(&hash)? {
            return self.end_grant(users, &grant_id).await;
        }
        let Some(owner) = users.token_owner(token)? else { return Ok(None) };
        let key = (owner.user_id.clone(), owner.device_id.clone());
        match tables.useriddevice_grantid.get(&key)? {
            Some(grant_id) => self.end_grant(users, &grant_id).await,
            None => {
                // A token of the legacy API: revoking it logs its device out, as `/logout` would.
                users.remove_device(&owner.user_id, &owner.device_id).await?;
                Ok(Some(key))
            }
        }
    }

    /// Ends a session: its device is logged out (when it is still this grant's), then the grant
    /// and its refresh tokens are forgotten.
    pub async fn end_grant(&self, users: &Users, grant_id: &str) -> Result<Option<(OwnedUserId, OwnedDeviceId)>> {
        let Some(Json(grant)) = self.db.tables.oauth.grantid_grant.get(&grant_id.to_owned())? else { return Ok(None) };
        if users.device(&grant.user_id, &grant.device_id)?.is_some_and(|d| d.token_hash == grant.access_hash) {
            users.remove_device(&grant.user_id, &grant.device_id).await?;
        }
        let mut batch = Batch::new();
        self.forget_into(&mut batch, grant_id)?;
        self.db.commit(batch)?;
        Ok(Some((grant.user_id, grant.device_id)))
    }

    /// Puts the removal of a grant's rows into `batch`.
    fn forget_into(&self, batch: &mut Batch, grant_id: &str) -> Result<()> {
        let tables = &self.db.tables.oauth;
        let Some(Json(grant)) = tables.grantid_grant.get(&grant_id.to_owned())? else { return Ok(()) };
        tables.grantid_grant.remove(batch, &grant_id.to_owned());
        tables.refreshhash_grantid.remove(batch, &grant.refresh_hash);
        if let Some(previous) = &grant.previous_refresh_hash {
            tables.refreshhash_grantid.remove(batch, previous);
        }
        let key = (grant.user_id.clone(), grant.device_id.clone());
        if tables.useriddevice_grantid.get(&key)?.as_deref() == Some(grant_id) {
            tables.useriddevice_grantid.remove(batch, &key);
        }
        Ok(())
    }

    /// RFC 8628 section 3.1: a device asks to be signed in; answers its device code and the user
    /// code the person types (or scans) on a signed-in device.
    pub fn request_device_code(
        &self,
        client_id: &str,
        scope: &str,
    ) -> std::result::Result<(String, DeviceRequest), OauthError> {
        let client =
            self.client(client_id)?.ok_or_else(|| OauthError::new(ErrorCode::InvalidClient, "unknown client"))?;
        if !client.grant_types.iter().any(|g| g == DEVICE_GRANT) {
            return Err(OauthError::new(
                ErrorCode::UnauthorizedClient,
                "the client did not register the device code grant",
            ));
        }
        let (scope, device_id) = parse_scope(scope)?;
        let device_code = random_token("hcd_");
        let user_code = user_code();
        let request = DeviceRequest {
            client_id: client_id.to_owned(),
            scope,
            device_id,
            user_code: user_code.clone(),
            expires_ms: now_ms().saturating_add(DEVICE_CODE_LIFETIME_S * 1000),
            last_poll_ms: 0,
            approved_by: None,
            denied: false,
        };
        let tables = &self.db.tables.oauth;
        let mut batch = Batch::new();
        tables.devicecodehash_request.insert(&mut batch, &token_hash(&device_code), &Json(request.clone()));
        tables.usercode_devicecodehash.insert(&mut batch, &normalize_user_code(&user_code), &token_hash(&device_code));
        self.db.commit(batch)?;
        Ok((device_code, request))
    }

    /// The waiting request a user code names (none when unknown, expired or answered).
    pub fn device_request(&self, user_code: &str) -> Result<Option<(Vec<u8>, DeviceRequest)>> {
        let tables = &self.db.tables.oauth;
        let Some(hash) = tables.usercode_devicecodehash.get(&normalize_user_code(user_code))? else { return Ok(None) };
        let Some(Json(request)) = tables.devicecodehash_request.get(&hash)? else { return Ok(None) };
        let open = now_ms() < request.expires_ms && request.approved_by.is_none() && !request.denied;
        Ok(open.then_some((hash, request)))
    }

    /// A person's answer to a device's request: allowed (as `user`) or denied.
    pub fn answer_device_request(&self, user_code: &str, user: Option<&UserId>) -> Result<bool> {
        let Some((hash, mut request)) = self.device_request(user_code)? else { return Ok(false) };
        match user {
            Some(user) => request.approved_by = Some(user.to_owned()),
            None => request.denied = true,
        }
        let tables = &self.db.tables.oauth;
        let mut batch = Batch::new();
        tables.devicecodehash_request.insert(&mut batch, &hash, &Json(request));
        tables.usercode_devicecodehash.remove(&mut batch, &normalize_user_code(user_code));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// RFC 8628 section 3.4: the device polls for its tokens.
    pub async fn exchange_device_code(
        &self,
        users: &Users,
        client_id: &str,
        device_code: &str,
        ip: Option<IpAddr>,
    ) -> std::result::Result<Tokens, OauthError> {
        let guard = self.exchange.lock().await;
        let tables = &self.db.tables.oauth;
        let hash = token_hash(device_code);
        let Some(Json(mut request)) = tables.devicecodehash_request.get(&hash)? else {
            return Err(OauthError::grant("unknown or used device code"));
        };
        if request.client_id != client_id {
            return Err(OauthError::grant("the device code was issued to another client"));
        }
        let now = now_ms();
        let mut batch = Batch::new();
        if now >= request.expires_ms || request.denied {
            tables.devicecodehash_request.remove(&mut batch, &hash);
            tables.usercode_devicecodehash.remove(&mut batch, &normalize_user_code(&request.user_code));
            self.db.commit(batch)?;
            return Err(match request.denied {
                true => OauthError::new(ErrorCode::AccessDenied, "the person declined the request"),
                false => OauthError::new(ErrorCode::ExpiredToken, "the device code has expired"),
            });
        }
        let Some(user) = request.approved_by.clone() else {
            let too_soon = now.saturating_sub(request.last_poll_ms) < DEVICE_POLL_INTERVAL_S * 1000;
            request.last_poll_ms = now;
            tables.devicecodehash_request.insert(&mut batch, &hash, &Json(request));
            self.db.write_unsynced(batch)?;
            return Err(match too_soon {
                true => OauthError::new(ErrorCode::SlowDown, "polling faster than the interval"),
                false => OauthError::new(ErrorCode::AuthorizationPending, "the person has not answered yet"),
            });
        };
        tables.devicecodehash_request.remove(&mut batch, &hash);
        self.db.commit(batch)?;
        let client =
            self.client(client_id)?.ok_or_else(|| OauthError::new(ErrorCode::InvalidClient, "unknown client"))?;
        let device_name = client.client_name.clone().unwrap_or_else(|| client.client_uri.clone());
        let result = self
            .open_grant(users, random_token(""), client_id, &user, &request.device_id, request.scope, device_name, ip)
            .await;
        drop(guard);
        result
    }

    /// A user's OAuth sessions whose device is still theirs: (grant id, grant).
    pub fn sessions(&self, users: &Users, user: &UserId) -> Result<Vec<(String, Grant)>> {
        let tables = &self.db.tables.oauth;
        let mut out = Vec::new();
        for entry in tables.useriddevice_grantid.scan_prefix(prefix(&user.to_owned())) {
            let (_, grant_id) = entry?;
            let Some(Json(grant)) = tables.grantid_grant.get(&grant_id)? else { continue };
            if users.device(&grant.user_id, &grant.device_id)?.is_some_and(|d| d.token_hash == grant.access_hash) {
                out.push((grant_id, grant));
            }
        }
        Ok(out)
    }

    /// Records that the account pages handed out `token` (a session of `user` on `device_id`
    /// lasting until `expires_ms`): only such tokens open the pages.
    pub fn record_page_session(&self, token: &str, user: &UserId, device_id: &DeviceId, expires_ms: u64) -> Result<()> {
        let session = PageSession { user_id: user.to_owned(), device_id: device_id.to_owned(), expires_ms };
        let mut batch = Batch::new();
        self.db.tables.oauth.pagetokenhash_session.insert(&mut batch, &token_hash(token), &Json(session));
        self.db.commit(batch)?;
        Ok(())
    }

    /// Whether `token` is one the account pages handed out and that has not expired (the device
    /// behind it is the caller's to check, as for any token).
    pub fn is_page_session(&self, token: &str) -> Result<bool> {
        let session = self.db.tables.oauth.pagetokenhash_session.get(&token_hash(token))?;
        Ok(session.is_some_and(|Json(s)| now_ms() < s.expires_ms))
    }

    /// The grant a device of the user is, if any.
    pub fn grant_of_device(&self, user: &UserId, device_id: &DeviceId) -> Result<Option<(String, Grant)>> {
        let tables = &self.db.tables.oauth;
        let Some(grant_id) = tables.useriddevice_grantid.get(&(user.to_owned(), device_id.to_owned()))? else {
            return Ok(None);
        };
        Ok(tables.grantid_grant.get(&grant_id)?.map(|Json(g)| (grant_id, g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_need_api_access_and_one_device() {
        let (tokens, device) = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ").unwrap();
        assert_eq!(device.as_str(), "ABCDEFGHIJ");
        assert_eq!(tokens.len(), 2);
        let unstable = "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:XY";
        assert_eq!(parse_scope(unstable).unwrap().1.as_str(), "XY");
        for bad in [
            "urn:matrix:client:api:*",
            "urn:matrix:client:device:A",
            "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
            "urn:matrix:client:api:* urn:matrix:client:device:A openid",
            "urn:matrix:client:api:* urn:matrix:client:device:A/B",
        ] {
            assert_eq!(parse_scope(bad).unwrap_err().code, ErrorCode::InvalidScope, "{bad}");
        }
    }

    #[test]
    fn pkce_s256_as_rfc_7636_appendix_b() {
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn redirects_carry_the_state_in_query_or_fragment() {
        let query =
            RedirectTarget { redirect_uri: "com.example:/cb?x=1".into(), fragment: false, state: Some("s t".into()) };
        assert_eq!(query.url(&[("code", "c")]), "com.example:/cb?x=1&code=c&state=s+t");
        let fragment = RedirectTarget { redirect_uri: "https://example.com/cb".into(), fragment: true, state: None };
        assert_eq!(fragment.url(&[("code", "c")]), "https://example.com/cb#code=c");
    }
}
