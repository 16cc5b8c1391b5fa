//! This server's ed25519 signing key: generated at first start, then read back at every start so
//! its key id never changes (remote servers cache it against that id). `rotate` replaces it and
//! keeps the old public key published under `old_verify_keys`, so what it signed still verifies;
//! `rotate_live` does the same in a running server (the console's key rotation).

pub mod tables;

use std::sync::Arc;

use rand::RngExt;
use ruma::{
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair, PublicKeySet, Signature},
    AnyKeyName, CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, OwnedSigningKeyId, ServerName,
    SigningKeyAlgorithm, SigningKeyId,
};

use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

/// The server's Ed25519 key through aws-lc. Every event the server builds is signed, and the
/// pure-Rust implementation behind ruma's key pair took a sixth of a local event's instructions
/// (callgrind, docs/performance.md); aws-lc (already built for rustls) signs with the same key in
/// far fewer. Ed25519 signatures are deterministic: both give the same bytes.
pub struct Signer {
    key: aws_lc_rs::signature::Ed25519KeyPair,
    key_id: OwnedSigningKeyId<AnyKeyName>,
    /// Signatures made so far: tests show that what the server signs most goes through here.
    signed: std::sync::atomic::AtomicU64,
}

impl Signer {
    /// The key of `document` (the PKCS#8 document `keypair` was read from), checked to be the
    /// same key as `keypair`'s.
    fn new(document: &[u8], keypair: &Ed25519KeyPair) -> Result<Self> {
        use aws_lc_rs::signature::KeyPair as _;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(document)
            .map_err(|e| Error::Internal(format!("stored signing key unreadable by aws-lc: {e}")))?;
        if key.public_key().as_ref() != keypair.public_key() {
            return Err(Error::Internal("aws-lc reads another public key from the signing key".into()));
        }
        let key_id = SigningKeyId::from_parts(SigningKeyAlgorithm::Ed25519, keypair.version().into());
        Ok(Self { key, key_id, signed: Default::default() })
    }

