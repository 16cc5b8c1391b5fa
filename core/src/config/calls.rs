//! The configuration of calls with Element Call (MatrixRTC): delayed events (MSC4140), the RTC
//! transports announced to clients (MSC4143) (docs/calls.md).

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

/// MatrixRTC (`[matrix_rtc]`): the transports (SFUs) clients are told about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatrixRtcConfig {
    /// Announced as they are written at `GET /_matrix/client/v1/rtc/transports` and, as
    /// `org.matrix.msc4143.rtc_foci`, in `/.well-known/matrix/client`: for LiveKit,
    /// `{ type = "livekit", livekit_service_url = "https://…" }`.
    pub transports: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl MatrixRtcConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
