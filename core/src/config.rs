//! Server configuration: a TOML file (optional) overlaid with `HEMICYCLE_*` environment variables.
//!
//! Every key has an embedded default so `hemicycle serve` works with no file at all. Unknown keys and
//! wrong types are refused with the dotted key named, because a typo in a ministry's config must stop
//! start-up rather than silently fall back to a default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

mod accounts;
mod calls;
mod oauth;
mod retention;
pub use accounts::{AccountValidityConfig, HumanDuration, PasswordPolicyConfig};
pub use calls::{DelayedEventsConfig, LiveKitConfig, MatrixRtcConfig};
pub use oauth::{ClaimsConfig, DomainFallback, OauthConfig, UpstreamConfig};
pub use retention::RetentionConfig;

/// A configuration problem, naming the dotted key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error at `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain part of every user and room id on this server; never change it after first start.
    pub server_name: OwnedServerName,
    /// The URL clients reach the client API at, published in `/.well-known/matrix/client`.
    pub public_baseurl: Option<String>,
    pub database: DatabaseConfig,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub registration: RegistrationConfig,
    pub federation: FederationConfig,
    pub media: MediaConfig,
    pub antivirus: AntivirusConfig,
    pub rate_limits: RateLimitsConfig,
    pub limits: LimitsConfig,
    pub rooms: RoomsConfig,
    pub voip: VoipConfig,
    pub support: SupportConfig,
    pub session: SessionConfig,
    pub email: EmailConfig,
    pub password_policy: PasswordPolicyConfig,
    /// Expiring accounts; absent, accounts never expire (docs/accounts.md).
    pub account_validity: Option<AccountValidityConfig>,
    pub appservices: AppservicesConfig,
    /// The ministry's directory: sign-in with its passwords, accounts and group rooms from it
    /// (the `hemicycle-bridges` crate defines and checks the section; docs/ldap.md).
    pub ldap: hemicycle_bridges::ldap::LdapConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    /// The ministry network this node belongs to: external servers, room access rules, the
    /// email-domain map (docs/network.md).
    pub network: NetworkConfig,
    /// The user directory across the nodes of a network: the discovery room (docs/accounts.md).
    pub directory: DirectoryConfig,
    /// Delayed events (MSC4140); absent, off (docs/calls.md).
    pub delayed_events: Option<DelayedEventsConfig>,
    /// MatrixRTC transports and the LiveKit authorisation service (docs/calls.md).
    pub matrix_rtc: MatrixRtcConfig,
    /// The OAuth 2.0 authorization server (next-generation sign-in); off by default (docs/auth.md).
    pub oauth: OauthConfig,
    /// How long records nobody reads after a while are kept before being pruned.
    pub retention: RetentionConfig,
    /// The admins' web console (docs/console.md).
    pub console: ConsoleConfig,
}

/// The admins' web console.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Refuse dangerous changes (deactivation, room shutdown, approving another node's
    /// proposal) from admins who have not enrolled a second factor. Off, an admin who has
    /// enrolled one is always asked for a code.
    pub require_second_factor: bool,
    /// The admin room: a local room (id or alias) where the node's admins type `!admin`
    /// commands, answered by the server notices account once it is invited. Unset: none.
    pub admin_room: Option<ruma::OwnedRoomOrAliasId>,
}

/// Application services (bridges, bots such as `hemicycle-workspace`): one registration file
/// each, in the YAML format Synapse reads, so the same file serves both servers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppservicesConfig {
    pub registrations: Vec<PathBuf>,
}

/// Outgoing email, for validating the addresses users add (`/account/3pid/email/requestToken`)
/// and for password resets by email. Without `smtp_host` the server sends none and those
/// endpoints answer 403 `M_THREEPID_DENIED` (a ministry's directory usually owns addresses).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `starttls` (upgrade a plain connection, refuse if the relay cannot), `tls` (implicit TLS,
    /// usually port 465) or `none` (a relay on the same host or a test sink only).
    pub smtp_tls: SmtpTls,
    pub smtp_user: Option<String>,
    /// File holding the SMTP password (kept out of the configuration file).
    pub smtp_password_file: Option<PathBuf>,
    /// The `From:` of the messages.
    pub notif_from: Option<String>,
    /// How long a validation token sent by email may be used.
    pub token_lifetime_s: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_user: None,
            smtp_password_file: None,
            notif_from: None,
            token_lifetime_s: 3600,
            timeout_ms: 10_000,
        }
    }
}