    /// Signatures this signer made so far.
    pub fn signatures(&self) -> u64 {
        self.signed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl KeyPair for Signer {
    fn sign(&self, message: &[u8]) -> Signature {
        self.signed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Signature::new(self.key_id.clone(), self.key.sign(message).as_ref().to_vec())
    }
}

/// How long other servers may cache our key document, unless `federation.key_validity` says.
const KEY_VALIDITY_MS: u64 = 24 * 3600 * 1000;

pub struct ServerKeys {
    server_name: OwnedServerName,
    /// The signing key with its fast signer. Signing borrows it for as long as a request is being
    /// built (ruma's `ServerSignaturesInput` holds a reference), so a key replaced at runtime must
    /// outlive every borrow: each key is leaked, which costs a few bytes per rotation, rotations
    /// being rare (a suspected leak, a policy period).
    current: std::sync::RwLock<&'static SigningKey>,
    /// Retired keys: (key id, public key base64, when it was retired).
    old: std::sync::RwLock<Vec<(String, String, u64)>>,
    /// One live rotation at a time.
    rotating: std::sync::Mutex<()>,
    /// The `valid_until_ts` of the key document, from now.
    validity_ms: u64,
}

fn new_keypair() -> Result<(String, Vec<u8>, Ed25519KeyPair)> {
    let document = Ed25519KeyPair::generate();
    // Six random letters and digits, as Synapse names its key versions.
    let mut rng = rand::rng();
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let suffix: String = (0..6).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
    let version = format!("a_{suffix}");
    let keypair = Ed25519KeyPair::from_der(&document, version.clone())
        .map_err(|e| Error::Internal(format!("generated key unreadable: {e}")))?;
    Ok((format!("ed25519:{version}"), document.to_vec(), keypair))
}

fn encode(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(key)
}

/// The retired keys the database keeps.
fn old_keys(db: &Database) -> Result<Vec<(String, String, u64)>> {
    Ok(db
        .tables
        .server_keys
        .serverkeyid_oldkey
        .iter()
        .map(|r| r.map(|(id, Json((key, ts)))| (id, key, ts)))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The signing key and its fast signer.
struct SigningKey {
    keypair: Ed25519KeyPair,
    signer: Signer,
}

/// The signing key the database keeps, if any.
fn stored_key(db: &Database) -> Result<Option<SigningKey>> {
    let Some(entry) = db.tables.server_keys.serverkeyid_keypair.iter().next() else { return Ok(None) };
    let (key_id, document) = entry?;
    let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
    let keypair = Ed25519KeyPair::from_der(&document, version)
        .map_err(|e| Error::Internal(format!("stored signing key unreadable: {e}")))?;
    let signer = Signer::new(&document, &keypair)?;
    Ok(Some(SigningKey { keypair, signer }))
}

impl ServerKeys {
    pub fn load_or_generate(db: &Arc<Database>, server_name: OwnedServerName) -> Result<Self> {
        let old = std::sync::RwLock::new(old_keys(db)?);
        let current = match stored_key(db)? {
            Some(key) => key,
            None => {
                let (key_id, document, keypair) = new_keypair()?;
                let signer = Signer::new(&document, &keypair)?;
                let mut batch = Batch::new();
                db.tables.server_keys.serverkeyid_keypair.insert(&mut batch, &key_id, &document);
                db.commit(batch)?;
                SigningKey { keypair, signer }
            }
        };
        let current = std::sync::RwLock::new(&*Box::leak(Box::new(current)));
        Ok(Self { server_name, current, old, rotating: Default::default(), validity_ms: KEY_VALIDITY_MS })
    }

    /// [`ServerKeys::rotate`] in a running server: the new key signs from the moment this
    /// returns, and the old one is published under `old_verify_keys` at once. Returns the new
    /// key id.
    pub fn rotate_live(&self, db: &Database) -> Result<String> {
        let _guard = self.rotating.lock().expect("key rotation");
        let key_id = Self::rotate(db)?;
        let key = stored_key(db)?.ok_or_else(|| Error::Internal("the rotated key is not stored".into()))?;
        let old = old_keys(db)?;
        *self.old.write().expect("old keys") = old;
        *self.current.write().expect("signing key") = &*Box::leak(Box::new(key));
        Ok(key_id)
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
        format!("ed25519:{}", self.keypair().version())
    }

    /// The current signing key.
    pub fn keypair(&self) -> &'static Ed25519KeyPair {
        &self.current.read().expect("signing key").keypair
    }

    /// The same key as [`ServerKeys::keypair`], faster (see [`Signer`]): for ruma's signing
    /// functions, which take any [`KeyPair`].
    pub fn signer(&self) -> &'static Signer {
        &self.current.read().expect("signing key").signer
    }

    /// The public key, unpadded base64 as federation publishes it.
    pub fn public_key_base64(&self) -> String {
        encode(&self.keypair().public_key())
    }

    /// Our current and retired public keys, for verifying what we signed ourselves.
    pub fn public_key_set(&self) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        set.insert(self.key_id(), Base64::new(self.keypair().public_key().to_vec()));
        for (id, key, _) in self.old.read().expect("old keys").iter() {
            if let Ok(key) = Base64::parse(key) {
                set.insert(id.clone(), key);
            }
        }
        set
    }

    /// Signs a JSON object with this server's key (adds to its `signatures`).
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(self.server_name.as_str(), self.signer(), object)
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))
    }

    /// The key document served at `/_matrix/key/v2/server`, signed.
    pub fn key_document(&self) -> Result<CanonicalJsonObject> {
        // One key for the whole document, even if a rotation lands meanwhile.
        let keypair = self.keypair();
        let mut verify_keys = CanonicalJsonObject::new();
        let mut key = CanonicalJsonObject::new();
        key.insert("key".into(), CanonicalJsonValue::String(encode(&keypair.public_key())));
        verify_keys.insert(format!("ed25519:{}", keypair.version()), CanonicalJsonValue::Object(key));
        let mut old_keys = CanonicalJsonObject::new();
        for (id, public, expired) in self.old.read().expect("old keys").iter() {
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
        ruma::signatures::sign_json(self.server_name.as_str(), keypair, &mut document)
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))?;
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use ruma::signatures::KeyPair;

    use super::{new_keypair, Signer};

    /// The aws-lc signer signs as ruma's key pair does, byte for byte, under the same key id:
    /// what it signs verifies against the key the server publishes.
    #[test]
    fn the_fast_signer_gives_the_same_signatures() {
        let (_, document, keypair) = new_keypair().expect("a key");
        let signer = Signer::new(&document, &keypair).expect("the same key through aws-lc");
        for message in [&b""[..], b"{\"type\":\"m.room.message\"}", &[7u8; 3000][..]] {
            let ours = signer.sign(message);
            let theirs = keypair.sign(message);
            assert_eq!(ours.as_bytes(), theirs.as_bytes(), "same signature");
            assert_eq!(ours.id(), theirs.id(), "same key id");
        }
        let (_, other_document, _) = new_keypair().expect("another key");
        assert!(Signer::new(&other_document, &keypair).is_err(), "a document of another key is refused");
    }
}
