//! The admin room, for admins who would rather type than click: `!admin` commands in the room
//! named by `console.admin_room`, answered there by the server notices account. It is one more
//! edge like the admin API, so it calls the same functions (which write the audit log); a
//! command from anyone but a server admin of this node is refused (and audited as refused), and
//! the dangerous ones (deactivation, password reset, room shutdown) end with the admin's
//! one-time code.
//!
//! The task follows the event stream from where it stood at start-up: a command is read once,
//! when its event is appended, never again after a restart.

use std::sync::Arc;

use ruma::{events::TimelineEventType, OwnedRoomId, RoomId, UserId};
use serde_json::json;

use super::admin::{room_actions, users, Admin};
use crate::{
    db::codec::Be64,
    network::{notices, proposals, status},
    rooms::NewEvent,
    services::Services,
    users::TokenOwner,
};

/// The device id the admin room's actions are recorded under.
const DEVICE: &str = "ADMIN_ROOM";

const HELP: &str = "Commands (the dangerous ones end with your one-time code):\n\
!admin help\n\
!admin user info @user:server\n\
!admin user deactivate @user:server CODE\n\
!admin user reset @user:server CODE (a new random password, given here; every session of theirs ends)\n\
!admin room info !room:server\n\
!admin room shutdown !room:server CODE\n\
!admin federation health\n\
!admin notice TEXT (a server notice to every account of this node)";

/// Starts following the stream, when `console.admin_room` is set.
pub fn start(services: Arc<Services>) {
    if services.config.console.admin_room.is_some() {
        tokio::spawn(run(services));
    }
}

/// The admin room's id: the configured id, or what the local alias names now (so the room may
/// be made after start-up).
fn admin_room(services: &Services) -> Option<OwnedRoomId> {
    let configured = services.config.console.admin_room.as_ref()?;
    match <&RoomId>::try_from(&**configured) {
        Ok(id) => Some(id.to_owned()),
        Err(alias) => services.rooms.resolve_alias(alias).ok().flatten().map(|record| record.room_id),
    }
}

async fn run(services: Arc<Services>) {
    let mut stream = services.rooms.subscribe();
    let mut done = *stream.borrow_and_update();
    // The account exists before anyone invites it.
    if let Err(error) = crate::rooms::notices::notices_user(&services).await {
        tracing::warn!(%error, "the server notices account could not be made");
    }
    if let Some(room) = admin_room(&services) {
        join_when_invited(&services, &room).await;
    }
    loop {
        if stream.changed().await.is_err() {
            return;
        }
        let head = *stream.borrow_and_update();
        let start = Be64(done + 1).0.to_be_bytes().to_vec();
        let mut found = Vec::new();
        for entry in services.db.tables.rooms.pos_eventid.scan_from(Vec::new(), start, true) {
            let Ok((Be64(pos), event_id)) = entry else { break };
            if pos > head {
                break;
            }
            found.push(event_id);
        }
        done = head;
        let Some(room) = admin_room(&services) else { continue };
        for event_id in found {
            let Ok(Some(meta)) = services.rooms.meta(&event_id) else { continue };
            if meta.room_id != room {
                continue;
            }
            let Ok(Some(pdu)) = services.rooms.pdu(&event_id) else { continue };
            match pdu.kind {
                TimelineEventType::RoomMember => join_when_invited(&services, &room).await,
                TimelineEventType::RoomMessage => {
                    let content: serde_json::Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
                    let Some(body) = content["body"].as_str() else { continue };
                    let Some(command) = body.strip_prefix("!admin") else { continue };
                    if !command.is_empty() && !command.starts_with(char::is_whitespace) {
                        continue;
                    }
                    let answer = answer(&services, &pdu.sender, command.trim()).await;
                    reply(&services, &room, &answer).await;
                }
                _ => {}
            }
        }
    }
}

/// The notices account joins the admin room once invited to it.
async fn join_when_invited(services: &Services, room: &RoomId) {
    let Ok(notices) = crate::rooms::notices::notices_user(services).await else { return };
    let invited = services.rooms.membership(&notices, room).ok().flatten().is_some_and(|m| m.membership == "invite");
    if invited {
        if let Err(error) =
            services.rooms.set_membership(room, &notices, &notices, "join", None, serde_json::Map::new()).await
        {
            tracing::warn!(%room, %error, "the notices account could not join the admin room");
        }
    }
}

async fn reply(services: &Services, room: &RoomId, text: &str) {
    let Ok(notices) = crate::rooms::notices::notices_user(services).await else { return };
    let event = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.notice", "body": text }));
    if let Err(error) = services.rooms.append(room, &notices, event, None).await {
        tracing::warn!(%room, %error, "the admin room's answer could not be sent");
    }
}

/// Runs one command of `sender`; answers what to say in the room.
async fn answer(services: &Arc<Services>, sender: &UserId, command: &str) -> String {
    let is_admin = services.users.is_local(sender)
        && services.users.account(sender).ok().flatten().is_some_and(|a| a.admin && !a.deactivated);
    if !is_admin {
        if let Err(error) = services.audit.record(sender.as_str(), "admin_room.refused", command, json!({})) {
            tracing::error!(%sender, %error, "a refused admin-room command could not be audited");
        }
        return format!("{sender} is not a server admin of this node: command refused.");
    }
    let admin = Admin(TokenOwner {
        user_id: sender.to_owned(),
        device_id: DEVICE.into(),
        expires_at_ms: None,
        appservice: None,
    });
    match run_command(services, &admin, command).await {
        Ok(text) => text,
        Err(error) => format!("Refused: {error}"),
    }
}

