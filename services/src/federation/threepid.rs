//! Third-party (email) invites across a ministry network (docs/network.md). Each node is the
//! identity service of the invites its users send; the node the domain map names as an
//! address's home is where the address gets bound. So that home knows the address is invited
//! (which the externals' node requires before binding one) and the invite is taken up once the
//! address is bound there, the nodes tell each other, only nodes of the network, in signed
//! transactions:
//!
//! 1. the inviter's node, when its `m.room.third_party_invite` goes out (or is revoked by
//!    emptying or redacting it), sends the address's home a [`NOTICE_EDU`];
//! 2. the home, once the address is bound to one of its accounts (whichever way: `/account/3pid`,
//!    the admin API, the LDAP directory), sends the inviter's node a [`BOUND_EDU`];
//! 3. the inviter's node, as identity service, calls the home's `/3pid/onbind` with the signed
//!    invites (the spec's server-server "3PID invites");
//! 4. the home asks the inviter's node to `exchange_third_party_invite`; that node checks the
//!    signature against the key in the room and invites the account over federation.
//!
//! Steps 3 and 4 are the spec's, so an identity service and homeservers outside Hemicycle take
//! part in them as in any Matrix deployment.
//!
//! Steps 1 and 2 travel in the durable EDU queue. Steps 3 and 4 are requests; one that fails
//! for want of an answer (the other node down or cut off, a 5xx, a rate limit) is kept in
//! `servernamejob_threepidretry` and tried again by [`start`]'s worker, after a backoff that
//! doubles from [`RETRY_FIRST`] up to [`RETRY_CAP`], at start-up, and as soon as that server signs
//! a request to us (it is up again) or an admin resets its connection — until it succeeds, is
//! refused, or the invite no longer stands.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    api::federation::thirdparty::{bind_callback, exchange_invite},
    events::StateEventType,
    serde::Raw,
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, RoomId, ServerName, UserId,
};
use serde_json::{json, Value};

use super::tables::{ThreepidRetry, ThreepidStep};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
    rooms::{pdu::Pdu, InviteNotice},
    services::Services,
    users::threepid::{canonical_email, BoundThreepid},
};

/// Inviter's node → the address's home: `{medium, address, token, room_id, sender,
/// expires_ts}` (an invite), or with `revoked: true` (it no longer stands).
pub const NOTICE_EDU: &str = "org.hemicycle.network.third_party_invite";
/// Address's home → inviter's node: `{medium, address, mxid}`, the address is bound to `mxid`.
pub const BOUND_EDU: &str = "org.hemicycle.network.third_party_bound";

/// Invites one `/3pid/onbind` may carry: a binding takes up the few invites of one address.
const MAX_ONBIND_INVITES: usize = 20;

/// Longest token we take from another node (ours are far shorter).
const MAX_TOKEN_LEN: usize = 255;

/// The first wait before a failed step is tried again; it doubles with each failure.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between two tries of a step.
const RETRY_CAP: Duration = Duration::from_secs(3600);

/// What wakes the worker of failed steps: a new one, or servers known to be up again.
#[derive(Default)]
pub struct Retries {
    wake: tokio::sync::Notify,
    /// Servers whose steps are due at once, whatever their backoff.
    up: Mutex<BTreeSet<OwnedServerName>>,
}

impl Retries {
    /// `server` answered or signed a request to us: its steps waiting for a retry go now.
    pub fn server_up(&self, server: &ServerName) {
        self.up.lock().expect("servers up").insert(server.to_owned());
        self.wake.notify_one();
    }
}

/// Starts the task that takes up the invites of addresses as they are bound (and, at start,
/// of those bound before a crash), and the one that tries failed steps again.
pub fn start(services: Arc<Services>) {
    let bound_services = services.clone();
    tokio::spawn(async move {
        let bound = bound_services.threepids.bound_notify();
        loop {
            take_up_bound(&bound_services).await;
            bound.notified().await;
        }
    });
    tokio::spawn(async move {
        // At start every kept step is due: the backoff of another server is not known across a
        // restart (as the federation sender's is not).
        let mut all = true;
        loop {
            let next = run_retries(&services, all).await;
            all = false;
            let wake = services.federation.threepid_retries.wake.notified();
            match next {
                Some(ts) => {
                    let wait = Duration::from_millis(ts.saturating_sub(crate::time::now_ms()));
                    // Woken early (a server came back, an admin reset it) or at the time: either way the
                    // loop runs what is due, so whether the wait timed out does not matter.
                    let _ = tokio::time::timeout(wait, wake).await;
                }
                None => wake.await,
            }
        }
    });
}

