//! Federation: other servers' requests in, ours out.
//!
//! - `client.rs`: discovery, X-Matrix signing, the pooled HTTPS client and backoff.
//! - `keys.rs`: other servers' signing keys (fetched, verified, cached until `valid_until_ts`).
//! - `receive.rs`: inbound PDUs and EDUs — signatures and hashes, missing events, then
//!   [`crate::rooms::Rooms::append_remote`], the one write path.
//! - `sender.rs`: the outbound queue per destination, a consumer of the event stream.
//! - `membership.rs`: joining, leaving, inviting and knocking across servers.
//! - `backfill.rs`: older history fetched when a client pages back past what we hold.
//! - `media.rs`: other servers' media, fetched once and cached under their name.
//! - `threepid.rs`: third-party (email) invites told to, and taken up across, a ministry network.
//! - `allow_list.rs`: `federation.allow` as admins change it at runtime.

pub mod allow_list;
pub mod backfill;
pub mod client;
pub mod keys;
pub mod media;
pub mod membership;
pub mod receive;
pub mod sender;
pub mod tables;
pub mod threepid;

use std::sync::Arc;

use ruma::{
    api::federation::authentication::XMatrix, signatures::Verified, CanonicalJsonObject, CanonicalJsonValue,
    OwnedEventId, OwnedServerName, RoomVersionId, ServerName,
};

use self::{client::FederationClient, keys::RemoteKeys};
use crate::{
    config::Config,
    db::Database,
    error::{Error, Result},
    rooms::signing,
    server_keys::ServerKeys,
};

pub struct Federation {
    pub client: FederationClient,
    pub keys: RemoteKeys,
    pub own: Arc<ServerKeys>,
    pub config: Arc<Config>,
    pub sender: sender::Sender,
    pub media_fetches: media::Fetches,
    /// `federation.allow` with the changes admins made at runtime: what [`Federation::allowed`]
    /// reads.
    pub allow_list: allow_list::AllowList,
    /// Per-origin limit on concurrent inbound requests, so one peer cannot starve the others.
    inbound: std::sync::Mutex<std::collections::HashMap<OwnedServerName, Arc<tokio::sync::Semaphore>>>,
    /// Events fetched from each server in the current minute ([`Federation::count_fetch`]).
    fetches: std::sync::Mutex<std::collections::HashMap<OwnedServerName, (std::time::Instant, u32)>>,
    /// Transactions received since start-up (the low bits of their received-order keys).
    transactions: std::sync::atomic::AtomicU64,
    /// The servers with joined members of each room, as of a state snapshot.
    room_servers: std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, (u64, Vec<OwnedServerName>)>>,
    /// The membership history of each server's users in each room, as of a state snapshot:
    /// which events of the room the sender owes that server ([`sender`]).
    pub(crate) server_windows: sender::ServerWindows,
    /// Rooms we are joining through another server: how many joins are under way, and the PDUs
    /// that arrived for them before one completed (the resident server sends them once it has
    /// our join), taken in right after it instead of being dropped as PDUs of an unknown room.
    pub(crate) joining: std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, receive::Joining>>,
    /// Invites of remote users under way: the invitee's server has the invite (and may act on
    /// it) before we append it, so their `make_join` waits for it here.
    pub invites_in_flight: membership::InFlight,
    /// Held while the invites of bound addresses are taken up, by the worker or by a request
    /// that wants them taken up before it answers: one at a time, so none is taken up twice.
    pub(crate) threepid_take_up: tokio::sync::Mutex<()>,
    /// Wakes the worker that tries failed third-party invite steps again.
    pub threepid_retries: threepid::Retries,
    /// When each origin's last new transaction came (since start-up), for the status document.
    received: std::sync::Mutex<std::collections::HashMap<OwnedServerName, u64>>,
}

