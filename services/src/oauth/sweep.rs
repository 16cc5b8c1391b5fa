//! Forgetting what expired: authorization codes, device authorization requests, sign-ins that
//! never came back from their upstream provider, sessions of the account pages — and client
//! registrations nobody ever signed in with. Every one of these is refused once expired whether
//! or not its row is still there; the sweep only keeps the tables from growing with them (any
//! visitor can register clients and start sign-ins).
//!
//! A timer pass every few minutes, each reading a bounded number of rows per table and going on
//! where the previous pass stopped, so a large table costs several passes, never a long one.

use std::{sync::Arc, time::Duration};

use hemicycle_core::db::{codec::Codec, Table};

use super::{normalize_user_code, Oauth};
use crate::{
    db::{codec::Json, Batch},
    error::Result,
    services::Services,
    time::now_ms,
};

/// How often a pass runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How many rows of each table one pass reads at most.
pub const SWEEP_ROWS: usize = 1000;
/// How long a client registration may wait for its first sign-in: clients register just before
/// signing in, so one unused for a week was abandoned (or made by someone filling the table).
pub const UNUSED_CLIENT_MS: u64 = 7 * 24 * 3600 * 1000;

/// What one pass forgot, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub codes: usize,
    pub device_requests: usize,
    pub upstream: usize,
    pub pages: usize,
    pub clients: usize,
}

impl Swept {
    fn total(&self) -> usize {
        self.codes + self.device_requests + self.upstream + self.pages + self.clients
    }
}

/// Reads at most `limit` rows of `table` after `cursor` and answers those `over` says are over;
/// the cursor moves past what was read, back to the start once the table's end is reached.
fn walk<K: Codec, V: Codec>(
    table: &Table<K, V>,
    cursor: &mut Vec<u8>,
    limit: usize,
    over: impl Fn(&V) -> bool,
) -> Result<Vec<(K, V)>> {
    let mut found = Vec::new();
    let mut read = 0;
    for entry in table.scan_from(Vec::new(), cursor.clone(), true).take(limit) {
        let (key, value) = entry?;
        read += 1;
        // The smallest key after this one.
        *cursor = key.encode();
        cursor.push(0);
        if over(&value) {
            found.push((key, value));
        }
    }
    if read < limit {
        cursor.clear();
    }
    Ok(found)
}

impl Oauth {
    /// One pass at time `now` (ms), reading at most `limit` rows per table.
    pub async fn sweep(&self, now: u64, limit: usize) -> Result<Swept> {
        // Under the lock the token endpoint takes, so a client is never forgotten while its first
        // session is being opened.
        let _exchange = self.exchange.lock().await;
        let tables = &self.db.tables.oauth;
        let mut cursors = self.sweep.lock().expect("sweep cursors");
        let mut batch = Batch::new();
        let mut swept = Swept::default();
        for (hash, _) in walk(&tables.codehash_code, &mut cursors.codes, limit, |Json(c)| now >= c.expires_ms)? {
            tables.codehash_code.remove(&mut batch, &hash);
            swept.codes += 1;
        }
        let requests =
            walk(&tables.devicecodehash_request, &mut cursors.device_requests, limit, |Json(r)| now >= r.expires_ms)?;
        for (hash, Json(request)) in requests {
            tables.devicecodehash_request.remove(&mut batch, &hash);
            let user_code = normalize_user_code(&request.user_code);
            if tables.usercode_devicecodehash.get(&user_code)?.as_ref() == Some(&hash) {
                tables.usercode_devicecodehash.remove(&mut batch, &user_code);
            }
            swept.device_requests += 1;
        }
        for (hash, _) in walk(&tables.statehash_upstream, &mut cursors.upstream, limit, |Json(s)| now >= s.expires_ms)?
        {
            tables.statehash_upstream.remove(&mut batch, &hash);
            swept.upstream += 1;
        }
        for (hash, _) in walk(&tables.pagetokenhash_session, &mut cursors.pages, limit, |Json(s)| now >= s.expires_ms)?
        {
            tables.pagetokenhash_session.remove(&mut batch, &hash);
            swept.pages += 1;
        }
        let unused = |Json(c): &Json<super::Client>| !c.used && now >= c.created_ts.saturating_add(UNUSED_CLIENT_MS);
        for (client_id, _) in walk(&tables.clientid_client, &mut cursors.clients, limit, unused)? {
            tables.clientid_client.remove(&mut batch, &client_id);
            swept.clients += 1;
        }
        drop(cursors);
        if swept.total() > 0 {
            self.db.commit(batch)?;
        }
        Ok(swept)
    }
}