fn retry_key(step: &ThreepidStep) -> String {
    match step {
        ThreepidStep::Onbind { address, .. } => format!("onbind {address}"),
        ThreepidStep::Exchange { token, .. } => format!("exchange {token}"),
    }
}

/// Keeps a step for `server` to be tried (again) after `attempts` failures, and wakes the worker.
fn keep_step(services: &Services, server: &ServerName, step: ThreepidStep, attempts: u32) -> Result<()> {
    let next_ts = if attempts == 0 {
        0
    } else {
        let wait = RETRY_FIRST.saturating_mul(1 << attempts.min(20).saturating_sub(1)).min(RETRY_CAP);
        crate::time::now_ms().saturating_add(wait.as_millis() as u64)
    };
    let key = (server.to_owned(), retry_key(&step));
    let mut batch = Batch::new();
    services.db.tables.federation.servernamejob_threepidretry.insert(
        &mut batch,
        &key,
        &Json(ThreepidRetry { step, attempts, next_ts }),
    );
    services.db.commit(batch)?;
    services.federation.threepid_retries.wake.notify_one();
    Ok(())
}

fn drop_step(services: &Services, key: &(OwnedServerName, String)) -> Result<()> {
    let mut batch = Batch::new();
    services.db.tables.federation.servernamejob_threepidretry.remove(&mut batch, key);
    Ok(services.db.commit(batch)?)
}

/// Runs the kept steps that are due (`all`: every one), one at a time; answers when the next
/// one left is due.
async fn run_retries(services: &Arc<Services>, all: bool) -> Option<u64> {
    let up = std::mem::take(&mut *services.federation.threepid_retries.up.lock().expect("servers up"));
    let table = &services.db.tables.federation.servernamejob_threepidretry;
    let steps: Vec<_> = match table.iter().collect::<std::result::Result<Vec<_>, _>>() {
        Ok(steps) => steps,
        Err(error) => {
            tracing::error!(%error, "reading the third-party invite steps to retry failed");
            return None;
        }
    };
    for (key, Json(retry)) in steps {
        if !all && retry.next_ts > crate::time::now_ms() && !up.contains(&key.0) {
            continue;
        }
        let outcome = match &retry.step {
            ThreepidStep::Onbind { address, mxid } => send_onbind(services, &key.0, address, mxid).await,
            ThreepidStep::Exchange { address, token, room, sender, mxid, signed } => {
                let exchange = Exchange { address, token, room, sender, mxid, signed };
                retry_exchange(services, &key.0, &exchange).await
            }
        };
        let recorded = match outcome {
            Err(Error::RemoteUnreachable(error)) => {
                tracing::info!(server = %key.0, step = %key.1, %error, "a third-party invite step failed again");
                keep_step(services, &key.0, retry.step, retry.attempts.saturating_add(1))
            }
            Err(error) => {
                tracing::warn!(server = %key.0, step = %key.1, %error, "a third-party invite step was refused");
                drop_step(services, &key)
            }
            Ok(()) => drop_step(services, &key),
        };
        if let Err(error) = recorded {
            tracing::error!(%error, "recording the outcome of a third-party invite step failed");
        }
    }
    table.iter().flatten().map(|(_, Json(retry))| retry.next_ts).min()
}

