//! Third-party ids (email addresses) of accounts. With `email.smtp_host` set the server mails
//! validation tokens (`…/email/requestToken`), takes them back (`submit_token`) and then adds
//! the address or resets the password; without it those endpoints answer `M_THREEPID_DENIED`.
//! Phone numbers are never validated (no SMS); registration uses email only with
//! `registration.email`.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
    Json,
};
use ruma::{
    api::client::account::{
        add_3pid, bind_3pid, delete_3pid, get_3pids, request_3pid_management_token_via_email,
        request_3pid_management_token_via_msisdn, request_password_change_token_via_email,
        request_password_change_token_via_msisdn, request_registration_token_via_email,
        request_registration_token_via_msisdn, unbind_3pid, ThirdPartyIdRemovalStatus,
    },
    thirdparty::{Medium, ThirdPartyIdentifierInit},
    MilliSecondsSinceUnixEpoch, OwnedSessionId, UInt,
};
use serde::Deserialize;

use crate::{
    api::{error::ApiError, ruma::Ruma},
    error::{Error, Result},
    services::Services,
    uia,
    users::threepid::Purpose,
};

fn denied() -> Error {
    Error::ThreepidDenied("this server does not validate phone numbers".into())
}

fn ts(ms: u64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::new(ms).unwrap_or_default())
}

pub async fn list(services: Arc<Services>, request: Ruma<get_3pids::v3::Request>) -> Result<get_3pids::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let threepids = services
        .threepids
        .list(&user)?
        .into_iter()
        .map(|(medium, address, record)| {
            ThirdPartyIdentifierInit {
                address,
                medium: Medium::from(medium.as_str()),
                validated_at: ts(record.validated_at),
                added_at: ts(record.added_at),
            }
            .into()
        })
        .collect();
    Ok(get_3pids::v3::Response::new(threepids))
}

