//! Delegated delayed leaves, as element-hq/lk-jwt-service keeps them: a call participant hands
//! the delayed event that ends its call membership (MSC4140) to the service, which restarts it
//! while the participant is on the SFU and sends it as soon as the participant is gone, so a
//! client that vanishes leaves the call within seconds and one that stays is never dropped.
//!
//! The event may be on this server (acted on directly) or on the participant's own server,
//! reached through its client API (`…/delayed_events/{id}/restart|send`, which need no access
//! token: the delay id is the capability), found by `[matrix_rtc.livekit] client_api_urls` or
//! its `/.well-known/matrix/client`.
//!
//! Each delegation is one task, driven by timers and the SFU's webhooks, never by a loop that
//! spins: it waits for the participant (a webhook, or the SFU's room API asked 1 s, then 1.5
//! times longer each time, at most a minute apart, for at most the event's delay or an hour,
//! after which the event is sent: a participant who never showed up is not in the call), then
//! restarts the event at once and every 80 % of its delay; it sends the event when a webhook
//! says the participant left, or when the SFU, asked every `participant_check_interval_s`, no
//! longer has it (a lost webhook). Delegations are kept in
//! the rtc table (synced before the request is answered, updated at each restart): after a
//! restart of the node each one whose event has not fired yet is taken up again, waiting for
//! its participant anew, as lk-jwt-service does with its Redis store.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ruma::ServerName;
use serde_json::json;
use tokio::{sync::mpsc, time::Instant};

use super::{
    state::{Keeper, LiveKit, Presence},
    tables::DelegatedLeave,
};
use crate::{
    db::Batch,
    error::{Error, Result},
    services::Services,
    time::now_ms,
};

/// The delayed events endpoints of a client API (the unstable ones every server with MSC4140
/// serves, which lk-jwt-service uses too).
const DELAYED_EVENTS: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/// One call to another server's client API.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client API found by its well-known is used before asking again.
const CLIENT_API_TTL: Duration = Duration::from_secs(4 * 3600);

/// The longest wait for a participant to show up on the SFU (and the longest a leave is tried
/// after its time): a call membership expires after an hour anyway.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Delegations kept at once for the users of one server, and in all: each is a task and a
/// record, and a server with full access (`full_access_servers = ["*"]` lets any in) must not be
/// able to make us hold an unbounded number of them by naming ever new rooms.
pub(crate) const MAX_DELEGATIONS_PER_SERVER: usize = 1_000;
pub(crate) const MAX_DELEGATIONS: usize = 10_000;

/// Retries of a restart or send, and look-ups of a participant not there yet: 1 s, then 1.5
/// times longer each time, at most a minute apart.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

fn next_retry(wait: Duration) -> Duration {
    (wait * 3 / 2).min(MAX_RETRY)
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Restart,
    Send,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Send => "send",
        }
    }
}

enum Outcome {
    Done,
    /// Sent, cancelled or fired already on its server (404): nothing left to keep.
    Gone,
    Failed(String),
}

/// Whether a delay id given by a client can go into another server's URL as one path segment
/// as it is: the ids servers make are short and alphanumeric; anything else (a `/`, a `..`,
/// an escape) could point the request at another endpoint of that server.
pub(crate) fn usable_delay_id(delay_id: &str) -> bool {
    (1..=255).contains(&delay_id.len())
        && delay_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        && delay_id.bytes().any(|b| b != b'.')
}

fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now_ms(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl LiveKit {
    /// The base URL of `server`'s client API: configured, or from its well-known (cached).
    pub(crate) async fn client_api(&self, services: &Services, server: &str) -> Result<String> {
        if let Some(url) = self.config.client_api_urls.get(server) {
            return Ok(url.trim_end_matches('/').to_owned());
        }
        if let Some((url, at)) = self.client_apis.lock().expect("client APIs").get(server) {
            if at.elapsed() < CLIENT_API_TTL {
                return Ok(url.clone());
            }
        }
        let name = <&ServerName>::try_from(server).map_err(|_| Error::invalid_param("not a server name"))?;
        let url = services.federation.client_api_url(name).await?;
        self.client_apis
            .lock()
            .expect("client APIs")
            .insert(server.to_owned(), (url.clone(), std::time::Instant::now()));
        Ok(url)
    }

    /// Takes over a participant's delayed leave: recorded (synced) before the request is
    /// answered, replacing an earlier delegation of the same participant, then kept by its task.
    /// Answers `false`, keeping nothing, when the participant's server (or everyone together)
    /// already has as many delegations as allowed.
    pub(crate) fn hand_over(
        &self,
        services: &Arc<Services>,
        server: &str,
        room: &str,
        identity: &str,
        delay_id: &str,
        timeout: Duration,
    ) -> Result<bool> {
        let key = (room.to_owned(), identity.to_owned());
        let record = DelegatedLeave {
            id: new_id(),
            server: server.to_owned(),
            delay_id: delay_id.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            restarted_ts: now_ms(),
        };
        let (sender, signals) = mpsc::unbounded_channel();
        {
            let mut delegations = self.delegations.lock().expect("delegations");
            if !delegations.contains_key(&key) {
                let of_server = delegations.values().filter(|k| k.server == server).count();
                if of_server >= MAX_DELEGATIONS_PER_SERVER || delegations.len() >= MAX_DELEGATIONS {
                    return Ok(false);
                }
            }
            let mut batch = Batch::new();
            services.db.tables.rtc.roomidentity_delegatedleave.insert(
                &mut batch,
                &key,
                &crate::db::codec::Json(record.clone()),
            );
            services.db.commit(batch)?;
            // The older task, if any, sees its channel close and ends without touching this record.
            delegations
                .insert(key.clone(), Keeper { id: record.id.clone(), server: record.server.clone(), signals: sender });
        }
        tokio::spawn(keep(services.clone(), key, record, signals));
        Ok(true)
    }

    /// What a webhook of the SFU said of a participant, passed to its delegation if any.
    pub fn participant(&self, room: &str, identity: &str, presence: Presence) {
        let delegations = self.delegations.lock().expect("delegations");
        if let Some(keeper) = delegations.get(&(room.to_owned(), identity.to_owned())) {
            let _ = keeper.signals.send(presence);
        }
    }

    /// Writes a delegation's record again (after a restart of its event), unless a newer one
    /// replaced it. Answers whether it is still current.
    fn save(&self, services: &Services, key: &(String, String), record: &DelegatedLeave) -> bool {
        let delegations = self.delegations.lock().expect("delegations");
        if delegations.get(key).is_none_or(|keeper| keeper.id != record.id) {
            return false;
        }
        let mut batch = Batch::new();
        services.db.tables.rtc.roomidentity_delegatedleave.insert(
            &mut batch,
            key,
            &crate::db::codec::Json(record.clone()),
        );
        if let Err(error) = services.db.commit(batch) {
            tracing::warn!(%error, "a delegated leave's restart was not recorded");
        }
        true
    }

    /// Drops a delegation that has ended (its record and its task's entry), unless a newer one
    /// replaced it.
    fn forget(&self, services: &Services, key: &(String, String), id: &str) {
        let mut delegations = self.delegations.lock().expect("delegations");
        if delegations.get(key).is_none_or(|keeper| keeper.id != id) {
            return;
        }
        delegations.remove(key);
        let mut batch = Batch::new();
        services.db.tables.rtc.roomidentity_delegatedleave.remove(&mut batch, key);
        if let Err(error) = services.db.commit(batch) {
            tracing::warn!(%error, "an ended delegated leave was not removed");
        }
    }
}

/// Takes up, at start, the delegations recorded before a restart whose events have not fired
/// yet; drops the others.
pub fn start(services: Arc<Services>) {
    let Some(livekit) = services.livekit.as_ref() else { return };
    let table = &services.db.tables.rtc.roomidentity_delegatedleave;
    let now = now_ms();
    let mut expired = Batch::new();
    let mut resumed = 0;
    for entry in table.iter() {
        let (key, record) = match entry {
            Ok((key, record)) => (key, record.0),
            Err(error) => {
                tracing::warn!(%error, "an unreadable delegated leave was skipped");
                continue;
            }
        };
        if record.restarted_ts.saturating_add(record.timeout_ms) <= now {
            table.remove(&mut expired, &key);
            continue;
        }
        let (sender, signals) = mpsc::unbounded_channel();
        livekit
            .delegations
            .lock()
            .expect("delegations")
            .insert(key.clone(), Keeper { id: record.id.clone(), server: record.server.clone(), signals: sender });
        tokio::spawn(keep(services.clone(), key, record, signals));
        resumed += 1;
    }
    if let Err(error) = services.db.commit(expired) {
        tracing::warn!(%error, "expired delegated leaves were not removed");
    }
    if resumed > 0 {
        tracing::info!(resumed, "delegated leaves taken up again");
    }
}

/// The task of one delegation.
async fn keep(
    services: Arc<Services>,
    key: (String, String),
    mut record: DelegatedLeave,
    mut signals: mpsc::UnboundedReceiver<Presence>,
) {
    let Some(livekit) = services.livekit.as_ref() else { return };
    match wait_for_participant(livekit, &key, Duration::from_millis(record.timeout_ms), &mut signals).await {
        Waited::Present => keep_while_present(&services, livekit, &key, &mut record, &mut signals).await,
        // A participant who never showed up is not in the call: its membership goes.
        Waited::TimedOut => send(&services, &record).await,
        Waited::Left | Waited::Replaced => {}
    }
    livekit.forget(&services, &key, &record.id);
}

enum Waited {
    Present,
    /// A webhook said the participant left before it was seen (lk-jwt-service's aborted
    /// connection): the event is left to fire at its own time unless the client restarts it.
    Left,
    Replaced,
    TimedOut,
}

/// Until the participant is on the SFU, or a webhook says it left, or a newer delegation
/// replaced this one, or the wait is over.
async fn wait_for_participant(
    livekit: &LiveKit,
    key: &(String, String),
    timeout: Duration,
    signals: &mut mpsc::UnboundedReceiver<Presence>,
) -> Waited {
    let deadline = Instant::now() + timeout.min(MAX_WAIT);
    let lookup = async {
        let mut wait = FIRST_RETRY;
        loop {
            match livekit.participant_present(&key.0, &key.1).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "the SFU could not say whether a participant is there"),
            }
            tokio::time::sleep(wait).await;
            wait = next_retry(wait);
        }
    };
    tokio::pin!(lookup);
    tokio::select! {
        () = &mut lookup => Waited::Present,
        signal = signals.recv() => match signal {
            Some(Presence::Joined) => Waited::Present,
            Some(Presence::Left) => Waited::Left,
            None => Waited::Replaced,
        },
        () = tokio::time::sleep_until(deadline) => Waited::TimedOut,
    }
}