/// Takes up the invites of every address bound and not yet handled. Also called by a request
/// that binds an address, so that its own node's invites are members' invites by its answer.
pub async fn take_up_bound(services: &Arc<Services>) {
    let _one_at_a_time = services.federation.threepid_take_up.lock().await;
    loop {
        let queue = match services.threepids.bound_queue(100) {
            Ok(queue) => queue,
            Err(error) => {
                tracing::error!(%error, "reading the bound addresses failed");
                return;
            }
        };
        if queue.is_empty() {
            return;
        }
        for (pos, bound) in queue {
            if let Err(error) = take_up(services, &bound).await {
                tracing::warn!(user = %bound.user, %error, "taking up the third-party invites of an address failed");
            }
            if let Err(error) = services.threepids.bound_done(pos) {
                tracing::error!(%error, "recording a bound address as handled failed");
                return;
            }
        }
    }
}

/// One bound address: the invites kept here become the account's invites; the nodes that told
/// us of invites of it are told it is bound.
async fn take_up(services: &Arc<Services>, bound: &BoundThreepid) -> Result<()> {
    if bound.medium != "email" || services.threepids.owner(&bound.medium, &bound.address)?.as_ref() != Some(&bound.user)
    {
        return Ok(());
    }
    services.rooms.exchange_threepid_invites(&bound.address, &bound.user).await?;
    let address = canonical_email(&bound.address)?;
    let inviters: BTreeSet<OwnedServerName> = services
        .rooms
        .invite_notices(&address)?
        .into_iter()
        .map(|(_, notice)| notice.sender.server_name().to_owned())
        .filter(|server| server != services.federation.server_name() && services.federation.allowed(server))
        .collect();
    let inviters: Vec<OwnedServerName> = inviters.into_iter().collect();
    let content = json!({ "medium": "email", "address": address, "mxid": bound.user });
    services.federation.sender.queue_edu(&inviters, BOUND_EDU, content)
}

fn state_content(pdu: &Pdu) -> Value {
    serde_json::from_str(pdu.content.get()).unwrap_or(Value::Null)
}

fn non_empty(value: &Value) -> bool {
    value.as_object().is_some_and(|o| !o.is_empty())
}

/// Every event of the stream (the federation dispatcher calls this): a third-party invite kept
/// here going out is told to the address's home; one emptied or redacted is revoked there and
/// dropped here.
pub fn on_event(services: &Services, pdu: &Pdu) {
    if !services.network.has_domain_map() {
        return;
    }
    let kind = pdu.kind.to_string();
    let (token, revoked) = match kind.as_str() {
        "m.room.third_party_invite" => {
            let Some(token) = pdu.state_key.clone() else { return };
            (token, !non_empty(&state_content(pdu)))
        }
        "m.room.redaction" => {
            let target = pdu.redacts.clone().or_else(|| {
                state_content(pdu)["redacts"].as_str().and_then(|id| ruma::OwnedEventId::try_from(id).ok())
            });
            // Only a redaction that took effect revokes: one naming another room's invite, or
            // sent without the right to redact, changes nothing.
            let room = pdu.room_id.as_ref().map(|r| r.as_str()).unwrap_or_default();
            let target = target.filter(|id| services.rooms.redacted_target(room, id).ok().flatten().is_some());
            let Some(target) = target.and_then(|id| services.rooms.pdu(&id).ok().flatten()) else { return };
            if target.kind.to_string() != "m.room.third_party_invite" {
                return;
            }
            let Some(token) = target.state_key else { return };
            (token, true)
        }
        _ => return,
    };
    if let Err(error) = tell_home(services, &token, revoked) {
        tracing::warn!(%error, "telling an address's node of a third-party invite failed");
    }
}

fn tell_home(services: &Services, token: &str, revoked: bool) -> Result<()> {
    let Some((address, invite)) = services.rooms.kept_invite(token)? else { return Ok(()) };
    if revoked {
        services.rooms.forget_invite(&address, token)?;
    }
    let Some(home) = services.network.server_of_address(&address)? else { return Ok(()) };
    let Ok(home) = OwnedServerName::try_from(home) else { return Ok(()) };
    if home == services.federation.server_name()
        || !services.network.is_network_server(home.as_str())
        || !services.federation.allowed(&home)
    {
        return Ok(());
    }
    let mut content = json!({ "medium": "email", "address": address, "token": token, "room_id": invite.room });
    if revoked {
        content["revoked"] = json!(true);
    } else {
        content["sender"] = json!(invite.sender);
        content["expires_ts"] = json!(invite.created_ts.saturating_add(services.network.invite_lifetime_ms()));
    }
    services.federation.sender.queue_edu(&[home], NOTICE_EDU, content)
}

