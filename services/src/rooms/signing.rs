//! A PDU's content hash, signatures and reference hash, each computed over one serialization.
//!
//! ruma's functions each copy and serialize the event again: building one (content hash,
//! signature, reference hash) made five copies and five serializations of it, and checking a
//! received one (reference hash, signatures, content hash) as many. Yet the signature and the
//! reference hash are computed over the very same bytes — the event redacted under its room
//! version's rules, without `signatures` and `unsigned` — and the content hash over the event
//! without `hashes`, `signatures` and `unsigned`, which for an event being built is what was
//! serialized to measure it. Here each is serialized once; the results are byte for byte ruma's
//! (the tests compare them). Signatures are verified through aws-lc, as the server signs (see
//! `server_keys::Signer`): ed25519-dalek's verification behind ruma's was the largest single
//! cost of a received PDU. Both check the same equation on the same encodings (cofactorless,
//! the scalar canonical, R compared as encoded), so they accept the same signatures.

use std::collections::BTreeSet;

use base64::Engine;
use ruma::{
    canonical_json::redact,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    serde::{base64::Standard, Base64},
    signatures::{KeyPair, PublicKeyMap, Verified},
    AnyKeyName, CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, SigningKeyId,
};
use serde::ser::{Serialize, SerializeMap, Serializer};
use sha2::{Digest, Sha256};

/// ruma's limit on the canonical JSON a hash is computed over (one byte under the spec's
/// [`super::MAX_PDU_BYTES`]): an event beyond it cannot be hashed there, nor here.
const HASHED_MAX: usize = 65_535;

/// `object` as canonical JSON, leaving out the top-level keys `skip`, without copying it. A
/// canonical object is a sorted map, so this is what serializing a copy without them gives.
pub fn canonical_without(object: &CanonicalJsonObject, skip: &[&str]) -> Vec<u8> {
    struct Without<'a>(&'a CanonicalJsonObject, &'a [&'a str]);
    impl Serialize for Without<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            for (key, value) in self.0.iter().filter(|(k, _)| !self.1.contains(&k.as_str())) {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }
    serde_json::to_vec(&Without(object, skip)).expect("canonical JSON serializes")
}

/// What an event's signatures and reference hash cover: the event redacted under the room
/// version's rules, without `signatures` and `unsigned`, as canonical JSON.
pub fn signed_bytes(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<Vec<u8>, String> {
    let unsigned: CanonicalJsonObject = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "signatures" | "unsigned"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let redacted = redact(unsigned, &rules.redaction, None).map_err(|e| e.to_string())?;
    Ok(canonical_without(&redacted, &[]))
}

/// The event id of room versions 3 and later from [`signed_bytes`]: `$` and the reference hash
/// (standard base64 for room version 3, URL-safe after), `None` for the versions whose events
/// carry their id. Fails as ruma's `reference_hash` does when the bytes exceed its limit.
pub fn reference_id(signed: &[u8], rules: &RoomVersionRules) -> Result<Option<String>, String> {
    if signed.len() > HASHED_MAX {
        return Err("the PDU is too large to be hashed".into());
    }
    let hash = Sha256::digest(signed);
    let encoded = match rules.event_id_format {
        EventIdFormatVersion::V1 => return Ok(None),
        EventIdFormatVersion::V2 => base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash),
        _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
    };
    Ok(Some(format!("${encoded}")))
}

/// Adds the content hash to an event being built (which has no hashes, signatures or
/// `unsigned` yet), as ruma's `hash_and_sign_event` does before it signs. `unsigned_json` is the
/// event serialized as it is, which is what the content hash covers. Returns [`signed_bytes`] of
/// the hashed event: its reference hash (the event id) and, once signed, its signatures cover
/// them, and neither changes with the signatures, so signing can wait (see `Rooms::build`).
pub fn hash(
    object: &mut CanonicalJsonObject,
    unsigned_json: &[u8],
    rules: &RoomVersionRules,
) -> Result<Vec<u8>, String> {
    if ["hashes", "signatures", "unsigned"].iter().any(|k| object.contains_key(*k)) {
        return Err("an event being built has no hashes, signatures or unsigned data yet".into());
    }
    if unsigned_json.len() > HASHED_MAX {
        return Err("the PDU is too large to be hashed".into());
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&Sha256::digest(unsigned_json));
    let hash = Base64::<Standard, [u8; 32]>::new(digest);
    let mut hashes = CanonicalJsonObject::new();
    hashes.insert("sha256".into(), CanonicalJsonValue::String(hash.encode()));
    object.insert("hashes".into(), CanonicalJsonValue::Object(hashes));
    signed_bytes(object, rules)
}

/// Adds `server`'s signature of `signed` (the event's [`signed_bytes`]) to an event that has
/// no signature yet.
pub fn sign(server: &str, key: &impl KeyPair, object: &mut CanonicalJsonObject, signed: &[u8]) {
    let signature = key.sign(signed);
    let mut by_key = CanonicalJsonObject::new();
    by_key.insert(signature.id(), CanonicalJsonValue::String(signature.base64()));
    let mut signatures = CanonicalJsonObject::new();
    signatures.insert(server.to_owned(), CanonicalJsonValue::Object(by_key));
    object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
}

