//! The bot as an end-to-end encryption participant, built on matrix-sdk: a device of its own
//! (logged in once with `m.login.application_service`, the session kept in `data_dir`),
//! cross-signed, its room keys backed up on the homeserver (key backup), its crypto and sync
//! state in a SQLite store in `data_dir/e2ee`, so keys outlive restarts and crashes.
//!
//! Why a synced device rather than the appservice transactions: to decrypt, the bot needs the
//! room keys other devices send it as to-device messages and the device lists of the rooms'
//! members; the homeserver's transactions carry to-device messages (MSC2409/MSC4203) but not
//! device lists or one-time key counts (MSC3202), which matrix-sdk's own sync already gives.
//! So the transactions keep bringing what is clear (invites, state, unencrypted commands), and
//! this device's sync brings what is encrypted: only messages that arrive encrypted are handed
//! to the bot from here, decrypted, each to the same [`crate::bot::handle`] as the others.
//! Replies in an encrypted room are sent encrypted through this device, with the same
//! transaction ids as before, which the homeserver deduplicates for the device across restarts.

use std::{path::Path, sync::Arc, time::Duration};

use matrix_sdk::{
    authentication::matrix::MatrixSession,
    config::SyncSettings,
    deserialized_responses::EncryptionInfo,
    encryption::{BackupDownloadStrategy, EncryptionSettings},
    ruma::{
        events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
        OwnedRoomId, OwnedTransactionId,
    },
    Client, Room, RoomState, SessionMeta, SessionTokens,
};
use serde_json::json;

use crate::{
    matrix::{MatrixError, Result},
    service::Workspace,
};

/// How long a reply waits for the device's sync to know a room the bot just joined.
const ROOM_WAIT: Duration = Duration::from_secs(30);

pub struct E2ee {
    client: Client,
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
    /// first time), then makes sure the device is cross-signed and its keys backed up.
    pub async fn open(ws: &Workspace, data_dir: &Path) -> std::result::Result<E2ee, String> {
        let dir = data_dir.join("e2ee");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let settings = EncryptionSettings {
            auto_enable_cross_signing: true,
            backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
            auto_enable_backups: true,
        };
        let client = Client::builder()
            .homeserver_url(&ws.config.homeserver_url)
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
        if !client.encryption().backups().are_enabled().await {
            if let Err(error) = client.encryption().backups().create().await {
                tracing::warn!(%error, "no key backup for the bot's room keys");
            }
        }
        Ok(E2ee { client })
    }

    /// Syncs the device forever: encrypted commands go to the bot as they are decrypted.
    pub async fn run(ws: Arc<Workspace>, client: Client) {
        client.add_event_handler(
            move |event: OriginalSyncRoomMessageEvent, room: Room, encryption: Option<EncryptionInfo>| {
                let ws = ws.clone();
                async move {
                    // Clear messages come in the appservice's transactions already.
                    if encryption.is_none() {
                        return;
                    }
                    let Ok(content) = serde_json::to_value(&event.content) else { return };
                    let event = json!({
                        "type": "m.room.message",
                        "room_id": room.room_id(),
                        "sender": event.sender,
                        "event_id": event.event_id,
                        "origin_server_ts": event.origin_server_ts,
                        "content": content,
                    });
                    // The homeserver failing: tried again a few times (handling is idempotent).
                    let mut wait = Duration::from_secs(1);
                    for _ in 0..6 {
                        match crate::bot::handle(&ws, &event).await {
                            Ok(()) => return,
                            Err(crate::bot::Retry(reason)) => {
                                tracing::warn!(%reason, "an encrypted command waits for the homeserver");
                                tokio::time::sleep(wait).await;
                                wait *= 2;
                            }
                        }
                    }
                    tracing::error!(event = %event["event_id"], "an encrypted command was given up");
                }
            },
        );
        let mut wait = Duration::from_secs(1);
        loop {
            match client.sync(SyncSettings::default().timeout(Duration::from_secs(30))).await {
                Ok(()) => wait = Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(%error, "the bot's device could not sync");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sends a notice encrypted in `room`, under transaction id `txn`.
    pub async fn notice(&self, room: &str, txn: &str, text: &str) -> Result<String> {
        let id = OwnedRoomId::try_from(room).map_err(|e| failed(e, 400))?;
        // The bot joins through the appservice API: its device's sync may not show the room, or
        // show it joined, yet. Both come within a sync or two.
        let known = async {
            let room = match self.client.get_room(&id) {
                Some(room) => room,
                None => self.client.await_room_remote_echo(&id).await,
            };
            let mut info = room.subscribe_info();
            while room.state() != RoomState::Joined {
                if info.next().await.is_none() {
                    break;
                }
            }
            room
        };
        let room = tokio::time::timeout(ROOM_WAIT, known)
            .await
            .map_err(|_| failed("the bot's device does not see the room joined yet", 0))?;
        let sent = room
            .send(RoomMessageEventContent::notice_plain(text))
            .with_transaction_id(OwnedTransactionId::from(txn))
            .await
            .map_err(sdk_failure)?;
        Ok(sent.response.event_id.to_string())
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
    if let Err(error) = ws.matrix.call(reqwest::Method::POST, "/_matrix/client/v3/register", Some(&register)).await {
        tracing::debug!(%error, "the bot's user was not registered again");
    }
    let body = json!({
        "type": "m.login.application_service",
        "identifier": { "type": "m.id.user", "user": localpart },
        "initial_device_display_name": "hemicycle-workspace",
    });
    let login = ws
        .matrix
        .call(reqwest::Method::POST, "/_matrix/client/v3/login", Some(&body))
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
