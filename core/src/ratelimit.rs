//! Token-bucket rate limiting for login, registration, media uploads, token-less delayed event
//! actions, LiveKit tokens and email lookups across the network, per client address, per account
//! and per asking server.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    config::{RateLimit, RateLimitsConfig},
    error::{Error, Result},
};

/// What is being limited; each action has its own buckets and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Login,
    Registration,
    /// Media uploads (and reserving media ids), per account.
    MediaUpload,
    /// Token-less delayed event actions (restart, send, cancel by delay id), per address.
    DelayedEventAction,
    /// LiveKit tokens of the built-in authorisation service, per address.
    RtcToken,
    /// Directory searches by email address that ask another node of the network, per account.
    EmailLookup,
    /// Email lookups another node of the network asks of this one, per asking node.
    FederationEmailLookup,
    /// Status documents another server asks of this one, per asking server: each is built anew.
    FederationStatus,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

/// Above this many buckets, full ones are dropped (they hold no information).
const PRUNE_AT: usize = 50_000;

impl RateLimiter {
    pub fn new(config: RateLimitsConfig) -> Self {
        Self { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn limit(&self, action: Action) -> RateLimit {
        match action {
            Action::Login => self.config.login,
            Action::Registration => self.config.registration,
            Action::MediaUpload => self.config.media_upload,
            Action::DelayedEventAction => self.config.delayed_event_action,
            Action::RtcToken => self.config.rtc_token,
            Action::EmailLookup => self.config.email_lookup,
            Action::FederationEmailLookup => self.config.federation_email_lookup,
            Action::FederationStatus => self.config.federation_status,
        }
    }

    /// Takes one token from the bucket of (`action`, `key`), or says how long to wait.
    pub fn check(&self, action: Action, key: &str) -> Result<()> {
        self.check_with(action, key, None)
    }

    /// [`RateLimiter::check`] with an admin's limit for this key instead of the configured one
    /// (`per_second` and `burst` both 0: unlimited).
    pub fn check_with(&self, action: Action, key: &str, custom: Option<RateLimit>) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if custom.is_some_and(|c| c.per_second == 0.0 && c.burst == 0) {
            return Ok(());
        }
        let limit = custom.unwrap_or_else(|| self.limit(action));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > PRUNE_AT {
            buckets.retain(|(a, _), b| {
                let l = self.limit(*a);
                b.tokens + now.duration_since(b.updated).as_secs_f64() * l.per_second < f64::from(l.burst)
            });
        }
        let bucket =
            buckets.entry((action, key.to_owned())).or_insert(Bucket { tokens: f64::from(limit.burst), updated: now });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(limit.burst));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / limit.per_second;
            Err(Error::LimitExceeded { retry_after: Duration::from_secs_f64(wait).max(Duration::from_millis(1)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(RateLimitsConfig {
            enabled: true,
            login: RateLimit { per_second: 0.5, burst: 2 },
            registration: RateLimit { per_second: 0.5, burst: 2 },
            media_upload: RateLimit { per_second: 0.5, burst: 2 },
            delayed_event_action: RateLimit { per_second: 0.5, burst: 2 },
            rtc_token: RateLimit { per_second: 0.5, burst: 2 },
            email_lookup: RateLimit { per_second: 0.5, burst: 2 },
            federation_email_lookup: RateLimit { per_second: 0.5, burst: 2 },
            federation_status: RateLimit { per_second: 0.5, burst: 2 },
        });
        assert!(limiter.check(Action::Login, "1.2.3.4").is_ok());
        assert!(limiter.check(Action::Login, "1.2.3.4").is_ok());
        match limiter.check(Action::Login, "1.2.3.4") {
            Err(Error::LimitExceeded { retry_after }) => {
                assert!(retry_after > Duration::from_millis(1000))
            }
            other => panic!("expected a limit, got {other:?}"),
        }
        assert!(limiter.check(Action::Login, "5.6.7.8").is_ok(), "other keys have their own bucket");
        assert!(limiter.check(Action::Registration, "1.2.3.4").is_ok(), "other actions too");
    }
}