/// Sessions: how long an access token issued with a refresh token lives (clients that ask for
/// refresh tokens get short-lived access tokens; the others keep tokens that do not expire).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub refreshable_access_token_lifetime_s: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { refreshable_access_token_lifetime_s: 300 }
    }
}

impl SessionConfig {
    pub fn refreshable_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refreshable_access_token_lifetime_s.max(1))
    }
}

/// TURN servers handed to clients for calls (`GET /voip/turnServer`), with time-limited
/// credentials made from a secret shared with the TURN server (coturn's `use-auth-secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoipConfig {
    pub turn_uris: Vec<String>,
    pub turn_shared_secret: Option<String>,
    /// How long handed-out credentials stay valid, in seconds.
    pub turn_user_lifetime_s: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        Self { turn_uris: Vec::new(), turn_shared_secret: None, turn_user_lifetime_s: 86_400 }
    }
}

/// Who to contact about this server (`/.well-known/matrix/support`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Admins to contact: `{ role = "m.role.admin", matrix_id = "@…", email_address = "…" }`.
    pub contacts: Vec<SupportContact>,
    pub page: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    pub role: String,
    pub matrix_id: Option<ruma::OwnedUserId>,
    pub email_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Directory holding the RocksDB files (and the admin socket).
    pub path: PathBuf,
    /// Memory RocksDB may use for its block cache and write buffers together (MiB): one budget
    /// for every column family instead of RocksDB's per-family defaults.
    pub cache_mb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Plain-HTTP address of the client API (put a TLS reverse proxy in front in production).
    pub client: SocketAddr,
    /// HTTPS address of the federation API; needs `tls.cert` and `tls.key`.
    pub federation: Option<SocketAddr>,
    /// Plain-HTTP address of the Prometheus `/metrics` endpoint; off when unset. Keep it on a
    /// private interface: it names users' servers and rooms' activity.
    pub metrics: Option<SocketAddr>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` / `Forwarded` headers
    /// name the real client. Requests from any other peer are taken at their TCP address, so a
    /// client cannot forge its address for rate limits and session records.
    pub trusted_proxies: Vec<Cidr>,
}

/// An address range such as `10.0.0.0/8` or `::1/128`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Anyone may register with `m.login.dummy`.
    pub open: bool,
    /// A shared token: when set, registration is possible (even when `open` is false) by completing
    /// `m.login.registration_token` with it.
    pub token: Option<String>,
    /// With `open` and an `[email]` relay: registration may prove an email address
    /// (`m.login.email.identity`), which the new account then has.
    pub email: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    pub enabled: bool,
    /// Verify remote servers' TLS certificates; only tests turn this off.
    pub verify_tls: bool,
    /// Servers we federate with; empty means every server.
    pub allow: Vec<OwnedServerName>,
    /// DNS servers (`ip:port`) for the SRV step of server discovery; empty means the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Addresses federation never connects to (discovery, requests, media `Location`s): a
    /// hostile server name, SRV record or well-known must not turn the node against the
    /// network it sits in. `allow_ranges` makes exceptions (test setups on loopback).
    pub deny_ranges: Vec<Cidr>,
    pub allow_ranges: Vec<Cidr>,
    /// A closed federation whose peers' keys are pinned, as the state's border gateways do:
    /// when non-empty, only these servers are federated with, and their requests and events
    /// are checked against these keys alone (never fetched keys).
    pub pinned: std::collections::BTreeMap<OwnedServerName, PinnedServer>,
    /// Serve our users' device names to other servers (`/user/devices`, key queries). Off, as
    /// in Synapse: a device name often says who and where a person is.
    pub device_names: bool,
    /// Serve our public room directory to other servers. Off, as in Synapse.
    pub public_rooms: bool,
    /// How long other servers may cache our signing key document (its `valid_until_ts`; absent:
    /// a day, Synapse's `key_refresh_interval`). Shorter means a rotation reaches them sooner,
    /// but a node down for longer leaves its events unverifiable: the console's network view
    /// warns of keys valid for less than 6 hours.
    pub key_validity: Option<HumanDuration>,
}

impl FederationConfig {
    /// [`Self::key_validity`] in milliseconds: a minute at least.
    pub fn key_validity_ms(&self) -> u64 {
        self.key_validity.as_ref().map_or(24 * 3600 * 1000, HumanDuration::as_millis).max(60_000)
    }
}

/// One pinned peer of a closed federation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedServer {
    /// Key id (`ed25519:…`) → unpadded base64 public key.
    pub verify_keys: std::collections::BTreeMap<String, String>,
    /// Where its federation API is (`host:port`), instead of discovery.
    #[serde(default)]
    pub address: Option<String>,
}

/// Whether `ip` may be connected to under a deny list and its exceptions.
pub fn address_allowed(deny: &[Cidr], allow: &[Cidr], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|r| r.contains(ip)) || !deny.iter().any(|r| r.contains(ip))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub path: Option<PathBuf>,
    pub max_upload_size: u64,
    /// Serve the deprecated unauthenticated `/_matrix/media/v3/{download,thumbnail,config}`
    /// endpoints. Off by default, like Synapse's authenticated-media freeze: anyone holding an
    /// mxc URI could otherwise fetch the file without an account.
    pub legacy_unauthenticated: bool,
    /// Media ids one user may hold reserved (`/media/v1/create`) without uploading to them; more
    /// get 429 `M_LIMIT_EXCEEDED`, as the spec asks, so reservations cannot pile up.
    pub max_pending_uploads: u32,
    pub url_preview: UrlPreviewConfig,
}

/// Antivirus (`docs/antivirus.md`): every stored file is scanned by ClamAV's daemon before it is
/// served. Off while `clamd` is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusConfig {
    /// Where clamd listens: `unix:///run/clamav/clamd.ctl` or `tcp://127.0.0.1:3310`.
    pub clamd: Option<String>,
    /// What a download gets while clamd cannot give a verdict: `refuse` (503, the default) or
    /// `serve` (the file unscanned, logged).
    pub when_unavailable: WhenUnavailable,
    /// The largest file scanned, in bytes; larger uploads and remote files are refused (413), so
    /// nothing is stored that could not be scanned. Keep it at or under clamd's `StreamMaxLength`.
    pub max_scan_size: u64,
    /// MIME types (sniffed from the contents, decrypted ones for encrypted attachments scanned
    /// through the content scanner API) that are never served.
    pub blocked_mimetypes: Vec<String>,
    /// When set, the only MIME types served (exclusive with `blocked_mimetypes`).
    pub allowed_mimetypes: Option<Vec<String>>,
    /// The longest one scan may take.
    pub scan_timeout_ms: u64,
    /// Scans running at once; more wait their turn.
    pub max_concurrent_scans: u32,
    /// How often, at most, clamd is asked which signatures it runs (`VERSION`): a verdict made
    /// under older signatures is made again at the file's next download, so a file that scanned
    /// clean before an update is refused once the update knows it. 0 asks at every download.
    pub signature_check_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnavailable {
    Refuse,
    Serve,
}

