//! The configuration of an account's life: password rules (`[password_policy]`) and expiry
//! (`[account_validity]`), in the shapes Synapse and the state's messenger (Tchap) use, so an
//! operator moving a node carries its settings over.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// Password rules (MSC2000; Synapse's `password_config.policy`), announced at
/// `GET /password_policy` and enforced wherever a password is set. Off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicyConfig {
    pub enabled: bool,
    /// Fewest characters (not bytes).
    pub minimum_length: u32,
    pub require_digit: bool,
    /// Anything but an ASCII letter or digit counts as a symbol.
    pub require_symbol: bool,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
}

/// Expiring accounts (Tchap's email account validity). Absent: accounts never expire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountValidityConfig {
    /// How long an account stays valid after registration or renewal, e.g. `"180d"`.
    pub period: HumanDuration,
    /// How long before expiry each renewal email goes out, e.g. `["4w", "1w", "1d"]`.
    #[serde(default)]
    pub send_renewal_email_at: Vec<HumanDuration>,
    /// Accounts expired for longer than this are deactivated; absent: never.
    #[serde(default)]
    pub deactivate_after: Option<HumanDuration>,
    /// Regular expressions on the whole user id of accounts that never expire (bots, shared
    /// accounts); users of an application service's exclusive namespaces never expire either.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether accounts the LDAP directory manages expire too; by default they follow the
    /// directory alone (an agent removed from it is deactivated by `ldap sync`).
    #[serde(default)]
    pub directory_accounts_expire: bool,
    /// The subject of renewal emails.
    #[serde(default = "default_renew_subject")]
    pub renew_email_subject: String,
    /// Renewal emails carry a link (`true`, the default) or an 8-digit code the agent types in
    /// their client, which renews only with that account's own access token (`false`).
    #[serde(default = "default_send_links")]
    pub send_links: bool,
}

fn default_send_links() -> bool {
    true
}

fn default_renew_subject() -> String {
    "Renouvelez votre compte / Renew your account".to_owned()
}

impl AccountValidityConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.period.0.is_zero() {
            return Err(ConfigError::new("account_validity.period", "must be longer than zero"));
        }
        for offset in &self.send_renewal_email_at {
            if offset.0.is_zero() || offset.0 >= self.period.0 {
                return Err(ConfigError::new(
                    "account_validity.send_renewal_email_at",
                    "each offset must be longer than zero and shorter than the period",
                ));
            }
        }
        // The `exclude` patterns are compiled (and refused, naming the key) by the service.
        Ok(())
    }
}

/// A duration written as Synapse writes them: a number with a unit (`ms`, `s`, `m`, `h`, `d`,
/// `w`, `y`), or a bare number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn as_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as \"180d\""))?;
        let unit_ms: u64 = match unit {
            "" | "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 3600 * 1000,
            "d" => 24 * 3600 * 1000,
            "w" => 7 * 24 * 3600 * 1000,
            "y" => 365 * 24 * 3600 * 1000,
            other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m, h, d, w or y)")),
        };
        number
            .checked_mul(unit_ms)
            .map(|ms| Self(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Millis(ms) => Ok(Self(Duration::from_millis(ms))),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_synapse_writes_them() {
        assert_eq!(HumanDuration::parse("180d").unwrap().as_millis(), 180 * 86_400_000);
        assert_eq!(HumanDuration::parse("4w").unwrap().as_millis(), 28 * 86_400_000);
        assert_eq!(HumanDuration::parse("90s").unwrap().as_millis(), 90_000);
        assert_eq!(HumanDuration::parse("1500").unwrap().as_millis(), 1500);
        assert!(HumanDuration::parse("3 fortnights").is_err());
        assert!(HumanDuration::parse("d").is_err());
    }
}
