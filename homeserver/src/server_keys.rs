//! This server's ed25519 signing key: generated at first start, then read back at every start so
//! its key id never changes (remote servers cache it against that id).

use std::sync::Arc;

use ruma::signatures::Ed25519KeyPair;

use crate::{
    db::{Batch, Database},
    error::{Error, Result},
};

pub struct ServerKeys {
    keypair: Ed25519KeyPair,
}

impl ServerKeys {
    pub fn load_or_generate(db: &Arc<Database>) -> Result<Self> {
        let table = &db.tables.serverkeyid_keypair;
        if let Some(entry) = table.iter().next() {
            let (key_id, document) = entry?;
            let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
            let keypair = Ed25519KeyPair::from_der(&document, version)
                .map_err(|e| Error::Internal(format!("stored signing key unreadable: {e}")))?;
            return Ok(Self { keypair });
        }
        let document = Ed25519KeyPair::generate();
        let version = format!("a_{}", &crate::users::random_password()[..6]);
        let keypair = Ed25519KeyPair::from_der(&document, version.clone())
            .map_err(|e| Error::Internal(format!("generated key unreadable: {e}")))?;
        let mut batch = Batch::new();
        table.insert(&mut batch, &format!("ed25519:{version}"), &document);
        db.commit(batch)?;
        Ok(Self { keypair })
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
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.keypair.public_key())
    }
}