/// The largest answer we read from another server (a media file may be larger, up to
/// `media.max_upload_size`): a big room's `send_join` state fits many times over.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// Bounds of an OpenID userinfo lookup: a caller waits for it before their call starts.
const OPENID_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const OPENID_MAX_ANSWER: usize = 16 * 1024;

/// Events fetched from one server a minute, on behalf of what it sent.
const FETCHES_PER_ORIGIN: u32 = 5_000;

/// Concurrent inbound requests one origin may have in flight.
const INBOUND_PER_ORIGIN: usize = 32;

impl Federation {
    pub fn new(config: Arc<Config>, db: Arc<Database>, own: Arc<ServerKeys>) -> Result<Self> {
        if !config.federation.verify_tls {
            tracing::warn!(
                "federation.verify_tls = false: other servers' certificates are not checked (test setups only)"
            );
        }
        Ok(Self {
            client: FederationClient::new(
                config.server_name.clone(),
                config.federation.verify_tls,
                MAX_RESPONSE.max(config.media.max_upload_size as usize + 1024 * 1024),
                &config.federation.nameservers,
                client::AddressFilter {
                    deny: config.federation.deny_ranges.clone(),
                    allow: config.federation.allow_ranges.clone(),
                },
                config
                    .federation
                    .pinned
                    .iter()
                    .filter_map(|(server, pinned)| Some((server.clone(), pinned.address.clone()?)))
                    .collect(),
            )?,
            keys: RemoteKeys::new(db.clone(), &config.federation.pinned),
            allow_list: allow_list::AllowList::load(db.clone(), &config.federation.allow)?,
            sender: sender::Sender::new(db),
            media_fetches: Default::default(),
            own,
            config,
            inbound: Default::default(),
            fetches: Default::default(),
            transactions: Default::default(),
            room_servers: Default::default(),
            server_windows: Default::default(),
            joining: Default::default(),
            invites_in_flight: Default::default(),
            threepid_take_up: Default::default(),
            threepid_retries: Default::default(),
            received: Default::default(),
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.config.server_name
    }

    /// Whether we federate with this server at all (`federation.enabled`, `federation.pinned`,
    /// and `federation.allow` as admins changed it at runtime).
    pub fn allowed(&self, server: &ServerName) -> bool {
        let f = &self.config.federation;
        let pinned = f.pinned.is_empty() || f.pinned.contains_key(server);
        f.enabled && (server == self.server_name() || (pinned && self.allow_list.contains(server)))
    }

    /// An admin's change of the allow-list (`by`: who, for the entry kept): `server` put on it
    /// (`allowed`) or taken off. Answers whether anything changed. A server outside
    /// `federation.pinned` stays refused whatever the list says, so adding one is refused.
    pub fn set_allowed(&self, server: &ServerName, allowed: bool, by: &str, reason: &str) -> Result<bool> {
        let pinned = &self.config.federation.pinned;
        if allowed && !pinned.is_empty() && !pinned.contains_key(server) {
            return Err(Error::invalid_param(format!(
                "{server} is not in federation.pinned: a closed federation's peers are set in the configuration"
            )));
        }
        self.allow_list.set(self.server_name(), server, allowed, by, reason)
    }

    pub fn require_allowed(&self, server: &ServerName) -> Result<()> {
        if self.allowed(server) {
            Ok(())
        } else {
            Err(Error::forbidden(format!("this server does not federate with {server} (federation.allow)")))
        }
    }

    /// Sends a request, refusing destinations outside `federation.allow` before any traffic.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: ruma::api::OutgoingRequest<PathBuilder = ruma::api::path_builder::SinglePath>,
        R::Authentication: client::OutgoingAuth,
    {
        self.send_with_timeout(destination, request, client::REQUEST_TIMEOUT).await
    }

    /// [`Federation::send`] with another time limit than the default 20 s (media transfers).
    pub async fn send_with_timeout<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: std::time::Duration,
    ) -> Result<R::IncomingResponse>
    where
        R: ruma::api::OutgoingRequest<PathBuilder = ruma::api::path_builder::SinglePath>,
        R::Authentication: client::OutgoingAuth,
    {
        self.send_limited(destination, request, timeout, usize::MAX).await
    }

    /// [`Federation::send`] for an answer of at most `max_bytes` (an event, a page of history, a
    /// list of ids): a hostile peer cannot make us read and parse hundreds of megabytes for it.
    pub async fn send_bounded<R>(
        &self,
        destination: &ServerName,
        request: R,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse>
    where
        R: ruma::api::OutgoingRequest<PathBuilder = ruma::api::path_builder::SinglePath>,
        R::Authentication: client::OutgoingAuth,
    {
        self.send_limited(destination, request, client::REQUEST_TIMEOUT, max_bytes).await
    }

    /// Every outgoing request: refused before any traffic outside `federation.allow` (and to
    /// ourselves), then bounded in time and in the bytes read of the answer (the client's own
    /// limit caps `max_bytes`).
    pub async fn send_limited<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: std::time::Duration,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse>
    where
        R: ruma::api::OutgoingRequest<PathBuilder = ruma::api::path_builder::SinglePath>,
        R::Authentication: client::OutgoingAuth,
    {
        self.require_allowed(destination)?;
        if destination == self.server_name() {
            return Err(Error::Internal("a federation request to ourselves".into()));
        }
        self.client.send_limited(&self.own, destination, request, timeout, max_bytes).await
    }

    /// Who `server` says an OpenID token of its own belongs to (`/openid/userinfo`): asked for
    /// the LiveKit authorisation service, so bounded tightly (an answer is one user id).
    pub async fn openid_userinfo(&self, server: &ServerName, token: &str) -> Result<ruma::OwnedUserId> {
        use ruma::api::federation::openid::get_openid_userinfo::v1::Request;
        let request = Request::new(token.to_owned());
        let answer = self.send_limited(server, request, OPENID_TIMEOUT, OPENID_MAX_ANSWER).await?;
        Ok(answer.sub)
    }

    /// Where `server`'s client API is, by its `/.well-known/matrix/client`: for the delayed
    /// leave events its users hand to our LiveKit service. Only for servers federation may talk
    /// to.
    pub async fn client_api_url(&self, server: &ServerName) -> Result<String> {
        self.require_allowed(server)?;
        self.client.client_api_url(server, OPENID_TIMEOUT).await
    }

    /// A POST of JSON to another server's client API (`url` found by
    /// [`Federation::client_api_url`] or configured), through the federation client's address
    /// filter; answers the status.
    pub async fn post_client_api(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: std::time::Duration,
    ) -> Result<http::StatusCode> {
        self.client.post_plain(url, body, timeout).await
    }

    /// Notes that `origin` sent us a new transaction now.
    pub fn note_received(&self, origin: &ServerName) {
        self.received.lock().expect("received transactions").insert(origin.to_owned(), crate::time::now_ms());
    }

    /// When `origin`'s last new transaction came, since start-up.
    pub fn last_received(&self, origin: &ServerName) -> Option<u64> {
        self.received.lock().expect("received transactions").get(origin).copied()
    }

    /// Counts a received transaction; returns how many came before it since start-up.
    pub fn count_transaction(&self) -> u64 {
        self.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one event fetched from `origin` on behalf of what it sent us (a gap, a state, an
    /// auth chain), refusing past [`FETCHES_PER_ORIGIN`] a minute: a peer that keeps naming
    /// events we lack cannot make us fetch and store without end.
    pub fn count_fetch(&self, origin: &ServerName) -> Result<()> {
        let mut fetches = self.fetches.lock().expect("fetch counts");
        let now = std::time::Instant::now();
        let entry = fetches.entry(origin.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) > std::time::Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > FETCHES_PER_ORIGIN {
            tracing::warn!(%origin, "fetch budget spent: no more events fetched from this server this minute");
            return Err(Error::RemoteUnreachable(format!(
                "more than {FETCHES_PER_ORIGIN} events a minute asked of {origin}: backing off"
            )));
        }
        Ok(())
    }

    /// Checks, before anything is written, that another server can be talked to: allowed, and its
    /// signing keys at hand (cached, or fetched now). A server that cannot be reached is 502.
    pub async fn require_reachable(&self, server: &ServerName) -> Result<()> {
        self.require_allowed(server)?;
        self.keys.keys_of(&self.client, &self.own, server, None).await.map(|_| ()).map_err(|e| match e {
            Error::Forbidden(_) | Error::RemoteUnreachable(_) => e,
            other => Error::RemoteUnreachable(format!("{server} cannot be reached: {other}")),
        })
    }

    /// A permit for one inbound request of `origin`; `None` when it has too many in flight.
    pub fn inbound_permit(&self, origin: &ServerName) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = self
            .inbound
            .lock()
            .expect("inbound limits")
            .entry(origin.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(INBOUND_PER_ORIGIN)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }

    /// Verifies an inbound request's X-Matrix signature (origin, destination, the origin's key)
    /// and returns the origin.
    pub async fn verify_request(&self, request: &http::Request<bytes::Bytes>) -> Result<OwnedServerName> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Error::Unauthorized("an X-Matrix Authorization header is required".into()))?;
        let x_matrix = XMatrix::try_from(header)
            .map_err(|e| Error::Unauthorized(format!("the X-Matrix Authorization header is malformed: {e}")))?;
        if x_matrix.destination.as_deref().is_some_and(|d| d != self.server_name()) {
            return Err(Error::Unauthorized("the request is addressed to another server".into()));
        }
        let origin = x_matrix.origin.clone();
        if !self.allowed(&origin) {
            return Err(Error::forbidden(format!("this server does not federate with {origin}")));
        }
        let key_map = self
            .keys
            .key_map(&self.client, &self.own, [(origin.clone(), Some(x_matrix.key.to_string()))], keys::KeyUse::Request)
            .await
            .map_err(|e| Error::Unauthorized(format!("the keys of {origin} cannot be had: {e}")))?;
        x_matrix
            .verify_request(request, self.server_name(), &key_map)
            .map_err(|e| Error::Unauthorized(format!("the request signature does not verify: {e}")))?;
        // A server that signs a request to us is up again: what waits for it goes now rather
        // than after the rest of its backoff, as Synapse does.
        if self.client.backing_off(&origin).is_some() {
            self.client.reset_backoff(&origin);
            self.sender.wake(&origin);
            self.threepid_retries.server_up(&origin);
        }
        Ok(origin)
    }

    /// Checks a PDU received from another server: its event id under the room version's rules,
    /// the signatures the spec requires (keys fetched as needed), and its content hash — a PDU
    /// whose hash does not match is kept in its redacted form. Returns the event id and the PDU
    /// to store. The redacted form the event id and the signatures are computed over is
    /// serialized once for both (see [`crate::rooms::signing`]).
    pub async fn verify_pdu(
        &self,
        version: &RoomVersionId,
        object: CanonicalJsonObject,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        self.verify_pdu_naming(version, object).await.1
    }

    /// [`Self::verify_pdu`], with the event id as soon as it is known: a transaction's answer
    /// names a refused PDU by it.
    pub async fn verify_pdu_naming(
        &self,
        version: &RoomVersionId,
        object: CanonicalJsonObject,
    ) -> (Option<OwnedEventId>, Result<(OwnedEventId, CanonicalJsonObject)>) {
        let Some(rules) = version.rules() else {
            return (None, Err(Error::UnsupportedRoomVersion(format!("room version {version} is not supported"))));
        };
        let signed = match signing::signed_bytes(&object, &rules) {
            Ok(signed) => signed,
            Err(e) => return (None, Err(Error::BadJson(format!("the PDU cannot be hashed: {e}")))),
        };
        let id = match signing::reference_id(&signed, &rules) {
            Ok(Some(id)) => id,
            Ok(None) => match object.get("event_id") {
                Some(CanonicalJsonValue::String(id)) => id.clone(),
                _ => return (None, Err(Error::BadJson("the PDU has no event_id".into()))),
            },
            Err(e) => return (None, Err(Error::BadJson(format!("the PDU cannot be hashed: {e}")))),
        };
        let event_id = match OwnedEventId::try_from(id) {
            Ok(id) => id,
            Err(e) => return (None, Err(Error::BadJson(format!("bad event id: {e}")))),
        };
        let verified = self.verify_signed(&rules, object, &signed, event_id.clone()).await;
        (Some(event_id), verified)
    }

    /// The size, signatures and content hash of a PDU whose [`signing::signed_bytes`] and event
    /// id are computed.
    async fn verify_signed(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        mut object: CanonicalJsonObject,
        signed: &[u8],
        event_id: OwnedEventId,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let size = serde_json::to_vec(&object).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > crate::rooms::MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("a PDU of {size} bytes exceeds the limit")));
        }
        object.remove("unsigned");
        let servers = ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| Error::BadJson(format!("{event_id}: {e}")))?;
        let signatures = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(o)) => Some(o),
            _ => None,
        };
        let mut wanted = Vec::new();
        for server in &servers {
            if !self.allowed(server) {
                return Err(Error::forbidden(format!(
                    "{event_id} needs a signature of {server}, outside federation.allow"
                )));
            }
            let key_id = signatures.and_then(|s| s.get(server.as_str())).and_then(|k| match k {
                CanonicalJsonValue::Object(keys) => keys.keys().next().cloned(),
                _ => None,
            });
            wanted.push((server.clone(), key_id));
        }
        let sent_at = object
            .get("origin_server_ts")
            .and_then(|t| t.as_integer())
            .map(|t| u64::try_from(i64::from(t)).unwrap_or(0))
            .unwrap_or(0);
        let key_map = self.keys.key_map(&self.client, &self.own, wanted, keys::KeyUse::Event(sent_at)).await?;
        match signing::check_event(&key_map, &object, signed, &servers) {
            Ok(Verified::All) => Ok((event_id, object)),
            Ok(Verified::Signatures) => {
                let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| Error::BadJson(format!("{event_id} cannot be redacted: {e}")))?;
                tracing::warn!(%event_id, "content hash mismatch: keeping the redacted event");
                Ok((event_id, redacted))
            }
            Err(e) => Err(Error::forbidden(format!("the signatures of {event_id} do not verify: {e}"))),
        }
    }
}

/// The event id of a PDU under its room version's rules (carried inside for versions 1 and 2,
/// the reference hash after that).
pub fn event_id_of(object: &CanonicalJsonObject, version: &RoomVersionId) -> Result<OwnedEventId> {
    let rules = version
        .rules()
        .ok_or_else(|| Error::UnsupportedRoomVersion(format!("room version {version} is not supported")))?;
    let id = match rules.event_id_format {
        ruma::room_version_rules::EventIdFormatVersion::V1 => match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => return Err(Error::BadJson("the PDU has no event_id".into())),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(object, &rules)
                .map_err(|e| Error::BadJson(format!("the PDU cannot be hashed: {e}")))?;
            format!("${hash}")
        }
    };
    OwnedEventId::try_from(id).map_err(|e| Error::BadJson(format!("bad event id: {e}")))
}

/// Parses raw PDU JSON into a canonical object.
pub fn canonical_object(raw: &serde_json::value::RawValue) -> Result<CanonicalJsonObject> {
    serde_json::from_str(raw.get()).map_err(|e| Error::BadJson(format!("a PDU is not canonical JSON: {e}")))
}
