//! Key and value encodings, in one place so every table agrees on them.
//!
//! Composite keys are their parts joined by `0xFF`, a byte that never occurs in UTF-8, so a prefix
//! scan over the first parts is exact and the order is the parts' byte order.

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId};
use serde::{de::DeserializeOwned, Serialize};

pub const SEP: u8 = 0xFF;

pub trait Codec: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// A key part that encodes to UTF-8 (so it never contains [`SEP`]).
pub trait StrPart: Codec {}

/// The encoded prefix selecting every composite key whose first part is `first`.
pub fn prefix<A: StrPart>(first: &A) -> Vec<u8> {
    let mut out = first.encode();
    out.push(SEP);
    out
}

/// The encoded prefix selecting every composite key whose first two parts are `first`, `second`.
pub fn prefix2<A: StrPart, B: StrPart>(first: &A, second: &B) -> Vec<u8> {
    let mut out = prefix(first);
    out.extend(prefix(second));
    out
}

impl Codec for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
}
impl StrPart for String {}

macro_rules! id_codec {
    ($($ty:ty),*) => {$(
        impl Codec for $ty {
            fn encode(&self) -> Vec<u8> {
                self.as_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                <$ty>::try_from(s).map_err(|e| e.to_string())
            }
        }
        impl StrPart for $ty {}
    )*};
}
id_codec!(OwnedUserId, OwnedRoomId, OwnedEventId, OwnedServerName);

impl Codec for OwnedDeviceId {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        Ok(s.into())
    }
}
impl StrPart for OwnedDeviceId {}

/// Raw bytes, stored as they are.
impl Codec for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// A big-endian u64, so numeric keys sort numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Be64(pub u64);

impl Codec for Be64 {
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| format!("expected 8 bytes, got {}", bytes.len()))?;
        Ok(Self(u64::from_be_bytes(arr)))
    }
}

/// A record stored as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned> Codec for Json<T> {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("records serialize to JSON")
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map(Json).map_err(|e| e.to_string())
    }
}

impl<A: StrPart, B: Codec> Codec for (A, B) {
    fn encode(&self) -> Vec<u8> {
        let mut out = prefix(&self.0);
        out.extend(self.1.encode());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let at = bytes.iter().position(|b| *b == SEP).ok_or("composite key without separator")?;
        Ok((A::decode(&bytes[..at])?, B::decode(&bytes[at + 1..])?))
    }
}

impl<A: StrPart, B: StrPart, C: Codec> Codec for (A, B, C) {
    fn encode(&self) -> Vec<u8> {
        let mut out = prefix(&self.0);
        out.extend(prefix(&self.1));
        out.extend(self.2.encode());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (a, rest): (A, Vec<u8>) = Codec::decode(bytes)?;
        let (b, c): (B, C) = Codec::decode(&rest)?;
        Ok((a, b, c))
    }
}

impl<A: StrPart, B: StrPart, C: StrPart, D: Codec> Codec for (A, B, C, D) {
    fn encode(&self) -> Vec<u8> {
        let mut out = prefix(&self.0);
        out.extend(prefix(&self.1));
        out.extend(prefix(&self.2));
        out.extend(self.3.encode());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (a, rest): (A, Vec<u8>) = Codec::decode(bytes)?;
        let (b, c, d): (B, C, D) = Codec::decode(&rest)?;
        Ok((a, b, c, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_round_trip_and_prefix() {
        let user: OwnedUserId = "@a:x".try_into().unwrap();
        let key = (user.clone(), String::new(), "m.type".to_owned());
        let bytes = key.encode();
        assert!(bytes.starts_with(&prefix(&user)));
        assert_eq!(<(OwnedUserId, String, String)>::decode(&bytes).unwrap(), key);
        assert_eq!(Be64::decode(&Be64(7).encode()).unwrap(), Be64(7));
        assert!(Be64::decode(b"abc").is_err());
    }
}
