//! Push rule endpoints.

use std::sync::Arc;

use ruma::api::client::push::{
    delete_pushrule, get_notifications, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
    get_pushrules_global_scope, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    push,
    rooms::{
        pdu::to_raw,
        read::{parse_token, token},
    },
    services::Services,
};

pub async fn get_all(
    services: Arc<Services>,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(push::ruleset(&services, &request.sender()?.user_id)?))
}

pub async fn get_global(
    services: Arc<Services>,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(push::ruleset(&services, &request.sender()?.user_id)?))
}

pub async fn get(
    services: Arc<Services>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let rules = push::ruleset(&services, &request.sender()?.user_id)?;
    let rule = rules
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule::v3::Response::new(rule.to_owned().into()))
}

pub async fn set(
    services: Arc<Services>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    push::insert(&services, &user, b.rule, b.after.as_deref(), b.before.as_deref()).await?;
    Ok(set_pushrule::v3::Response::new())
}

pub async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let user = request.sender()?.user_id.clone();
    push::remove(&services, &user, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(delete_pushrule::v3::Response::new())
}

pub async fn get_enabled(
    services: Arc<Services>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rules = push::ruleset(&services, &request.sender()?.user_id)?;
    let rule = rules
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

pub async fn set_enabled(
    services: Arc<Services>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    push::set_enabled(&services, &user, b.kind, &b.rule_id, b.enabled).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

pub async fn get_actions(
    services: Arc<Services>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let rules = push::ruleset(&services, &request.sender()?.user_id)?;
    let rule = rules
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

pub async fn set_actions(
    services: Arc<Services>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    push::set_actions(&services, &user, b.kind, &b.rule_id, b.actions).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

pub async fn notifications(
    services: Arc<Services>,
    request: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let before = b.from.as_deref().map(parse_token).transpose()?;
    let limit = b.limit.map(u64::from).unwrap_or(50).clamp(1, 200) as usize;
    let only_highlight = b.only.as_deref() == Some("highlight");
    let found = push::notifications(&services, &user, before, limit, only_highlight)?;
    let next = (found.len() == limit).then(|| found.last().map(|n| token(n.pos))).flatten();
    let list = found
        .into_iter()
        .map(|n| {
            let ts = n.event["origin_server_ts"].as_u64().and_then(ruma::UInt::new).unwrap_or_default();
            get_notifications::v3::Notification::new(
                n.actions,
                to_raw(&n.event),
                n.read,
                n.room_id,
                ruma::MilliSecondsSinceUnixEpoch(ts),
            )
        })
        .collect();
    let mut response = get_notifications::v3::Response::new(list);
    response.next_token = next;
    Ok(response)
}

pub async fn get_pushers(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::push::get_pushers::v3::Request>,
) -> Result<ruma::api::client::push::get_pushers::v3::Response> {
    let user = &request.sender()?.user_id;
    Ok(ruma::api::client::push::get_pushers::v3::Response::new(crate::push::pushers::list(&services, user)?))
}

pub async fn set_pusher(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::push::set_pusher::v3::Request>,
) -> Result<ruma::api::client::push::set_pusher::v3::Response> {
    use ruma::api::client::push::set_pusher::v3::PusherAction;
    let owner = request.sender()?.clone();
    match request.body.action {
        PusherAction::Post(data) => {
            crate::push::pushers::set(&services, &owner.user_id, &owner.device_id, data.pusher, data.append)?
        }
        PusherAction::Delete(ids) => crate::push::pushers::delete(&services, &owner.user_id, ids)?,
        _ => return Err(Error::BadJson("unknown pusher action".into())),
    }
    Ok(ruma::api::client::push::set_pusher::v3::Response::new())
}
