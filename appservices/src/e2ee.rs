//! The bot as an end-to-end encryption participant, built on matrix-sdk: a device of its own
//! (logged in once with `m.login.application_service`, the session kept in `data_dir`),
//! cross-signed, its room keys backed up on the homeserver (key backup), its crypto and sync
//! state in a SQLite store in `data_dir/e2ee`, so keys outlive restarts and crashes.
//!
//! Why a synced device rather than the appservice transactions: to decrypt, the bot needs the
//! room keys other devices send it as to-device messages, the device lists of the rooms'
//! members and its one-time key counts. Hemicycle's transactions carry all of them (MSC4203,
//! MSC3202), but Synapse's carry device lists and key counts only when its experimental
//! MSC3202 support is on, and matrix-sdk takes them only from a sync of its own, which it
//! drives whole (key uploads, key queries, backups). So the transactions keep bringing what is clear (invites, state, unencrypted commands), and
//! this device's sync brings what is encrypted: only messages that arrive encrypted are handed
//! to the bot from here, decrypted, each to the same [`crate::bot::handle`] as the others.
//! Replies in an encrypted room are sent encrypted through this device, with the same
//! transaction ids as before, which the homeserver deduplicates for the device across restarts.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use matrix_sdk::{
    authentication::matrix::MatrixSession,
    config::{RequestConfig, SyncSettings, SyncToken},
    encryption::{
        recovery::RecoveryState,
        verification::{SasState, Verification, VerificationRequestState},
        BackupDownloadStrategy, EncryptionSettings,
    },
    ruma::{
        api::client::sync::sync_events,
        events::{
            key::verification::request::ToDeviceKeyVerificationRequestEvent,
            room::message::{MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent},
        },
        OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId,
    },
    Client, RoomState, SessionMeta, SessionTokens,
};
use serde_json::{json, Value};

use crate::{
    matrix::{MatrixError, Result},
    service::Workspace,
};

/// How long a reply waits for the device's sync to know a room the bot just joined.
const ROOM_WAIT: Duration = Duration::from_secs(30);
/// How often the device's sync position is recorded when no encrypted event came.
const POSITION_EVERY: Duration = Duration::from_secs(60);
/// The longest pause between two attempts of the device to sync.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct E2ee {
    client: Client,
    /// A new store (first start, or the old one lost): its first sync only learns the rooms.
    fresh: bool,
    health: Arc<tokio::sync::watch::Sender<Health>>,
}

/// How the device's sync is going. A reply in an encrypted room waits for the device while
/// it starts or recovers from a short failure, and gives up at once when it has been failing
/// for longer: the homeserver refusing the device (Synapse refuses `/sync` to an appservice's
/// sender, so a bot that is that user, see `user_localpart`) must not hold up the bot's
/// transactions, and with them the rooms in the clear.
#[derive(Clone, Debug)]
enum Health {
    Starting,
    Syncing,
    Failing { since: Instant, error: String },
}

impl Health {
    fn failed(&mut self, error: String) {
        let since = match self {
            Health::Failing { since, .. } => *since,
            _ => Instant::now(),
        };
        *self = Health::Failing { since, error };
    }

    /// Why the device is given up on, when it has been failing for longer than [`ROOM_WAIT`].
    fn down(&self) -> Option<String> {
        match self {
            Health::Failing { since, error } if since.elapsed() >= ROOM_WAIT => Some(error.clone()),
            _ => None,
        }
    }
}