fn field<'a>(content: &'a Value, name: &str) -> Result<&'a str> {
    content[name].as_str().ok_or_else(|| Error::BadJson(format!("{name} is required")))
}

/// [`NOTICE_EDU`] from `origin`: kept when `origin` is a node of the network speaking for its
/// own user and the address's home is this node; an address already bound here is taken up.
pub fn on_notice(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    if !services.network.has_domain_map() || field(content, "medium")? != "email" {
        return Ok(());
    }
    if !services.network.is_network_server(origin.as_str()) {
        return Err(Error::forbidden("third-party invites are told by nodes of the network only"));
    }
    let address = canonical_email(field(content, "address")?)?;
    let token = field(content, "token")?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Error::BadJson("a third-party invite token is 1 to 255 characters".into()));
    }
    if services.network.server_of_address(&address)?.as_deref() != Some(services.network.own_server()) {
        return Ok(());
    }
    if content["revoked"].as_bool() == Some(true) {
        let told_by_origin = services
            .rooms
            .invite_notices(&address)?
            .iter()
            .any(|(t, n)| t == token && n.sender.server_name() == origin);
        if told_by_origin {
            services.rooms.forget_invite_notice(&address, token)?;
            tracing::info!(%origin, "a third-party invite told by another node was revoked");
        }
        return Ok(());
    }
    let room = RoomId::parse(field(content, "room_id")?).map_err(|e| Error::BadJson(e.to_string()))?;
    let sender = UserId::parse(field(content, "sender")?).map_err(|e| Error::BadJson(e.to_string()))?;
    if sender.server_name() != origin {
        return Err(Error::forbidden("a third-party invite told by another server than its sender's"));
    }
    // Our own lifetime bounds what another node asks for.
    let longest = crate::time::now_ms().saturating_add(services.network.invite_lifetime_ms());
    let expires_ts = content["expires_ts"].as_u64().unwrap_or(longest).min(longest);
    let notice = InviteNotice { room, sender, expires_ts };
    if !services.rooms.record_invite_notice(&address, token, &notice)? {
        tracing::warn!(%origin, "too many third-party invites of one address: one more dropped");
        return Ok(());
    }
    tracing::info!(%origin, "a third-party invite of an address of this node was told");
    if let Some(owner) = services.threepids.owner("email", &address)? {
        services.threepids.requeue_bound(&owner, "email", &address)?;
    }
    Ok(())
}

/// [`BOUND_EDU`] from `origin`: the address's home says it is bound to one of its users; our
/// standing invites of it go to that node's `/3pid/onbind`, signed for that user.
pub fn on_bound(services: &Arc<Services>, origin: &ServerName, content: &Value) -> Result<()> {
    if !services.network.has_domain_map() || field(content, "medium")? != "email" {
        return Ok(());
    }
    let address = canonical_email(field(content, "address")?)?;
    let mxid = UserId::parse(field(content, "mxid")?).map_err(|e| Error::BadJson(e.to_string()))?;
    if mxid.server_name() != origin
        || services.network.server_of_address(&address)?.as_deref()
            != Some(origin.as_str().to_ascii_lowercase().as_str())
    {
        return Err(Error::forbidden("only an address's node says it is bound, and to its own users"));
    }
    if services.rooms.kept_invites(&address)?.is_empty() {
        return Ok(());
    }
    // Kept before the transaction is answered, tried by the worker (not in the transaction's
    // time: the onbind leads to an exchange back here), and again should it fail.
    keep_step(services, origin, ThreepidStep::Onbind { address, mxid }, 0)
}

