//! Registration tokens an admin hands out (`/_synapse/admin/v1/registration_tokens`): each may
//! be used `uses_allowed` times (unlimited when unset) until `expiry_time`. A use is counted when
//! the `m.login.registration_token` stage passes (check and count under one lock, so two
//! registrations cannot share a last use); the name was checked free before the stage, so a
//! counted use nearly always ends in an account.

use std::sync::{Arc, Mutex};

use rand::RngExt;

pub use super::tables::RegistrationToken;
use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

impl RegistrationToken {
    pub fn is_valid(&self, now: u64) -> bool {
        self.uses_allowed.is_none_or(|allowed| self.completed < allowed) && self.expiry_time.is_none_or(|t| now < t)
    }
}

/// The characters Synapse allows in a token.
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

pub struct RegistrationTokens {
    db: Arc<Database>,
    /// Serializes every read-modify-write of a token.
    lock: Mutex<()>,
}

impl RegistrationTokens {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db, lock: Mutex::new(()) }
    }

    pub fn get(&self, token: &str) -> Result<Option<RegistrationToken>> {
        Ok(self.db.tables.users.token_registrationtoken.get(&token.to_owned())?.map(|Json(t)| t))
    }

    /// Every token, by name; with `valid`, only the valid (or only the invalid) ones.
    pub fn list(&self, valid: Option<bool>) -> Result<Vec<(String, RegistrationToken)>> {
        let now = now_ms();
        let mut out = Vec::new();
        for entry in self.db.tables.users.token_registrationtoken.iter() {
            let (token, Json(record)) = entry?;
            if valid.is_none_or(|v| v == record.is_valid(now)) {
                out.push((token, record));
            }
        }
        Ok(out)
    }

    /// Whether any token exists (registration then accepts tokens even when closed).
    pub fn any(&self) -> Result<bool> {
        Ok(self.db.tables.users.token_registrationtoken.iter().next().transpose()?.is_some())
    }

    /// Creates a token: the given one, or a random one of `length` characters (16 by default).
    pub fn create(
        &self,
        token: Option<String>,
        length: Option<u64>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<(String, RegistrationToken)> {
        let token = match token {
            Some(token) if valid_token(&token) => token,
            Some(_) => {
                return Err(Error::invalid_param("a token is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'"))
            }
            None => {
                let length = length.unwrap_or(16);
                if !(1..=64).contains(&length) {
                    return Err(Error::invalid_param("length must be between 1 and 64"));
                }
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
                let mut rng = rand::rng();
                (0..length).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
            }
        };
        if expiry_time.is_some_and(|t| t <= now_ms()) {
            return Err(Error::invalid_param("expiry_time is in the past"));
        }
        let _guard = self.lock.lock().expect("token lock");
        if self.get(&token)?.is_some() {
            return Err(Error::invalid_param(format!("the token {token} already exists")));
        }
        let record = RegistrationToken { uses_allowed, completed: 0, expiry_time };
        self.write(&token, &record)?;
        Ok((token, record))
    }

    /// Changes `uses_allowed` and/or `expiry_time` (`Some(None)`: unlimited / never).
    pub fn update(
        &self,
        token: &str,
        uses_allowed: Option<Option<u64>>,
        expiry_time: Option<Option<u64>>,
    ) -> Result<RegistrationToken> {
        let _guard = self.lock.lock().expect("token lock");
        let mut record = self.get(token)?.ok_or_else(|| Error::not_found("No such registration token"))?;
        if let Some(uses) = uses_allowed {
            record.uses_allowed = uses;
        }
        if let Some(expiry) = expiry_time {
            record.expiry_time = expiry;
        }
        self.write(token, &record)?;
        Ok(record)
    }

    pub fn delete(&self, token: &str) -> Result<()> {
        let _guard = self.lock.lock().expect("token lock");
        if self.get(token)?.is_none() {
            return Err(Error::not_found("No such registration token"));
        }
        let mut batch = Batch::new();
        self.db.tables.users.token_registrationtoken.remove(&mut batch, &token.to_owned());
        self.db.commit(batch)?;
        Ok(())
    }

    /// Whether the token may be used now (the validity endpoint).
    pub fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(self.get(token)?.is_some_and(|t| t.is_valid(now_ms())))
    }

    /// Counts one use if the token is valid; `false` (nothing counted) otherwise.
    pub fn take_use(&self, token: &str) -> Result<bool> {
        let _guard = self.lock.lock().expect("token lock");
        let Some(mut record) = self.get(token)? else { return Ok(false) };
        if !record.is_valid(now_ms()) {
            return Ok(false);
        }
        record.completed += 1;
        self.write(token, &record)?;
        Ok(true)
    }

    fn write(&self, token: &str, record: &RegistrationToken) -> Result<()> {
        let mut batch = Batch::new();
        self.db.tables.users.token_registrationtoken.insert(&mut batch, &token.to_owned(), &Json(record.clone()));
        Ok(self.db.commit(batch)?)
    }
}