impl Default for AntivirusConfig {
    fn default() -> Self {
        Self {
            clamd: None,
            when_unavailable: WhenUnavailable::Refuse,
            max_scan_size: 100 * 1024 * 1024,
            blocked_mimetypes: Vec::new(),
            allowed_mimetypes: None,
            scan_timeout_ms: 120_000,
            max_concurrent_scans: 4,
            signature_check_interval_ms: 60_000,
        }
    }
}

/// URL previews (`/media/preview_url`): the server fetches pages its users paste, so it must never
/// be turned against the network it sits in. Off by default; when on, every address a URL
/// resolves to (and every redirect's) is checked against `deny_ranges`, which `allow_ranges`
/// may open up (test setups, an intranet that should be previewed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    pub deny_ranges: Vec<Cidr>,
    pub allow_ranges: Vec<Cidr>,
    /// The most bytes read of a page or an image.
    pub max_size: u64,
    pub timeout_ms: u64,
}

/// Loopback, private, link-local, shared, documentation, benchmark, multicast and reserved
/// ranges: what an outside page has no business resolving to (Synapse's recommended list).
pub const DEFAULT_PREVIEW_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            deny_ranges: DEFAULT_PREVIEW_DENY.iter().map(|r| r.parse().expect("valid default range")).collect(),
            allow_ranges: Vec::new(),
            max_size: 10 * 1024 * 1024,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub login: RateLimit,
    pub registration: RateLimit,
    /// Uploads and `/media/v1/create` per account: storing files costs disk and I/O.
    pub media_upload: RateLimit,
    /// Restarting, sending or cancelling a delayed event by its id alone (no access token), per
    /// client address: the id is the only secret, so guessing must stay slow.
    pub delayed_event_action: RateLimit,
    /// LiveKit tokens asked of the built-in authorisation service, per client address: each
    /// request may make us ask another server about an OpenID token.
    pub rtc_token: RateLimit,
    /// User directory searches by email address that ask another node of the network, per
    /// account: a search box asks at each keystroke, and each ask is a federation request.
    pub email_lookup: RateLimit,
    /// Email lookups another node of the network asks of this one, per asking node: one node
    /// asks for all its users, so more than one account's share, but bounded all the same.
    pub federation_email_lookup: RateLimit,
    /// Status documents (docs/console.md) another server asks of this one, per asking server:
    /// each is built and signed anew and reads every room shared with the asker, so a peer asking
    /// in a loop is slowed down; the nodes' own timers ask once per `network.status_interval`.
    pub federation_status: RateLimit,
}