/// Step 3: our standing invites of `address` go to its home's `/3pid/onbind`, signed for
/// `mxid`, the account it is bound to there. Nothing left to send is done with.
async fn send_onbind(services: &Arc<Services>, home: &ServerName, address: &str, mxid: &UserId) -> Result<()> {
    let mut invites = Vec::new();
    for (token, invite) in services.rooms.kept_invites(address)?.into_iter().take(MAX_ONBIND_INVITES) {
        let signed = services.rooms.sign_invite(&token, &invite, mxid)?;
        let signed = serde_json::value::to_raw_value(&signed).map_err(|e| Error::Internal(e.to_string()))?;
        invites.push(bind_callback::v1::ThirdPartyInvite::new(
            address.to_owned(),
            mxid.to_owned(),
            invite.room.clone(),
            invite.sender.clone(),
            Raw::from_json(signed),
        ));
    }
    if invites.is_empty() {
        return Ok(());
    }
    let request = bind_callback::v1::Request::email(address.to_owned(), mxid.to_owned(), invites);
    services.federation.send(home, request).await?;
    tracing::info!(%home, "the invites of an address bound there were sent to its node");
    Ok(())
}

/// Step 4, one invite: what the home asks the inviter's node to exchange.
struct Exchange<'a> {
    address: &'a str,
    token: &'a str,
    room: &'a RoomId,
    sender: &'a UserId,
    mxid: &'a UserId,
    signed: &'a Value,
}

impl Exchange<'_> {
    /// Whether the inviter's node told us of this invite (and it still stands): only those are
    /// tried again, so an unauthenticated onbind cannot make us keep anything.
    fn told(&self, services: &Services) -> Result<bool> {
        Ok(services
            .rooms
            .invite_notices(self.address)?
            .iter()
            .any(|(token, notice)| token == self.token && &*notice.sender == self.sender && &*notice.room == self.room))
    }
}

/// Asks `server` to exchange the invite; once it did, the notice of it is done with.
async fn send_exchange(services: &Services, server: &ServerName, exchange: &Exchange<'_>) -> Result<()> {
    let content = json!({ "membership": "invite", "third_party_invite": { "signed": exchange.signed } });
    let content = serde_json::value::to_raw_value(&content).map_err(|e| Error::Internal(e.to_string()))?;
    let request = exchange_invite::v1::Request::new(
        exchange.room.to_owned(),
        exchange.sender.to_owned(),
        exchange.mxid.to_owned(),
        Raw::from_json(content),
    );
    services.federation.send(server, request).await?;
    services.rooms.forget_invite_notice(exchange.address, exchange.token)?;
    tracing::info!(room = %exchange.room, user = %exchange.mxid, "third-party invite exchanged");
    Ok(())
}

/// A kept exchange tried again, while the invite stands and the address is still bound to the
/// account it was signed for.
async fn retry_exchange(services: &Services, server: &ServerName, exchange: &Exchange<'_>) -> Result<()> {
    let bound = services.threepids.owner("email", exchange.address)?.as_deref() == Some(exchange.mxid);
    if !bound || !exchange.told(services)? {
        return Ok(());
    }
    send_exchange(services, server, exchange).await
}

