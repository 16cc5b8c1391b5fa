//! The federation tables and the records they keep. Other servers' keys, what each destination was sent, the transactions received and the EDUs waiting to go.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use std::collections::BTreeMap;

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};

/// What we know of one server's keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteKeySet {
    /// Key id → unpadded base64 public key.
    pub verify_keys: BTreeMap<String, String>,
    /// Key id → (key, when it stopped being used): still good for what it signed before.
    pub old_verify_keys: BTreeMap<String, (String, u64)>,
    pub valid_until_ts: u64,
    /// The key document as the server signed it, for the notary endpoints.
    #[serde(default)]
    pub document: Option<serde_json::Value>,
}

hemicycle_core::tables! {
    /// The federation column families.
    pub struct Tables {
        /// Other servers' signing keys as they published them (verified), until `valid_until_ts`.
        pub servername_serverkeys: Table<OwnedServerName, Json<RemoteKeySet>>,
        /// Per destination server: the stream position its PDUs are delivered up to.
        pub servername_sentpos: Table<OwnedServerName, Be64>,
        /// (origin, transaction id) of inbound transactions already processed.
        pub origintxn_done: Table<(OwnedServerName, String), Vec<u8>>,
        /// The same transactions in the order received (ms << 20 | sequence), so that old ids are
        /// dropped by a scan of what is to go, never of everything kept.
        pub receivedseq_origintxn: Table<Be64, Json<(OwnedServerName, String)>>,
        /// Per destination: EDUs waiting to be sent, (server, position) → EDU JSON.
        pub servernamepos_edu: Table<(OwnedServerName, Be64), Json<serde_json::Value>>,
        /// Per server: an admin's change of `federation.allow` made at runtime (console, or an
        /// approved proposal), which overrides the configuration for that server.
        pub servername_allowentry: Table<OwnedServerName, Json<AllowEntry>>,
        /// (server, what) → a step of a third-party invite across a ministry network that failed
        /// and is tried again (`federation::threepid`): `onbind <address>` on the inviter's
        /// node, `exchange <token>` on the address's home.
        pub servernamejob_threepidretry: Table<(OwnedServerName, String), Json<ThreepidRetry>>,
    }
}

/// A step of a third-party invite across the network to (try) again, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreepidRetry {
    pub step: ThreepidStep,
    /// Failed tries so far (the backoff doubles with each).
    pub attempts: u32,
    /// Not tried again before this time (ms); 0: at once.
    pub next_ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThreepidStep {
    /// On the inviter's node: the address's home said `address` is bound to `mxid`, so our
    /// standing invites of it go to the home's `/3pid/onbind`, signed for `mxid`.
    Onbind { address: String, mxid: OwnedUserId },
    /// On the address's home: the invite `token` of `sender` (signed for `mxid`, the `signed`
    /// block the onbind carried) is to be exchanged with the inviter's node.
    Exchange {
        address: String,
        token: String,
        room: OwnedRoomId,
        sender: OwnedUserId,
        mxid: OwnedUserId,
        signed: serde_json::Value,
    },
}

/// A server let in or kept out of the allow-list at runtime, and who decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowEntry {
    /// Whether the server is on the list (added) or off it (removed).
    pub allowed: bool,
    /// The admin who changed it.
    pub by: String,
    pub ts: u64,
    pub reason: String,
}