/// A token bucket: `burst` actions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted on the client API (media uploads have their own limit).
    pub max_request_size: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    pub default_version: RoomVersionId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `hemicycle=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            public_baseurl: None,
            database: DatabaseConfig::default(),
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            registration: RegistrationConfig::default(),
            federation: FederationConfig::default(),
            media: MediaConfig::default(),
            antivirus: AntivirusConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            limits: LimitsConfig::default(),
            rooms: RoomsConfig::default(),
            voip: VoipConfig::default(),
            session: SessionConfig::default(),
            email: EmailConfig::default(),
            password_policy: PasswordPolicyConfig::default(),
            account_validity: None,
            appservices: AppservicesConfig::default(),
            support: SupportConfig::default(),
            ldap: Default::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            network: NetworkConfig::default(),
            directory: DirectoryConfig::default(),
            delayed_events: None,
            matrix_rtc: MatrixRtcConfig::default(),
            oauth: OauthConfig::default(),
            retention: RetentionConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("./data"), cache_mb: 64 }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            client: SocketAddr::from(([127, 0, 0, 1], 8008)),
            federation: None,
            metrics: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            verify_tls: true,
            allow: Vec::new(),
            nameservers: Vec::new(),
            deny_ranges: DEFAULT_PREVIEW_DENY.iter().map(|r| r.parse().expect("valid default range")).collect(),
            allow_ranges: Vec::new(),
            pinned: Default::default(),
            device_names: false,
            public_rooms: false,
            key_validity: None,
        }
    }
}

impl AntivirusConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(address) = &self.clamd {
            let unix = address.strip_prefix("unix://").is_some_and(|p| p.starts_with('/'));
            let tcp = address
                .strip_prefix("tcp://")
                .and_then(|a| a.rsplit_once(':'))
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !unix && !tcp {
                return Err(ConfigError::new(
                    "antivirus.clamd",
                    format!("{address:?}: expected unix:///PATH or tcp://HOST:PORT"),
                ));
            }
        }
        if self.allowed_mimetypes.is_some() && !self.blocked_mimetypes.is_empty() {
            return Err(ConfigError::new(
                "antivirus.allowed_mimetypes",
                "set allowed_mimetypes or blocked_mimetypes, not both",
            ));
        }
        if self.max_scan_size == 0 || self.scan_timeout_ms == 0 {
            return Err(ConfigError::new("antivirus", "max_scan_size and scan_timeout_ms must be positive"));
        }
        Ok(())
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_upload_size: 50 * 1024 * 1024,
            legacy_unauthenticated: false,
            max_pending_uploads: 5,
            url_preview: UrlPreviewConfig::default(),
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login: RateLimit { per_second: 0.2, burst: 5 },
            registration: RateLimit { per_second: 0.2, burst: 5 },
            media_upload: RateLimit { per_second: 1.0, burst: 10 },
            delayed_event_action: RateLimit { per_second: 5.0, burst: 30 },
            rtc_token: RateLimit { per_second: 1.0, burst: 20 },
            email_lookup: RateLimit { per_second: 1.0, burst: 20 },
            federation_email_lookup: RateLimit { per_second: 20.0, burst: 200 },
            federation_status: RateLimit { per_second: 2.0, burst: 60 },
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_request_size: 1024 * 1024 }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: RoomVersionId::V12 }
    }
}

/// A closed federation of ministry nodes plus one node for people outside the administration
/// (docs/network.md). Every node of the network has the same `external_servers`,
/// `access_rules_bypass` and domain map, so that each judges every event alike.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `ministry` (agents of an administration) or `external` (the externals' node).
    pub role: NetworkRole,
    /// The externals' server names; their users are external users everywhere.
    pub external_servers: Vec<OwnedServerName>,
    /// The room access rules (`im.vector.room.access_rules`); on when `external_servers` is set.
    pub access_rules: Option<bool>,
    /// Users exempt from the access rules, on every node of the network.
    pub access_rules_bypass: Vec<ruma::OwnedUserId>,
    /// The email-domain map: which node each address belongs to (read again when it changes).
    pub domains_file: Option<PathBuf>,
    /// On the externals' node: whether its users may create rooms (off, as Tchap runs it).
    pub external_users_create_rooms: bool,
    /// Callers of the identity `info` endpoint in these ranges are told the nodes' own names;
    /// all others the shadow names of the domain map's `[shadow]` section (Tchap's `shadow_hs`).
    pub non_shadow_ranges: Vec<Cidr>,
    /// How long a third-party (email) invite stays pending; past it the address no longer counts
    /// as invited and the invite is not taken up (absent: 30 days).
    pub third_party_invite_lifetime: Option<HumanDuration>,
    /// How often this node asks every server it federates with for its status document, for the
    /// console's network view (absent: every minute; docs/console.md).
    pub status_interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkRole {
    #[default]
    Ministry,
    External,
}

impl NetworkConfig {
    /// [`Self::third_party_invite_lifetime`] in milliseconds.
    pub fn third_party_invite_lifetime_ms(&self) -> u64 {
        self.third_party_invite_lifetime.as_ref().map_or(30 * 24 * 3600 * 1000, HumanDuration::as_millis)
    }

    /// [`Self::status_interval`] in milliseconds: a second at least, so a typo cannot make the
    /// node ask its peers without pause.
    pub fn status_interval_ms(&self) -> u64 {
        self.status_interval.as_ref().map_or(60_000, HumanDuration::as_millis).max(1000)
    }

    pub fn access_rules_enabled(&self) -> bool {
        self.access_rules.unwrap_or(!self.external_servers.is_empty())
    }

    fn validate(&self, server_name: &ruma::ServerName) -> Result<(), ConfigError> {
        let own = self.external_servers.iter().any(|s| s.as_str().eq_ignore_ascii_case(server_name.as_str()));
        match self.role {
            NetworkRole::External if !own => {
                return Err(ConfigError::new(
                    "network.external_servers",
                    format!("the externals' node {server_name} must be in its own list"),
                ))
            }
            NetworkRole::Ministry if own => {
                return Err(ConfigError::new("network.role", "this server is in external_servers: role = \"external\""))
            }
            _ => {}
        }
        if let Some(path) = &self.domains_file {
            if let Err(e) = std::fs::File::open(path) {
                return Err(ConfigError::new("network.domains_file", format!("cannot read {}: {e}", path.display())));
            }
        }
        Ok(())
    }
}

/// The user directory across nodes, as the state's messenger does it: every account of every node
/// joins one room, so each node's directory (users sharing a room with the searcher) knows every
/// agent of the network, Synapse nodes included.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// The discovery room: a room id or an alias (resolved at start, through its server when it
    /// is not ours). Unset: no discovery room, the directory finds only this node's rooms.
    pub discovery_room: Option<String>,
    /// Earlier discovery rooms that filled up (Tchap's `passives`): their members stay and are
    /// found through them, no one joins them any more, and an agent who hides, expires or is
    /// deactivated leaves them as well. An agent in one of them is not joined to
    /// `discovery_room`.
    pub discovery_passive_rooms: Vec<ruma::OwnedRoomId>,
    /// The joined members of `discovery_room` at which the operator is told to open a new one
    /// (Tchap's `active_room_max_size`; absent: 10 000).
    pub discovery_room_max_size: Option<u64>,
    /// Who is mailed when `discovery_room` reaches its size (Tchap's `support_email`); unset: a
    /// warning in the log only.
    pub discovery_alert_email: Option<String>,
}

/// The discovery room as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryRoom {
    Id(ruma::OwnedRoomId),
    Alias(ruma::OwnedRoomAliasId),
}

impl DirectoryConfig {
    /// The configured room, parsed (checked at load, so `None` means unset).
    pub fn discovery_room(&self) -> Option<DiscoveryRoom> {
        let text = self.discovery_room.as_deref()?;
        match text.starts_with('#') {
            true => ruma::RoomAliasId::parse(text).ok().map(DiscoveryRoom::Alias),
            false => ruma::RoomId::parse(text).ok().map(DiscoveryRoom::Id),
        }
    }

    /// [`Self::discovery_room_max_size`] with its default.
    pub fn discovery_room_max_size(&self) -> u64 {
        self.discovery_room_max_size.unwrap_or(10_000)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.discovery_room.is_none() && !self.discovery_passive_rooms.is_empty() {
            return Err(ConfigError::new(
                "directory.discovery_passive_rooms",
                "passive discovery rooms need a discovery_room, the one agents join",
            ));
        }
        match (&self.discovery_room, self.discovery_room()) {
            (Some(text), None) => Err(ConfigError::new(
                "directory.discovery_room",
                format!("{text:?} is neither a room id (!id:server) nor an alias (#name:server)"),
            )),
            _ => Ok(()),
        }
    }
}

/// Traces exported over OTLP/HTTP (protobuf) to a collector (OpenTelemetry Collector, Jaeger,
/// Tempo…); off when `otlp_endpoint` is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`; spans go to `<endpoint>/v1/traces`
    /// (a URL already ending in `/v1/traces` is used as it is).
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute the spans carry.
    pub service_name: String,
    /// How long finished spans wait to be sent in one batch.
    pub batch_delay_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "hemicycle".to_owned(), batch_delay_ms: 1000 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned() }
    }
}

