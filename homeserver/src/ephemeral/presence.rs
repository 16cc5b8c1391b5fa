//! Presence (online, unavailable, offline, with a status message), on the stream so changes wake
//! syncs and survive restarts. Only changes are written: a client that keeps saying "online"
//! costs a read, not a write.

use std::sync::Arc;

use ruma::UserId;
use serde::{Deserialize, Serialize};

use crate::{
    db::{
        codec::{Be64, Json},
        Database,
    },
    error::{Error, Result},
    stream::{wait_durable, Audience, Cleanup, Writer},
    users::now_ms,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    pub pos: u64,
}

pub struct Presence {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

pub const STATES: &[&str] = &["online", "unavailable", "offline"];

impl Presence {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self { db, writer }
    }

    pub fn get(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        Ok(self.db.tables.userid_presence.get(&user.to_owned())?.map(|Json(p)| p))
    }

    /// Sets a user's presence; `status_msg` `None` keeps the current message.
    pub async fn set(&self, user: &UserId, presence: &str, status_msg: Option<Option<String>>) -> Result<()> {
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
            return Ok(());
        }
        // Staying online only refreshes the activity time now and then, without waking anyone.
        if unchanged && previous.as_ref().is_some_and(|p| now_ms().saturating_sub(p.last_active_ts) < 60_000) {
            return Ok(());
        }
        let tables = &self.db.tables;
        let old_pos = previous.map(|p| p.pos);
        let durable = self.writer.submit(&self.db, |batch, pos| {
            if let Some(old) = old_pos {
                tables.pos_presence.remove(batch, &Be64(old));
            }
            tables.pos_presence.insert(batch, &Be64(pos), &user.to_owned());
            let record = PresenceRecord {
                presence: presence.to_owned(),
                status_msg: status_msg.clone(),
                last_active_ts: now_ms(),
                pos,
            };
            tables.userid_presence.insert(batch, &user.to_owned(), &Json(record));
            Ok(Cleanup { wake: Audience::SharedWith(user.to_owned()), ..Default::default() })
        })?;
        wait_durable(durable).await
    }
}
