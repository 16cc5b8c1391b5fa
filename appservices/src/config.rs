//! The appservice's configuration (TOML) and the registration file it shares with the
//! homeserver, read once at start-up; a bad file stops start-up naming the file and the field.

use std::{net::SocketAddr, path::PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// `hemicycle-workspace.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver's client API, e.g. `http://127.0.0.1:8008`.
    pub homeserver_url: String,
    /// The homeserver's server name (the part after `:` in its user ids).
    pub server_name: String,
    /// The registration file given to the homeserver (`appservices.registrations`): the
    /// tokens and the bot's localpart are read from it, so they exist in one place.
    pub registration: PathBuf,
    /// Where the homeserver's transactions, the REST API and the ICS feeds are served.
    pub listen: SocketAddr,
    /// The address clients reach `listen` at, used in the ICS feed links the bot hands out.
    pub public_url: String,
    /// Folder of the appservice's own state (transactions seen, reminders sent, feed tokens).
    pub data_dir: PathBuf,
    /// Time zone of dates given without one (`due:2026-12-01`, `!cal add … 10:00`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Language of replies to messages that are not commands in a known language.
    #[serde(default = "default_language")]
    pub language: String,
    /// Test setups only: the time the clock reads at start-up (it then runs at real speed), so
    /// tests control due dates and reminders without sleeping.
    #[serde(default)]
    pub clock: Option<DateTime<Utc>>,
}

fn default_time_zone() -> String {
    "Europe/Paris".into()
}

fn default_language() -> String {
    "fr".into()
}

/// The fields of a Synapse-format registration file the appservice needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    pub id: String,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| format!("{}: time_zone: {:?} is not an IANA time zone", path.display(), config.time_zone))?;
        if !["fr", "en"].contains(&config.language.as_str()) {
            return Err(format!("{}: language: {:?} is neither \"fr\" nor \"en\"", path.display(), config.language));
        }
        Ok(config)
    }

    pub fn registration(&self) -> Result<Registration, String> {
        let path = &self.registration;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        self.time_zone.parse().expect("checked at load")
    }
}

/// The time as the appservice sees it: the system clock, or the configured start time running
/// at real speed from start-up.
#[derive(Clone)]
pub struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    pub fn new(start: Option<DateTime<Utc>>) -> Clock {
        Clock { offset: start.map_or(chrono::Duration::zero(), |s| s - Utc::now()) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}
