//! Per-user account data, global or scoped to a room.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
};

/// Types the server manages through their own endpoints; clients may not write them here.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

pub struct AccountData {
    db: Arc<Database>,
}

fn key(user: &UserId, room: Option<&RoomId>, kind: &str) -> (ruma::OwnedUserId, String, String) {
    (user.to_owned(), room.map(|r| r.to_string()).unwrap_or_default(), kind.to_owned())
}

impl AccountData {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    pub fn get(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Option<Value>> {
        Ok(self.db.tables.useridroomidtype_accountdata.get(&key(user, room, kind))?.map(|Json(v)| v))
    }

    /// Stores a client's account data; content must be a JSON object.
    pub fn set(&self, user: &UserId, room: Option<&RoomId>, kind: &str, content: Value) -> Result<()> {
        if SERVER_MANAGED.contains(&kind) {
            return Err(Error::BadJson(format!("{kind} is managed by the server through its own API")));
        }
        if !content.is_object() {
            return Err(Error::BadJson("account data content must be a JSON object".into()));
        }
        let mut batch = Batch::new();
        self.db.tables.useridroomidtype_accountdata.insert(&mut batch, &key(user, room, kind), &Json(content));
        self.db.commit(batch)?;
        Ok(())
    }
}
