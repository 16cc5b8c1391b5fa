//! Server-side key backup (`/room_keys`): encrypted room keys a user's devices store so a new
//! device can read old history. The server only keeps opaque session data, the version's
//! algorithm and auth data, and an etag that changes whenever the keys do.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedRoomId, UserId};
use serde_json::Value;

pub use super::tables::BackupVersion;
use crate::{
    db::{
        codec::{prefix, prefix2, Json},
        Batch, Database,
    },
    error::{Error, Result},
};

/// A version's description as the API returns it.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    pub version: String,
    pub algorithm: Value,
    pub count: u64,
    pub etag: String,
}

/// Which keys a read or delete covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

pub struct Backups {
    db: Arc<Database>,
    /// Serializes writes so etags and the keep-the-better-key rule see every earlier write.
    lock: tokio::sync::Mutex<()>,
}

type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Value>>;

/// Checks `{ "algorithm": string, "auth_data": object }` and returns both parts.
fn algorithm_parts(algorithm: &Value) -> Result<(String, Value)> {
    let name = algorithm
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_param("algorithm must be a string"))?;
    let auth_data = algorithm
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| Error::invalid_param("auth_data must be an object"))?;
    Ok((name.to_owned(), auth_data.clone()))
}

/// Checks a backed-up session's shape (the fields the replacement rule reads, and session_data).
fn check_key_data(data: &Value) -> Result<(bool, u64, u64)> {
    let first = data.get("first_message_index").and_then(Value::as_u64);
    let forwarded = data.get("forwarded_count").and_then(Value::as_u64);
    let verified = data.get("is_verified").and_then(Value::as_bool);
    match (verified, first, forwarded, data.get("session_data").is_some_and(Value::is_object)) {
        (Some(v), Some(f), Some(c), true) => Ok((v, f, c)),
        _ => Err(Error::invalid_param(
            "key data needs is_verified, first_message_index, forwarded_count and a session_data object",
        )),
    }
}

/// The spec's rule: a verified key beats an unverified one, then a lower first message index
/// (it decrypts more), then fewer forwards.
fn better(new: (bool, u64, u64), old: (bool, u64, u64)) -> bool {
    if new.0 != old.0 {
        return new.0;
    }
    if new.1 != old.1 {
        return new.1 < old.1;
    }
    new.2 < old.2
}