/// Starts the timer: a pass now, then every [`SWEEP_EVERY`].
pub fn start(services: Arc<Services>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match services.oauth.sweep(now_ms(), SWEEP_ROWS).await {
                Ok(swept) if swept.total() > 0 => tracing::debug!(?swept, "expired OAuth rows forgotten"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "the OAuth sweep failed; the next pass tries again"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_user_id};

    use super::*;
    use crate::{
        config::OauthConfig,
        db::Database,
        oauth::{
            tables::{Origin, UpstreamSession},
            AuthorizationRequest, RedirectTarget,
        },
        users::token_hash,
    };

    fn oauth() -> (tempfile::TempDir, Arc<Database>, Oauth) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let oauth = Oauth::new(db.clone(), OauthConfig { enabled: true, ..OauthConfig::default() });
        (dir, db, oauth)
    }

    fn register(oauth: &Oauth) -> String {
        let metadata = serde_json::json!({
            "application_type": "native",
            "client_uri": "https://app.example/",
            "redirect_uris": ["http://127.0.0.1/cb"],
            "grant_types": ["authorization_code", "refresh_token", super::super::DEVICE_GRANT],
        });
        oauth.register(&metadata).unwrap().0
    }

    /// Fills every table the sweep reads with one row of each kind; answers the codes, hashed.
    fn fill(oauth: &Oauth, db: &Database, client_id: &str) -> Vec<u8> {
        let request = AuthorizationRequest {
            client_id: client_id.to_owned(),
            client: oauth.client(client_id).unwrap().unwrap(),
            target: RedirectTarget { redirect_uri: "http://127.0.0.1/cb".into(), fragment: false, state: None },
            scope: vec![],
            device_id: owned_device_id!("DEV"),
            code_challenge: "c".repeat(43),
            login_hint: None,
        };
        let code = oauth.issue_code(&request, &owned_user_id!("@a:x")).unwrap();
        let scope = "urn:matrix:client:api:* urn:matrix:client:device:TV";
        oauth.request_device_code(client_id, scope).unwrap();
        oauth
            .record_page_session("page-token", &owned_user_id!("@a:x"), &owned_device_id!("PAGE"), now_ms() + 1000)
            .unwrap();
        let session = UpstreamSession {
            provider: "p".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            expires_ms: now_ms() + 1000,
            origin: Origin::Account { return_query: String::new() },
        };
        let mut batch = Batch::new();
        db.tables.oauth.statehash_upstream.insert(&mut batch, &token_hash("state"), &Json(session));
        db.commit(batch).unwrap();
        token_hash(&code)
    }

    fn rows(db: &Database) -> [usize; 6] {
        let t = &db.tables.oauth;
        [
            t.codehash_code.iter().count(),
            t.devicecodehash_request.iter().count(),
            t.usercode_devicecodehash.iter().count(),
            t.statehash_upstream.iter().count(),
            t.pagetokenhash_session.iter().count(),
            t.clientid_client.iter().count(),
        ]
    }

    #[tokio::test]
    async fn expired_rows_and_unused_clients_are_forgotten_live_ones_kept() {
        let (_dir, db, oauth) = oauth();
        let client_id = register(&oauth);
        fill(&oauth, &db, &client_id);
        assert_eq!(oauth.sweep(now_ms(), SWEEP_ROWS).await.unwrap(), Swept::default(), "nothing is over yet");
        assert_eq!(rows(&db), [1, 1, 1, 1, 1, 1]);

        // An hour later every code and sign-in is over; the client is still young.
        let hour = now_ms() + 3600 * 1000;
        let swept = oauth.sweep(hour, SWEEP_ROWS).await.unwrap();
        assert_eq!(swept, Swept { codes: 1, device_requests: 1, upstream: 1, pages: 1, clients: 0 });
        assert_eq!(rows(&db), [0, 0, 0, 0, 0, 1]);
        assert!(oauth.device_request("anything").unwrap().is_none());

        // A week on, the registration nobody signed in with goes; one that was used stays.
        let used = register(&oauth);
        let mut client = oauth.client(&used).unwrap().unwrap();
        client.used = true;
        let mut batch = Batch::new();
        db.tables.oauth.clientid_client.insert(&mut batch, &used, &Json(client));
        db.commit(batch).unwrap();
        let later = now_ms() + UNUSED_CLIENT_MS + 1000;
        assert_eq!(oauth.sweep(later, SWEEP_ROWS).await.unwrap().clients, 1);
        assert!(oauth.client(&client_id).unwrap().is_none());
        assert!(oauth.client(&used).unwrap().is_some());
    }

    #[tokio::test]
    async fn each_pass_reads_a_bounded_number_of_rows_and_the_next_goes_on() {
        let (_dir, db, oauth) = oauth();
        let client_id = register(&oauth);
        for _ in 0..5 {
            fill(&oauth, &db, &client_id);
        }
        let later = now_ms() + 3600 * 1000;
        let mut passes = 0;
        while rows(&db)[0] > 0 {
            let swept = oauth.sweep(later, 2).await.unwrap();
            assert!(swept.codes <= 2, "{swept:?}");
            passes += 1;
            assert!(passes <= 5, "the walk goes on where it stopped");
        }
        assert!(passes >= 3, "five codes, two rows a pass: {passes}");
    }
}
