//! The media tables and the records they keep. Media ids, stored files and their reference counts, thumbnails, antivirus verdicts and the content scanner's key.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};

/// What a scan found, kept by content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The signature that matched, as clamd names it; none when the file is clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infected: Option<String>,
    /// The type sniffed from the first bytes (for the MIME type policy).
    pub mimetype: String,
    pub scanned_ts: u64,
    /// clamd's `VERSION` when it scanned (`ClamAV 1.4.6/27851/…`: engine and daily database);
    /// none for verdicts recorded before versions were kept, or when clamd would not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<String>,
}

/// What a media id stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The local user who uploaded it; none for media cached from another server.
    pub uploader: Option<OwnedUserId>,
    pub created_ts: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The contents; none while a reserved id waits for its upload.
    pub file: Option<FileRef>,
    /// When a reserved id that got no upload stops being usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ts: Option<u64>,
    /// The admin who quarantined it: it is then served to nobody (404), but kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_by: Option<String>,
    /// Protected by an admin: bulk quarantines (of a room's or a user's media) and deletions by
    /// age leave it alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub safe_from_quarantine: bool,
}

/// A stored file's content address and size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRef {
    pub sha256: String,
    pub size: u64,
}

/// A generated thumbnail of some contents, at one size and method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    pub file: FileRef,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
}

hemicycle_core::tables! {
    /// The media column families.
    pub struct Tables {
        /// (origin server, media id) → uploader, content type, file name, content address and size.
        pub mediaid_meta: Table<(OwnedServerName, String), Json<MediaRecord>>,
        /// Content SHA-256 → how many media ids and thumbnails use that stored file.
        /// Media ids reserved with `/media/v1/create` and not uploaded yet: (uploader, id) → expiry ms.
        pub useridmediaid_pending: Table<(OwnedUserId, String), Be64>,
        pub sha256_refcount: Table<String, Be64>,
        /// (source content SHA-256, `<w>x<h>-<method>`) → the cached thumbnail.
        pub sha256size_thumbnail: Table<(String, String), Json<ThumbnailRecord>>,
        /// Content SHA-256 (of the decrypted contents, for an encrypted attachment scanned with its
        /// key) → what the antivirus found: clean or the signature that matched, the sniffed type.
        pub sha256_verdict: Table<String, Json<Verdict>>,
        /// Secrets of services other than the signing key: `curve25519:content_scanner` → the content
        /// scanner API's private key (32 bytes).
        pub keyid_secret: Table<String, Vec<u8>>,
    }
}