/// Checks a received event as ruma's `verify_event` does — a signature of each of `servers`
/// with a key of `keys` over [`signed_bytes`] (`signed`), then the content hash — from the bytes
/// computed once. `Verified::Signatures` when the signatures hold but the content hash does not
/// (the event is then kept redacted).
pub fn check_event(
    keys: &PublicKeyMap,
    object: &CanonicalJsonObject,
    signed: &[u8],
    servers: &BTreeSet<OwnedServerName>,
) -> Result<Verified, String> {
    let claimed = match object.get("hashes") {
        Some(CanonicalJsonValue::Object(hashes)) => match hashes.get("sha256") {
            Some(CanonicalJsonValue::String(hash)) => hash,
            _ => return Err("the event has no hashes.sha256 string".into()),
        },
        _ => return Err("the event has no hashes object".into()),
    };
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
        return Err("the event has no signatures object".into());
    };
    for server in servers {
        check_server_signature(keys, signatures, server.as_str(), signed)?;
    }
    let content = canonical_without(object, &["hashes", "signatures", "unsigned"]);
    if content.len() > HASHED_MAX {
        return Err("the PDU is too large to be hashed".into());
    }
    let computed = Sha256::digest(&content);
    Ok(match Base64::<Standard>::parse(claimed) {
        Ok(hash) if hash.as_bytes() == computed.as_slice() => Verified::All,
        _ => Verified::Signatures,
    })
}