/// The environment variable prefix; nested keys are joined with `__`.
const ENV_PREFIX: &str = "HEMICYCLE_";

impl Config {
    /// Loads the file (if any), overlays the process environment, deserializes and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| {
                    ConfigError::new("--config", format!("{} is not valid TOML: {}", path.display(), e.message()))
                })?;
                table
            }
            None => toml::Table::new(),
        };
        let mut from_env: Vec<(String, Vec<String>, String)> = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            set_path(&mut root, &path, parse_env_value(&raw))
                .map_err(|reason| ConfigError::new(name.clone(), reason))?;
            from_env.push((name, path, raw));
        }
        // An environment value is read as the type of the key it sets: `11` set on a string key
        // (`rooms.default_version`) is taken as the string "11" when the number does not fit.
        loop {
            let error = match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(root.clone())) {
                Ok(config) => {
                    config.validate()?;
                    return Ok(config);
                }
                Err(e) => e,
            };
            let key = error.path().to_string();
            let retyped = from_env.iter().position(|(_, path, raw)| {
                path.join(".") == key && !matches!(parse_env_value(raw), toml::Value::String(_))
            });
            match retyped {
                Some(i) => {
                    let (name, path, raw) = from_env.remove(i);
                    set_path(&mut root, &path, toml::Value::String(raw))
                        .map_err(|reason| ConfigError::new(name, reason))?;
                }
                None => {
                    let reason = error.into_inner().message().to_owned();
                    return Err(ConfigError::new(if key == "." { "(top level)".to_owned() } else { key }, reason));
                }
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.ldap.validate().map_err(|(key, reason)| ConfigError::new(key, reason))?;
        if let Some(validity) = &self.account_validity {
            validity.validate()?;
        }
        self.oauth.validate()?;
        self.retention.validate()?;
        self.network.validate(&self.server_name)?;
        self.directory.validate()?;
        if let Some(delayed) = &self.delayed_events {
            delayed.validate()?;
        }
        self.matrix_rtc.validate()?;
        if self.ldap.enabled {
            if let Some(path) = &self.ldap.bind_password_file {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(ConfigError::new(
                        "ldap.bind_password_file",
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            }
        }
        if self.listen.federation.is_some() {
            for (key, value) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
                let Some(path) = value else {
                    return Err(ConfigError::new(key, "required when listen.federation is set"));
                };
                if let Err(e) = std::fs::File::open(path) {
                    return Err(ConfigError::new(key, format!("cannot read {}: {e}", path.display())));
                }
            }
        }
        for (server, pinned) in &self.federation.pinned {
            let key = format!("federation.pinned.\"{server}\".verify_keys");
            if pinned.verify_keys.is_empty() {
                return Err(ConfigError::new(key, "a pinned server needs at least one key"));
            }
            for (id, public) in &pinned.verify_keys {
                let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(public);
                if !id.starts_with("ed25519:") || decoded.ok().map(|k| k.as_bytes().len()) != Some(32) {
                    return Err(ConfigError::new(
                        key,
                        format!("{id}: an ed25519 key id with a 32-byte unpadded base64 key is expected"),
                    ));
                }
            }
        }
        self.antivirus.validate()?;
        if let Some(token) = &self.registration.token {
            if token.is_empty() {
                return Err(ConfigError::new("registration.token", "must not be empty"));
            }
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            ("rate_limits.registration", self.rate_limits.registration),
            ("rate_limits.media_upload", self.rate_limits.media_upload),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
                return Err(ConfigError::new(key, "per_second must be > 0 and burst >= 1"));
            }
        }
        if self.limits.max_request_size < 1024 {
            return Err(ConfigError::new("limits.max_request_size", "must be at least 1024 bytes"));
        }
        if self.database.cache_mb < 8 {
            return Err(ConfigError::new("database.cache_mb", "must be at least 8"));
        }
        if self.media.max_pending_uploads == 0 {
            return Err(ConfigError::new("media.max_pending_uploads", "must be at least 1"));
        }
        if self.media.max_upload_size == 0 {
            return Err(ConfigError::new("media.max_upload_size", "must be at least 1 byte"));
        }
        if let Some(path) = &self.email.smtp_password_file {
            if let Err(e) = std::fs::read_to_string(path) {
                return Err(ConfigError::new(
                    "email.smtp_password_file",
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        if self.email.smtp_user.is_some() != self.email.smtp_password_file.is_some() {
            return Err(ConfigError::new("email.smtp_user", "set both smtp_user and smtp_password_file, or neither"));
        }
        if let Some(from) = &self.email.notif_from {
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError::new("email.notif_from", format!("{from:?} is not a valid mailbox")));
            }
        }
        if let Some(url) = &self.public_baseurl {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new("public_baseurl", "must start with http:// or https://"));
            }
        }
        if let Some(url) = &self.telemetry.otlp_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new("telemetry.otlp_endpoint", "must start with http:// or https://"));
            }
        }
        if self.telemetry.service_name.is_empty() {
            return Err(ConfigError::new("telemetry.service_name", "must not be empty"));
        }
        if self.listen.metrics.is_some_and(|m| m.port() != 0 && m == self.listen.client) {
            return Err(ConfigError::new("listen.metrics", "must differ from listen.client"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new("log.level", format!("not a valid filter: {e}")));
        }
        match self.rooms.default_version {
            RoomVersionId::V10 | RoomVersionId::V11 | RoomVersionId::V12 => {}
            _ => return Err(ConfigError::new("rooms.default_version", "must be 10, 11 or 12")),
        }
        Ok(())
    }

    /// Where media files live: `media.path`, or `media/` inside the database directory.
    pub fn media_path(&self) -> PathBuf {
        self.media.path.clone().unwrap_or_else(|| self.database.path.join("media"))
    }

    /// The Unix socket the running server answers operator commands on.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.database.path.join("admin.sock")
    }

    /// The base URL clients should use, as published in `.well-known`.
    pub fn client_base_url(&self) -> String {
        match &self.public_baseurl {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen.client),
        }
    }
}

