//! The history of every pair of nodes: what each node said, round after round, of sending to each
//! of its peers (reachable or not, the lag), kept per minute for a day so that the console can
//! plot when a pair was cut and how long events waited, not only how it is now.
//!
//! A minute is one record holding every pair (`minute_links`): a round adds its observations to
//! the current minute's record, so however short `network.status_interval` is, a day is at most
//! 1,440 records, and pruning is a scan from the oldest minute. Counting every observation (not
//! keeping the last) keeps a cut shorter than a minute visible.

use std::collections::BTreeMap;

use ruma::OwnedServerName;

pub use super::tables::{LinkBucket, LinkSample};
use crate::{
    db::{codec::Be64, codec::Json, Batch},
    error::Result,
    network::status::{StatusDocument, HISTORY_MS},
    services::Services,
};

/// The width of one point of the history.
pub const MINUTE_MS: u64 = 60_000;

/// The start of the minute `ts` falls in.
pub fn minute_of(ts: u64) -> u64 {
    ts - ts % MINUTE_MS
}

/// Adds what `documents` (each a node's latest, fresh from this round) say of their peers to the
/// record of the minute `now` falls in. A node whose document did not come this round adds
/// nothing: what it said before is not news.
pub fn record(services: &Services, now: u64, documents: &[&StatusDocument]) -> Result<()> {
    let table = &services.db.tables.network.minute_links;
    let key = Be64(minute_of(now));
    let mut bucket = table.get(&key)?.map(|Json(bucket)| bucket).unwrap_or_default();
    for document in documents {
        for (peer, info) in &document.peers {
            // A peer never tried is no observation: nothing is kept for it.
            let Some(reachable) = info.reachable else { continue };
            let row = bucket.links.entry(document.server_name.clone()).or_default();
            let sample = row.entry(peer.clone()).or_default();
            if reachable {
                sample.up += 1;
            } else {
                sample.down += 1;
            }
            sample.max_lag_ms = sample.max_lag_ms.max(info.lag_ms);
        }
    }
    let mut batch = Batch::new();
    table.insert(&mut batch, &key, &Json(bucket));
    services.db.commit(batch)?;
    Ok(())
}

/// Drops the minutes that started before `before` (the table is in time order: the scan stops at
/// the first minute kept).
pub fn prune(services: &Services, before: u64) -> Result<()> {
    let table = &services.db.tables.network.minute_links;
    let mut batch = Batch::new();
    for entry in table.iter() {
        let (Be64(minute), _) = entry?;
        if minute >= before {
            break;
        }
        table.remove(&mut batch, &Be64(minute));
    }
    services.db.commit(batch)?;
    Ok(())
}

/// One pair's history: (start of the minute, what was seen), oldest first.
pub type PairHistory = Vec<(u64, LinkSample)>;

/// Every pair's history since `since` (a day at most), by sending node then receiving node.
pub fn history(
    services: &Services,
    since: u64,
) -> Result<BTreeMap<OwnedServerName, BTreeMap<OwnedServerName, PairHistory>>> {
    let since = since.max(crate::time::now_ms().saturating_sub(HISTORY_MS));
    let table = &services.db.tables.network.minute_links;
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedServerName, PairHistory>> = BTreeMap::new();
    let start = Be64(minute_of(since));
    for entry in table.scan_from(Vec::new(), crate::db::codec::Codec::encode(&start), true) {
        let (Be64(minute), Json(bucket)) = entry?;
        for (from, row) in bucket.links {
            for (to, sample) in row {
                out.entry(from.clone()).or_default().entry(to).or_default().push((minute, sample));
            }
        }
    }
    Ok(out)
}

