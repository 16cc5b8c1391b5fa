//! The network tables and the records they keep: the status documents other nodes publish (the
//! latest of each) and a day of samples of every node's state, for the console's network view.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

/// What the last attempt to get a node's status document gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredStatus {
    /// When we asked.
    pub fetched_ts: u64,
    pub outcome: StatusOutcome,
    /// The last document that verified, and when it came: kept through later failures, so an
    /// unreachable node still shows what it said last.
    #[serde(default)]
    pub last_document: Option<(u64, serde_json::Value)>,
    /// What a server without a status document (a Synapse) says it runs, from its federation
    /// version endpoint: the console can still tell its version.
    #[serde(default)]
    pub software: Option<ServerSoftware>,
}

/// A server's software and version, as `/_matrix/federation/v1/version` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSoftware {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusOutcome {
    /// A document signed by the node, checked.
    Document,
    /// The node answered that it has no such endpoint (a Synapse, say).
    NoStatus,
    /// The node refused us (it does not federate with us).
    Refused { error: String },
    /// The node could not be reached, or sent something that did not verify.
    Failed { error: String },
}

/// One node's state at one moment, as a point of the console's plots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Whether the node answered with a document that verified (always, for ourselves).
    pub answered: bool,
    /// How many of its peers it could reach, of how many.
    pub reachable_peers: u32,
    pub peers: u32,
    /// The longest time an event has waited for one of its peers, in ms.
    pub max_lag_ms: u64,
    /// EDUs waiting, summed over its peers.
    pub queued_edus: u64,
}

/// What was seen of one pair of nodes (the first sending to the second) during one minute of the
/// history: every observation counted, so that a cut shorter than the minute still shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSample {
    /// Rounds in which the sending node said it reached the other, and said it did not.
    pub up: u32,
    pub down: u32,
    /// The longest lag it reported towards the other in that minute, in ms.
    pub max_lag_ms: u64,
}

/// One minute of the pairs' history: sending node → receiving node → what was seen. One record
/// per minute, whatever the rounds' interval, so a day is at most 1,440 records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkBucket {
    pub links: std::collections::BTreeMap<OwnedServerName, std::collections::BTreeMap<OwnedServerName, LinkSample>>,
}

hemicycle_core::tables! {
    /// The network column families.
    pub struct Tables {
        /// Per server: the outcome of the last status fetch and its last good document.
        pub servername_status: Table<OwnedServerName, Json<StoredStatus>>,
        /// (server, ms) → that server's sample: the last 24 hours, older ones pruned as new
        /// ones come.
        pub servernamets_sample: Table<(OwnedServerName, Be64), Json<Sample>>,
        /// Proposals other nodes made to this one: (proposing node, id) → proposal.
        pub originid_proposal: Table<(OwnedServerName, String), Json<Proposal>>,
        /// Proposals this node's admins made to others: (target node, id) → proposal.
        pub targetid_proposal: Table<(OwnedServerName, String), Json<Proposal>>,
        /// Start of a minute (ms) → what every pair of nodes looked like during it: the
        /// reachability and lag history the console plots, pruned after 24 hours.
        pub minute_links: Table<Be64, Json<LinkBucket>>,
    }
}

/// What an admin of one node asks the admins of another to do on their node. It is only ever
/// carried out by an admin of that node, in its console (network/proposals.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProposedAction {
    /// A server notice to every active account of the node.
    ServerNotice { text: String },
    /// Deactivate an account of the node (an agent who left).
    Deactivate { user_id: ruma::OwnedUserId },
    /// Lock an account of the node.
    Lock { user_id: ruma::OwnedUserId },
    /// Put a server on the node's allow-list (`allowed`) or take it off.
    AllowListEntry { server: OwnedServerName, allowed: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProposalState {
    Pending,
    Approved { by: String, ts: u64, outcome: String },
    Refused { by: String, ts: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Chosen by the proposing node; unique per (proposing node, id).
    pub id: String,
    pub from: OwnedServerName,
    pub to: OwnedServerName,
    /// The admin who proposed it, as the proposing node names them.
    pub proposer: ruma::OwnedUserId,
    pub action: ProposedAction,
    pub reason: String,
    pub created_ts: u64,
    pub state: ProposalState,
}
