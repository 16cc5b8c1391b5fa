//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (MSC4186).

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::sync::sync_events::v5::{self, request, response},
    JsOption, UInt,
};

use crate::{
    api::ruma::Ruma,
    error::Result,
    rooms::pdu::to_raw,
    services::Services,
    sync::{
        sliding::{sliding_sync, Extensions, ListSpec, RoomSpec, SlidingRequest},
        SyncToken,
    },
};

const MAX_TIMEOUT: Duration = Duration::from_secs(300);

fn room_spec(required_state: &[(ruma::events::StateEventType, String)], timeline_limit: UInt) -> RoomSpec {
    RoomSpec {
        timeline_limit: u64::from(timeline_limit).min(1000) as usize,
        required_state: required_state.iter().map(|(t, k)| (t.to_string(), k.clone())).collect(),
    }
}

pub async fn sync(services: Arc<Services>, request: Ruma<v5::Request>) -> Result<v5::Response> {
    let owner = request.sender()?.clone();
    let body = request.body;
    let lists = body
        .lists
        .iter()
        .map(|(name, list): (&String, &request::List)| {
            let filters = list.filters.as_ref();
            let spec = ListSpec {
                ranges: list.ranges.iter().map(|(a, b)| (u64::from(*a) as usize, u64::from(*b) as usize)).collect(),
                room: room_spec(&list.room_details.required_state, list.room_details.timeline_limit),
                is_invite: filters.and_then(|f| f.is_invite),
                is_encrypted: filters.and_then(|f| f.is_encrypted),
            };
            (name.clone(), spec)
        })
        .collect();
    let subscriptions = body
        .room_subscriptions
        .iter()
        .map(|(room, sub)| (room.clone(), room_spec(&sub.required_state, sub.timeline_limit)))
        .collect();
    let ext = &body.extensions;
    let extensions = Extensions {
        to_device: ext.to_device.enabled == Some(true),
        to_device_since: ext.to_device.since.as_deref().and_then(|s| s.parse().ok()),
        account_data: ext.account_data.enabled == Some(true),
        receipts: ext.receipts.enabled == Some(true),
        typing: ext.typing.enabled == Some(true),
        e2ee: ext.e2ee.enabled == Some(true),
    };
    let sliding = SlidingRequest {
        user: owner.user_id,
        device: owner.device_id,
        conn_id: body.conn_id.clone().unwrap_or_default(),
        pos: body.pos.as_deref().map(SyncToken::parse).transpose()?,
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        lists,
        subscriptions,
        extensions,
    };
    let result = sliding_sync(&services, sliding).await?;

    let mut response = v5::Response::new(result.pos);
    response.txn_id = body.txn_id;
    for (name, count) in result.lists {
        let mut list = response::List::default();
        list.count = UInt::new(count as u64).unwrap_or_default();
        response.lists.insert(name, list);
    }
    for (room_id, data) in result.rooms {
        let mut room = response::Room::new();
        room.name = data.name;
        room.avatar = match data.avatar {
            Some(Some(url)) => JsOption::Some(url.into()),
            // A room sent whole has no avatar when the field is absent; an update says `null`.
            Some(None) if !data.initial => JsOption::Null,
            _ => JsOption::Undefined,
        };
        room.initial = Some(data.initial);
        room.invite_state = data.invite_state.map(|events| events.iter().map(to_raw).collect());
        room.timeline = data.timeline.iter().map(to_raw).collect();
        room.required_state = data.required_state.iter().map(to_raw).collect();
        room.prev_batch = data.prev_batch;
        room.limited = data.limited;
        room.bump_stamp = UInt::new(data.bump_stamp);
        room.unread_notifications.notification_count = UInt::new(data.notification_count);
        room.unread_notifications.highlight_count = UInt::new(data.highlight_count);
        if let Some(summary) = data.summary {
            room.joined_count = UInt::new(summary.joined_count);
            room.invited_count = UInt::new(summary.invited_count);
            if room.name.is_none() && !summary.heroes.is_empty() {
                room.heroes = Some(
                    data.heroes
                        .into_iter()
                        .map(|hero| {
                            let mut out = response::Hero::new(hero.user_id);
                            out.name = hero.displayname;
                            out.avatar = hero.avatar_url.map(Into::into);
                            out
                        })
                        .collect(),
                );
            }
        }
        response.rooms.insert(room_id, room);
    }
    if let Some((next_batch, events)) = result.to_device {
        let mut to_device = response::ToDevice::default();
        to_device.next_batch = next_batch;
        to_device.events = events.iter().map(to_raw).collect();
        response.extensions.to_device = Some(to_device);
    }
    response.extensions.account_data.global = result.account_data.iter().map(to_raw).collect();
    response.extensions.account_data.rooms =
        result.room_account_data.iter().map(|(r, events)| (r.clone(), events.iter().map(to_raw).collect())).collect();
    response.extensions.receipts.rooms = result.receipts.iter().map(|(r, e)| (r.clone(), to_raw(e))).collect();
    response.extensions.typing.rooms = result.typing.iter().map(|(r, e)| (r.clone(), to_raw(e))).collect();
    if let Some((lists, counts, fallback)) = result.e2ee {
        let e2ee = &mut response.extensions.e2ee;
        e2ee.device_lists.changed = lists.changed;
        e2ee.device_lists.left = lists.left;
        e2ee.device_one_time_keys_count =
            counts.into_iter().map(|(alg, n)| (alg.as_str().into(), UInt::new(n).unwrap_or(UInt::MAX))).collect();
        e2ee.device_unused_fallback_key_types = Some(fallback.iter().map(|alg| alg.as_str().into()).collect());
    }
    Ok(response)
}
