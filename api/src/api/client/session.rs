//! Login and logout.

use std::sync::Arc;

use ruma::api::client::{
    session::{
        get_login_token,
        get_login_types::{
            self,
            v3::{IdentityProvider, LoginType, PasswordLoginType, SsoLoginType, TokenLoginType},
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
    services: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    let mut types = Vec::new();
    if !services.config.oauth.only {
        types.push(LoginType::Password(PasswordLoginType::new()));
    }
    let providers = services.upstreams.list();
    if !providers.is_empty() {
        // `m.login.sso` through the upstream providers, for clients that do not speak OAuth 2.0;
        // preferred (MSC3824's successor in spec v1.18) when the node uses the OAuth 2.0 API.
        let mut sso = SsoLoginType::new();
        sso.identity_providers =
            providers.into_iter().map(|(id, name)| IdentityProvider::new(id.to_owned(), name.to_owned())).collect();
        sso.oauth_aware_preferred = services.oauth.enabled();
        types.push(LoginType::Sso(sso));
    }
    types.push(LoginType::Token(token));
    types.push(LoginType::ApplicationService(get_login_types::v3::ApplicationServiceLoginType::new()));
    Ok(get_login_types::v3::Response::new(types))
}

/// `POST /login/get_token`: after the user confirms their password, a single-use token that
/// signs another device in (`m.login.token`), e.g. by a QR code.
pub async fn get_token(
    services: Arc<Services>,
    request: Ruma<get_login_token::v1::Request>,
) -> Result<get_login_token::v1::Response> {
    let user = request.sender()?.user_id.clone();
    services
        .uia
        .authorize(
            &services.users,
            request.body.auth.as_ref(),
            &[&[crate::uia::PASSWORD]],
            Some(&user),
            "get_login_token",
        )
        .await?;
    let (token, lifetime) = services.users.login_token(&user)?;
    Ok(get_login_token::v1::Response::new(lifetime, token))
}

pub async fn login(services: Arc<Services>, request: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let ip = request.client_ip;
    if let Some(ip) = ip {
        services.rate_limiter.check(Action::Login, &ip.to_string())?;
    }
    let body = request.body;
    let user = match body.login_info {
        LoginInfo::Password(_) if services.config.oauth.only => {
            return Err(Error::forbidden(
                "this server signs people in through OAuth 2.0 only: use m.login.sso or an OAuth 2.0 client",
            ))
        }
        LoginInfo::Password(password) => password_login(&services, password).await?,
        LoginInfo::Token(token) => services.users.take_login_token(&token.token).await?,
        LoginInfo::ApplicationService(login) => appservice_login(&services, request.owner.as_ref(), login)?,
        _ => {
            return Err(Error::BadState(
                "unknown login type: m.login.password, m.login.token and m.login.application_service are supported"
                    .into(),
            ))
        }
    };
    let refresh = body.refresh_token.then(|| services.config.session.refreshable_lifetime());
    let session = services.users.login(&user, body.device_id, body.initial_device_display_name, ip, refresh).await?;
    tracing::info!(%user, device_id = %session.device_id, "logged in");
    audit(
        &services,
        user.as_str(),
        "login",
        serde_json::json!({ "device_id": session.device_id, "ip": ip.map(|ip| ip.to_string()) }),
    );
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

/// `m.login.application_service`: an appservice (authenticated by its `as_token`) logs in as one
/// of its registered users, for a device of its own.
fn appservice_login(
    services: &Services,
    owner: Option<&crate::users::TokenOwner>,
    login: login::v3::ApplicationService,
) -> Result<ruma::OwnedUserId> {
    let service = owner
        .and_then(|o| o.appservice.as_deref())
        .and_then(|id| services.appservices.get(id))
        .ok_or_else(|| Error::forbidden("m.login.application_service needs an application service token"))?;
    let user = match login.identifier {
        Some(UserIdentifier::Matrix(id)) => {
            match ruma::UserId::parse_with_server_name(id.user.as_str(), &services.config.server_name) {
                Ok(user) => user,
                Err(_) => return Err(Error::invalid_param("not a user id")),
            }
        }
        _ => return Err(Error::invalid_param("m.login.application_service needs an m.id.user identifier")),
    };
    if !service.claims_user(&user) {
        return Err(Error::Exclusive("this user is outside the application service's namespaces".into()));
    }
    if !services.users.exists(&user)? {
        return Err(Error::forbidden("no such user"));
    }
    Ok(user)
}

/// The user an `m.login.password` login names, once their password is checked.
async fn password_login(services: &Services, password: login::v3::Password) -> Result<ruma::OwnedUserId> {
    #[allow(deprecated)]
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => return Err(Error::forbidden("only m.id.user identifiers are supported")),
        (None, None) => return Err(Error::MissingParam("identifier is required".into())),
    };
    let key = services.users.parse_login_user(&name).map(|u| u.to_string()).unwrap_or_else(|_| name.to_lowercase());
    services.rate_limiter.check(Action::Login, &key)?;
    let outcome = crate::users::directory::password_login(services, &name, &password.password).await;
    if let Err(error) = &outcome {
        if !matches!(error, Error::LimitExceeded { .. }) {
            audit(
                services,
                &key,
                "login.refused",
                serde_json::json!({ "method": "password", "reason": error.to_string() }),
            );
        }
    }
    outcome
}

/// Every sign-in through `/login` and every refused password lands in the audit log, as the OAuth
/// pages' do: an admin looking into an account sees how and when it was entered, whatever the
/// client. (Rate-limited attempts are not recorded: they would let anyone fill the log.)
fn audit(services: &Services, user: &str, action: &str, details: serde_json::Value) {
    if let Err(error) = services.audit.record(user, action, user, details) {
        tracing::warn!(%error, "audit log entry not written");
    }
}
