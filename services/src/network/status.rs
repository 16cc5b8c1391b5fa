//! The status document: what a node tells the servers it federates with about itself (version,
//! uptime, health, signing keys, allow-list, access rules, how sending to each peer goes, the
//! state hashes of the rooms it shares with the asker), signed with its server key and served at
//! `GET /_matrix/federation/unstable/org.hemicycle.status` to allowed servers only.
//!
//! Every node asks each of its peers for theirs on a timer (`network.status_interval`), checks
//! the signature and the bounds of what came (another node may be hostile), keeps the latest
//! and a day of samples, and the console draws the network from them. A server without the
//! endpoint (a Synapse) simply has no status.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use ruma::{CanonicalJsonObject, OwnedRoomId, OwnedServerName, RoomId, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::state::ServiceHealth;
pub use super::tables::{Sample, ServerSoftware, StatusOutcome, StoredStatus};
use crate::{
    db::{
        codec::{prefix, Be64, Json},
        Batch,
    },
    error::{Error, Result},
    federation::keys::KeyUse,
    services::Services,
    time::now_ms,
};

/// The endpoint, declared with ruma's macros so that both sides use one type.
pub mod endpoint {
    use ruma::api::{federation::authentication::ServerSignatures, metadata, request, response};

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/unstable/org.hemicycle.status",
    }

    #[request]
    #[derive(Default)]
    pub struct Request {}

    #[response]
    pub struct Response {
        /// The signed status document.
        #[ruma_api(body)]
        pub document: Box<serde_json::value::RawValue>,
    }

    impl Request {
        pub fn new() -> Self {
            Self {}
        }
    }

    impl Response {
        pub fn new(document: Box<serde_json::value::RawValue>) -> Self {
            Self { document }
        }
    }
}

