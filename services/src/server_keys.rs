//! This server's ed25519 signing key: generated at first start, then read back at every start so
//! its key id never changes (remote servers cache it against that id). `rotate` replaces it and
//! keeps the old public key published under `old_verify_keys`, so what it signed still verifies.

pub mod tables;

use std::sync::Arc;

use ruma::{
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeySet},
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
};

use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

/// How long other servers may cache our key document, unless `federation.key_validity` says.
const KEY_VALIDITY_MS: u64 = 24 * 3600 * 1000;

pub struct ServerKeys {
    server_name: OwnedServerName,
    keypair: Ed25519KeyPair,
    /// Retired keys: (key id, public key base64, when it was retired).
    old: Vec<(String, String, u64)>,
    /// The `valid_until_ts` of the key document, from now.
    validity_ms: u64,
}

fn new_keypair() -> Result<(String, Vec<u8>, Ed25519KeyPair)> {
    let document = Ed25519KeyPair::generate();
    let version = format!("a_{}", &crate::users::random_password()[..6]);
    let keypair = Ed25519KeyPair::from_der(&document, version.clone())
        .map_err(|e| Error::Internal(format!("generated key unreadable: {e}")))?;
    Ok((format!("ed25519:{version}"), document.to_vec(), keypair))
}

fn encode(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(key)
}

impl ServerKeys {
    pub fn load_or_generate(db: &Arc<Database>, server_name: OwnedServerName) -> Result<Self> {
        let table = &db.tables.server_keys.serverkeyid_keypair;
        let old = db
            .tables
            .server_keys
            .serverkeyid_oldkey
            .iter()
            .map(|r| r.map(|(id, Json((key, ts)))| (id, key, ts)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(entry) = table.iter().next() {
            let (key_id, document) = entry?;
            let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
            let keypair = Ed25519KeyPair::from_der(&document, version)
                .map_err(|e| Error::Internal(format!("stored signing key unreadable: {e}")))?;
            return Ok(Self { server_name, keypair, old, validity_ms: KEY_VALIDITY_MS });
        }
        let (key_id, document, keypair) = new_keypair()?;
        let mut batch = Batch::new();
        table.insert(&mut batch, &key_id, &document);
        db.commit(batch)?;
        Ok(Self { server_name, keypair, old, validity_ms: KEY_VALIDITY_MS })
    }

    /// The same keys, published as valid for `ms` from each moment the document is made.
    pub fn with_validity(mut self, ms: u64) -> Self {
        self.validity_ms = ms;
        self
    }

    /// Replaces the signing key (offline: the server reads its key at start). The old public key
    /// moves to `old_verify_keys` in the same write. Returns the new key id.
    pub fn rotate(db: &Database) -> Result<String> {
        let table = &db.tables.server_keys.serverkeyid_keypair;
        let mut batch = Batch::new();
        for entry in table.iter() {
            let (key_id, document) = entry?;
            let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
            let keypair = Ed25519KeyPair::from_der(&document, version)
                .map_err(|e| Error::Internal(format!("stored signing key unreadable: {e}")))?;
            db.tables.server_keys.serverkeyid_oldkey.insert(
                &mut batch,
                &key_id,
                &Json((encode(&keypair.public_key()), now_ms())),
            );
            table.remove(&mut batch, &key_id);
        }
        let (key_id, document, _) = new_keypair()?;
        table.insert(&mut batch, &key_id, &document);
        db.commit(batch)?;
        Ok(key_id)
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.keypair.version())
    }

    pub fn keypair(&self) -> &Ed25519KeyPair {
        &self.keypair
    }

    /// The public key, unpadded base64 as federation publishes it.
    pub fn public_key_base64(&self) -> String {
        encode(&self.keypair.public_key())
    }

    /// Our current and retired public keys, for verifying what we signed ourselves.
    pub fn public_key_set(&self) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        set.insert(self.key_id(), Base64::new(self.keypair.public_key().to_vec()));
        for (id, key, _) in &self.old {
            if let Ok(key) = Base64::parse(key) {
                set.insert(id.clone(), key);
            }
        }
        set
    }

    /// Signs a JSON object with this server's key (adds to its `signatures`).
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(self.server_name.as_str(), &self.keypair, object)
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))
    }

    /// The key document served at `/_matrix/key/v2/server`, signed.
    pub fn key_document(&self) -> Result<CanonicalJsonObject> {
        let mut verify_keys = CanonicalJsonObject::new();
        let mut key = CanonicalJsonObject::new();
        key.insert("key".into(), CanonicalJsonValue::String(self.public_key_base64()));
        verify_keys.insert(self.key_id(), CanonicalJsonValue::Object(key));
        let mut old_keys = CanonicalJsonObject::new();
        for (id, public, expired) in &self.old {
            let mut key = CanonicalJsonObject::new();
            key.insert("key".into(), CanonicalJsonValue::String(public.clone()));
            key.insert(
                "expired_ts".into(),
                CanonicalJsonValue::Integer((*expired as i64).try_into().unwrap_or_default()),
            );
            old_keys.insert(id.clone(), CanonicalJsonValue::Object(key));
        }
        let mut document = CanonicalJsonObject::new();
        document.insert("server_name".into(), CanonicalJsonValue::String(self.server_name.to_string()));
        document.insert("verify_keys".into(), CanonicalJsonValue::Object(verify_keys));
        document.insert("old_verify_keys".into(), CanonicalJsonValue::Object(old_keys));
        let until = (now_ms() + self.validity_ms) as i64;
        document.insert("valid_until_ts".into(), CanonicalJsonValue::Integer(until.try_into().unwrap_or_default()));
        self.sign_json(&mut document)?;
        Ok(document)
    }
}