/// Restarts the event now and every 80 % of its delay; sends it when the participant leaves.
async fn keep_while_present(
    services: &Services,
    livekit: &LiveKit,
    key: &(String, String),
    record: &mut DelegatedLeave,
    signals: &mut mpsc::UnboundedReceiver<Presence>,
) {
    let timeout = Duration::from_millis(record.timeout_ms);
    let check_every = Duration::from_secs(livekit.config.participant_check_interval_s);
    let mut next_check = Instant::now() + check_every;
    loop {
        match act_until(services, record, Action::Restart, expiry(record)).await {
            Outcome::Done => {
                record.restarted_ts = now_ms();
                if !livekit.save(services, key, record) {
                    return;
                }
            }
            Outcome::Gone => {
                tracing::info!(delay_id = %record.delay_id, "a delegated leave is gone from its server");
                return;
            }
            Outcome::Failed(error) => {
                tracing::warn!(delay_id = %record.delay_id, %error, "a delegated leave could not be restarted in time");
                return;
            }
        }
        let next_restart = Instant::now() + timeout * 8 / 10;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_restart) => break,
                signal = signals.recv() => match signal {
                    Some(Presence::Joined) => {}
                    Some(Presence::Left) => return send(services, record).await,
                    // Replaced by a newer delegation, which keeps the participant now.
                    None => return,
                },
                () = tokio::time::sleep_until(next_check), if !check_every.is_zero() => {
                    next_check = Instant::now() + check_every;
                    if let Ok(false) = livekit.participant_present(&key.0, &key.1).await {
                        tracing::info!(delay_id = %record.delay_id, "the SFU no longer has a participant: its leave is sent");
                        return send(services, record).await;
                    }
                }
            }
        }
    }
}

/// When the event fires on its server unless restarted again.
fn expiry(record: &DelegatedLeave) -> Instant {
    let left = record.restarted_ts.saturating_add(record.timeout_ms).saturating_sub(now_ms());
    Instant::now() + Duration::from_millis(left)
}

