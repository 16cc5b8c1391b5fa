//! Typing notifications, read receipts and read markers.

use std::sync::Arc;

use ruma::{
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        to_device::send_event_to_device,
        typing::create_typing_event::{self, v3::Typing},
    },
    to_device::DeviceIdOrAllDevices,
    EventId, OwnedDeviceId, RoomId, UserId,
};
use serde_json::json;

use crate::{
    api::ruma::Ruma,
    ephemeral::{receipts::Receipt, to_device::ToDeviceMessage},
    error::{Error, Result},
    services::Services,
    time::now_ms,
};

pub async fn typing(
    services: Arc<Services>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let b = request.body;
    if b.user_id != sender {
        return Err(Error::forbidden("you can only set your own typing state"));
    }
    if !services.rooms.is_joined(&sender, &b.room_id)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    let timeout = match b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    services.typing.set(&b.room_id, &sender, timeout);
    crate::appservice::sender::queue_typing(&services, &b.room_id);
    let servers = crate::federation::receive::servers_in_room(&services, &b.room_id)?;
    services.federation.sender.queue_volatile(
        &servers,
        "m.typing",
        serde_json::json!({ "room_id": b.room_id, "user_id": sender, "typing": timeout.is_some() }),
    );
    Ok(create_typing_event::v3::Response::new())
}

/// Receipts and markers point at events of a room the user is in.
fn check_event(services: &Services, user: &UserId, room: &RoomId, event: &EventId) -> Result<()> {
    if !services.rooms.is_joined(user, room)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    if services.rooms.meta(event)?.is_none_or(|m| m.room_id != room) {
        return Err(Error::not_found("no such event in this room"));
    }
    Ok(())
}

async fn set_receipt(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    kind: &str,
    event: &EventId,
    thread: Option<String>,
) -> Result<()> {
    let ts = now_ms();
    let receipt = Receipt {
        user: user.to_owned(),
        receipt_type: kind.to_owned(),
        event_id: event.to_owned(),
        thread_id: thread.clone(),
        ts,
    };
    services.receipts.set(room, receipt.clone()).await?;
    crate::appservice::sender::queue_receipt(services, room, &receipt);
    // Public receipts go to the room's other servers too.
    if kind == "m.read" {
        let mut data = serde_json::json!({ "ts": ts });
        if let Some(thread) = thread {
            data["thread_id"] = serde_json::json!(thread);
        }
        let servers = crate::federation::receive::servers_in_room(services, room)?;
        let content = serde_json::json!({ room.as_str(): { "m.read": { user.as_str(): { "event_ids": [event], "data": data } } } });
        services.federation.sender.queue_edu(&servers, "m.receipt", content)?;
    }
    Ok(())
}

async fn set_fully_read(services: &Services, user: &UserId, room: &RoomId, event: &EventId) -> Result<()> {
    services.account_data.set_managed(user, Some(room), "m.fully_read", json!({ "event_id": event })).await
}

pub async fn receipt(
    services: Arc<Services>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    check_event(&services, &user, &b.room_id, &b.event_id)?;
    let thread = b.thread.as_str().map(str::to_owned);
    // Each thread id is a slot every member's sync carries: only `main` and real thread roots.
    if let Some(id) = thread.as_deref().filter(|t| *t != "main") {
        let root = EventId::parse(id).map_err(|_| Error::invalid_param("thread_id is not an event id"))?;
        if !services.rooms.is_thread_root(&b.room_id, &root)? {
            return Err(Error::invalid_param("thread_id names no thread of this room"));
        }
    }
    match b.receipt_type {
        ReceiptType::FullyRead => set_fully_read(&services, &user, &b.room_id, &b.event_id).await?,
        ReceiptType::Read => set_receipt(&services, &user, &b.room_id, "m.read", &b.event_id, thread).await?,
        ReceiptType::ReadPrivate => {
            set_receipt(&services, &user, &b.room_id, "m.read.private", &b.event_id, thread).await?
        }
        _ => return Err(Error::invalid_param("unknown receipt type")),
    }
    Ok(create_receipt::v3::Response::new())
}

pub async fn read_markers(
    services: Arc<Services>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    for event in [&b.fully_read, &b.read_receipt, &b.private_read_receipt].into_iter().flatten() {
        check_event(&services, &user, &b.room_id, event)?;
    }
    if let Some(event) = &b.fully_read {
        set_fully_read(&services, &user, &b.room_id, event).await?;
    }
    if let Some(event) = &b.read_receipt {
        set_receipt(&services, &user, &b.room_id, "m.read", event, None).await?;
    }
    if let Some(event) = &b.private_read_receipt {
        set_receipt(&services, &user, &b.room_id, "m.read.private", event, None).await?;
    }
    Ok(set_read_marker::v3::Response::new())
}

pub async fn send_to_device(
    services: Arc<Services>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let owner = request.sender()?.clone();
    let b = request.body;
    let mut deliveries = Vec::new();
    // Messages for users of other servers leave as one `m.direct_to_device` EDU per server.
    let mut remote: std::collections::BTreeMap<ruma::OwnedServerName, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for (user, devices) in &b.messages {
        if !services.users.is_local(user) {
            services.federation.require_allowed(user.server_name())?;
            let mut per_device = serde_json::Map::new();
            for (target, content) in devices {
                let content: serde_json::Value =
                    serde_json::from_str(content.json().get()).map_err(|e| Error::BadJson(e.to_string()))?;
                per_device.insert(target.to_string(), content);
            }
            remote.entry(user.server_name().to_owned()).or_default().insert(user.to_string(), per_device.into());
            continue;
        }
        for (target, content) in devices {
            let content: serde_json::Value =
                serde_json::from_str(content.json().get()).map_err(|e| Error::BadJson(e.to_string()))?;
            let message = ToDeviceMessage { sender: owner.user_id.clone(), kind: b.event_type.to_string(), content };
            let targets: Vec<OwnedDeviceId> = match target {
                // A device that does not exist would never collect its inbox.
                DeviceIdOrAllDevices::DeviceId(d) if services.users.device(user, d)?.is_none() => Vec::new(),
                DeviceIdOrAllDevices::DeviceId(d) => vec![d.clone()],
                DeviceIdOrAllDevices::AllDevices => services.users.devices(user)?.into_iter().map(|(d, _)| d).collect(),
            };
            for device in targets {
                deliveries.push((user.clone(), device, message.clone()));
            }
        }
    }
    services.to_device.send(&owner.user_id, &owner.device_id, b.txn_id.as_str(), deliveries.clone()).await?;
    crate::appservice::sender::queue_to_device(&services, &deliveries);
    for (server, messages) in remote {
        let content = serde_json::json!({
            "sender": owner.user_id,
            "type": b.event_type.to_string(),
            "message_id": format!("{}-{}", owner.device_id, b.txn_id),
            "messages": messages,
        });
        services.federation.sender.queue_edu(&[server], "m.direct_to_device", content)?;
    }
    Ok(send_event_to_device::v3::Response::new())
}
