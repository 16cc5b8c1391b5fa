//! The configuration of calls with Element Call (MatrixRTC): delayed events (MSC4140), the RTC
//! transports announced to clients (MSC4143), the built-in LiveKit authorisation service
//! (docs/calls.md).

use serde::Deserialize;

use super::ConfigError;

/// Delayed events (MSC4140), which Element Call uses to leave a call when a client vanishes.
/// Absent: off, as in Synapse without `max_event_delay_duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayedEventsConfig {
    /// The longest delay a client may ask for (Synapse's `max_event_delay_duration`).
    pub max_delay_ms: u64,
    /// How many delayed events one user may have scheduled at a time (Synapse's
    /// `msc4140_max_delayed_events_per_user`, 100 by default).
    #[serde(default = "default_max_per_user")]
    pub max_per_user: usize,
}

fn default_max_per_user() -> usize {
    100
}

impl DelayedEventsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_delay_ms == 0 {
            return Err(ConfigError::new(
                "delayed_events.max_delay_ms",
                "must be positive (leave the section out to turn delayed events off)",
            ));
        }
        if self.max_per_user == 0 {
            return Err(ConfigError::new("delayed_events.max_per_user", "must be positive"));
        }
        Ok(())
    }
}

/// MatrixRTC (`[matrix_rtc]`): the transports (SFUs) clients are told about, and the LiveKit
/// authorisation service Hemicycle serves itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatrixRtcConfig {
    /// Announced as they are written at `GET /_matrix/client/v1/rtc/transports` and, as
    /// `org.matrix.msc4143.rtc_foci`, in `/.well-known/matrix/client`: for LiveKit,
    /// `{ type = "livekit", livekit_service_url = "https://…" }`.
    pub transports: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The built-in LiveKit authorisation service (what element-hq/lk-jwt-service does), off
    /// when absent. When set and no transport is configured, a LiveKit transport pointing at it
    /// is announced, so a node and its SFU are all a call needs.
    pub livekit: Option<LiveKitConfig>,
}

/// `[matrix_rtc.livekit]`: the SFU and the API key shared with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitConfig {
    /// The SFU's URL as clients reach it (`wss://…`, or `ws://…` on a test network): handed to
    /// clients with their token, and, as `https://…`/`http://…`, where its room API is called.
    pub url: String,
    /// The API key (LiveKit's `keys:` entry): the tokens' issuer.
    pub key: String,
    /// A file holding the key's secret (the HS256 key of the tokens), kept out of this file.
    pub secret_file: std::path::PathBuf,
    /// Servers whose users may make the SFU open a call's room (`"*"` alone: every server).
    /// Users of other servers only get a token to join a room that already exists: the SFU must
    /// run with `room.auto_create: false` for that to hold (docs/calls.md).
    #[serde(default)]
    pub full_access_servers: Vec<String>,
    /// Where the client API of a server is, by server name, for the delayed leave events its
    /// users hand over (lk-jwt-service's `LIVEKIT_CS_API_URL_OVERRIDES`): the service restarts
    /// and sends them there. A server not listed is found by its `/.well-known/matrix/client`.
    #[serde(default)]
    pub client_api_urls: std::collections::BTreeMap<String, String>,
    /// How often the SFU is asked whether a participant whose delayed leave we keep is still
    /// there (its room API's `GetParticipant`, lk-jwt-service's sanity check): a participant
    /// gone without a webhook saying so has its leave sent then. 0: never.
    #[serde(default = "default_participant_check_interval_s")]
    pub participant_check_interval_s: u64,
}

fn default_participant_check_interval_s() -> u64 {
    60
}

impl LiveKitConfig {
    /// The secret, read from `secret_file` (surrounding white space dropped).
    pub fn read_secret(&self) -> Result<String, ConfigError> {
        let text = std::fs::read_to_string(&self.secret_file).map_err(|e| {
            ConfigError::new(
                "matrix_rtc.livekit.secret_file",
                format!("cannot read {}: {e}", self.secret_file.display()),
            )
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(ConfigError::new("matrix_rtc.livekit.secret_file", "the file is empty"));
        }
        Ok(secret.to_owned())
    }

    /// Whether users of `server` get full access (see `full_access_servers`).
    pub fn full_access(&self, server: &str) -> bool {
        matches!(self.full_access_servers.as_slice(), [only] if only == "*")
            || self.full_access_servers.iter().any(|s| s == server)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.as_str();
        let ok = ["ws://", "wss://"].iter().any(|p| url.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !ok {
            return Err(ConfigError::new("matrix_rtc.livekit.url", "must be the SFU's ws:// or wss:// URL"));
        }
        if self.key.is_empty() {
            return Err(ConfigError::new("matrix_rtc.livekit.key", "must not be empty"));
        }
        for (server, url) in &self.client_api_urls {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::new(
                    "matrix_rtc.livekit.client_api_urls",
                    format!("{server}: must be an http:// or https:// URL"),
                ));
            }
        }
        self.read_secret().map(|_| ())
    }
}

impl MatrixRtcConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(livekit) = &self.livekit {
            livekit.validate()?;
        }
        for transport in &self.transports {
            let kind = transport.get("type").and_then(|t| t.as_str());
            let Some(kind) = kind else {
                return Err(ConfigError::new("matrix_rtc.transports", "every transport needs a `type` string"));
            };
            let has = |key: &str| transport.get(key).and_then(|v| v.as_str()).is_some_and(|v| !v.is_empty());
            if kind == "livekit" && !has("livekit_service_url") && !has("url") {
                return Err(ConfigError::new(
                    "matrix_rtc.transports",
                    "a livekit transport needs `livekit_service_url` (or `url`)",
                ));
            }
        }
        Ok(())
    }
}
