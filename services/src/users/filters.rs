//! Stored sync filters (`POST /user/{userId}/filter`).

use std::sync::Arc;

use ruma::UserId;
use serde_json::Value;

use crate::{
    db::{codec::Json, Batch, Database},
    error::Result,
};

pub struct Filters {
    db: Arc<Database>,
}

impl Filters {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Stores the definition and returns its new id (a number from the global counter, never reused).
    pub fn create(&self, user: &UserId, definition: Value) -> Result<String> {
        let mut batch = Batch::new();
        let id = self.db.next_count(&mut batch).to_string();
        self.db.tables.users.useridfilterid_filter.insert(
            &mut batch,
            &(user.to_owned(), id.clone()),
            &Json(definition),
        );
        self.db.commit(batch)?;
        Ok(id)
    }

    pub fn get(&self, user: &UserId, id: &str) -> Result<Option<Value>> {
        Ok(self.db.tables.users.useridfilterid_filter.get(&(user.to_owned(), id.to_owned()))?.map(|Json(v)| v))
    }
}