/// Sends the event now, tried until its own time (at least a second, at most an hour).
async fn send(services: &Services, record: &DelegatedLeave) {
    let left = expiry(record).saturating_duration_since(Instant::now()).clamp(FIRST_RETRY, MAX_WAIT);
    match act_until(services, record, Action::Send, Instant::now() + left).await {
        Outcome::Done => tracing::info!(delay_id = %record.delay_id, "a delegated leave was sent"),
        Outcome::Gone => tracing::info!(delay_id = %record.delay_id, "a delegated leave was sent or cancelled already"),
        Outcome::Failed(error) => tracing::warn!(delay_id = %record.delay_id, %error, "a delegated leave was not sent"),
    }
}

/// [`act`], retried (1 s, then 1.5 times longer each time) until `deadline`.
async fn act_until(services: &Services, record: &DelegatedLeave, action: Action, deadline: Instant) -> Outcome {
    let mut wait = FIRST_RETRY;
    loop {
        match act(services, record, action).await {
            Outcome::Failed(error) if Instant::now() + wait < deadline => {
                tracing::info!(delay_id = %record.delay_id, action = action.name(), %error, "a delegated leave's action is retried");
                tokio::time::sleep(wait).await;
                wait = next_retry(wait);
            }
            outcome => return outcome,
        }
    }
}

/// Restarts or sends the event: directly when it is ours, else through its server's client API.
async fn act(services: &Services, record: &DelegatedLeave, action: Action) -> Outcome {
    if record.server == services.config.server_name.as_str() {
        let delayed = &services.delayed_events;
        let result = match action {
            Action::Restart => delayed.restart(&record.delay_id).await,
            Action::Send => delayed.send_now(services, &record.delay_id).await,
        };
        return match result {
            Ok(()) => Outcome::Done,
            Err(Error::NotFound(_)) => Outcome::Gone,
            Err(error) => Outcome::Failed(error.to_string()),
        };
    }
    let Some(livekit) = services.livekit.as_ref() else { return Outcome::Gone };
    let base = match livekit.client_api(services, &record.server).await {
        Ok(base) => base,
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    let url = format!("{base}{DELAYED_EVENTS}/{}/{}", record.delay_id, action.name());
    match services.federation.post_client_api(&url, &json!({}), ACTION_TIMEOUT).await {
        Ok(status) if status.is_success() => Outcome::Done,
        Ok(status) if status == http::StatusCode::NOT_FOUND => Outcome::Gone,
        Ok(status) => Outcome::Failed(format!("{url} answered {status}")),
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many rooms a server's users name, we keep at most
    /// [`MAX_DELEGATIONS_PER_SERVER`] delegations for it; replacing one is always allowed, and
    /// another server's users are not shut out.
    #[tokio::test]
    async fn delegations_are_bounded_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a secret of the test").unwrap();
        let mut config = crate::config::Config::default();
        config.database.path = dir.path().join("db");
        config.matrix_rtc.livekit = Some(crate::config::LiveKitConfig {
            url: "ws://127.0.0.1:9".into(),
            key: "key".into(),
            secret_file: secret,
            full_access_servers: vec!["*".into()],
            client_api_urls: [("hostile.example".to_owned(), "http://127.0.0.1:9".to_owned())].into(),
            participant_check_interval_s: 0,
        });
        let services = Services::open(config).unwrap();
        let livekit = services.livekit.as_ref().unwrap();
        let minute = Duration::from_secs(60);
        let hand = |server: &str, room: String| livekit.hand_over(&services, server, &room, "who", "syd_id", minute);
        for n in 0..MAX_DELEGATIONS_PER_SERVER {
            assert!(hand("hostile.example", format!("room{n}")).unwrap(), "delegation {n} kept");
        }
        assert!(!hand("hostile.example", "one more".into()).unwrap(), "the server's share is full");
        assert!(hand("hostile.example", "room0".into()).unwrap(), "a participant's new delegation replaces its old");
        assert!(hand("other.example", "their room".into()).unwrap(), "other servers' users are not shut out");
        let kept = services.db.tables.rtc.roomidentity_delegatedleave.iter().count();
        assert_eq!(kept, MAX_DELEGATIONS_PER_SERVER + 1, "nothing recorded for the refused one");
    }

    #[test]
    fn only_plain_delay_ids_go_into_a_url() {
        assert!(usable_delay_id("hcd_AbC-9._~"));
        assert!(usable_delay_id("syd_0123456789abcdef"));
        for bad in ["", ".", "..", "a/b", "../restart", "a%2F", "a?b", "a#b", "é", &"x".repeat(256)] {
            assert!(!usable_delay_id(bad), "{bad:?}");
        }
    }
}