/// A new password for `!admin user reset`: random, with a digit, a symbol and letters of both
/// cases so that any `[password_policy]` of characters takes it.
fn reset_password() -> String {
    format!("{}-7aQ", crate::users::random_password())
}

/// Words for a refused second factor; a wait (too many wrong codes) says how long.
fn refusal(error: &crate::error::Error) -> String {
    match error {
        crate::error::Error::LimitExceeded { retry_after } => {
            format!("too many wrong one-time codes: try again in {} s", retry_after.as_secs().max(1))
        }
        other => other.to_string(),
    }
}

async fn run_command(services: &Arc<Services>, admin: &Admin, command: &str) -> Result<String, String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let sender = &admin.0.user_id;
    let code_of =
        |at: usize| words.get(at).copied().ok_or_else(|| "this command ends with your one-time code".to_owned());
    let audit = |action: &str, target: &str| {
        admin.audit(services, action, target, json!({ "via": "admin_room" })).map_err(|e| format!("{:?}", e.body))
    };
    match words.as_slice() {
        [] | ["help"] => Ok(HELP.to_owned()),
        ["user", "info", user] => {
            let (user, account) =
                super::admin::existing_user(services, user).map_err(|e| format!("{}", e.body["error"]))?;
            Ok(format!(
                "{user}: admin {}, deactivated {}, locked {}, rooms joined {}",
                account.admin,
                account.deactivated,
                account.locked,
                services.rooms.rooms_of(&user, "join").map(|r| r.len()).unwrap_or(0)
            ))
        }
        ["user", "deactivate", user, ..] => {
            let (user, _) = super::admin::existing_user(services, user).map_err(|e| format!("{}", e.body["error"]))?;
            if user == *sender {
                return Err("you cannot deactivate yourself".into());
            }
            services.totp.check(sender, code_of(3)?).map_err(|e| refusal(&e))?;
            users::deactivate_account(services, admin, &user, false)
                .await
                .map_err(|e| format!("{}", e.body["error"]))?;
            Ok(format!("{user} is deactivated."))
        }
        ["user", "reset", user, ..] => {
            let (user, account) =
                super::admin::existing_user(services, user).map_err(|e| format!("{}", e.body["error"]))?;
            if user == *sender {
                return Err("change your own password in your client".into());
            }
            if account.deactivated {
                return Err(format!("{user} is deactivated"));
            }
            services.totp.check(sender, code_of(3)?).map_err(|e| refusal(&e))?;
            let password = reset_password();
            users::reset_password_of(services, admin, &user, password.clone(), true)
                .await
                .map_err(|e| format!("{}", e.body["error"]))?;
            Ok(format!(
                "The password of {user} is reset and every session of theirs ended. New password, to hand over \
                 by a safe channel (they choose their own at once): {password}"
            ))
        }
        ["room", "info", room] => {
            let room = RoomId::parse(*room).map_err(|e| format!("not a room id: {e}"))?;
            let members = services.rooms.members(&room).map_err(|e| e.to_string())?;
            let joined = members.iter().filter(|(_, m)| m.membership == "join").count();
            let name = services
                .rooms
                .state_event(&room, &"m.room.name".into(), "")
                .ok()
                .flatten()
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok())
                .and_then(|c| c["name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Ok(format!("{room} \"{name}\": {joined} joined members"))
        }
        ["room", "shutdown", room, ..] => {
            let room = RoomId::parse(*room).map_err(|e| format!("not a room id: {e}"))?;
            if !services.rooms.exists(&room).map_err(|e| e.to_string())? {
                return Err("this node does not know the room".into());
            }
            services.totp.check(sender, code_of(3)?).map_err(|e| refusal(&e))?;
            let report = room_actions::shut_down(services, admin, &room, true, true, None)
                .await
                .map_err(|e| format!("{}", e.body["error"]))?;
            Ok(format!("{room} is shut down: {} local members left it.", report.kicked_users.len()))
        }
        ["federation", "health"] => {
            audit("admin_room.federation_health", "")?;
            let nodes = status::nodes(services).map_err(|e| e.to_string())?;
            let mut lines = vec![format!("{} nodes:", nodes.len())];
            for node in &nodes {
                let state = match (&node.stored, &node.document) {
                    (None, _) => "this node".to_owned(),
                    (Some(stored), _) => match &stored.outcome {
                        status::StatusOutcome::Document => "status ok".to_owned(),
                        status::StatusOutcome::NoStatus => "no status".to_owned(),
                        status::StatusOutcome::Refused { error } | status::StatusOutcome::Failed { error } => {
                            error.clone()
                        }
                    },
                };
                let peers = node.document.as_ref().map_or(String::new(), |d| {
                    let up = d.peers.values().filter(|p| p.reachable == Some(true)).count();
                    format!(", reaches {up} of {} peers", d.peers.len())
                });
                lines.push(format!("{}: {state}{peers}", node.server));
            }
            Ok(lines.join("\n"))
        }
        ["notice", ..] => {
            let text = command.trim_start().strip_prefix("notice").unwrap_or("").trim();
            if text.is_empty() || text.len() > proposals::MAX_TEXT {
                return Err(format!("a notice is 1 to {} bytes", proposals::MAX_TEXT));
            }
            let targets = proposals::local_accounts(services).map_err(|e| e.to_string())?;
            let count = targets.len();
            let id = notices::start(services.clone(), sender, "every account".into(), targets, text.to_owned());
            audit("server_notice.batch", &id)?;
            Ok(format!("Sending the notice to {count} accounts (batch {id})."))
        }
        _ => Err(format!("unknown command: {command} (try !admin help)")),
    }
}
