//! Registration and account management.

use std::sync::Arc;

use ruma::api::client::account::{
    change_password, check_registration_token_validity, deactivate, get_username_availability,
    register::{self, RegistrationKind},
    request_openid_token, whoami, ThirdPartyIdRemovalStatus,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    ratelimit::Action,
    services::Services,
    uia,
    users::threepid::Purpose,
};

pub async fn register(services: Arc<Services>, request: Ruma<register::v3::Request>) -> Result<register::v3::Response> {
    if request.body.login_type == Some(register::LoginType::ApplicationService) {
        return register_for_appservice(&services, request).await;
    }
    if services.config.oauth.only {
        return Err(Error::forbidden("accounts are made through OAuth 2.0 sign-in on this server"));
    }
    let config = &services.config.registration;
    let email = config.email && services.threepids.sends_email();
    // Tokens made by admins open a closed registration to whoever holds one.
    let flows: &[&[&str]] = match (&config.token, config.open) {
        (Some(_), _) => &[&[uia::REGISTRATION_TOKEN]],
        (None, true) if email => &[&[uia::DUMMY], &[uia::EMAIL_IDENTITY]],
        (None, true) => &[&[uia::DUMMY]],
        (None, false) if services.registration_tokens.any()? => &[&[uia::REGISTRATION_TOKEN]],
        (None, false) => return Err(Error::forbidden("registration is closed on this server")),
    };
    if request.body.kind == RegistrationKind::Guest {
        return Err(Error::GuestAccessForbidden);
    }
    if let Some(ip) = request.client_ip {
        services.rate_limiter.check(Action::Registration, &ip.to_string())?;
    }
    let body = request.body;
    let localpart = match &body.username {
        Some(name) => name.to_lowercase(),
        None => crate::users::random_password().to_lowercase(),
    };
    // Validate before asking for authentication, so a client learns about a bad name at once.
    let user = services.users.user_id_for_localpart(&localpart)?;
    refuse_exclusive(&services, &user)?;
    if services.users.exists(&user)? {
        return Err(Error::UserInUse);
    }
    // Before authentication too, so a client learns at once that the password is refused.
    if let Some(password) = &body.password {
        services.users.password_policy().check(password)?;
    }
    // The email stage names a validation session, which the stage itself does not check: it is
    // checked here (and the address held to the network's rules, with the reference's message)
    // before the stage counts, and used up once the account exists.
    let email_creds = match &body.auth {
        Some(ruma::api::client::uiaa::AuthData::EmailIdentity(e)) => Some(e.thirdparty_id_creds.clone()),
        _ => None,
    };
    if let Some(creds) = &email_creds {
        let address =
            services.threepids.validated(creds.sid.as_str(), creds.client_secret.as_str(), Purpose::Register)?;
        if !services.network.may_bind(&address, services.rooms.has_pending_invite(&address)?)? {
            return Err(Error::ThreepidDenied(
                "Third party identifiers (email/phone numbers) are not authorized on this server".into(),
            ));
        }
        if services.threepids.owner("email", &address)?.is_some() {
            return Err(Error::ThreepidInUse);
        }
    }
    services.uia.authorize(&services.users, body.auth.as_ref(), flows, None, "register").await?;
    let address = match &email_creds {
        Some(creds) => Some(services.threepids.take_validated(
            creds.sid.as_str(),
            creds.client_secret.as_str(),
            Purpose::Register,
        )?),
        None => None,
    };
    let user = services.users.create(&localpart, body.password.clone(), false).await?;
    tracing::info!(%user, "registered");
    if let Some(address) = address {
        services.threepids.add(&user, "email", &address)?;
        // The third-party invites of the address are the new account's by this answer.
        crate::federation::threepid::take_up_bound(&services).await;
    }
    finish_registration(&services, user, body, request.client_ip).await
}

/// A name in an appservice's exclusive namespace is for that appservice only.
fn refuse_exclusive(services: &Services, user: &ruma::UserId) -> Result<()> {
    match services.appservices.exclusive_owner_of_user(user) {
        Some(_) => Err(Error::Exclusive("this user id is reserved by an application service".into())),
        None => Ok(()),
    }
}

/// `m.login.application_service` registration: an appservice creates one of its users (its
/// `as_token` is the authentication, no UIA, no password), whether or not registration is open.
async fn register_for_appservice(
    services: &Services,
    request: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    let owner = request.owner.as_ref().filter(|o| o.appservice.is_some()).ok_or_else(|| {
        Error::forbidden("m.login.application_service registration needs an application service token")
    })?;
    let service = services
        .appservices
        .get(owner.appservice.as_deref().unwrap_or_default())
        .ok_or_else(|| Error::forbidden("unknown application service"))?;
    let body = request.body;
    let localpart = body
        .username
        .as_deref()
        .map(str::to_lowercase)
        .ok_or_else(|| Error::MissingParam("username is required".into()))?;
    let user = services.users.user_id_for_localpart(&localpart)?;
    if !service.claims_user(&user) {
        return Err(Error::Exclusive("this user id is outside the application service's namespaces".into()));
    }
    if services.users.exists(&user)? {
        return Err(Error::UserInUse);
    }
    let user = services.users.create(&localpart, None, false).await?;
    tracing::info!(%user, appservice = %service.registration.id, "registered by an appservice");
    finish_registration(services, user, body, request.client_ip).await
}