/// An environment value is read as a TOML value when it parses as one (`true`, `42`, `["a"]`), and
/// as a plain string otherwise (`127.0.0.1:8008`, `./data`).
fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/homeserver.toml");
        let config = Config::load_with_env(Some(&path), std::iter::empty()).expect("config/homeserver.toml is valid");
        assert_eq!(config.voip.turn_user_lifetime_s, 86_400);
    }

    #[test]
    fn env_values_take_the_type_of_their_key() {
        let env = [("HEMICYCLE_ROOMS__DEFAULT_VERSION", "11"), ("HEMICYCLE_LIMITS__MAX_REQUEST_SIZE", "2048")];
        let config = load("", &env).expect("a number on a string key is the string");
        assert_eq!(config.rooms.default_version, ruma::RoomVersionId::V11);
        assert_eq!(config.limits.max_request_size, 2048);
        let error = load("", &[("HEMICYCLE_LIMITS__MAX_REQUEST_SIZE", "beaucoup")]).unwrap_err();
        assert!(error.to_string().contains("limits.max_request_size"), "{error}");
    }

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml_text).unwrap();
        Config::load_with_env(Some(&file), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c.server_name.as_str(), "localhost");
        assert_eq!(c.listen.client.to_string(), "127.0.0.1:8008");
        assert_eq!(c.database.path, PathBuf::from("./data"));
        assert!(!c.registration.open);
        assert!(c.rate_limits.enabled);
        assert_eq!(c.media.max_upload_size, 50 * 1024 * 1024);
    }

    #[test]
    fn env_overrides_nested_keys() {
        let c = load(
            "server_name = \"a.example\"\n[registration]\nopen = false\n",
            &[("HEMICYCLE_DATABASE__PATH", "/tmp/x"), ("HEMICYCLE_REGISTRATION__OPEN", "true"), ("OTHER", "1")],
        )
        .unwrap();
        assert_eq!(c.server_name.as_str(), "a.example");
        assert_eq!(c.database.path, PathBuf::from("/tmp/x"));
        assert!(c.registration.open);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("[registration]\nopne = true\n", &[]).unwrap_err();
        assert!(e.key.starts_with("registration"), "{e}");
        assert!(e.reason.contains("opne"), "{e}");
    }

    #[test]
    fn wrong_type_and_bad_address_are_named() {
        let e = load("[registration]\nopen = \"yes\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "registration.open", "{e}");
        let e = load("[listen]\nclient = \"not an address\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "listen.client", "{e}");
    }

    #[test]
    fn federation_listener_needs_tls_files() {
        let e = load("[listen]\nfederation = \"127.0.0.1:8448\"\n[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n", &[])
            .unwrap_err();
        assert_eq!(e.key, "tls.cert", "{e}");
    }

    /// Highlights are the notifications kept longest (`/notifications?only=highlight`): a
    /// retention shorter than the others' is refused rather than silently lengthened.
    #[test]
    fn highlights_are_kept_at_least_as_long_as_notifications() {
        let e = load("[retention]\nnotifications = \"7d\"\nhighlights = \"24h\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "retention.highlights", "{e}");
        load("[retention]\nnotifications = \"7d\"\nhighlights = \"7d\"\n", &[]).expect("equal is fine");
    }
}