/// `PUT /_matrix/federation/v1/3pid/onbind` (from an identity service, unauthenticated as the
/// spec has it): for an address bound to a user of ours, each invite is exchanged with its
/// sender's server. Only for addresses bound here to the user named, a few invites at a time,
/// and, in a ministry network, senders on nodes of the network.
pub async fn on_bind_callback(services: &Arc<Services>, request: bind_callback::v1::Request) -> Result<()> {
    if request.medium.as_str() != "email" {
        return Err(Error::invalid_param("only email addresses are bound here"));
    }
    let address = canonical_email(&request.address)?;
    if !services.users.is_local(&request.mxid)
        || services.threepids.owner("email", &address)?.as_deref() != Some(&*request.mxid)
    {
        return Err(Error::forbidden("the address is not bound to that user here"));
    }
    if request.invites.len() > MAX_ONBIND_INVITES {
        return Err(Error::BadJson(format!("at most {MAX_ONBIND_INVITES} invites at a time")));
    }
    // A server that did not answer one exchange is not asked the next ones now (each could take
    // the request's whole time): they are kept for the worker straight away.
    let mut unreachable = BTreeSet::new();
    for invite in request.invites {
        let server = invite.sender.server_name().to_owned();
        let ours = invite.mxid == request.mxid && canonical_email(&invite.address).ok().as_deref() == Some(&*address);
        let reachable = services.federation.allowed(&server)
            && server != services.federation.server_name()
            && (!services.network.has_domain_map() || services.network.is_network_server(server.as_str()));
        if !ours || !reachable {
            tracing::info!(%server, "an onbind invite for another address or from outside the network ignored");
            continue;
        }
        let signed: Value = invite.signed.deserialize_as().map_err(|e| Error::BadJson(e.to_string()))?;
        let token = signed["token"].as_str().unwrap_or_default().to_owned();
        let exchange = Exchange {
            address: &address,
            token: &token,
            room: &invite.room_id,
            sender: &invite.sender,
            mxid: &invite.mxid,
            signed: &signed,
        };
        let outcome = if unreachable.contains(&server) {
            Err(Error::RemoteUnreachable(format!("{server} did not answer a previous exchange")))
        } else {
            send_exchange(services, &server, &exchange).await
        };
        if matches!(outcome, Err(Error::RemoteUnreachable(_))) {
            unreachable.insert(server.clone());
        }
        match outcome {
            Ok(()) => {}
            Err(Error::RemoteUnreachable(error)) if exchange.told(services)? => {
                tracing::warn!(%server, %error, "exchanging a third-party invite failed; it will be tried again");
                let step = ThreepidStep::Exchange {
                    address: address.clone(),
                    token: token.clone(),
                    room: invite.room_id.clone(),
                    sender: invite.sender.clone(),
                    mxid: invite.mxid.clone(),
                    signed: signed.clone(),
                };
                keep_step(services, &server, step, 1)?;
            }
            Err(error) => tracing::warn!(%server, %error, "exchanging a third-party invite failed"),
        }
    }
    Ok(())
}

/// Whether `signed` carries a signature by one of the public keys of the room's
/// `m.room.third_party_invite` content (`public_key`, `public_keys`).
fn signed_by_invite_key(signed: &CanonicalJsonObject, invite: &Value) -> bool {
    use base64::Engine;
    let keys: Vec<Vec<u8>> = std::iter::once(&invite["public_key"])
        .chain(invite["public_keys"].as_array().into_iter().flatten().map(|k| &k["public_key"]))
        .filter_map(Value::as_str)
        .filter_map(|key| {
            let key = key.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(key)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key))
                .ok()
        })
        .collect();
    let Some(CanonicalJsonValue::Object(signatures)) = signed.get("signatures") else { return false };
    let Ok(canonical) = ruma::signatures::to_canonical_json_string_for_signing(signed) else { return false };
    signatures.values().filter_map(|by| if let CanonicalJsonValue::Object(by) = by { Some(by) } else { None }).any(
        |by| {
            by.iter().filter(|(id, _)| id.starts_with("ed25519:")).any(|(_, signature)| {
                let Some(signature) = signature.as_str().and_then(|s| {
                    base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok()
                }) else {
                    return false;
                };
                keys.iter().any(|key| {
                    ruma::signatures::verify_canonical_json_bytes(
                        &ruma::SigningKeyAlgorithm::Ed25519,
                        key,
                        &signature,
                        canonical.as_bytes(),
                    )
                    .is_ok()
                })
            })
        },
    )
}

