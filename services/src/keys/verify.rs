//! Shape and signature checks for key objects clients upload. Nothing a client sends about keys is
//! stored before these pass, so other clients can rely on what `/keys/query` returns being signed
//! by the key it claims.

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use ruma::{
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
    CanonicalJsonValue, SigningKeyAlgorithm,
};
use serde_json::Value;

use crate::error::{Error, Result};

/// Unpadded base64 as Matrix writes it; padded input is accepted too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `object` carries a valid ed25519 signature by `signer` with key `key_id`
/// (`ed25519:…`), whose public key is `public_key` (base64).
pub fn signed_by(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object.get("signatures").and_then(|s| s.get(signer)).and_then(|s| s.get(key_id)) else {
        return false;
    };
    let (Some(signature), Ok(public_key)) = (signature.as_str(), BASE64.decode(public_key)) else { return false };
    let Ok(signature) = BASE64.decode(signature) else { return false };
    let Ok(CanonicalJsonValue::Object(canonical)) = CanonicalJsonValue::try_from(object.clone()) else {
        return false;
    };
    let Ok(text) = to_canonical_json_string_for_signing(&canonical) else { return false };
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &public_key, &signature, text.as_bytes()).is_ok()
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_param(msg)
}

fn str_field<'a>(object: &'a Value, field: &str, what: &str) -> Result<&'a str> {
    object.get(field).and_then(Value::as_str).ok_or_else(|| invalid(format!("{what}.{field} must be a string")))
}

/// Checks a device's identity keys: they belong to the uploading user and device, name their
/// algorithms, and are signed by the device's own ed25519 key. Returns that key.
pub fn device_keys(user: &str, device: &str, keys: &Value) -> Result<String> {
    if !keys.is_object() {
        return Err(invalid("device_keys must be an object"));
    }
    if str_field(keys, "user_id", "device_keys")? != user {
        return Err(invalid("device_keys.user_id must be the uploading user"));
    }
    if str_field(keys, "device_id", "device_keys")? != device {
        return Err(invalid("device_keys.device_id must be the uploading device"));
    }
    let algorithms = keys.get("algorithms").and_then(Value::as_array);
    if !algorithms.is_some_and(|a| a.iter().all(Value::is_string)) {
        return Err(invalid("device_keys.algorithms must be a list of strings"));
    }
    let map =
        keys.get("keys").and_then(Value::as_object).ok_or_else(|| invalid("device_keys.keys must be an object"))?;
    for (id, value) in map {
        if !id.contains(':') || !value.is_string() {
            return Err(invalid(format!("device_keys.keys.{id} must be an `algorithm:id` key with a string value")));
        }
    }
    let key_id = format!("ed25519:{device}");
    let ed25519 = map
        .get(&key_id)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("device_keys.keys must contain {key_id}")))?;
    if !signed_by(keys, user, &key_id, ed25519) {
        return Err(invalid("device_keys must be signed by the device's ed25519 key"));
    }
    Ok(ed25519.to_owned())
}

/// Checks a one-time or fallback key: an unsigned key is a plain string; a signed key is an
/// object with `key`, signed by the device.
pub fn one_time_key(user: &str, device: &str, key_id: &str, key: &Value, device_ed25519: Option<&str>) -> Result<()> {
    match key {
        Value::String(_) => Ok(()),
        Value::Object(object) => {
            if !object.get("key").is_some_and(Value::is_string) {
                return Err(invalid(format!("key {key_id} must have a string `key`")));
            }
            let ed25519 =
                device_ed25519.ok_or_else(|| invalid("signed one-time keys need the device's keys uploaded first"))?;
            if !signed_by(key, user, &format!("ed25519:{device}"), ed25519) {
                return Err(invalid(format!("key {key_id} is not signed by the device")));
            }
            Ok(())
        }
        _ => Err(invalid(format!("key {key_id} must be a string or an object"))),
    }
}

/// Checks a cross-signing key's shape for `usage`; returns its public key (base64).
pub fn cross_signing_key(user: &str, usage: &str, key: &Value) -> Result<String> {
    let what = format!("{usage}_key");
    if !key.is_object() {
        return Err(invalid(format!("{what} must be an object")));
    }
    if str_field(key, "user_id", &what)? != user {
        return Err(invalid(format!("{what}.user_id must be the uploading user")));
    }
    let usages = key.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage))) {
        return Err(invalid(format!("{what}.usage must contain {usage:?}")));
    }
    let map =
        key.get("keys").and_then(Value::as_object).ok_or_else(|| invalid(format!("{what}.keys must be an object")))?;
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((id, Value::String(public))), None) if id.strip_prefix("ed25519:") == Some(public.as_str()) => {
            Ok(public.clone())
        }
        _ => Err(invalid(format!("{what}.keys must hold exactly one `ed25519:<key>` entry naming its own key"))),
    }
}

/// The object without `signatures` and `unsigned`: what a signature covers, for comparing two
/// copies of the same key.
pub fn signed_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    copy
}

/// Adds `signer`'s signature `key_id` from `from` into `into`.
pub fn copy_signature(into: &mut Value, from: &Value, signer: &str, key_id: &str) {
    let Some(signature) = from.get("signatures").and_then(|s| s.get(signer)).and_then(|s| s.get(key_id)) else {
        return;
    };
    if !into.get("signatures").is_some_and(Value::is_object) {
        into["signatures"] = serde_json::json!({});
    }
    if !into["signatures"].get(signer).is_some_and(Value::is_object) {
        into["signatures"][signer] = serde_json::json!({});
    }
    into["signatures"][signer][key_id] = signature.clone();
}
