//! Presence (online, unavailable, offline, with a status message), on the stream so changes wake
//! syncs and survive restarts. Only changes are written: a client that keeps saying "online"
//! costs a read, not a write.

use std::sync::Arc;

use ruma::UserId;

pub use super::tables::PresenceRecord;
use crate::{
    db::{
        codec::{Be64, Json},
        Database,
    },
    error::{Error, Result},
    stream::{wait_durable, Audience, Cleanup, Writer},
    time::now_ms,
};

/// Online users without activity this long become `unavailable` (idle).
pub const IDLE_AFTER_MS: u64 = 5 * 60_000;
/// Users without activity this long become `offline` (their clients stopped syncing).
pub const OFFLINE_AFTER_MS: u64 = 30 * 60_000;

pub struct Presence {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// Users not `offline`, with their last activity: what the idle timer looks at, so it never
    /// scans every user ever seen.
    active: std::sync::Mutex<std::collections::HashMap<ruma::OwnedUserId, u64>>,
}

pub const STATES: &[&str] = &["online", "unavailable", "offline"];

impl Presence {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self { db, writer, active: Default::default() }
    }

    /// Users whose presence changed at a position in `(since, until]`.
    pub fn changed_between(&self, since: u64, until: u64) -> Result<Vec<ruma::OwnedUserId>> {
        let mut out = Vec::new();
        let start = crate::db::codec::Codec::encode(&Be64(since.saturating_add(1)));
        for entry in self.db.tables.ephemeral.pos_presence.scan_from(Vec::new(), start, true) {
            let (Be64(pos), user) = entry?;
            if pos > until {
                break;
            }
            out.push(user);
        }
        Ok(out)
    }

    /// Loads the users who were not offline when the server last stopped (start-up).
    pub fn load_active(&self) -> Result<()> {
        let mut active = self.active.lock().expect("active users");
        for entry in self.db.tables.ephemeral.userid_presence.iter() {
            let (user, Json(record)) = entry?;
            if record.presence != "offline" {
                active.insert(user, record.last_active_ts);
            }
        }
        Ok(())
    }

    /// The idle timer: online users inactive for [`IDLE_AFTER_MS`] become `unavailable`, anyone
    /// inactive for [`OFFLINE_AFTER_MS`] `offline`. Run it every minute or so.
    pub async fn expire(&self, now: u64) -> Result<usize> {
        let candidates: Vec<(ruma::OwnedUserId, u64)> =
            self.active.lock().expect("active users").iter().map(|(u, t)| (u.clone(), *t)).collect();
        let mut changed = 0;
        for (user, last_active) in candidates {
            let Some(record) = self.get(&user)? else { continue };
            let idle = now.saturating_sub(last_active);
            let next = if idle >= OFFLINE_AFTER_MS {
                "offline"
            } else if idle >= IDLE_AFTER_MS && record.presence == "online" {
                "unavailable"
            } else {
                continue;
            };
            let wake = Audience::SharedWith(user.clone());
            self.write(&user, next, record.status_msg.clone(), record.last_active_ts, Some(record.pos), wake).await?;
            changed += 1;
        }
        Ok(changed)
    }

    pub fn get(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        Ok(self.db.tables.ephemeral.userid_presence.get(&user.to_owned())?.map(|Json(p)| p))
    }

    /// Sets a user's presence; `status_msg` `None` keeps the current message. True when it
    /// changed (not a mere refresh of the activity time), so others are told.
    pub async fn set(&self, user: &UserId, presence: &str, status_msg: Option<Option<String>>) -> Result<bool> {
        if !STATES.contains(&presence) {
            return Err(Error::invalid_param(format!("unknown presence state {presence}")));
        }
        let previous = self.get(user)?;
        let status_msg = match status_msg {
            Some(msg) => msg,
            None => previous.as_ref().and_then(|p| p.status_msg.clone()),
        };
        let unchanged = previous.as_ref().is_some_and(|p| p.presence == presence && p.status_msg == status_msg);
        if unchanged && presence != "online" {
            return Ok(false);
        }
        // Staying online only refreshes the activity time now and then, without waking anyone.
        if unchanged && previous.as_ref().is_some_and(|p| now_ms().saturating_sub(p.last_active_ts) < 60_000) {
            return Ok(false);
        }
        // A refresh of the activity time wakes nobody (and so scans no room's members on the
        // writer thread): others see it with their next sync, as the position moved.
        let wake = if unchanged { Audience::Nobody } else { Audience::SharedWith(user.to_owned()) };
        self.write(user, presence, status_msg, now_ms(), previous.map(|p| p.pos), wake).await?;
        Ok(!unchanged)
    }

    async fn write(
        &self,
        user: &UserId,
        presence: &str,
        status_msg: Option<String>,
        last_active_ts: u64,
        old_pos: Option<u64>,
        wake: Audience,
    ) -> Result<()> {
        // Who shares a room with the user is worked out here, not on the writer thread.
        let wake = wake.resolved(&self.db, &self.writer.notifier);
        let tables = &self.db.tables;
        let durable = self.writer.submit(&self.db, |batch, pos| {
            if let Some(old) = old_pos {
                tables.ephemeral.pos_presence.remove(batch, &Be64(old));
            }
            tables.ephemeral.pos_presence.insert(batch, &Be64(pos), &user.to_owned());
            let record =
                PresenceRecord { presence: presence.to_owned(), status_msg: status_msg.clone(), last_active_ts, pos };
            tables.ephemeral.userid_presence.insert(batch, &user.to_owned(), &Json(record));
            Ok(Cleanup { wake, ..Default::default() })
        })?;
        wait_durable(durable).await?;
        let mut active = self.active.lock().expect("active users");
        if presence == "offline" {
            active.remove(user);
        } else {
            active.insert(user.to_owned(), last_active_ts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inactive_users_become_unavailable_then_offline() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let presence = Presence::new(db.clone(), Arc::new(Writer::start(db, Arc::new(std::sync::Mutex::new(())))));
        let user = ruma::OwnedUserId::try_from("@alice:localhost").unwrap();
        presence.set(&user, "online", Some(Some("at work".into()))).await.unwrap();
        let since = presence.get(&user).unwrap().unwrap().last_active_ts;

        assert_eq!(presence.expire(since + IDLE_AFTER_MS - 1).await.unwrap(), 0, "still active");
        assert_eq!(presence.expire(since + IDLE_AFTER_MS).await.unwrap(), 1);
        let idle = presence.get(&user).unwrap().unwrap();
        assert_eq!((idle.presence.as_str(), idle.status_msg.as_deref()), ("unavailable", Some("at work")));
        assert_eq!(idle.last_active_ts, since, "going idle is not activity");

        assert_eq!(presence.expire(since + OFFLINE_AFTER_MS).await.unwrap(), 1);
        assert_eq!(presence.get(&user).unwrap().unwrap().presence, "offline");
        assert_eq!(presence.expire(since + 10 * OFFLINE_AFTER_MS).await.unwrap(), 0, "offline users are not looked at");

        presence.set(&user, "online", None).await.unwrap();
        assert_eq!(presence.get(&user).unwrap().unwrap().presence, "online", "activity brings them back");
    }
}
