//! From a directory uid to a Matrix localpart.
//!
//! The rule (documented in docs/ldap.md): lower-case the uid; every byte of its UTF-8 outside
//! `a-z 0-9 . _ - /` becomes `=` and two lower-case hex digits. It is the rule Synapse applies to
//! SSO user names, so accounts keep their ids when a ministry moves between the two; it is
//! one-to-one on lower-cased uids (LDAP compares uids without case), and `=` only ever appears in
//! escapes. `Jean.Dupont` → `jean.dupont`; `josé` → `jos=c3=a9`; `marie claire` → `marie=20claire`.

/// Why an entry makes no account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the entry has no uid attribute")]
    NoUid,
    #[error("the uid maps to a user id longer than Matrix allows")]
    TooLong,
}

/// The localpart for a directory uid.
pub fn map_uid(uid: &str) -> Result<String, MappingError> {
    let uid = uid.trim();
    if uid.is_empty() {
        return Err(MappingError::NoUid);
    }
    let mut out = String::with_capacity(uid.len());
    for byte in uid.to_lowercase().bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => out.push(byte as char),
            other => out.push_str(&format!("={other:02x}")),
        }
    }
    // A user id is at most 255 bytes: `@`, `:` and a server name take the rest.
    if out.len() > 200 {
        return Err(MappingError::TooLong);
    }
    Ok(out)
}

/// The uid a localpart was made from (for a login typed as a full user id): `=xx` escapes are
/// undone; a localpart that is not such a mapping is returned as it is.
pub fn unmap(localpart: &str) -> String {
    let bytes = localpart.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => return localpart.to_owned(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| localpart.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_uids_are_only_lowercased() {
        assert_eq!(map_uid("Jean.Dupont").unwrap(), "jean.dupont");
        assert_eq!(map_uid("a_b-c/d").unwrap(), "a_b-c/d");
    }

    #[test]
    fn other_bytes_are_escaped() {
        assert_eq!(map_uid("josé").unwrap(), "jos=c3=a9");
        assert_eq!(map_uid("marie claire").unwrap(), "marie=20claire");
        assert_eq!(map_uid("a=b").unwrap(), "a=3db");
        assert_eq!(map_uid("*)(uid=*").unwrap(), "=2a=29=28uid=3d=2a");
    }

    #[test]
    fn unmap_reverses_map() {
        for uid in ["josé", "marie claire", "a=b", "plain"] {
            assert_eq!(unmap(&map_uid(uid).unwrap()), uid);
        }
        assert_eq!(unmap("bad=zz"), "bad=zz");
    }

    #[test]
    fn empty_and_huge_uids_are_refused() {
        assert_eq!(map_uid("  "), Err(MappingError::NoUid));
        assert_eq!(map_uid(&"é".repeat(50)), Err(MappingError::TooLong));
    }
}