/// `PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}` from `origin`: a user of
/// `origin` holds the signed token of a third-party invite one of our users sent. Checked as
/// the spec says (the invite is in the room, the signature is by its key, for that user and
/// that sender), then the member invite is sent as the inviter; the kept invite is done with.
pub async fn on_exchange(
    services: &Arc<Services>,
    origin: &ServerName,
    request: exchange_invite::v1::Request,
) -> Result<()> {
    if request.kind != StateEventType::RoomMember {
        return Err(Error::BadJson("an exchange is of an m.room.member event".into()));
    }
    let (room, sender, invitee) = (&request.room_id, &request.sender, &request.state_key);
    if invitee.server_name() != origin {
        return Err(Error::forbidden("an exchange for a user of another server"));
    }
    if !super::receive::acl_allows(services, room, origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    if !services.users.is_local(sender) || !services.rooms.is_joined(sender, room)? {
        return Err(Error::forbidden("the inviter is not a member of the room here"));
    }
    let content: Value = request.content.deserialize_as().map_err(|e| Error::BadJson(e.to_string()))?;
    let signed_value = &content["third_party_invite"]["signed"];
    let token = signed_value["token"].as_str().unwrap_or_default();
    if content["membership"] != "invite"
        || signed_value["mxid"].as_str() != Some(invitee.as_str())
        || signed_value["sender"].as_str() != Some(sender.as_str())
        || token.is_empty()
    {
        return Err(Error::BadJson("not the invite of the signed user by the signed sender".into()));
    }
    let event = services.rooms.state_event(room, &StateEventType::RoomThirdPartyInvite, token)?;
    let invite = event.as_ref().filter(|e| &e.sender == sender).map(state_content).filter(non_empty);
    let Some(invite) = invite else {
        return Err(Error::forbidden("no such third-party invite in the room"));
    };
    let signed = ruma::CanonicalJsonValue::try_from(signed_value.clone()).map_err(|e| Error::BadJson(e.to_string()))?;
    let CanonicalJsonValue::Object(signed) = signed else {
        return Err(Error::BadJson("signed is an object".into()));
    };
    if !signed_by_invite_key(&signed, &invite) {
        return Err(Error::forbidden("the invite is not signed by the key of the room's third-party invite"));
    }
    let kept = services.rooms.kept_invite(token)?;
    if let Some((address, _)) = &kept {
        if !services.rooms.kept_invites(address)?.iter().any(|(t, _)| t == token) {
            return Err(Error::forbidden("the third-party invite has expired"));
        }
    }
    let member = json!({
        "membership": "invite",
        "third_party_invite": { "display_name": invite["display_name"], "signed": signed },
    });
    crate::federation::membership::invite_remote_with(services, room, sender, invitee, member).await?;
    if let Some((address, _)) = kept {
        services.rooms.forget_invite(&address, token)?;
    }
    tracing::info!(%room, %invitee, "third-party invite exchanged for a user of another server");
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::{events::StateEventType, RoomVersionId};
    use serde_json::json;

    use crate::rooms::tests::{a_room_where_mallory_redacts, remote_event, room_with_remote_members, take};

    /// An email invite is revoked by a redaction of its event that took effect — not by one a
    /// member of another server sends from a room where she may redact, naming it.
    #[tokio::test]
    async fn only_a_redaction_that_took_effect_revokes_an_email_invite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let domains = dir.path().join("domains.toml");
        std::fs::write(&domains, "[domains]\n\"*.gouv.fr\" = \"localhost\"\n").expect("domain map");
        let mut config = crate::config::Config::default();
        config.database.path = dir.path().join("db");
        config.network.domains_file = Some(domains);
        let services = crate::services::Services::open(config).expect("services");
        let rooms = &services.rooms;
        let (room, alice, _, mallory) = room_with_remote_members(&services).await;
        let own = a_room_where_mallory_redacts(&services, &alice, &mallory).await;
        let address = "jean@interieur.gouv.fr";
        rooms.invite_by_email(&alice, &room, address).await.expect("invite");
        let [(token, _)] = <[_; 1]>::try_from(rooms.kept_invites(address).expect("read")).expect("one invite");
        let invite = rooms.state_event(&room, &StateEventType::RoomThirdPartyInvite, &token).unwrap().expect("event");

        let prev = rooms.room(&own).expect("read").expect("room").extremities;
        let content = json!({ "redacts": invite.event_id });
        let redaction = remote_event(rooms, &own, &mallory, ("m.room.redaction", None, content), &prev, &prev[0]);
        take(rooms, &own, &redaction).await;
        super::on_event(&services, &rooms.pdu(&redaction.0).unwrap().expect("stored"));
        assert!(rooms.kept_invite(&token).unwrap().is_some(), "another room's redaction revokes nothing");

        let version = RoomVersionId::V12;
        let mine = crate::rooms::NewEvent::redaction(&version, &invite.event_id, None);
        let mine = rooms.append(&room, &alice, mine, None).await.expect("alice redacts her invite");
        super::on_event(&services, &rooms.pdu(&mine).unwrap().expect("stored"));
        assert!(rooms.kept_invite(&token).unwrap().is_none(), "her own redaction revokes it");
    }
}