/// At least one signature of `server` made with a key of `keys` it has, and every such one
/// good; signatures with keys not in `keys` or of unknown algorithms are passed over (the
/// spec's "checking for a signature", as ruma implements it).
fn check_server_signature(
    keys: &PublicKeyMap,
    signatures: &CanonicalJsonObject,
    server: &str,
    signed: &[u8],
) -> Result<(), String> {
    let by_key = match signatures.get(server) {
        Some(CanonicalJsonValue::Object(by_key)) => by_key,
        Some(_) => return Err(format!("signatures.{server} is not an object")),
        None => return Err(format!("no signature of {server}")),
    };
    let public_keys = keys.get(server).ok_or_else(|| format!("no public keys of {server}"))?;
    let mut checked = false;
    for (key_id, signature) in by_key {
        let Some(public_key) = public_keys.get(key_id) else { continue };
        let Ok(parsed) = <&SigningKeyId<AnyKeyName>>::try_from(key_id.as_str()) else { continue };
        if !matches!(parsed.algorithm(), ruma::SigningKeyAlgorithm::Ed25519) {
            continue;
        }
        let CanonicalJsonValue::String(signature) = signature else {
            return Err(format!("signatures.{server}.{key_id} is not a string"));
        };
        let signature = Base64::<Standard>::parse(signature)
            .map_err(|e| format!("signatures.{server}.{key_id} is not base64: {e}"))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key.as_bytes())
            .verify(signed, signature.as_bytes())
            .map_err(|_| format!("the signature {key_id} of {server} does not verify"))?;
        checked = true;
    }
    if !checked {
        return Err(format!("no signature of {server} with a key we know"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{
        serde::Base64,
        signatures::{Ed25519KeyPair, PublicKeyMap, Verified},
        CanonicalJsonObject, CanonicalJsonValue, RoomVersionId,
    };
    use serde_json::json;

    use super::{check_event, hash, reference_id, sign, signed_bytes};

    fn key() -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&document, "k1".into()).expect("the key")
    }

    fn event(version: &RoomVersionId, kind: &str, content: serde_json::Value) -> CanonicalJsonObject {
        let mut value = json!({
            "type": kind,
            "sender": "@alice:one.example",
            "room_id": "!room:one.example",
            "origin_server_ts": 1_700_000_000_000u64,
            "content": content,
            "prev_events": ["$prev"],
            "auth_events": ["$a1", "$a2"],
            "depth": 12,
        });
        if matches!(version, RoomVersionId::V1 | RoomVersionId::V2) {
            value["event_id"] = json!("$abc:one.example");
        }
        if kind == "m.room.member" {
            value["state_key"] = json!("@alice:one.example");
        }
        serde_json::from_value(value).expect("canonical")
    }

    fn keys_of(key: &Ed25519KeyPair) -> PublicKeyMap {
        let mut set = BTreeMap::new();
        set.insert("ed25519:k1".to_owned(), Base64::new(key.public_key().to_vec()));
        let mut map = PublicKeyMap::new();
        map.insert("one.example".into(), set);
        map
    }

    fn versions() -> [RoomVersionId; 6] {
        [
            RoomVersionId::V1,
            RoomVersionId::V3,
            RoomVersionId::V4,
            RoomVersionId::V10,
            RoomVersionId::V11,
            RoomVersionId::V12,
        ]
    }

    /// Building: the hashes, the signature and the event id are ruma's, byte for byte, in
    /// every room version's redaction and event id format.
    #[test]
    fn built_events_are_hashed_and_signed_as_ruma_does() {
        let key = key();
        let contents = [
            ("m.room.message", json!({ "msgtype": "m.text", "body": "héllo \"you\" \u{1F600}" })),
            ("m.room.member", json!({ "membership": "join", "displayname": "Alice", "avatar_url": "mxc://x/y" })),
        ];
        for version in versions() {
            let rules = version.rules().expect("rules");
            for (kind, content) in &contents {
                let object = event(&version, kind, content.clone());
                let mut ours = object.clone();
                let unsigned_json = serde_json::to_vec(&ours).expect("json");
                let signed = hash(&mut ours, &unsigned_json, &rules).expect("hashed");
                sign("one.example", &key, &mut ours, &signed);
                let mut theirs = object.clone();
                ruma::signatures::hash_and_sign_event("one.example", &key, &mut theirs, &rules.redaction)
                    .expect("ruma signs");
                assert_eq!(ours, theirs, "{version} {kind}: the same hashes and signature");
                let reference = ruma::signatures::reference_hash(&theirs, &rules).expect("ruma hashes");
                match reference_id(&signed, &rules).expect("hashed") {
                    Some(id) => assert_eq!(id, format!("${reference}"), "{version} {kind}: the same event id"),
                    None => assert!(matches!(version, RoomVersionId::V1 | RoomVersionId::V2)),
                }
                assert_eq!(signed, signed_bytes(&theirs, &rules).expect("bytes"), "signed bytes of the result");
            }
        }
    }

    /// Checking: every verdict is ruma's `verify_event`'s (ed25519-dalek behind it, aws-lc
    /// here) — good events, a changed content (signatures hold, the hash does not: redacted), a
    /// changed redacted field or another event's signature (the signature fails), signatures or
    /// hashes missing, another key under the known key id, unknown key ids only, unsigned data
    /// added (ignored).
    #[test]
    fn received_events_are_checked_as_ruma_does() {
        let (key, stranger) = (key(), key());
        let keys = keys_of(&key);
        for version in versions() {
            let rules = version.rules().expect("rules");
            let mut signed = event(&version, "m.room.message", json!({ "msgtype": "m.text", "body": "hi" }));
            ruma::signatures::hash_and_sign_event("one.example", &key, &mut signed, &rules.redaction).expect("signed");
            let mut by_stranger = event(&version, "m.room.message", json!({ "body": "x" }));
            ruma::signatures::hash_and_sign_event("one.example", &stranger, &mut by_stranger, &rules.redaction)
                .expect("signed");
            let mut cases: Vec<(&str, CanonicalJsonObject)> = vec![("good", signed.clone())];
            let mut changed_content = signed.clone();
            changed_content.insert(
                "content".into(),
                serde_json::from_value(json!({ "msgtype": "m.text", "body": "changed" })).expect("content"),
            );
            cases.push(("content changed", changed_content));
            let mut changed_depth = signed.clone();
            changed_depth.insert("depth".into(), CanonicalJsonValue::Integer(13u32.into()));
            cases.push(("redacted field changed", changed_depth));
            let mut unsigned = signed.clone();
            unsigned.insert("unsigned".into(), serde_json::from_value(json!({ "age": 5 })).expect("unsigned"));
            cases.push(("unsigned data", unsigned));
            let mut no_signature = signed.clone();
            no_signature.remove("signatures");
            cases.push(("no signatures", no_signature));
            let mut no_hashes = signed.clone();
            no_hashes.remove("hashes");
            cases.push(("no hashes", no_hashes));
            cases.push(("unknown key", by_stranger.clone()));
            let mut deeper = signed.clone();
            deeper.insert("depth".into(), CanonicalJsonValue::Integer(99u32.into()));
            ruma::signatures::hash_and_sign_event("one.example", &key, &mut deeper, &rules.redaction).expect("signed");
            let mut borrowed = signed.clone();
            borrowed.insert("signatures".into(), deeper["signatures"].clone());
            cases.push(("the signature of another event", borrowed));
            let mut renamed = by_stranger;
            renamed.insert(
                "signatures".into(),
                serde_json::from_value(json!({ "one.example": { "ed25519:other": "AAAA" } })).expect("signatures"),
            );
            cases.push(("no key we know", renamed));
            for (case, object) in cases {
                let servers = ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
                    .expect("servers");
                let theirs = ruma::signatures::verify_event(&keys, &object, &rules).ok();
                let ours =
                    signed_bytes(&object, &rules).and_then(|bytes| check_event(&keys, &object, &bytes, &servers)).ok();
                assert_eq!(ours, theirs, "{version}, {case}: the same verdict");
                if case == "good" {
                    assert_eq!(ours, Some(Verified::All), "{version}: a good event verifies");
                }
            }
        }
    }
}
