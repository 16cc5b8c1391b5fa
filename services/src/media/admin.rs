//! What admins do to media: list an uploader's files, quarantine (kept, served to nobody),
//! delete by id or by age and size, purge the cache of other servers' media. A stored file is
//! removed from disk once no media id or thumbnail refers to it any more (`sha256_refcount`);
//! the database change is committed first, so a crash can leave an unreferenced file behind,
//! never a record without its file.

use ruma::{OwnedServerName, ServerName, UserId};

use super::{Media, MediaRecord};
use crate::{
    db::{
        codec::{Be64, Json},
        Batch,
    },
    error::{Error, Result},
};

impl Media {
    /// Every media id `user` uploaded, oldest first.
    pub fn uploaded_by(&self, user: &UserId) -> Result<Vec<(String, MediaRecord)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.media.mediaid_meta.scan_prefix(crate::db::codec::prefix(&self.server_name)) {
            let ((_, media_id), Json(record)) = entry?;
            if record.uploader.as_deref() == Some(user) {
                out.push((media_id, record));
            }
        }
        out.sort_by_key(|(_, r)| r.created_ts);
        Ok(out)
    }

    /// Every uploaded local media with its uploader.
    pub fn local_records(&self) -> Result<Vec<(ruma::OwnedUserId, MediaRecord)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.media.mediaid_meta.scan_prefix(crate::db::codec::prefix(&self.server_name)) {
            let (_, Json(record)) = entry?;
            if let (Some(uploader), Some(_)) = (record.uploader.clone(), &record.file) {
                out.push((uploader, record));
            }
        }
        Ok(out)
    }

    pub fn record(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self.db.tables.media.mediaid_meta.get(&(server.to_owned(), media_id.to_owned()))?.map(|Json(r)| r))
    }

    /// Protects a media id from bulk quarantines and deletions by age, or lifts that; `false`
    /// when it is unknown.
    pub fn set_protected(&self, server: &ServerName, media_id: &str, protected: bool) -> Result<bool> {
        let _guard = self.lock();
        let key = (server.to_owned(), media_id.to_owned());
        let Some(Json(mut record)) = self.db.tables.media.mediaid_meta.get(&key)? else { return Ok(false) };
        record.safe_from_quarantine = protected;
        let mut batch = Batch::new();
        self.db.tables.media.mediaid_meta.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// Quarantines (`Some(admin)`) or releases (`None`) a media id; `false` when it is unknown.
    pub fn set_quarantine(&self, server: &ServerName, media_id: &str, by: Option<String>) -> Result<bool> {
        let _guard = self.lock();
        let key = (server.to_owned(), media_id.to_owned());
        let Some(Json(mut record)) = self.db.tables.media.mediaid_meta.get(&key)? else { return Ok(false) };
        record.quarantined_by = by;
        let mut batch = Batch::new();
        self.db.tables.media.mediaid_meta.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// Deletes media ids; answers those that existed.
    pub async fn delete(&self, ids: &[(OwnedServerName, String)]) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        let mut unreferenced = Vec::new();
        {
            let _guard = self.lock();
            let tables = &self.db.tables;
            let mut batch = Batch::new();
            let mut counts: std::collections::HashMap<String, u64> = Default::default();
            for key in ids {
                let Some(Json(record)) = tables.media.mediaid_meta.get(key)? else { continue };
                tables.media.mediaid_meta.remove(&mut batch, key);
                deleted.push(key.1.clone());
                let Some(file) = record.file else { continue };
                let count = match counts.get(&file.sha256) {
                    Some(c) => *c,
                    None => tables.media.sha256_refcount.get(&file.sha256)?.map_or(0, |c| c.0),
                };
                let left = count.saturating_sub(1);
                counts.insert(file.sha256.clone(), left);
                if left == 0 {
                    tables.media.sha256_refcount.remove(&mut batch, &file.sha256);
                    unreferenced.push(file.sha256);
                } else {
                    tables.media.sha256_refcount.insert(&mut batch, &file.sha256, &Be64(left));
                }
            }
            self.db.commit(batch)?;
        }
        for sha256 in unreferenced {
            if let Err(error) = tokio::fs::remove_file(self.store.path_of(&sha256)).await {
                tracing::warn!(%sha256, %error, "deleted media's file could not be removed");
            }
        }
        Ok(deleted)
    }

    /// Local media created before `before_ts` and larger than `size_gt` bytes (ids only).
    pub fn local_before(&self, before_ts: u64, size_gt: u64) -> Result<Vec<(OwnedServerName, String)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.media.mediaid_meta.scan_prefix(crate::db::codec::prefix(&self.server_name)) {
            let (key, Json(record)) = entry?;
            if record.created_ts < before_ts
                && !record.safe_from_quarantine
                && record.file.as_ref().is_some_and(|f| f.size > size_gt)
            {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// Cached media of other servers fetched before `before_ts` (they are fetched again on demand).
    pub fn remote_before(&self, before_ts: u64) -> Result<Vec<(OwnedServerName, String)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.media.mediaid_meta.iter() {
            let (key, Json(record)) = entry?;
            if key.0 != self.server_name && record.created_ts < before_ts {
                out.push(key);
            }
        }
        Ok(out)
    }

    pub fn is_local(&self, server: &ServerName) -> bool {
        server == self.server_name
    }

    /// Refuses an unknown media id (`404 M_NOT_FOUND`).
    pub fn known(&self, server: &ServerName, media_id: &str) -> Result<MediaRecord> {
        self.record(server, media_id)?.ok_or_else(|| Error::not_found("media not found"))
    }
}