async fn finish_registration(
    services: &Services,
    user: ruma::OwnedUserId,
    body: register::v3::Request,
    client_ip: Option<std::net::IpAddr>,
) -> Result<register::v3::Response> {
    let mut response = register::v3::Response::new(user.clone());
    if !body.inhibit_login {
        let refresh = body.refresh_token.then(|| services.config.session.refreshable_lifetime());
        let session =
            services.users.login(&user, body.device_id, body.initial_device_display_name, client_ip, refresh).await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
        if let Some((refresh_token, lifetime)) = session.refresh {
            response.refresh_token = Some(refresh_token);
            response.expires_in = Some(lifetime);
        }
    }
    Ok(response)
}

pub async fn username_available(
    services: Arc<Services>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    if let Some(ip) = request.client_ip {
        services.rate_limiter.check(Action::Registration, &ip.to_string())?;
    }
    let user = services.users.user_id_for_localpart(&request.body.username.to_lowercase())?;
    refuse_exclusive(&services, &user)?;
    if services.users.exists(&user)? {
        return Err(Error::UserInUse);
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// `GET /register/m.login.registration_token/validity`: lets a client check a token before the
/// UIA flow. Rate limited like registration, so it cannot be used to guess tokens quickly.
pub async fn registration_token_validity(
    services: Arc<Services>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    if let Some(ip) = request.client_ip {
        services.rate_limiter.check(Action::Registration, &ip.to_string())?;
    }
    let valid = services.uia.registration_token_matches(&request.body.token)?;
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

pub async fn whoami(_: Arc<Services>, request: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let owner = request.sender()?;
    let mut response = whoami::v3::Response::new(owner.user_id.clone(), false);
    response.device_id = Some(owner.device_id.clone());
    Ok(response)
}

pub async fn change_password(
    services: Arc<Services>,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let body = request.body;
    let Some(owner) = request.owner else {
        return reset_password(&services, body).await;
    };
    // Before any authentication stage: the answer is the same whatever the password.
    services.users.ensure_local_password(&owner.user_id)?;
    services.users.password_policy().check(&body.new_password)?;
    services
        .uia
        .authorize(&services.users, body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&owner.user_id), "change_password")
        .await?;
    services.users.set_password(&owner.user_id, body.new_password, body.logout_devices, Some(&owner.device_id)).await?;
    Ok(change_password::v3::Response::new())
}

/// `POST /account/password` without an access token: a password reset, authorized by an email
/// validation session opened with `/account/password/email/requestToken`.
async fn reset_password(
    services: &Services,
    body: change_password::v3::Request,
) -> Result<change_password::v3::Response> {
    // A refused password must not use up the validated email session.
    services.users.password_policy().check(&body.new_password)?;
    // Without email credentials this answers the challenge; with them the stage passes here
    // and the session they name is checked (and used up) right after.
    services
        .uia
        .authorize(&services.users, body.auth.as_ref(), &[&[uia::EMAIL_IDENTITY]], None, "reset_password")
        .await?;
    let Some(ruma::api::client::uiaa::AuthData::EmailIdentity(email)) = &body.auth else {
        return Err(Error::forbidden("a password reset needs email credentials"));
    };
    let creds = &email.thirdparty_id_creds;
    let address = services.threepids.take_validated(
        creds.sid.as_str(),
        creds.client_secret.as_str(),
        crate::users::threepid::Purpose::ResetPassword,
    )?;
    let user = services.threepids.owner("email", &address)?.ok_or(Error::ThreepidNotFound)?;
    services.users.set_password(&user, body.new_password, body.logout_devices, None).await?;
    tracing::info!(%user, "password reset by email");
    Ok(change_password::v3::Response::new())
}

pub async fn deactivate(
    services: Arc<Services>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let owner = request.sender()?.clone();
    services
        .uia
        .authorize(&services.users, request.body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&owner.user_id), "deactivate")
        .await?;
    crate::users::deactivation::deactivate(&services, &owner.user_id, request.body.erase).await?;
    tracing::info!(user = %owner.user_id, "deactivated");
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// `POST /user/{userId}/openid/request_token`, for oneself only.
pub async fn openid_token(
    services: Arc<Services>,
    request: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    if request.body.user_id != request.sender()?.user_id {
        return Err(Error::forbidden("an OpenID token can only be requested for oneself"));
    }
    let (token, lifetime) = services.users.openid_token(&request.body.user_id)?;
    Ok(request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        services.config.server_name.clone(),
        lifetime,
    ))
}