/// Removing an id the account does not have changes nothing; no identity server is told.
pub async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_3pid::v3::Request>,
) -> Result<delete_3pid::v3::Response> {
    let user = request.sender()?.user_id.clone();
    services.threepids.remove(&user, request.body.medium.as_str(), &request.body.address)?;
    Ok(delete_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

pub async fn unbind(_: Arc<Services>, request: Ruma<unbind_3pid::v3::Request>) -> Result<unbind_3pid::v3::Response> {
    request.sender()?;
    Ok(unbind_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// Adds the address a validated session proved, after the account's password (UIA).
pub async fn add(services: Arc<Services>, request: Ruma<add_3pid::v3::Request>) -> Result<add_3pid::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    services.uia.authorize(&services.users, body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&user), "add_3pid").await?;
    let address =
        services.threepids.take_validated(body.sid.as_str(), body.client_secret.as_str(), Purpose::AddToAccount)?;
    if !services.network.may_bind(&address, services.rooms.has_pending_invite(&address)?)? {
        return Err(Error::ThreepidDenied("Your email domain is not authorized on this server".into()));
    }
    services.threepids.add(&user, "email", &address)?;
    tracing::info!(%user, "email address added");
    // Third-party invites of the address become the account's invites (a ministry network's
    // node is the identity service of the invites it sent): those kept here before this answer,
    // those of other nodes once they hear of it.
    crate::federation::threepid::take_up_bound(&services).await;
    Ok(add_3pid::v3::Response::new())
}

pub async fn bind(_: Arc<Services>, request: Ruma<bind_3pid::v3::Request>) -> Result<bind_3pid::v3::Response> {
    request.sender()?;
    Err(Error::ThreepidDenied("this server does not bind ids on identity servers".into()))
}

fn session_id(sid: String) -> Result<OwnedSessionId> {
    OwnedSessionId::try_from(sid).map_err(|e| Error::Internal(e.to_string()))
}

pub async fn email_for_account(
    services: Arc<Services>,
    request: Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> Result<request_3pid_management_token_via_email::v3::Response> {
    let b = request.body;
    // A ministry network binds each address on the node its domain map names (Tchap's
    // synapse-3pid-checker, with its message).
    if !services.network.may_bind(&b.email, services.rooms.has_pending_invite(&b.email)?)? {
        return Err(Error::ThreepidDenied("Your email domain is not authorized on this server".into()));
    }
    let sid = services
        .threepids
        .request_email_token(Purpose::AddToAccount, b.client_secret.as_str(), &b.email, b.send_attempt.into())
        .await?;
    let mut response = request_3pid_management_token_via_email::v3::Response::new(session_id(sid)?);
    response.submit_url = Some(services.threepids.submit_url());
    Ok(response)
}

pub async fn msisdn_for_account(
    _: Arc<Services>,
    _: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> Result<request_3pid_management_token_via_msisdn::v3::Response> {
    Err(denied())
}

pub async fn email_for_password(
    services: Arc<Services>,
    request: Ruma<request_password_change_token_via_email::v3::Request>,
) -> Result<request_password_change_token_via_email::v3::Response> {
    let b = request.body;
    let sid = services
        .threepids
        .request_email_token(Purpose::ResetPassword, b.client_secret.as_str(), &b.email, b.send_attempt.into())
        .await?;
    let mut response = request_password_change_token_via_email::v3::Response::new(session_id(sid)?);
    response.submit_url = Some(services.threepids.submit_url());
    Ok(response)
}

pub async fn msisdn_for_password(
    _: Arc<Services>,
    _: Ruma<request_password_change_token_via_msisdn::v3::Request>,
) -> Result<request_password_change_token_via_msisdn::v3::Response> {
    Err(denied())
}

/// With `registration.email` (and open registration, and a relay): mails a code proving an
/// address for `m.login.email.identity`. A ministry network registers each address on the node
/// its domain map names (Tchap's synapse-3pid-checker, with its message).
pub async fn email_for_registration(
    services: Arc<Services>,
    request: Ruma<request_registration_token_via_email::v3::Request>,
) -> Result<request_registration_token_via_email::v3::Response> {
    let registration = &services.config.registration;
    if !(registration.email && registration.open && services.threepids.sends_email()) {
        return Err(Error::ThreepidDenied("registration on this server does not use email".into()));
    }
    let b = request.body;
    if !services.network.may_bind(&b.email, services.rooms.has_pending_invite(&b.email)?)? {
        return Err(Error::ThreepidDenied("Your email domain is not authorized to register on this server".into()));
    }
    let sid = services
        .threepids
        .request_email_token(Purpose::Register, b.client_secret.as_str(), &b.email, b.send_attempt.into())
        .await?;
    let mut response = request_registration_token_via_email::v3::Response::new(session_id(sid)?);
    response.submit_url = Some(services.threepids.submit_url());
    Ok(response)
}

pub async fn msisdn_for_registration(
    _: Arc<Services>,
    _: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> Result<request_registration_token_via_msisdn::v3::Response> {
    Err(denied())
}

/// The parameters of a token submission (the emailed link, or a client posting to
/// `submit_url` as the Identity Service API's `submitToken` takes them).
#[derive(Deserialize)]
pub struct Submission {
    sid: String,
    client_secret: String,
    token: String,
}

/// `GET /_hemicycle/client/email/submit_token`: the link in the email. Plain text, so nothing of
/// the parameters can script the page.
pub async fn submit_token_link(
    State(services): State<Arc<Services>>,
    submission: std::result::Result<Query<Submission>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let plain = |status: http::StatusCode, text: &'static str| {
        (status, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    };
    let Ok(Query(s)) = submission else {
        return plain(http::StatusCode::BAD_REQUEST, "Lien incomplet. / Incomplete link.\n");
    };
    match services.threepids.submit_token(&s.sid, &s.client_secret, &s.token) {
        Ok(()) => plain(
            http::StatusCode::OK,
            "Adresse validée : revenez à votre application. / Address validated: go back to your app.\n",
        ),
        Err(_) => {
            plain(http::StatusCode::BAD_REQUEST, "Lien invalide ou expiré. / This link is invalid or has expired.\n")
        }
    }
}

/// `POST /_hemicycle/client/email/submit_token`: `{sid, client_secret, token}` → `{success: true}`.
pub async fn submit_token(State(services): State<Arc<Services>>, body: axum::body::Bytes) -> Response {
    let submission: Submission = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return ApiError::from(Error::BadJson(e.to_string())).into_response(),
    };
    match services.threepids.submit_token(&submission.sid, &submission.client_secret, &submission.token) {
        Ok(()) => Json(serde_json::json!({ "success": true })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
