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
    /// Whose invites the bot accepts: users of its own server, of its own server and the
    /// servers in `allowed_servers` (the default), or anyone. Other invites are rejected.
    #[serde(default)]
    pub accept_invites_from: InvitePolicy,
    /// Servers (besides its own) whose users may invite the bot, with `accept_invites_from =
    /// "listed"`.
    #[serde(default)]
    pub allowed_servers: Vec<String>,
    /// Whether the certificates of the homeservers asked to confirm OpenID tokens are checked.
    /// Only test setups, whose nodes have self-signed certificates, turn this off.
    #[serde(default = "default_true")]
    pub federation_verify_tls: bool,
    /// Whether the bot takes part in end-to-end encrypted rooms with a device of its own (its
    /// keys in `data_dir/e2ee`). Off, it neither reads nor answers in encrypted rooms.
    #[serde(default = "default_true")]
    pub encryption: bool,
    /// The bot's user (its localpart) when it is not the registration's `sender_localpart` but
    /// a user of its exclusive `users` namespace, as whom the bot then acts (`user_id`). Synapse
    /// needs it for the bot's encryption: it refuses `/sync` and sliding sync to the
    /// appservice's sender (matrix-org/matrix-doc#1144), so that user's device cannot sync.
    #[serde(default)]
    pub user_localpart: Option<String>,
    /// Who may verify the bot's device (emoji verification from their client, once): the
    /// node's operators. Requests from anyone else are refused.
    #[serde(default)]
    pub operators: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// `accept_invites_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitePolicy {
    /// Users of the appservice's own homeserver only.
    OwnServer,
    /// Users of its own homeserver and of the servers in `allowed_servers`.
    #[default]
    Listed,
    /// Anyone, on any server.
    Everyone,
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

    /// Whether an invite sent by `inviter` (a user id) is accepted, per `accept_invites_from`.
    pub fn accepts_invite_from(&self, inviter: &str) -> bool {
        let Some(server) = inviter.strip_prefix('@').and_then(|u| u.split_once(':')).map(|(_, s)| s) else {
            return false;
        };
        let own = server.eq_ignore_ascii_case(&self.server_name);
        match self.accept_invites_from {
            InvitePolicy::Everyone => true,
            InvitePolicy::OwnServer => own,
            InvitePolicy::Listed => own || self.allowed_servers.iter().any(|s| s.eq_ignore_ascii_case(server)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "homeserver_url = \"http://127.0.0.1:8008\"\nserver_name = \"budget.gouv.fr\"\n\
             registration = \"r.yaml\"\nlisten = \"127.0.0.1:9010\"\npublic_url = \"http://x\"\n\
             data_dir = \"d\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn invites_are_accepted_from_its_own_server_and_the_listed_ones_by_default() {
        let default = config("allowed_servers = [\"finances.gouv.fr\"]\n");
        assert_eq!(default.accept_invites_from, InvitePolicy::Listed);
        assert!(default.accepts_invite_from("@alice:budget.gouv.fr"));
        assert!(default.accepts_invite_from("@bob:finances.gouv.fr"));
        assert!(!default.accepts_invite_from("@eve:evil.example"), "a server not listed");
        assert!(!default.accepts_invite_from("@eve:evil.example:budget.gouv.fr"), "the server is the whole tail");
        assert!(!default.accepts_invite_from("budget.gouv.fr"));
        assert!(!config("").accepts_invite_from("@bob:finances.gouv.fr"), "nothing listed: own server only");

        let own = config("accept_invites_from = \"own_server\"\nallowed_servers = [\"finances.gouv.fr\"]\n");
        assert!(own.accepts_invite_from("@alice:budget.gouv.fr"));
        assert!(!own.accepts_invite_from("@bob:finances.gouv.fr"));

        let everyone = config("accept_invites_from = \"everyone\"\n");
        assert!(everyone.accepts_invite_from("@eve:evil.example"));
        assert!(toml::from_str::<Config>(&format!("{}accept_invites_from = \"all\"\n", "")).is_err());
    }
}
