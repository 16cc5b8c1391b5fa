//! The cryptography of the content scanner API: end-to-end encrypted attachments (the spec's
//! `EncryptedFile`: AES-256-CTR, the key as a JWK, the SHA-256 of the ciphertext), decrypted on
//! their way to clamd; and the request bodies clients encrypt to the scanner's Curve25519 key
//! (`encrypted_body`, vodozemac's PK encryption, as matrix-content-scanner takes them).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use aes::Aes256;
use base64::{
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
    Engine,
};
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// What is wrong with a request's `file` object: the API's `400 MCS_MALFORMED_JSON`.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// An attachment's key and initial counter.
#[derive(Clone)]
pub struct AttachmentKey {
    key: [u8; 32],
    iv: [u8; 16],
}

/// An encrypted attachment as a message names it.
#[derive(Clone)]
pub struct EncryptedFile {
    /// `mxc://server/media_id`
    pub url: String,
    pub key: AttachmentKey,
    /// SHA-256 of the ciphertext, as the sender computed it.
    pub ciphertext_sha256: [u8; 32],
}

/// Base64 as clients write it: padded or not.
fn unpadded(value: &str) -> &str {
    value.trim_end_matches('=')
}

impl EncryptedFile {
    /// Reads and checks the `file` object of a scan request, as the reference scanner's schema
    /// does: `v` is `v2`, the key an `A256CTR` `oct` JWK usable for encrypting and decrypting.
    pub fn from_json(file: &Value) -> Result<Self, Malformed> {
        let bad = |what: &str| Malformed(what.to_owned());
        let text = |value: &Value, name: &str| -> Result<String, Malformed> {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("'{name}' is a required string")))
        };
        if !file.is_object() {
            return Err(bad("'file' is a required object"));
        }
        if file.get("v").and_then(Value::as_str) != Some("v2") {
            return Err(bad("'v' must be \"v2\""));
        }
        let url = text(file, "url")?;
        if !url.starts_with("mxc://") {
            return Err(bad("'url' must be an mxc:// URI"));
        }
        let iv = text(file, "iv")?;
        let hash =
            file.get("hashes").map(|h| text(h, "sha256")).transpose()?.ok_or_else(|| bad("'hashes' is required"))?;
        let jwk = file.get("key").filter(|k| k.is_object()).ok_or_else(|| bad("'key' is a required object"))?;
        if jwk.get("alg").and_then(Value::as_str) != Some("A256CTR") {
            return Err(bad("'key.alg' must be \"A256CTR\""));
        }
        if jwk.get("kty").and_then(Value::as_str) != Some("oct") {
            return Err(bad("'key.kty' must be \"oct\""));
        }
        if jwk.get("ext").and_then(Value::as_bool) != Some(true) {
            return Err(bad("'key.ext' must be true"));
        }
        let ops: Vec<&str> = jwk
            .get("key_ops")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("'key.key_ops' is a required array"))?
            .iter()
            .map(|op| op.as_str().ok_or_else(|| bad("'key.key_ops' holds strings")))
            .collect::<Result<_, _>>()?;
        if !(ops.contains(&"encrypt") && ops.contains(&"decrypt")) {
            return Err(bad("key_ops must contain at least \"encrypt\" and \"decrypt\""));
        }
        let k = text(jwk, "k")?;
        let key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(unpadded(&k))
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("'key.k' must be 32 bytes of unpadded base64url"))?;
        let iv: [u8; 16] = STANDARD_NO_PAD
            .decode(unpadded(&iv))
            .ok()
            .and_then(|iv| iv.try_into().ok())
            .ok_or_else(|| bad("'iv' must be 16 bytes of base64"))?;
        let ciphertext_sha256: [u8; 32] = STANDARD_NO_PAD
            .decode(unpadded(&hash))
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("'hashes.sha256' must be a base64 SHA-256"))?;
        Ok(Self { url, key: AttachmentKey { key, iv }, ciphertext_sha256 })
    }

    /// `server/media_id` of its URL.
    pub fn media_path(&self) -> Option<(&str, &str)> {
        self.url
            .strip_prefix("mxc://")?
            .split_once('/')
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
    }

    /// Whether the stored ciphertext (by its hex SHA-256) is the one the sender encrypted.
    pub fn matches(&self, stored_sha256_hex: &str) -> bool {
        hex(&self.ciphertext_sha256) == stored_sha256_hex
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AttachmentKey {
    fn cipher(&self) -> Aes256Ctr {
        Aes256Ctr::new(&self.key.into(), &self.iv.into())
    }

    /// Reads `source` decrypted.
    pub fn decrypting<R: AsyncRead + Unpin>(&self, source: R) -> Decrypting<R> {
        Decrypting { source, cipher: self.cipher() }
    }

    /// The hex SHA-256 of the decrypted contents of a file (read on a blocking thread).
    pub async fn plaintext_sha256(&self, path: std::path::PathBuf) -> std::io::Result<String> {
        let mut cipher = self.cipher();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::open(path)?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                cipher.apply_keystream(&mut buffer[..n]);
                hasher.update(&buffer[..n]);
            }
            Ok(hex(&hasher.finalize()))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// An [`AsyncRead`] that decrypts what it reads (AES-CTR: every byte as it comes).
pub struct Decrypting<R> {
    source: R,
    cipher: Aes256Ctr,
}

impl<R: AsyncRead + Unpin> AsyncRead for Decrypting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.source).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.cipher.apply_keystream(&mut buf.filled_mut()[before..]);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The scanner's Curve25519 key pair, for `encrypted_body`.
pub struct BodyDecryption {
    inner: vodozemac::pk_encryption::PkDecryption,
}

impl BodyDecryption {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = vodozemac::Curve25519SecretKey::from_slice(&secret);
        Self { inner: vodozemac::pk_encryption::PkDecryption::from_key(secret) }
    }

    /// A new random secret, to be stored.
    pub fn new_secret() -> [u8; 32] {
        let mut secret = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        secret
    }

    /// Unpadded base64, as `GET …/public_key` answers it.
    pub fn public_key(&self) -> String {
        self.inner.public_key().to_base64()
    }

    /// Decrypts an `encrypted_body` into the JSON it carries.
    pub fn decrypt(&self, encrypted: &Value) -> Result<Value, String> {
        let field =
            |name: &str| encrypted.get(name).and_then(Value::as_str).ok_or_else(|| format!("'{name}' is missing"));
        let message =
            vodozemac::pk_encryption::Message::from_base64(field("ciphertext")?, field("mac")?, field("ephemeral")?)
                .map_err(|e| e.to_string())?;
        let plaintext = self.inner.decrypt(&message).map_err(|e| e.to_string())?;
        serde_json::from_slice(&plaintext).map_err(|e| format!("the decrypted body is not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file() -> Value {
        json!({
            "v": "v2",
            "key": { "alg": "A256CTR", "ext": true, "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA",
                     "key_ops": ["encrypt", "decrypt"], "kty": "oct" },
            "iv": "X85+XgHN+HEAAAAAAAAAAA",
            "hashes": { "sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c" },
            "url": "mxc://matrix.org/oSTbuSlyZKXvgtbtUsPxRbto"
        })
    }

    #[test]
    fn file_objects_are_checked_as_the_reference_scanner_checks_them() {
        let parsed = EncryptedFile::from_json(&file()).unwrap();
        assert_eq!(parsed.media_path(), Some(("matrix.org", "oSTbuSlyZKXvgtbtUsPxRbto")));
        for (pointer, value) in [
            ("/v", json!("v1")),
            ("/key/alg", json!("A128CTR")),
            ("/key/ext", json!(false)),
            ("/key/key_ops", json!(["decrypt"])),
            ("/key/k", json!("short")),
            ("/iv", json!("!!")),
            ("/hashes/sha256", json!(3)),
        ] {
            let mut bad = file();
            *bad.pointer_mut(pointer).unwrap() = value;
            assert!(EncryptedFile::from_json(&bad).is_err(), "{pointer} accepted");
        }
    }
}
