//! `[oauth]`: the homeserver as its own OAuth 2.0 authorization server (the Matrix spec's
//! "OAuth 2.0 API", v1.15 on), so clients that only sign in that way (Element X) need no separate
//! service. Off by default: a node's admin turns it on once the sign-in pages suit them.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthConfig {
    pub enabled: bool,
    /// How long an access token handed out by the token endpoint works; the spec wants them
    /// short-lived (clients refresh them with their refresh token).
    pub access_token_lifetime_s: u64,
    /// How long an authorization code may be exchanged (RFC 6749 recommends at most ten minutes).
    pub code_lifetime_s: u64,
    /// Whether the sign-in page offers the node's password (local and directory accounts); with
    /// upstream providers only, people sign in through them alone.
    pub password: bool,
    /// OAuth only: `/login` no longer takes passwords (legacy clients sign in with `m.login.sso`
    /// through the upstream providers) and `/register` is closed.
    pub only: bool,
    /// OpenID Connect providers people may sign in with (ProConnect, a ministry's own).
    pub upstream: Vec<UpstreamConfig>,
}

impl Default for OauthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            access_token_lifetime_s: 300,
            code_lifetime_s: 600,
            password: true,
            only: false,
            upstream: Vec::new(),
        }
    }
}

/// An upstream OpenID Connect provider (`[[oauth.upstream]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A short name in URLs and the audit log (`proconnect`): a-z, 0-9, `-` and `_`.
    pub id: String,
    /// What the sign-in button says (`ProConnect`).
    pub name: String,
    /// The provider's issuer; its metadata is read from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The file holding the client secret (kept out of the configuration file).
    pub client_secret_file: PathBuf,
    /// How the secret is sent to the token endpoint: `client_secret_basic` or `client_secret_post`.
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which claims hold what (ProConnect: `family_name = "usual_name"`).
    #[serde(default)]
    pub claims: ClaimsConfig,
    /// Whether an email claim counts as verified when the provider sends no `email_verified`
    /// (ProConnect's addresses are checked by the identity providers it federates).
    #[serde(default)]
    pub assume_email_verified: bool,
    /// Agencies whose email domain changed: an address of `match` that finds no account is also
    /// looked up at `search` (same local part).
    #[serde(default)]
    pub domain_fallbacks: Vec<DomainFallback>,
    /// Whether a first sign-in with an address no account has creates one (when the network's
    /// domain map, if any, says the address lives on this node).
    #[serde(default = "yes")]
    pub create_accounts: bool,
}

/// The claim names an upstream provider uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsConfig {
    pub email: String,
    pub email_verified: String,
    pub given_name: String,
    pub family_name: String,
    /// The claim naming the person's organisation, shown in brackets after their name.
    pub organisation: Option<String>,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self {
            email: "email".into(),
            email_verified: "email_verified".into(),
            given_name: "given_name".into(),
            family_name: "family_name".into(),
            organisation: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFallback {
    #[serde(rename = "match")]
    pub match_domain: String,
    pub search: String,
}

fn default_auth_method() -> String {
    "client_secret_basic".into()
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn yes() -> bool {
    true
}

impl OauthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.access_token_lifetime_s == 0 {
            return Err(ConfigError::new("oauth.access_token_lifetime_s", "must be more than zero"));
        }
        if self.code_lifetime_s == 0 || self.code_lifetime_s > 600 {
            return Err(ConfigError::new("oauth.code_lifetime_s", "must be between 1 and 600 seconds"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, upstream) in self.upstream.iter().enumerate() {
            let key = |field: &str| format!("oauth.upstream[{i}].{field}");
            let id_ok = !upstream.id.is_empty()
                && upstream.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(ConfigError::new(key("id"), "must be a-z, 0-9, - and _"));
            }
            if !ids.insert(upstream.id.as_str()) {
                return Err(ConfigError::new(key("id"), format!("{} is used twice", upstream.id)));
            }
            if !(upstream.issuer.starts_with("https://") || upstream.issuer.starts_with("http://")) {
                return Err(ConfigError::new(key("issuer"), "must be an http(s) URL"));
            }
            if !matches!(upstream.token_endpoint_auth_method.as_str(), "client_secret_basic" | "client_secret_post") {
                return Err(ConfigError::new(
                    key("token_endpoint_auth_method"),
                    "client_secret_basic or client_secret_post",
                ));
            }
            if !upstream.scopes.iter().any(|s| s == "openid") {
                return Err(ConfigError::new(key("scopes"), "must include openid"));
            }
            if let Err(e) = std::fs::read_to_string(&upstream.client_secret_file) {
                let reason = format!("cannot read {}: {e}", upstream.client_secret_file.display());
                return Err(ConfigError::new(key("client_secret_file"), reason));
            }
        }
        if self.only && !self.enabled {
            return Err(ConfigError::new("oauth.only", "needs oauth.enabled"));
        }
        if self.enabled && !self.password && self.upstream.is_empty() {
            return Err(ConfigError::new("oauth.password", "with no upstream provider, people need their password"));
        }
        Ok(())
    }

    pub fn access_token_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.access_token_lifetime_s)
    }
}
