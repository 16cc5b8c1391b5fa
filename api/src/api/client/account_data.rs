//! Account data (global and per room) and stored filters.

use std::sync::Arc;

use ruma::{
    api::client::{
        config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
        filter::{create_filter, get_filter, FilterDefinition},
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
    UserId,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

fn check_own(owner: &UserId, target: &UserId) -> Result<()> {
    if owner != target {
        return Err(Error::forbidden("you can only access your own account data"));
    }
    Ok(())
}

fn content<T>(raw: &Raw<T>) -> Result<serde_json::Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::BadJson(e.to_string()))
}

pub async fn get_global(
    services: Arc<Services>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    let value = services
        .account_data
        .get(&body.user_id, None, &body.event_type.to_string())?
        .ok_or_else(|| Error::not_found("no account data of this type"))?;
    let raw = Raw::from_json(serde_json::value::to_raw_value(&value).map_err(|e| Error::Internal(e.to_string()))?);
    Ok(get_global_account_data::v3::Response::new(raw))
}

pub async fn set_global(
    services: Arc<Services>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    services.account_data.set(&body.user_id, None, &body.event_type.to_string(), content(&body.data)?).await?;
    Ok(set_global_account_data::v3::Response::new())
}

pub async fn get_room(
    services: Arc<Services>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    let value = services
        .account_data
        .get(&body.user_id, Some(&body.room_id), &body.event_type.to_string())?
        .ok_or_else(|| Error::not_found("no account data of this type"))?;
    let raw = Raw::from_json(serde_json::value::to_raw_value(&value).map_err(|e| Error::Internal(e.to_string()))?);
    Ok(get_room_account_data::v3::Response::new(raw))
}

pub async fn set_room(
    services: Arc<Services>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    services
        .account_data
        .set(&body.user_id, Some(&body.room_id), &body.event_type.to_string(), content(&body.data)?)
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}

pub async fn create_filter(
    services: Arc<Services>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    let definition = serde_json::to_value(&body.filter).map_err(|e| Error::Internal(e.to_string()))?;
    let id = services.filters.create(&body.user_id, definition)?;
    Ok(create_filter::v3::Response::new(id))
}

pub async fn get_filter(
    services: Arc<Services>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    let body = &request.body;
    check_own(&request.sender()?.user_id, &body.user_id)?;
    let value =
        services.filters.get(&body.user_id, &body.filter_id)?.ok_or_else(|| Error::not_found("no such filter"))?;
    let filter: FilterDefinition = serde_json::from_value(value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_filter::v3::Response::new(filter))
}

/// Room tags live in the room's `m.tag` account data, so sync reports them like any account data.
fn tags_of(
    services: &Services,
    user: &UserId,
    room: &ruma::RoomId,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    Ok(services
        .account_data
        .get(user, Some(room), "m.tag")?
        .and_then(|c| c.get("tags").and_then(|t| t.as_object()).cloned())
        .unwrap_or_default())
}

pub async fn get_tags(services: Arc<Services>, request: Ruma<get_tags::v3::Request>) -> Result<get_tags::v3::Response> {
    let b = &request.body;
    check_own(&request.sender()?.user_id, &b.user_id)?;
    let tags = tags_of(&services, &b.user_id, &b.room_id)?;
    let tags = serde_json::from_value(serde_json::Value::Object(tags)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_tags::v3::Response::new(tags))
}

pub async fn create_tag(
    services: Arc<Services>,
    request: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    let b = &request.body;
    check_own(&request.sender()?.user_id, &b.user_id)?;
    if b.tag.len() > 255 {
        return Err(Error::invalid_param("tags are at most 255 bytes"));
    }
    let mut tags = tags_of(&services, &b.user_id, &b.room_id)?;
    tags.insert(b.tag.clone(), serde_json::to_value(&b.tag_info).map_err(|e| Error::Internal(e.to_string()))?);
    services.account_data.set(&b.user_id, Some(&b.room_id), "m.tag", serde_json::json!({ "tags": tags })).await?;
    Ok(create_tag::v3::Response::new())
}

pub async fn delete_tag(
    services: Arc<Services>,
    request: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    let b = &request.body;
    check_own(&request.sender()?.user_id, &b.user_id)?;
    let mut tags = tags_of(&services, &b.user_id, &b.room_id)?;
    tags.remove(&b.tag);
    services.account_data.set(&b.user_id, Some(&b.room_id), "m.tag", serde_json::json!({ "tags": tags })).await?;
    Ok(delete_tag::v3::Response::new())
}
