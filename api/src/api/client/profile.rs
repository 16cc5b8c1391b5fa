//! Profiles: the whole profile and single fields (display name, avatar, extended fields).

use std::sync::Arc;

use ruma::{
    api::client::profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    profile::ProfileFieldValue,
    UserId,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

/// A profile is readable when the user is ours and active (remote profiles come with federation).
/// A user of another server's profile, asked of their server.
async fn remote_profile(
    services: &Services,
    user: &UserId,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let request = ruma::api::federation::query::get_profile_information::v1::Request::new(user.to_owned());
    let response = services.federation.send(user.server_name(), request).await?;
    Ok(response.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A local, active user; an unknown user in an appservice's namespace is asked for first
/// (`GET /_matrix/app/v1/users/{userId}`: the appservice may create it before answering).
async fn check_readable(services: &Services, user: &UserId) -> Result<()> {
    if !services.users.is_local(user) {
        return Err(Error::not_found("no profile for this user"));
    }
    if !services.users.exists(user)? {
        crate::appservice::sender::query_user(services, user).await;
    }
    if !services.users.is_active(user)? {
        return Err(Error::not_found("no profile for this user"));
    }
    Ok(())
}

/// The display name and avatar also live in the user's member events: update them.
async fn refresh_rooms(services: &Services, user: &UserId, field: &str) -> Result<()> {
    if matches!(field, "displayname" | "avatar_url") {
        services.rooms.refresh_profile(user).await?;
    }
    Ok(())
}

fn check_own(owner: &UserId, target: &UserId) -> Result<()> {
    if owner != target {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    Ok(())
}

pub async fn get_all(
    services: Arc<Services>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    if !services.users.is_local(&request.body.user_id) {
        let fields = remote_profile(&services, &request.body.user_id).await?;
        return Ok(fields.into_iter().collect());
    }
    check_readable(&services, &request.body.user_id).await?;
    Ok(services.profiles.get(&request.body.user_id)?.into_iter().collect())
}

pub async fn get_field(
    services: Arc<Services>,
    request: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let body = request.body;
    let profile = if services.users.is_local(&body.user_id) {
        check_readable(&services, &body.user_id).await?;
        services.profiles.get(&body.user_id)?
    } else {
        remote_profile(&services, &body.user_id).await?
    };
    let value = profile.get(body.field.as_str()).ok_or_else(|| Error::not_found("this profile field is not set"))?;
    let value =
        ProfileFieldValue::new(body.field.as_str(), value.clone()).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_profile_field::v3::Response::new(value))
}

pub async fn set_field(
    services: Arc<Services>,
    request: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    check_own(&request.sender()?.user_id, &request.body.user_id)?;
    let value = request.body.value;
    services.profiles.set_field(
        &request.body.user_id,
        value.field_name().as_str(),
        Some(value.value().into_owned()),
    )?;
    refresh_rooms(&services, &request.body.user_id, value.field_name().as_str()).await?;
    Ok(set_profile_field::v3::Response::new())
}

pub async fn delete_field(
    services: Arc<Services>,
    request: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    check_own(&request.sender()?.user_id, &request.body.user_id)?;
    services.profiles.set_field(&request.body.user_id, request.body.field.as_str(), None)?;
    refresh_rooms(&services, &request.body.user_id, request.body.field.as_str()).await?;
    Ok(delete_profile_field::v3::Response::new())
}

/// `POST /users/{userId}/report`: a user of this server that exists, or a user of another one.
pub async fn report_user(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::reporting::report_user::v3::Request>,
) -> Result<ruma::api::client::reporting::report_user::v3::Response> {
    let reporter = request.sender()?.user_id.clone();
    let b = request.body;
    if services.users.is_local(&b.user_id) && !services.rooms.profiles_user_exists(&b.user_id)? {
        return Err(crate::error::Error::not_found("no such user"));
    }
    services.reports.file(&reporter, crate::reports::Subject::User { user_id: b.user_id }, Some(b.reason))?;
    Ok(ruma::api::client::reporting::report_user::v3::Response::new())
}