/// The minutes of `history` in which `from` said it could not reach its peer.
pub fn minutes_down(history: &[(u64, LinkSample)]) -> usize {
    history.iter().filter(|(_, s)| s.down > 0).count()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::ServerName;

    use super::*;
    use crate::{
        config::Config,
        network::status::{AccessRulesInfo, FederationInfo, PeerInfo},
    };

    fn services() -> (tempfile::TempDir, Arc<Services>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.database.path = dir.path().join("db");
        (dir, Services::open(config).expect("services"))
    }

    fn server(name: &str) -> OwnedServerName {
        ServerName::parse(name).unwrap()
    }

    fn document(name: &str, peers: &[(&str, Option<bool>, u64)]) -> StatusDocument {
        StatusDocument {
            server_name: server(name),
            generated_ts: 0,
            software: "Hemicycle".into(),
            version: "1".into(),
            uptime_ms: 0,
            healthy: true,
            problems: vec![],
            signing_keys: vec![],
            federation: FederationInfo { enabled: true, allow: None },
            access_rules: AccessRulesInfo { role: "ministry".into(), enabled: false, external_servers: vec![] },
            peers: peers
                .iter()
                .map(|(peer, reachable, lag_ms)| {
                    (server(peer), PeerInfo { reachable: *reachable, lag_ms: *lag_ms, ..PeerInfo::default() })
                })
                .collect(),
            clamd: None,
            smtp: None,
            rooms: BTreeMap::new(),
        }
    }

    /// Rounds within one minute make one record that counts each of them; a cut of a few
    /// seconds stays visible in it, beside the longest lag.
    #[tokio::test]
    async fn rounds_of_one_minute_add_up_in_one_record() {
        let (_dir, services) = services();
        let now = crate::time::now_ms();
        let minute = minute_of(now) - 10 * MINUTE_MS;
        let up = document("a.example", &[("b.example", Some(true), 0), ("c.example", Some(true), 0)]);
        let cut = document("a.example", &[("b.example", Some(false), 4_000), ("c.example", Some(true), 0)]);
        let other = document("b.example", &[("a.example", None, 0)]);
        record(&services, minute + 1_000, &[&up, &other]).unwrap();
        record(&services, minute + 2_000, &[&cut]).unwrap();
        record(&services, minute + 3_000, &[&up]).unwrap();
        record(&services, minute + MINUTE_MS, &[&up]).unwrap();
        let history = history(&services, 0).unwrap();
        let ab = &history[&server("a.example")][&server("b.example")];
        assert_eq!(
            ab,
            &vec![
                (minute, LinkSample { up: 2, down: 1, max_lag_ms: 4_000 }),
                (minute + MINUTE_MS, LinkSample { up: 1, down: 0, max_lag_ms: 0 }),
            ]
        );
        assert_eq!(minutes_down(ab), 1);
        assert_eq!(minutes_down(&history[&server("a.example")][&server("c.example")]), 0);
        // A peer never tried is no observation.
        assert!(!history.contains_key(&server("b.example")), "{history:?}");
        assert_eq!(services.db.tables.network.minute_links.iter().count(), 2);
    }

    /// Minutes older than a day go at the next prune; a day of rounds every second is 1,440
    /// records at most.
    #[tokio::test]
    async fn a_day_is_kept_and_bounded() {
        let (_dir, services) = services();
        let now = crate::time::now_ms();
        let doc = document("a.example", &[("b.example", Some(true), 0)]);
        let start = minute_of(now) - HISTORY_MS - 5 * MINUTE_MS;
        for minute in 0..10 {
            for second in 0..6 {
                record(&services, start + minute * MINUTE_MS + second * 10_000, &[&doc]).unwrap();
            }
        }
        assert_eq!(services.db.tables.network.minute_links.iter().count(), 10, "one record per minute");
        let before = minute_of(now) - HISTORY_MS;
        prune(&services, before).unwrap();
        let kept: Vec<u64> = services.db.tables.network.minute_links.iter().map(|e| e.unwrap().0 .0).collect();
        assert_eq!(kept, (5..10).map(|k| start + k * MINUTE_MS).collect::<Vec<_>>());
        assert!(kept.iter().all(|m| *m >= before), "{kept:?}");
        let history = history(&services, 0).unwrap();
        assert!(history[&server("a.example")][&server("b.example")].iter().all(|(_, s)| s.up == 6));
    }
}
