//! Login and logout.

use std::sync::Arc;

use ruma::api::client::{
    session::{
        get_login_types::{
            self,
            v3::{LoginType, PasswordLoginType},
        },
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    ratelimit::Action,
    services::Services,
};

pub async fn login_types(
    _: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]))
}

pub async fn login(services: Arc<Services>, request: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let ip = request.client_ip;
    if let Some(ip) = ip {
        services.rate_limiter.check(Action::Login, &ip.to_string())?;
    }
    let body = request.body;
    let LoginInfo::Password(password) = body.login_info else {
        return Err(Error::BadState("unknown login type: only m.login.password is supported".into()));
    };
    #[allow(deprecated)]
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => return Err(Error::forbidden("only m.id.user identifiers are supported")),
        (None, None) => return Err(Error::MissingParam("identifier is required".into())),
    };
    let user = services.users.parse_login_user(&name)?;
    services.rate_limiter.check(Action::Login, user.as_str())?;
    services.users.check_password(&user, &password.password).await?;
    let refresh = body.refresh_token.then(|| services.config.session.refreshable_lifetime());
    let session = services.users.login(&user, body.device_id, body.initial_device_display_name, ip, refresh).await?;
    tracing::info!(%user, device_id = %session.device_id, "logged in");
    let mut response = login::v3::Response::new(user, session.access_token, session.device_id);
    if let Some((refresh_token, lifetime)) = session.refresh {
        response.refresh_token = Some(refresh_token);
        response.expires_in = Some(lifetime);
    }
    #[allow(deprecated)]
    {
        response.home_server = Some(services.config.server_name.clone());
    }
    Ok(response)
}

pub async fn logout(services: Arc<Services>, request: Ruma<logout::v3::Request>) -> Result<logout::v3::Response> {
    let owner = request.sender()?;
    services.users.remove_device(&owner.user_id, &owner.device_id).await?;
    Ok(logout::v3::Response::new())
}

pub async fn logout_all(
    services: Arc<Services>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    services.users.remove_all_devices(&request.sender()?.user_id).await?;
    Ok(logout_all::v3::Response::new())
}

/// `POST /refresh`: a new access token (and refresh token) for a refresh token.
pub async fn refresh(
    services: Arc<Services>,
    request: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let lifetime = services.config.session.refreshable_lifetime();
    let session = services.users.refresh(&request.body.refresh_token, lifetime).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    if let Some((refresh_token, lifetime)) = session.refresh {
        response.refresh_token = Some(refresh_token);
        response.expires_in_ms = Some(lifetime);
    }
    Ok(response)
}
