//! Push rule endpoints.

use std::sync::Arc;

use ruma::api::client::push::{
    delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
    get_pushrules_global_scope, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    push,
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
