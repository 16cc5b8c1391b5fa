//! Per-user account data, global or scoped to a room.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::Value;

pub use super::tables::AccountDataRecord;
use crate::{
    db::{
        codec::{prefix, Be64, Codec, Json},
        Database,
    },
    error::{Error, Result},
    stream::{wait_durable, Audience, Cleanup, Writer},
};

/// Types the server manages through their own endpoints; clients may not write them here.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

pub struct AccountData {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// Told when a user sets `im.vector.hide_profile`: hiding leaves the discovery room.
    discovery: Option<Arc<super::discovery::state::Discovery>>,
}

fn key(user: &UserId, room: Option<&RoomId>, kind: &str) -> (ruma::OwnedUserId, String, String) {
    (user.to_owned(), room.map(|r| r.to_string()).unwrap_or_default(), kind.to_owned())
}

impl AccountData {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self { db, writer, discovery: None }
    }

    /// Tells the discovery room's task when a user hides or shows themselves.
    pub fn with_discovery(mut self, discovery: Arc<super::discovery::state::Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    pub fn get(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Option<Value>> {
        Ok(self.db.tables.users.useridroomidtype_accountdata.get(&key(user, room, kind))?.map(|Json(r)| r.content))
    }

    /// Every entry of the user changed after `since` (all when `None`): (room or "", type, content).
    pub fn changes(&self, user: &UserId, since: Option<u64>) -> Result<Vec<(String, String, Value)>> {
        let mut out = Vec::new();
        let start = (user.to_owned(), Be64(since.map_or(0, |s| s + 1))).encode();
        for entry in self.db.tables.users.useridpos_accountdata.scan_from(prefix(&user.to_owned()), start, true) {
            let ((_, Be64(pos)), Json((room, kind))) = entry?;
            // An entry changed again later is reported at its latest position only.
            if let Some(Json(record)) =
                self.db.tables.users.useridroomidtype_accountdata.get(&(user.to_owned(), room.clone(), kind.clone()))?
            {
                if record.pos == pos {
                    out.push((room, kind, record.content));
                }
            }
        }
        Ok(out)
    }

    /// Stores a client's account data (content must be a JSON object) as a change on the stream,
    /// so sync reports it; returns once it is durable.
    pub async fn set(&self, user: &UserId, room: Option<&RoomId>, kind: &str, content: Value) -> Result<()> {
        if SERVER_MANAGED.contains(&kind) {
            return Err(Error::ServerManaged(format!("{kind} is managed by the server through its own API")));
        }
        self.set_managed(user, room, kind, content).await?;
        if room.is_none() && kind == super::discovery::state::HIDE_PROFILE {
            if let Some(discovery) = &self.discovery {
                discovery.touch(user);
            }
        }
        Ok(())
    }

    /// Stores account data the server manages itself (`m.fully_read`, `m.push_rules`).
    pub async fn set_managed(&self, user: &UserId, room: Option<&RoomId>, kind: &str, content: Value) -> Result<()> {
        let durable = self.queue(user, room, kind, content)?;
        wait_durable(durable).await
    }

    fn queue(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>> {
        if !content.is_object() {
            return Err(Error::BadJson("account data content must be a JSON object".into()));
        }
        let key = key(user, room, kind);
        let previous = self.db.tables.users.useridroomidtype_accountdata.get(&key)?.map(|Json(r)| r.pos);
        let tables = &self.db.tables;
        let durable = self.writer.submit(&self.db, |batch, pos| {
            if let Some(old) = previous {
                tables.users.useridpos_accountdata.remove(batch, &(user.to_owned(), Be64(old)));
            }
            tables.users.useridpos_accountdata.insert(
                batch,
                &(user.to_owned(), Be64(pos)),
                &Json((key.1.clone(), key.2.clone())),
            );
            tables.users.useridroomidtype_accountdata.insert(batch, &key, &Json(AccountDataRecord { content, pos }));
            Ok(Cleanup { wake: Audience::User(user.to_owned()), ..Default::default() })
        })?;
        Ok(durable)
    }
}
