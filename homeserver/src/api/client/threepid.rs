//! Third-party ids (email addresses, phone numbers) of accounts. This server sends neither email
//! nor SMS, so it validates none: the `requestToken` endpoints answer `M_THREEPID_DENIED`, and
//! an account's list holds only what was recorded for it otherwise (none today).

use std::sync::Arc;

use ruma::api::client::account::{
    add_3pid, bind_3pid, delete_3pid, get_3pids, request_3pid_management_token_via_email,
    request_3pid_management_token_via_msisdn, request_password_change_token_via_email,
    request_password_change_token_via_msisdn, request_registration_token_via_email,
    request_registration_token_via_msisdn, unbind_3pid, ThirdPartyIdRemovalStatus,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

fn denied() -> Error {
    Error::ThreepidDenied("this server does not validate email addresses or phone numbers".into())
}

pub async fn list(_: Arc<Services>, request: Ruma<get_3pids::v3::Request>) -> Result<get_3pids::v3::Response> {
    request.sender()?;
    Ok(get_3pids::v3::Response::new(Vec::new()))
}

/// Removing an id the account does not have changes nothing; no identity server is told.
pub async fn delete(_: Arc<Services>, request: Ruma<delete_3pid::v3::Request>) -> Result<delete_3pid::v3::Response> {
    request.sender()?;
    Ok(delete_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

pub async fn unbind(_: Arc<Services>, request: Ruma<unbind_3pid::v3::Request>) -> Result<unbind_3pid::v3::Response> {
    request.sender()?;
    Ok(unbind_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// No validation session ever exists here, so none can be added.
pub async fn add(_: Arc<Services>, request: Ruma<add_3pid::v3::Request>) -> Result<add_3pid::v3::Response> {
    request.sender()?;
    Err(Error::ThreepidAuthFailed(format!("no validated session {}", request.body.sid)))
}

pub async fn bind(_: Arc<Services>, request: Ruma<bind_3pid::v3::Request>) -> Result<bind_3pid::v3::Response> {
    request.sender()?;
    Err(Error::ThreepidDenied("this server does not bind ids on identity servers".into()))
}

pub async fn email_for_account(
    _: Arc<Services>,
    _: Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> Result<request_3pid_management_token_via_email::v3::Response> {
    Err(denied())
}

pub async fn msisdn_for_account(
    _: Arc<Services>,
    _: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> Result<request_3pid_management_token_via_msisdn::v3::Response> {
    Err(denied())
}

pub async fn email_for_password(
    _: Arc<Services>,
    _: Ruma<request_password_change_token_via_email::v3::Request>,
) -> Result<request_password_change_token_via_email::v3::Response> {
    Err(denied())
}

pub async fn msisdn_for_password(
    _: Arc<Services>,
    _: Ruma<request_password_change_token_via_msisdn::v3::Request>,
) -> Result<request_password_change_token_via_msisdn::v3::Response> {
    Err(denied())
}

pub async fn email_for_registration(
    _: Arc<Services>,
    _: Ruma<request_registration_token_via_email::v3::Request>,
) -> Result<request_registration_token_via_email::v3::Response> {
    Err(denied())
}

pub async fn msisdn_for_registration(
    _: Arc<Services>,
    _: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> Result<request_registration_token_via_msisdn::v3::Response> {
    Err(denied())
}