/// Tries `attempt` until it succeeds, waiting longer after each failure (up to
/// [`BACKOFF_MAX`]); each outcome is recorded in `health` and each failure logged.
async fn until_done<T, F>(health: &tokio::sync::watch::Sender<Health>, what: &str, mut attempt: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = std::result::Result<T, matrix_sdk::Error>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(value) => {
                health.send_replace(Health::Syncing);
                return value;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "the bot's device could not {what}");
                health.send_modify(|h| h.failed(error.to_string()));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn failed(error: impl std::fmt::Display, status: u16) -> MatrixError {
    MatrixError { status, errcode: "M_UNKNOWN".into(), error: error.to_string() }
}

/// A matrix-sdk error as the bot sorts failures: the homeserver's status when it answered,
/// otherwise 0 (not reached: worth trying again).
fn sdk_failure(error: matrix_sdk::Error) -> MatrixError {
    let status = error.as_client_api_error().map_or(0, |e| e.status_code.as_u16());
    failed(error, status)
}

impl E2ee {
    /// Opens the device's store in `data_dir/e2ee` and its session (logging in once, the
    /// first time), then makes sure the device is cross-signed and its keys backed up, with
    /// the recovery key in `data_dir/recovery-key`.
    ///
    /// A store lost (the session without it, or neither) is a new device: logged in anew, it
    /// takes the bot's identity and the backup's key back from secret storage with the
    /// recovery key, so it is cross-signed as before and reads what the lost device could.
    pub async fn open(ws: &Workspace, data_dir: &Path) -> std::result::Result<E2ee, String> {
        let dir = data_dir.join("e2ee");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let session_path = dir.join("session.json");
        let fresh = !dir.join("store").exists();
        if fresh && session_path.exists() {
            tracing::warn!("the bot's encryption store is gone: its device is replaced by a new one");
            std::fs::remove_file(&session_path).map_err(|e| format!("{}: {e}", session_path.display()))?;
        }
        let settings = EncryptionSettings {
            auto_enable_cross_signing: true,
            backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
            auto_enable_backups: true,
        };
        // matrix-sdk retries a failing request for ever by default: the bot's own loops retry
        // instead, with backoff, saying so in the log and in the device's health.
        let client = Client::builder()
            .homeserver_url(&ws.config.homeserver_url)
            .request_config(RequestConfig::short_retry())
            .sqlite_store(dir.join("store"), None)
            .with_encryption_settings(settings)
            .build()
            .await
            .map_err(|e| format!("cannot open the encryption store in {}: {e}", dir.display()))?;
        let session = session(ws, &dir).await?;
        client.restore_session(session).await.map_err(|e| format!("cannot restore the bot's device: {e}"))?;
        client.encryption().wait_for_e2ee_initialization_tasks().await;
        client
            .encryption()
            .bootstrap_cross_signing_if_needed(None)
            .await
            .map_err(|e| format!("cannot cross-sign the bot's device: {e}"))?;
        recovery(&client, &data_dir.join("recovery-key")).await?;
        let health = Arc::new(tokio::sync::watch::Sender::new(Health::Starting));
        Ok(E2ee { client, fresh, health })
    }

    /// Syncs the device forever: encrypted commands go to the bot as they are decrypted.
    ///
    /// Crash safety: matrix-sdk stores its sync position before the events of a sync are
    /// handled, so a crash in between would lose them. The bot therefore keeps its own position
    /// in its store, moved past a sync's events only once a worker has handled them all
    /// (each handled event id recorded as it is done); a restart syncs again from there and
    /// skips what was recorded. The sync itself goes on meanwhile, so that handling a command
    /// that waits for the device (a reply in a room it just joined) does not wait for itself.
    ///
    /// Runs beside the bot, never before it: a homeserver that refuses the device's sync
    /// leaves the rooms in the clear served as ever, while the device tries again with backoff.
    pub async fn run(ws: Arc<Workspace>) {
        let Some(device) = ws.e2ee.get() else { return };
        let (client, health) = (device.client.clone(), device.health.clone());
        // A batch of decrypted messages, and the `/sync` position past them.
        let (batches, mut received) = tokio::sync::mpsc::unbounded_channel::<(Vec<Value>, String)>();
        let worker = ws.clone();
        tokio::spawn(async move {
            // A sync with nothing to handle moves the position too, but at most once a minute
            // (each write is a synced file): a restart then syncs again over a short span.
            let mut written: Option<std::time::Instant> = None;
            while let Some((events, next_batch)) = received.recv().await {
                for event in &events {
                    handle_until_done(&worker, event).await;
                }
                if events.is_empty() && written.is_some_and(|at| at.elapsed() < POSITION_EVERY) {
                    continue;
                }
                match worker.store.update(|s| s.e2ee_since = Some(next_batch)) {
                    Ok(()) => written = Some(std::time::Instant::now()),
                    // The next batch's write records the position further on.
                    Err(error) => tracing::error!(%error, "could not record the device's sync position"),
                }
            }
        });
        let operators = ws.config.operators.clone();
        client.add_event_handler(move |event: ToDeviceKeyVerificationRequestEvent, client: Client| {
            let operators = operators.clone();
            async move {
                let flow = event.content.transaction_id.to_string();
                tokio::spawn(verify(client, operators, event.sender, flow));
            }
        });
        let operators = ws.config.operators.clone();
        client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, client: Client| {
            let operators = operators.clone();
            async move {
                if let MessageType::VerificationRequest(_) = &event.content.msgtype {
                    tokio::spawn(verify(client, operators, event.sender, event.event_id.to_string()));
                }
            }
        });
        if device.fresh {
            // A new store knows no room: a first full sync gives it every room the bot is in
            // (its events are not handled; the bot's own position, kept in its state, goes on).
            let first = SyncSettings::default().token(SyncToken::NoToken).timeout(Duration::ZERO);
            until_done(&health, "make its first sync", || client.sync_once(first.clone())).await;
        }
        // What came after the bot's own position, read again once: matrix-sdk ignores a sync
        // answer whose position it already holds, so this is read outside it and decrypted
        // here; what was handled already is skipped by the worker.
        if let Some(from) = ws.store.read(|s| s.e2ee_since.clone()) {
            // A position the homeserver no longer knows (4xx) is given up, not tried for ever.
            let missed = || {
                let (client, from) = (client.clone(), from.clone());
                async move {
                    match catch_up(&client, from).await {
                        Err(error) if error.as_client_api_error().is_some_and(|e| e.status_code.is_client_error()) => {
                            tracing::warn!(%error, "the bot's device cannot read what it missed");
                            Ok(None)
                        }
                        other => other.map(Some),
                    }
                }
            };
            if let Some((events, next_batch)) = until_done(&health, "read what it missed", missed).await {
                if batches.send((events, next_batch)).is_err() {
                    return;
                }
            }
        }
        loop {
            let settings = SyncSettings::default().timeout(Duration::from_secs(30));
            let response = until_done(&health, "sync", || client.sync_once(settings.clone())).await;
            let events = encrypted_messages(&response);
            if batches.send((events, response.next_batch)).is_err() {
                return;
            }
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sends a notice encrypted in `room`, under transaction id `txn`.
    pub async fn notice(&self, room: &str, txn: &str, text: &str) -> Result<String> {
        self.send(
            room,
            txn,
            "m.room.message",
            serde_json::to_value(RoomMessageEventContent::notice_plain(text)).expect("content serializes"),
        )
        .await
    }

    /// Sends `content` as an event of type `kind` in `room`, encrypted, under transaction id
    /// `txn`. Only called for rooms the homeserver holds as encrypted: matrix-sdk sends in the
    /// clear in a room its own sync has not yet seen encrypted, so this waits for that sync.
    pub async fn send(&self, room: &str, txn: &str, kind: &str, content: Value) -> Result<String> {
        let id = OwnedRoomId::try_from(room).map_err(|e| failed(e, 400))?;
        // The bot joins through the appservice API: its device's sync may not show the room, or
        // show it joined and encrypted, yet. Both come within a sync or two.
        let known = async {
            let room = match self.client.get_room(&id) {
                Some(room) => room,
                None => self.client.await_room_remote_echo(&id).await,
            };
            let mut info = room.subscribe_info();
            loop {
                if room.state() == RoomState::Joined
                    && room.latest_encryption_state().await.is_ok_and(|state| state.is_encrypted())
                {
                    return Some(room);
                }
                info.next().await?;
            }
        };
        // A device the homeserver keeps refusing is not waited for (the reply is dropped and
        // logged, the bot goes on); one starting or briefly failing is, and a reply it could
        // not send is tried again with the transaction.
        let down = |error: String| failed(format!("the bot's device cannot sync ({error})"), 400);
        if let Some(error) = self.health.borrow().down() {
            return Err(down(error));
        }
        let Some(room) = tokio::time::timeout(ROOM_WAIT, known).await.ok().flatten() else {
            if let Some(error) = self.health.borrow().down() {
                return Err(down(error));
            }
            return Err(failed("the bot's device does not see the room joined and encrypted yet", 0));
        };
        let txn = OwnedTransactionId::from(txn);
        let sent = room.send_raw(kind, content).with_transaction_id(&txn).await.map_err(sdk_failure)?;
        Ok(sent.response.event_id.to_string())
    }

    /// The event `event_id` of `room`, decrypted by the device, as the client API shows events.
    pub async fn event(&self, room: &str, event_id: &str) -> Result<Value> {
        let id = OwnedRoomId::try_from(room).map_err(|e| failed(e, 400))?;
        let event_id = OwnedEventId::try_from(event_id).map_err(|e| failed(e, 400))?;
        let room = self.client.get_room(&id).ok_or_else(|| failed("the bot's device does not know the room", 0))?;
        let mut event = room.event(&event_id, None).await.map_err(sdk_failure)?;
        if event.encryption_info().is_none() {
            // Sent before this device existed (its store lost): its key is in the backup.
            let session: Option<String> = event
                .raw()
                .get_field::<Value>("content")
                .ok()
                .flatten()
                .and_then(|c| c["session_id"].as_str().map(str::to_owned));
            if let Some(session) = session {
                if let Err(error) = self.client.encryption().backups().download_room_key(&id, &session).await {
                    tracing::warn!(%error, "could not read a room key from the backup");
                }
                event = room.event(&event_id, None).await.map_err(sdk_failure)?;
            }
        }
        if event.encryption_info().is_none() {
            return Err(failed("the bot's device cannot decrypt the event", 0));
        }
        let mut value: Value = event.raw().deserialize_as_unchecked().map_err(|e| failed(e, 500))?;
        value["room_id"] = json!(room.room_id());
        Ok(value)
    }
}

/// Key backup with recovery: the first time, secret storage and the backup are set up and the
/// recovery key written to `path` (only the bot's user may read it; the operator keeps a copy
/// elsewhere). Later, a device that lacks the secrets (a new one, after the store was lost)
/// takes them back with that key.
async fn recovery(client: &Client, path: &Path) -> std::result::Result<(), String> {
    let recovery = client.encryption().recovery();
    match std::fs::read_to_string(path) {
        Ok(key) => {
            if recovery.state() != RecoveryState::Enabled {
                recovery
                    .recover(key.trim())
                    .await
                    .map_err(|e| format!("cannot recover the bot's keys with {}: {e}", path.display()))?;
                tracing::info!("the bot's identity and key backup were recovered with its recovery key");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = recovery.enable().await.map_err(|e| format!("cannot set up the bot's key backup: {e}"))?;
            crate::store::write_atomically(path, key.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "key backup set up: keep a copy of the recovery key elsewhere");
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A verification asked of the bot's device: only by one of the `operators`, whose client
/// compares the emojis with those the bot writes in its log. The bot has no one to compare them
/// on its side and confirms on its own: what the comparison protects is the operator's trust in
/// the bot's identity, which their client then signs (their trust in the bot, not the bot's in
/// them, is what members rely on). Others are refused.
///
/// Identities, not only devices: the bot's MAC covers its master key (its own identity is
/// verified in its store, having made or recovered its keys), so the operator's client signs
/// that key with their user-signing key, and a new device of the bot after a lost store, signed
/// by the same identity, stays trusted; matrix-sdk signs the operator's master key with the
/// bot's user-signing key in turn.
///
/// The operator must share a room with the bot (a direct chat will do): matrix-sdk drops a
/// request from a device it does not track, before this is called, and the homeserver tells a
/// device of the device lists of those it shares a room with only.
async fn verify(client: Client, operators: Vec<String>, sender: OwnedUserId, flow: String) {
    let Some(request) = client.encryption().get_verification_request(&sender, &flow).await else { return };
    if !operators.iter().any(|o| o.as_str() == sender.as_str()) {
        tracing::warn!(%sender, "a verification asked by someone who is not an operator was refused");
        if let Err(error) = request.cancel().await {
            tracing::warn!(%error, "could not refuse a verification");
        }
        return;
    }
    if let Err(error) = request.accept().await {
        tracing::warn!(%sender, %error, "could not accept a verification");
        return;
    }
    let mut changes = std::pin::pin!(request.changes());
    let sas = loop {
        match changes.next().await {
            Some(VerificationRequestState::Transitioned { verification: Verification::SasV1(sas) }) => break sas,
            Some(VerificationRequestState::Done | VerificationRequestState::Cancelled(_)) | None => return,
            Some(_) => {}
        }
    };
    if let Err(error) = sas.accept().await {
        tracing::warn!(%sender, %error, "could not accept the emoji verification");
        return;
    }
    let mut changes = std::pin::pin!(sas.changes());
    while let Some(state) = changes.next().await {
        match state {
            SasState::KeysExchanged { emojis, decimals } => {
                let emojis = emojis.map(|e| {
                    e.emojis.iter().map(|e| format!("{} {}", e.symbol, e.description)).collect::<Vec<_>>().join(", ")
                });
                tracing::info!(
                    operator = %sender,
                    emojis = emojis.as_deref().unwrap_or("-"),
                    numbers = %format!("{} {} {}", decimals.0, decimals.1, decimals.2),
                    "verification: confirm in your client only if it shows these"
                );
                if let Err(error) = sas.confirm().await {
                    tracing::warn!(%sender, %error, "could not confirm the verification");
                    return;
                }
            }
            SasState::Done { verified_identities, .. } => {
                if !verified_identities.iter().any(|identity| identity.user_id() == sender) {
                    // Their client did not put their master key in the comparison (their own
                    // identity unverified there): the bot's trust stays with their device.
                    tracing::warn!(operator = %sender, "verification done for the operator's device only, not their identity");
                    return;
                }
                // matrix-sdk has signed their master key with the bot's user-signing key, as the
                // operator's MAC came after the bot confirmed (sent with the device's next sync).
                tracing::info!(operator = %sender, "verification done: the operator's identity and the bot's are verified by each other");
                return;
            }
            SasState::Cancelled(info) => {
                tracing::warn!(operator = %sender, reason = info.reason(), "verification cancelled");
                return;
            }
            _ => {}
        }
    }
}

/// The encrypted messages after `from`, read with a sync request matrix-sdk does not process
/// (its state is already past them) and decrypted by the device; an error if the homeserver
/// could not be asked (nothing is lost: the worker's position stays where it was).
async fn catch_up(client: &Client, from: String) -> std::result::Result<(Vec<Value>, String), matrix_sdk::Error> {
    let mut request = sync_events::v3::Request::new();
    request.since = Some(from);
    request.timeout = Some(Duration::ZERO);
    let response = client.send(request).await?;
    let mut out = Vec::new();
    for (id, update) in &response.rooms.join {
        let Some(room) = client.get_room(id) else { continue };
        for raw in &update.timeline.events {
            if raw.get_field::<String>("type").ok().flatten().as_deref() != Some("m.room.encrypted") {
                continue;
            }
            let Ok(event) = room.decrypt_event(raw.cast_ref_unchecked(), None).await else { continue };
            out.extend(as_transaction_event(&event, id));
        }
    }
    Ok((out, response.next_batch))
}

/// A decrypted message as the appservice's transactions carry events (with its `room_id`).
fn as_transaction_event(event: &matrix_sdk::deserialized_responses::TimelineEvent, room: &RoomId) -> Option<Value> {
    event.encryption_info()?;
    decrypted_message(event.raw().deserialize_as_unchecked::<Value>().ok()?, room)
}

/// An event the device decrypted, if a message, as the appservice's transactions carry events.
fn decrypted_message(mut value: Value, room: &RoomId) -> Option<Value> {
    if value["type"] != "m.room.message" {
        return None;
    }
    value["room_id"] = json!(room);
    // A remote server could put this key on a clear event of its own: it only ever makes filing
    // stricter (an attachment taken as having arrived encrypted is refused for a clear library),
    // so a forged mark refuses, never lets a key through.
    value[crate::bot::DECRYPTED] = json!(true);
    Some(value)
}

/// The messages of a sync that arrived encrypted and were decrypted, as the appservice's
/// transactions carry events (with their `room_id`). Clear messages come in the transactions.
fn encrypted_messages(response: &matrix_sdk::sync::SyncResponse) -> Vec<Value> {
    let mut out = Vec::new();
    for (room, update) in &response.rooms.joined {
        out.extend(update.timeline.events.iter().filter_map(|event| as_transaction_event(event, room)));
    }
    out
}

/// Handles one decrypted event unless it was already, then records it handled. The homeserver
/// failing: tried again, waiting longer each time (handling is idempotent); the device's sync
/// position does not move past it meanwhile.
async fn handle_until_done(ws: &Workspace, event: &Value) {
    let id = event["event_id"].as_str().unwrap_or_default().to_owned();
    if ws.store.read(|s| s.e2ee_handled.contains(&id)) {
        return;
    }
    let mut wait = Duration::from_secs(1);
    while let Err(crate::bot::Retry(reason)) = crate::bot::handle(ws, event).await {
        tracing::warn!(%reason, event = %id, "an encrypted command waits for the homeserver");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    if let Err(error) = ws.store.update(|s| s.e2ee_handled.push_back(id)) {
        // Not recorded: after a crash it is handled again, which its idempotence allows.
        tracing::error!(%error, "could not record an encrypted event as handled");
    }
}

/// The device's session: read from `dir/session.json`, or made by logging in as the bot with
/// the `as_token` (`m.login.application_service`) and written there before first use, so the
/// bot keeps one device, whose keys the store holds, for its whole life.
async fn session(ws: &Workspace, dir: &Path) -> std::result::Result<MatrixSession, String> {
    let path = dir.join("session.json");
    match std::fs::read(&path) {
        Ok(bytes) => return serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let localpart = ws.matrix.bot.trim_start_matches('@').split(':').next().unwrap_or_default();
    // Homeservers that do not hold the appservice's sender as a user yet make it here; one that
    // does answers M_USER_IN_USE, which changes nothing.
    let register = json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true });
    let registered = ws.matrix.call_as_service(reqwest::Method::POST, "/_matrix/client/v3/register", Some(&register));
    if let Err(error) = registered.await {
        tracing::debug!(%error, "the bot's user was not registered again");
    }
    let body = json!({
        "type": "m.login.application_service",
        "identifier": { "type": "m.id.user", "user": localpart },
        "initial_device_display_name": "hemicycle-workspace",
    });
    let login = ws
        .matrix
        .call_as_service(reqwest::Method::POST, "/_matrix/client/v3/login", Some(&body))
        .await
        .map_err(|e| format!("cannot log the bot's device in: {e}"))?;
    let (Some(user), Some(device), Some(token)) =
        (login["user_id"].as_str(), login["device_id"].as_str(), login["access_token"].as_str())
    else {
        return Err(format!("the login answer lacks user_id, device_id or access_token: {login}"));
    };
    let session = MatrixSession {
        meta: SessionMeta {
            user_id: user.try_into().map_err(|e| format!("login answered a bad user id: {e}"))?,
            device_id: device.into(),
        },
        tokens: SessionTokens { access_token: token.to_owned(), refresh_token: None },
    };
    let text = serde_json::to_vec(&session).map_err(|e| e.to_string())?;
    crate::store::write_atomically(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(session)
}
