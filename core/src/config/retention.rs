//! `[retention]`: how long the records nobody reads after a while are kept, before the pruning
//! task drops them (docs/operations.md). Synapse keeps their counterparts forever, and its
//! operators purge them by hand once the tables reach tens of gigabytes.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, HumanDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Ids of federation transactions received: a retry comes within minutes (senders back off for
    /// hours at most), and one seen again after this is still harmless (its PDUs dedupe by event
    /// id).
    pub federation_transactions: HumanDuration,
    /// The device list stream (who changed devices or keys, and when): a client whose sync token
    /// is older than what is kept is told that everyone it shares a room with changed, and queries
    /// their keys again.
    pub device_list_changes: HumanDuration,
    /// Client transaction ids of devices still signed in (event sends and to-device sends): a
    /// client retries a request within seconds or minutes, so after this a transaction id is
    /// forgotten and reusing it makes a new event. Synapse forgets its event transaction ids
    /// after the same 24 hours.
    pub client_transactions: HumanDuration,
    /// What a removed device leaves behind (its client transaction ids, for sends and to-device
    /// messages): nothing can use them once its access token is gone.
    pub departed_devices: HumanDuration,
    /// Notification records (what `/notifications` lists; the unread counts keep their figures
    /// when they go): Synapse deletes its push actions a day old, highlights apart.
    pub notifications: HumanDuration,
    /// Notification records of highlights (mentions, keywords), which `/notifications?only=highlight`
    /// lists: Synapse keeps them until its operators purge them.
    pub highlights: HumanDuration,
    /// How often the pruning task runs; each run drops at most `batch` records per kind at once.
    pub interval: HumanDuration,
    /// Records dropped in one write.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let hours = |h: u64| HumanDuration(Duration::from_secs(h * 3600));
        Self {
            federation_transactions: hours(24),
            device_list_changes: hours(30 * 24),
            client_transactions: hours(24),
            departed_devices: hours(24),
            notifications: hours(24),
            highlights: hours(30 * 24),
            interval: HumanDuration(Duration::from_secs(600)),
            batch: 1_000,
        }
    }
}

impl RetentionConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.0.is_zero() {
            return Err(ConfigError::new("retention.interval", "must be longer than zero"));
        }
        if self.highlights.0 < self.notifications.0 {
            return Err(ConfigError::new("retention.highlights", "must be at least retention.notifications"));
        }
        if self.batch == 0 {
            return Err(ConfigError::new("retention.batch", "must be at least 1"));
        }
        Ok(())
    }
}