/// The most bytes of another node's document read: a document of 64 peers and 1,000 rooms
/// weighs far less.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The most peers a document lists, and the most nodes this node asks each round.
pub const MAX_PEERS: usize = 64;
/// The most room state hashes a document carries.
pub const MAX_ROOMS: usize = 1000;
/// The most entries of an allow-list or a list of external servers a document may carry.
const MAX_LIST: usize = 1000;
/// The longest text (a problem, an error, a version) a document may carry.
const MAX_TEXT: usize = 512;
/// How far a document's time may be from ours: older ones are stale, newer ones lie.
const MAX_SKEW_MS: u64 = 10 * 60 * 1000;
/// How long samples are kept.
pub const HISTORY_MS: u64 = 24 * 3600 * 1000;
/// The most bytes of another server's version answer read.
const MAX_VERSION_BYTES: usize = 4096;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most stream entries looked at to count what waits for one peer.
const WAITING_SCAN: usize = 10_000;
/// The most rooms looked at to find those shared with the asker.
const ROOM_SCAN: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub server_name: OwnedServerName,
    pub generated_ts: u64,
    pub software: String,
    pub version: String,
    pub uptime_ms: u64,
    /// No problem known (the services below answer when configured).
    pub healthy: bool,
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub signing_keys: Vec<SigningKeyInfo>,
    pub federation: FederationInfo,
    pub access_rules: AccessRulesInfo,
    #[serde(default)]
    pub peers: BTreeMap<OwnedServerName, PeerInfo>,
    #[serde(default)]
    pub clamd: Option<ServiceHealth>,
    #[serde(default)]
    pub smtp: Option<ServiceHealth>,
    /// SHA-256 of the current state (sorted type, state key, event id) of each room the node
    /// shares with the asker.
    #[serde(default)]
    pub rooms: BTreeMap<OwnedRoomId, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyInfo {
    pub key_id: String,
    /// Until when other servers may cache it (current keys).
    #[serde(default)]
    pub valid_until_ts: Option<u64>,
    /// When it was retired (old keys).
    #[serde(default)]
    pub expired_ts: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationInfo {
    pub enabled: bool,
    /// `federation.allow` with the changes admins made at runtime; absent when the node federates
    /// with every server.
    #[serde(default)]
    pub allow: Option<Vec<OwnedServerName>>,
}

impl FederationInfo {
    /// Whether this configuration lets `server` in.
    pub fn allows(&self, server: &ServerName) -> bool {
        self.enabled && self.allow.as_ref().is_none_or(|list| list.iter().any(|s| s == server))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRulesInfo {
    pub role: String,
    pub enabled: bool,
    #[serde(default)]
    pub external_servers: Vec<OwnedServerName>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// `None`: not tried since start-up.
    pub reachable: Option<bool>,
    pub failures: u32,
    pub first_failure_ts: Option<u64>,
    /// The last request to it that worked, and the last transaction it sent us.
    pub last_sent_ts: Option<u64>,
    pub last_received_ts: Option<u64>,
    /// Local events waiting for it (counted over a bounded scan) and EDUs waiting.
    pub waiting_pdus: u64,
    pub queued_edus: u64,
    /// How long the oldest event waiting for it has waited.
    pub lag_ms: u64,
}

/// The servers this node reports on and asks: those it has sent to, and its allow-list, itself
/// excluded, at most [`MAX_PEERS`].
pub fn peers(services: &Services) -> Result<Vec<OwnedServerName>> {
    let own = services.federation.server_name();
    let mut servers = BTreeSet::new();
    for entry in services.db.tables.federation.servername_sentpos.iter() {
        servers.insert(entry?.0);
    }
    servers.extend(services.federation.allow_list.servers().unwrap_or_default());
    Ok(servers.into_iter().filter(|s| s != own && services.federation.allowed(s)).take(MAX_PEERS).collect())
}

/// How sending to `server` goes, as the document reports it.
pub fn peer_info(services: &Services, server: &ServerName) -> Result<PeerInfo> {
    let health = services.federation.client.health(server);
    let reachable = if health.failures > 0 { Some(false) } else { health.last_success_ms.map(|_| true) };
    let mut queued_edus = 0;
    for entry in services.db.tables.federation.servernamepos_edu.scan_prefix(prefix(&server.to_owned())) {
        entry?;
        queued_edus += 1;
    }
    let (waiting_pdus, oldest) = crate::federation::sender::waiting(services, server, WAITING_SCAN);
    let now = now_ms();
    Ok(PeerInfo {
        reachable,
        failures: health.failures,
        first_failure_ts: health.first_failure_ms,
        last_sent_ts: health.last_success_ms,
        last_received_ts: services.federation.last_received(server),
        waiting_pdus,
        queued_edus,
        lag_ms: oldest.map_or(0, |ts| now.saturating_sub(ts)),
    })
}

/// SHA-256 (hex) of a room's current state: its `(type, state key, event id)` triples, sorted.
/// Two nodes agree on a room's state exactly when their hashes are equal.
pub fn state_hash(services: &Services, room: &RoomId) -> Result<Option<String>> {
    let Some(record) = services.rooms.room(room)? else { return Ok(None) };
    let mut entries: Vec<(String, String, String)> = services
        .rooms
        .full_state(record.snapshot)?
        .into_iter()
        .map(|((kind, key), id)| (kind.to_string(), key, id.to_string()))
        .collect();
    entries.sort();
    let mut hasher = Sha256::new();
    for (kind, key, id) in entries {
        for part in [kind, key, id] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    Ok(Some(hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rooms `server` has joined members in and this node too: their state hashes (at most
/// [`MAX_ROOMS`]). Only those: the asker learns nothing of rooms it is not in.
fn shared_room_hashes(services: &Services, server: &ServerName) -> Result<BTreeMap<OwnedRoomId, String>> {
    let mut out = BTreeMap::new();
    for entry in services.db.tables.rooms.roomid_room.iter().take(ROOM_SCAN) {
        let (room, _) = entry?;
        if out.len() >= MAX_ROOMS {
            break;
        }
        if !crate::federation::receive::servers_in_room(services, &room)?.iter().any(|s| s == server) {
            continue;
        }
        let ours =
            services.rooms.members(&room)?.iter().any(|(u, m)| m.membership == "join" && services.users.is_local(u));
        if !ours {
            continue;
        }
        if let Some(hash) = state_hash(services, &room)? {
            out.insert(room, hash);
        }
    }
    Ok(out)
}

/// This node's document (unsigned), for `asker` (whose shared rooms it lists), or for our own
/// console (no rooms).
pub fn build(services: &Services, asker: Option<&ServerName>) -> Result<StatusDocument> {
    let config = &services.config;
    let now = now_ms();
    let own_keys = services.server_keys.key_document()?;
    let mut signing_keys = vec![SigningKeyInfo {
        key_id: services.server_keys.key_id(),
        valid_until_ts: own_keys.get("valid_until_ts").and_then(|v| v.as_integer()).map(|v| i64::from(v) as u64),
        expired_ts: None,
    }];
    if let Some(ruma::CanonicalJsonValue::Object(old)) = own_keys.get("old_verify_keys") {
        for (id, key) in old {
            let expired = match key {
                ruma::CanonicalJsonValue::Object(k) => k.get("expired_ts").and_then(|v| v.as_integer()),
                _ => None,
            };
            signing_keys.push(SigningKeyInfo {
                key_id: id.clone(),
                valid_until_ts: None,
                expired_ts: expired.map(|v| i64::from(v) as u64),
            });
        }
    }
    let mut peers = BTreeMap::new();
    for server in self::peers(services)? {
        let info = peer_info(services, &server)?;
        peers.insert(server, info);
    }
    let clamd = services.media.antivirus().map(|antivirus| {
        let status = antivirus.status();
        ServiceHealth {
            healthy: match (&status.last_error, status.last_ok_ts) {
                (Some(_), _) => Some(false),
                (None, Some(_)) => Some(true),
                (None, None) => None,
            },
            checked_ts: status.last_error.as_ref().map(|(at, _)| *at).or(status.last_ok_ts),
            error: status.last_error.map(|(_, e)| e),
        }
    });
    let smtp = config
        .email
        .smtp_host
        .as_ref()
        .map(|_| services.network_status.smtp.lock().expect("smtp health").clone().unwrap_or_default());
    let mut problems = Vec::new();
    if clamd.as_ref().is_some_and(|c| c.healthy == Some(false)) {
        problems.push("clamd does not answer".to_owned());
    }
    if smtp.as_ref().is_some_and(|c| c.healthy == Some(false)) {
        problems.push("the SMTP relay does not answer".to_owned());
    }
    let rooms = match asker {
        Some(server) => shared_room_hashes(services, server)?,
        None => BTreeMap::new(),
    };
    Ok(StatusDocument {
        server_name: config.server_name.clone(),
        generated_ts: now,
        software: "Hemicycle".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: now.saturating_sub(services.network_status.started_ms),
        healthy: problems.is_empty(),
        problems,
        signing_keys,
        federation: FederationInfo {
            enabled: config.federation.enabled,
            allow: services.federation.allow_list.servers(),
        },
        access_rules: AccessRulesInfo {
            role: match config.network.role {
                crate::config::NetworkRole::Ministry => "ministry".to_owned(),
                crate::config::NetworkRole::External => "external".to_owned(),
            },
            enabled: services.network.access_rules(),
            external_servers: config.network.external_servers.clone(),
        },
        peers,
        clamd,
        smtp,
        rooms,
    })
}

/// This node's document for `asker`, signed with the server key.
pub fn signed_for(services: &Services, asker: &ServerName) -> Result<CanonicalJsonObject> {
    let document = build(services, Some(asker))?;
    let mut object: CanonicalJsonObject =
        serde_json::from_value(serde_json::to_value(&document).map_err(|e| Error::Internal(e.to_string()))?)
            .map_err(|e| Error::Internal(format!("the status document is not canonical JSON: {e}")))?;
    services.server_keys.sign_json(&mut object)?;
    Ok(object)
}

/// Checks what a document says against the bounds a node may claim: a hostile peer cannot make
/// the console render a million rows or a megabyte of text.
pub fn check_bounds(document: &StatusDocument, expected: &ServerName, now: u64) -> Result<()> {
    let refuse = |why: String| Err(Error::Forbidden(format!("the status document of {expected}: {why}")));
    if document.server_name != expected {
        return refuse(format!("names {}", document.server_name));
    }
    if document.generated_ts + MAX_SKEW_MS < now || document.generated_ts > now + MAX_SKEW_MS {
        return refuse("its time is more than 10 minutes away from ours".to_owned());
    }
    if document.peers.len() > MAX_PEERS || document.rooms.len() > MAX_ROOMS {
        return refuse(format!("more than {MAX_PEERS} peers or {MAX_ROOMS} rooms"));
    }
    let lists = [
        document.federation.allow.as_ref().map_or(0, Vec::len),
        document.access_rules.external_servers.len(),
        document.signing_keys.len(),
        document.problems.len(),
    ];
    if lists.iter().any(|n| *n > MAX_LIST) {
        return refuse(format!("a list of more than {MAX_LIST} entries"));
    }
    let mut texts: Vec<&str> = vec![&document.software, &document.version];
    texts.extend(document.problems.iter().map(String::as_str));
    texts.extend(document.signing_keys.iter().map(|k| k.key_id.as_str()));
    texts.extend([&document.clamd, &document.smtp].into_iter().flatten().filter_map(|h| h.error.as_deref()));
    if texts.iter().any(|t| t.len() > MAX_TEXT) {
        return refuse(format!("a text of more than {MAX_TEXT} bytes"));
    }
    Ok(())
}

/// Verifies another node's document: its signature with the node's current keys, then its
/// bounds. Nothing of it is kept otherwise.
pub async fn verify(
    services: &Services,
    server: &ServerName,
    raw: &serde_json::value::RawValue,
) -> Result<StatusDocument> {
    let object: CanonicalJsonObject = serde_json::from_str(raw.get())
        .map_err(|e| Error::Forbidden(format!("the status document of {server} is not canonical JSON: {e}")))?;
    let federation = &services.federation;
    let key_map = federation
        .keys
        .key_map(&federation.client, &federation.own, [(server.to_owned(), None)], KeyUse::Request)
        .await?;
    ruma::signatures::verify_json(&key_map, &object)
        .map_err(|e| Error::Forbidden(format!("the status document of {server} is not signed by it: {e}")))?;
    let document: StatusDocument = serde_json::from_str(raw.get())
        .map_err(|e| Error::Forbidden(format!("the status document of {server} is malformed: {e}")))?;
    check_bounds(&document, server, now_ms())?;
    Ok(document)
}

/// Asks `server` for its document and keeps what came (or why nothing did), with a sample.
pub async fn fetch(services: &Services, server: &ServerName) -> Result<StoredStatus> {
    let was_failing = services.federation.client.backing_off(server).is_some();
    let asked =
        services.federation.send_limited(server, endpoint::Request::new(), FETCH_TIMEOUT, MAX_DOCUMENT_BYTES).await;
    let now = now_ms();
    let previous = services.db.tables.network.servername_status.get(&server.to_owned())?.map(|Json(s)| s);
    let (mut last_document, mut software) = previous.map_or((None, None), |p| (p.last_document, p.software));
    let (outcome, document) = match asked {
        Ok(answer) => match verify(services, server, &answer.document).await {
            Ok(document) => {
                // The node answers again: what waits for it goes now, not after its backoff.
                if was_failing {
                    services.federation.sender.wake(server);
                }
                (StatusOutcome::Document, Some(document))
            }
            Err(e) => (StatusOutcome::Failed { error: e.to_string() }, None),
        },
        Err(Error::NotFound(_) | Error::Unrecognized(_)) => {
            if let Some(named) = server_software(services, server).await {
                software = Some(named);
            }
            (StatusOutcome::NoStatus, None)
        }
        Err(e @ (Error::Forbidden(_) | Error::Unauthorized(_))) => {
            (StatusOutcome::Refused { error: e.to_string() }, None)
        }
        Err(e) => (StatusOutcome::Failed { error: e.to_string() }, None),
    };
    let sample = match &document {
        Some(document) => sample_of(document),
        None => Sample::default(),
    };
    if let Some(document) = document {
        last_document = Some((now, serde_json::to_value(&document).map_err(|e| Error::Internal(e.to_string()))?));
    }
    let stored = StoredStatus { fetched_ts: now, outcome, last_document, software };
    let tables = &services.db.tables.network;
    let mut batch = Batch::new();
    tables.servername_status.insert(&mut batch, &server.to_owned(), &Json(stored.clone()));
    let minute = Be64(super::links::minute_of(now));
    tables.servernamets_sample.insert(&mut batch, &(server.to_owned(), minute), &Json(sample));
    services.db.commit(batch)?;
    Ok(stored)
}

/// What a server without a status document runs, by its federation version endpoint (every
/// Matrix server has one); `None` when it does not say.
async fn server_software(services: &Services, server: &ServerName) -> Option<ServerSoftware> {
    use ruma::api::federation::discovery::get_server_version::v1::Request;
    let asked = services.federation.send_limited(server, Request::new(), FETCH_TIMEOUT, MAX_VERSION_BYTES).await;
    let answer = match asked {
        Ok(answer) => answer,
        Err(error) => {
            tracing::info!(%server, %error, "the server's version endpoint did not answer");
            return None;
        }
    };
    let named = answer.server?;
    let clip = |text: Option<String>| text.unwrap_or_default().chars().take(MAX_TEXT).collect::<String>();
    Some(ServerSoftware { name: clip(named.name), version: clip(named.version) })
}

/// A document as one point of the plots.
pub fn sample_of(document: &StatusDocument) -> Sample {
    Sample {
        answered: true,
        reachable_peers: document.peers.values().filter(|p| p.reachable == Some(true)).count() as u32,
        peers: document.peers.len() as u32,
        max_lag_ms: document.peers.values().map(|p| p.lag_ms).max().unwrap_or(0),
        queued_edus: document.peers.values().map(|p| p.queued_edus).sum(),
    }
}

/// One round: clamd and the SMTP relay probed, our own sample, every peer asked at once, and
/// samples older than a day dropped.
pub async fn round(services: &Services) -> Result<()> {
    if let Some(antivirus) = services.media.antivirus() {
        // The outcome is kept by the scanner itself (its health), which the document reads.
        if let Err(error) = antivirus.probe().await {
            tracing::info!(%error, "clamd did not answer the status round's probe");
        }
    }
    probe_smtp(services).await;
    let own = build(services, None)?;
    let now = now_ms();
    let mut batch = Batch::new();
    let own_name = services.federation.server_name().to_owned();
    let minute = Be64(super::links::minute_of(now));
    services.db.tables.network.servernamets_sample.insert(&mut batch, &(own_name, minute), &Json(sample_of(&own)));
    services.db.commit(batch)?;
    let servers = peers(services)?;
    let results = futures::future::join_all(servers.iter().map(|server| fetch(services, server))).await;
    let mut fresh = Vec::new();
    for (server, result) in servers.iter().zip(results) {
        match result {
            Ok(StoredStatus { outcome: StatusOutcome::Document, last_document: Some((_, document)), .. }) => {
                match serde_json::from_value::<StatusDocument>(document) {
                    Ok(document) => fresh.push(document),
                    Err(error) => tracing::warn!(%server, %error, "a kept status document does not read back"),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%server, %error, "keeping a status fetch failed"),
        }
    }
    let mut documents = vec![&own];
    documents.extend(fresh.iter());
    super::links::record(services, now, &documents)?;
    prune(services, now.saturating_sub(HISTORY_MS))?;
    super::links::prune(services, super::links::minute_of(now.saturating_sub(HISTORY_MS)))
}

/// Drops the samples older than `before`, server by server (each server's keys are in time
/// order, so the scan stops at the first one to keep).
fn prune(services: &Services, before: u64) -> Result<()> {
    let table = &services.db.tables.network.servernamets_sample;
    let mut servers = BTreeSet::new();
    for entry in services.db.tables.network.servername_status.iter() {
        servers.insert(entry?.0);
    }
    servers.insert(services.federation.server_name().to_owned());
    let mut batch = Batch::new();
    for server in servers {
        for entry in table.scan_prefix(prefix(&server)) {
            let ((_, Be64(ts)), _) = entry?;
            if ts >= before {
                break;
            }
            table.remove(&mut batch, &(server.clone(), Be64(ts)));
        }
    }
    services.db.commit(batch)?;
    Ok(())
}

/// Whether the SMTP relay accepts a connection, when one is configured.
async fn probe_smtp(services: &Services) {
    let email = &services.config.email;
    let Some(host) = &email.smtp_host else { return };
    let address = format!("{host}:{}", email.smtp_port);
    let outcome = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&address)).await;
    let error = match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{address}: {e}")),
        Err(_) => Some(format!("{address}: no answer in 5 s")),
    };
    let health = ServiceHealth { healthy: Some(error.is_none()), checked_ts: Some(now_ms()), error };
    *services.network_status.smtp.lock().expect("smtp health") = Some(health);
}

/// Starts the timer that asks every peer for its document (`network.status_interval`), or at
/// once when the console asks for a refresh.
pub fn start(services: Arc<Services>) {
    if !services.config.federation.enabled {
        return;
    }
    tokio::spawn(async move {
        let every = Duration::from_millis(services.config.network.status_interval_ms());
        loop {
            if let Err(error) = round(&services).await {
                tracing::warn!(%error, "a round of status fetches failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = services.network_status.refresh.notified() => {}
            }
        }
    });
}

/// The samples of `server` since `since`, oldest first.
pub fn history(services: &Services, server: &ServerName, since: u64) -> Result<Vec<(u64, Sample)>> {
    let mut out = Vec::new();
    for entry in services.db.tables.network.servernamets_sample.scan_prefix(prefix(&server.to_owned())) {
        let ((_, Be64(ts)), Json(sample)) = entry?;
        if ts >= since {
            out.push((ts, sample));
        }
    }
    Ok(out)
}

/// What the console knows of one node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub server: OwnedServerName,
    /// `None` for ourselves.
    pub stored: Option<StoredStatus>,
    /// The document to show: ours, or the last one that verified.
    pub document: Option<StatusDocument>,
}

impl NodeView {
    /// What the node runs: from its document, or, for a server without one, from its version
    /// endpoint.
    pub fn software(&self) -> Option<ServerSoftware> {
        match (&self.document, &self.stored) {
            (Some(d), _) => Some(ServerSoftware { name: d.software.clone(), version: d.version.clone() }),
            (None, Some(stored)) => stored.software.clone(),
            (None, None) => None,
        }
    }
}

/// Every node the console shows: ours first, then each peer asked.
pub fn nodes(services: &Services) -> Result<Vec<NodeView>> {
    let own = build(services, None)?;
    let mut out = vec![NodeView { server: own.server_name.clone(), stored: None, document: Some(own) }];
    for entry in services.db.tables.network.servername_status.iter() {
        let (server, Json(stored)) = entry?;
        if !services.federation.allowed(&server) || server == out[0].server {
            continue;
        }
        let document = stored.last_document.as_ref().and_then(|(_, d)| serde_json::from_value(d.clone()).ok());
        out.push(NodeView { server, stored: Some(stored), document });
        if out.len() > MAX_PEERS {
            break;
        }
    }
    Ok(out)
}

/// What one node says of sending to another, for a cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The row's node published nothing we hold.
    Unknown,
    /// The row's node does not list the column's node among its peers.
    NotPeer,
    /// Listed, never tried.
    Untried,
    Up {
        lag_ms: u64,
    },
    Down {
        failures: u32,
        since: Option<u64>,
        /// How long the oldest event waiting for the column's node has waited (it grows while
        /// the pair is cut).
        lag_ms: u64,
    },
}

pub fn link(from: &NodeView, to: &ServerName) -> Link {
    let Some(document) = &from.document else { return Link::Unknown };
    match document.peers.get(to) {
        None => Link::NotPeer,
        Some(peer) => match peer.reachable {
            None => Link::Untried,
            Some(true) => Link::Up { lag_ms: peer.lag_ms },
            Some(false) => Link::Down { failures: peer.failures, since: peer.first_failure_ts, lag_ms: peer.lag_ms },
        },
    }
}

/// Pairs where the first node lets the second in but the second refuses the first.
pub fn allow_disagreements(nodes: &[NodeView]) -> Vec<(OwnedServerName, OwnedServerName)> {
    let mut out = Vec::new();
    for a in nodes {
        for b in nodes {
            let (Some(da), Some(db)) = (&a.document, &b.document) else { continue };
            if a.server != b.server && da.federation.allows(&b.server) && !db.federation.allows(&a.server) {
                out.push((a.server.clone(), b.server.clone()));
            }
        }
    }
    out
}

/// Current signing keys whose published validity ends before `horizon`.
pub fn expiring_keys(nodes: &[NodeView], horizon: u64) -> Vec<(OwnedServerName, String, u64)> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(document) = &node.document else { continue };
        for key in &document.signing_keys {
            if let Some(until) = key.valid_until_ts.filter(|until| *until < horizon) {
                out.push((node.server.clone(), key.key_id.clone(), until));
            }
        }
    }
    out
}

/// The versions of each software that runs on more than one version, each with its nodes (empty:
/// every node of a software runs the same version). A Synapse beside Hemicycle nodes is another
/// software, not another version: what an operator acts on is a node left behind an upgrade.
pub fn versions(nodes: &[NodeView]) -> BTreeMap<String, Vec<OwnedServerName>> {
    let mut by_software: BTreeMap<String, BTreeMap<String, Vec<OwnedServerName>>> = BTreeMap::new();
    for node in nodes {
        if let Some(software) = node.software() {
            by_software
                .entry(software.name.clone())
                .or_default()
                .entry(format!("{} {}", software.name, software.version))
                .or_default()
                .push(node.server.clone());
        }
    }
    by_software.into_values().filter(|versions| versions.len() > 1).flatten().collect()
}

/// Rooms whose state hash differs between nodes: `own` holds ours, each peer's document the
/// hashes of the rooms it shares with us. Each entry lists every node's hash for the room.
pub fn split_rooms(
    own: &BTreeMap<OwnedRoomId, String>,
    nodes: &[NodeView],
) -> Vec<(OwnedRoomId, Vec<(OwnedServerName, String)>)> {
    let mut by_room: BTreeMap<OwnedRoomId, Vec<(OwnedServerName, String)>> = BTreeMap::new();
    for node in nodes.iter().skip(1) {
        let Some(document) = &node.document else { continue };
        for (room, hash) in &document.rooms {
            by_room.entry(room.clone()).or_default().push((node.server.clone(), hash.clone()));
        }
    }
    let mut out = Vec::new();
    for (room, mut hashes) in by_room {
        if let (Some(first), Some(own_hash)) = (nodes.first(), own.get(&room)) {
            hashes.insert(0, (first.server.clone(), own_hash.clone()));
        }
        if hashes.iter().any(|(_, h)| *h != hashes[0].1) {
            out.push((room, hashes));
        }
    }
    out
}

/// The rooms the peers' documents name, with our own hash of each we hold.
pub fn own_hashes(services: &Services, nodes: &[NodeView]) -> Result<BTreeMap<OwnedRoomId, String>> {
    let mut out = BTreeMap::new();
    for node in nodes.iter().skip(1) {
        let Some(document) = &node.document else { continue };
        for room in document.rooms.keys() {
            if out.contains_key(room) {
                continue;
            }
            if let Some(hash) = state_hash(services, room)? {
                out.insert(room.clone(), hash);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> OwnedServerName {
        ServerName::parse(name).unwrap()
    }

    fn document(name: &str, allow: Option<&[&str]>) -> StatusDocument {
        StatusDocument {
            server_name: server(name),
            generated_ts: 1_000_000,
            software: "Hemicycle".into(),
            version: "1.0.0".into(),
            uptime_ms: 5,
            healthy: true,
            problems: vec![],
            signing_keys: vec![SigningKeyInfo {
                key_id: "ed25519:a".into(),
                valid_until_ts: Some(2_000_000),
                expired_ts: None,
            }],
            federation: FederationInfo { enabled: true, allow: allow.map(|l| l.iter().map(|s| server(s)).collect()) },
            access_rules: AccessRulesInfo { role: "ministry".into(), enabled: false, external_servers: vec![] },
            peers: BTreeMap::new(),
            clamd: None,
            smtp: None,
            rooms: BTreeMap::new(),
        }
    }

    fn node(document: StatusDocument) -> NodeView {
        NodeView { server: document.server_name.clone(), stored: None, document: Some(document) }
    }

    #[test]
    fn a_one_sided_allow_list_is_found() {
        let nodes = vec![
            node(document("a.example", None)),
            node(document("b.example", Some(&["b.example", "c.example"]))),
            node(document("c.example", Some(&["a.example", "b.example", "c.example"]))),
        ];
        assert_eq!(allow_disagreements(&nodes), vec![(server("a.example"), server("b.example"))]);
    }

    #[test]
    fn rooms_split_and_versions_and_keys_are_told_apart() {
        let room: OwnedRoomId = "!r:a.example".try_into().unwrap();
        let same: OwnedRoomId = "!s:a.example".try_into().unwrap();
        let mut b = document("b.example", None);
        b.rooms.insert(room.clone(), "h2".into());
        b.rooms.insert(same.clone(), "h3".into());
        b.version = "1.1.0".into();
        b.signing_keys[0].valid_until_ts = Some(1_500_000);
        let nodes = vec![node(document("a.example", None)), node(b)];
        let own = BTreeMap::from([(room.clone(), "h1".to_owned()), (same, "h3".to_owned())]);
        let split = split_rooms(&own, &nodes);
        assert_eq!(split.len(), 1);
        assert_eq!(split[0].0, room);
        assert_eq!(split[0].1, vec![(server("a.example"), "h1".into()), (server("b.example"), "h2".into())]);
        assert_eq!(versions(&nodes).len(), 2);
        assert_eq!(expiring_keys(&nodes, 1_600_000), vec![(server("b.example"), "ed25519:a".into(), 1_500_000)]);
    }

    /// A Synapse (no document, its version endpoint read) beside Hemicycle nodes is another
    /// software: only a software found on two versions is told.
    #[test]
    fn only_versions_of_one_software_differ() {
        let synapse = NodeView {
            server: server("s.example"),
            stored: Some(StoredStatus {
                fetched_ts: 1,
                outcome: StatusOutcome::NoStatus,
                last_document: None,
                software: Some(ServerSoftware { name: "Synapse".into(), version: "1.120.0".into() }),
            }),
            document: None,
        };
        let mut nodes = vec![node(document("a.example", None)), node(document("b.example", None)), synapse];
        assert_eq!(nodes[2].software().unwrap().version, "1.120.0");
        assert!(versions(&nodes).is_empty(), "{:?}", versions(&nodes));
        let mut newer = document("c.example", None);
        newer.version = "1.1.0".into();
        nodes.push(node(newer));
        let told = versions(&nodes);
        assert_eq!(told.keys().collect::<Vec<_>>(), ["Hemicycle 1.0.0", "Hemicycle 1.1.0"]);
        assert_eq!(told["Hemicycle 1.1.0"], vec![server("c.example")]);
    }

    #[test]
    fn documents_out_of_bounds_are_refused() {
        let good = document("b.example", None);
        assert!(check_bounds(&good, &server("b.example"), 1_000_000).is_ok());
        assert!(check_bounds(&good, &server("c.example"), 1_000_000).is_err(), "another server's document");
        assert!(check_bounds(&good, &server("b.example"), 1_000_000 + MAX_SKEW_MS + 1).is_err(), "stale");
        let mut many = good.clone();
        for i in 0..=MAX_PEERS {
            many.peers.insert(server(&format!("p{i}.example")), PeerInfo::default());
        }
        assert!(check_bounds(&many, &server("b.example"), 1_000_000).is_err(), "too many peers");
        let mut long = good;
        long.version = "x".repeat(MAX_TEXT + 1);
        assert!(check_bounds(&long, &server("b.example"), 1_000_000).is_err(), "a long text");
    }
}