impl Backups {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db, lock: tokio::sync::Mutex::new(()) }
    }

    fn versions(&self, user: &UserId) -> Result<Vec<(u64, BackupVersion)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.keys.useridversion_backup.scan_prefix(prefix(&user.to_owned())) {
            let ((_, version), Json(record)) = entry?;
            if let Ok(n) = version.parse() {
                out.push((n, record));
            }
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    fn version(&self, user: &UserId, version: &str) -> Result<BackupVersion> {
        let missing = || Error::not_found(format!("unknown backup version {version}"));
        self.db
            .tables
            .keys
            .useridversion_backup
            .get(&(user.to_owned(), version.to_owned()))?
            .map(|Json(v)| v)
            .ok_or_else(missing)
    }

    fn current(&self, user: &UserId) -> Result<Option<(String, BackupVersion)>> {
        Ok(self.versions(user)?.pop().map(|(n, v)| (n.to_string(), v)))
    }

    fn key_prefix(user: &UserId, version: &str) -> Vec<u8> {
        prefix2(&user.to_owned(), &version.to_owned())
    }

    /// The key prefix a scope covers (a session's prefix may also match longer session ids).
    fn scope_prefix(user: &UserId, version: &str, scope: Scope<'_>) -> Vec<u8> {
        let mut p = Self::key_prefix(user, version);
        match scope {
            Scope::All => {}
            Scope::Room(room) => p.extend(prefix(&room.to_owned())),
            Scope::Session(room, session) => {
                p.extend(prefix(&room.to_owned()));
                p.extend(session.as_bytes());
            }
        }
        p
    }

    /// Commits a change of a version's keys with its etag bumped; returns the etag and count.
    fn finish(
        &self,
        user: &UserId,
        version: &str,
        mut record: BackupVersion,
        mut batch: Batch,
        changed: bool,
    ) -> Result<(String, u64)> {
        if changed {
            record.etag += 1;
            self.db.tables.keys.useridversion_backup.insert(
                &mut batch,
                &(user.to_owned(), version.to_owned()),
                &Json(record.clone()),
            );
            self.db.commit(batch)?;
        }
        Ok((record.etag.to_string(), self.count(user, version)?))
    }

    fn count(&self, user: &UserId, version: &str) -> Result<u64> {
        let mut n = 0;
        for entry in self.db.tables.keys.useridversionroomsession_roomkey.scan_prefix(Self::key_prefix(user, version)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    fn info(&self, user: &UserId, version: String, record: BackupVersion) -> Result<BackupInfo> {
        Ok(BackupInfo {
            count: self.count(user, &version)?,
            etag: record.etag.to_string(),
            algorithm: serde_json::json!({ "algorithm": record.algorithm, "auth_data": record.auth_data }),
            version,
        })
    }

    /// Creates a new version, which becomes the current one. Versions are never reused.
    pub async fn create(&self, user: &UserId, algorithm: &Value) -> Result<String> {
        let (algorithm, auth_data) = algorithm_parts(algorithm)?;
        let _guard = self.lock.lock().await;
        let mut batch = Batch::new();
        let version = self.db.next_count(&mut batch).to_string();
        let record = BackupVersion { algorithm, auth_data, etag: 0 };
        self.db.tables.keys.useridversion_backup.insert(&mut batch, &(user.to_owned(), version.clone()), &Json(record));
        self.db.commit(batch)?;
        Ok(version)
    }

    /// The current version, or a given one.
    pub fn get(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        match version {
            Some(v) => {
                let record = self.version(user, v)?;
                self.info(user, v.to_owned(), record)
            }
            None => {
                let (v, record) = self.current(user)?.ok_or_else(|| Error::not_found("no current backup version"))?;
                self.info(user, v, record)
            }
        }
    }

    /// Replaces a version's auth data; the algorithm cannot change.
    pub async fn update(&self, user: &UserId, version: &str, algorithm: &Value) -> Result<()> {
        let (name, auth_data) = algorithm_parts(algorithm)?;
        if algorithm.get("version").is_some_and(|v| v.as_str() != Some(version)) {
            return Err(Error::invalid_param("the version in the body does not match the path"));
        }
        let _guard = self.lock.lock().await;
        let mut record = self.version(user, version)?;
        if record.algorithm != name {
            return Err(Error::invalid_param("a backup version's algorithm cannot change"));
        }
        record.auth_data = auth_data;
        let mut batch = Batch::new();
        self.db.tables.keys.useridversion_backup.insert(
            &mut batch,
            &(user.to_owned(), version.to_owned()),
            &Json(record),
        );
        Ok(self.db.commit(batch)?)
    }

    /// Deletes a version and every key in it.
    pub async fn delete_version(&self, user: &UserId, version: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.version(user, version)?;
        let mut batch = Batch::new();
        for entry in self.db.tables.keys.useridversionroomsession_roomkey.scan_prefix(Self::key_prefix(user, version)) {
            self.db.tables.keys.useridversionroomsession_roomkey.remove(&mut batch, &entry?.0);
        }
        self.db.tables.keys.useridversion_backup.remove(&mut batch, &(user.to_owned(), version.to_owned()));
        Ok(self.db.commit(batch)?)
    }

    /// Stores keys into the current version, keeping whichever copy of a session is better.
    /// Returns the version's new etag and key count.
    pub async fn put_keys(&self, user: &UserId, version: &str, keys: RoomKeys) -> Result<(String, u64)> {
        let mut checked = Vec::new();
        for (room, sessions) in keys {
            for (session, data) in sessions {
                let rank = check_key_data(&data)?;
                checked.push((room.clone(), session, data, rank));
            }
        }
        let _guard = self.lock.lock().await;
        let record = self.version(user, version)?;
        let current = self.current(user)?.map(|(v, _)| v);
        if current.as_deref() != Some(version) {
            return Err(Error::WrongRoomKeysVersion {
                message: format!("backup version {version} is not the current one"),
                current,
            });
        }
        let table = &self.db.tables.keys.useridversionroomsession_roomkey;
        let mut batch = Batch::new();
        let mut changed = false;
        for (room, session, data, rank) in checked {
            let key = (user.to_owned(), version.to_owned(), room.to_string(), session);
            if let Some(Json(old)) = table.get(&key)? {
                if check_key_data(&old).is_ok_and(|old_rank| !better(rank, old_rank)) {
                    continue;
                }
            }
            table.insert(&mut batch, &key, &Json(data));
            changed = true;
        }
        self.finish(user, version, record, batch, changed)
    }

    /// Reads keys of a version (any existing version, not only the current one).
    pub fn get_keys(&self, user: &UserId, version: &str, scope: Scope<'_>) -> Result<RoomKeys> {
        self.version(user, version)?;
        match scope {
            Scope::All | Scope::Room(_) => {}
            Scope::Session(room, session) => {
                let key = (user.to_owned(), version.to_owned(), room.to_owned(), session.to_owned());
                let Some(Json(data)) = self.db.tables.keys.useridversionroomsession_roomkey.get(&key)? else {
                    return Err(Error::not_found("no backed-up key for this session"));
                };
                let room = OwnedRoomId::try_from(room).map_err(|_| Error::invalid_param("invalid room id"))?;
                return Ok(BTreeMap::from([(room, BTreeMap::from([(session.to_owned(), data)]))]));
            }
        }
        let mut out: RoomKeys = BTreeMap::new();
        for entry in
            self.db.tables.keys.useridversionroomsession_roomkey.scan_prefix(Self::scope_prefix(user, version, scope))
        {
            let ((_, _, room, session), Json(data)) = entry?;
            if let Ok(room) = OwnedRoomId::try_from(room) {
                out.entry(room).or_default().insert(session, data);
            }
        }
        Ok(out)
    }

    /// Deletes keys of a version; returns its new etag and count.
    pub async fn delete_keys(&self, user: &UserId, version: &str, scope: Scope<'_>) -> Result<(String, u64)> {
        let _guard = self.lock.lock().await;
        let record = self.version(user, version)?;
        let table = &self.db.tables.keys.useridversionroomsession_roomkey;
        let mut batch = Batch::new();
        let mut changed = false;
        for entry in table.scan_prefix(Self::scope_prefix(user, version, scope)) {
            let (key, _) = entry?;
            if matches!(scope, Scope::Session(_, s) if key.3 != s) {
                continue;
            }
            table.remove(&mut batch, &key);
            changed = true;
        }
        self.finish(user, version, record, batch, changed)
    }
}
