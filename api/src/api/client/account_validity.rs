//! The account validity routes clients call (Synapse's legacy `…/unstable/account_validity/…`,
//! which the state's messenger's clients use, and the same under Tchap's module path
//! `/_synapse/client/email_account_validity/…`): ask for a renewal email, follow the emailed link
//! (an HTML page, opened in a browser), and ask whether one's own account is still valid. An
//! expired account may call them all (see `users::account_validity::check_request`).

use std::sync::Arc;

use axum::{
    extract::{Path, Query, Request, State},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, TokenUse},
    },
    error::Error,
    services::Services,
    users::account_validity::{send_renewal_mail, Renewal},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let mut router = router;
    for base in ["/_matrix/client/unstable/account_validity", "/_synapse/client/email_account_validity"] {
        router = router
            .route(&format!("{base}/send_mail"), post(send_mail))
            .route(&format!("{base}/renew"), get(renew))
            .route(&format!("{base}/validity"), get(validity));
    }
    for version in ["r0", "v3"] {
        router = router.route(&format!("/_matrix/client/{version}/user/{{user_id}}/info"), get(user_info));
    }
    router.route("/_matrix/client/unstable/users/info", post(users_info))
}

/// The most users one `users/info` request may name: each remote one costs a request to its server.
const MAX_USERS_INFO: usize = 100;

/// `POST /_matrix/client/unstable/users/info` `{"user_ids": [...]}` (the bulk form of
/// [`user_info`] in Tchap's fork): `{user_id: {"expired", "deactivated"}}`, leaving out the users
/// whose server cannot say.
async fn users_info(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| Error::TooLarge("request too large".into()))?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Error::BadJson("the body is not a JSON object".into()))?;
    let Some(ids) = body.get("user_ids").and_then(|v| v.as_array()) else {
        return Err(Error::invalid_param("'user_ids' must be a list of user ID strings").into());
    };
    if ids.len() > MAX_USERS_INFO {
        return Err(Error::invalid_param(format!("at most {MAX_USERS_INFO} user ids at once")).into());
    }
    let mut users = Vec::new();
    for id in ids {
        let user = id.as_str().and_then(|s| ruma::UserId::parse(s).ok());
        users.push(user.ok_or_else(|| Error::invalid_param("'user_ids' must be a list of user ID strings"))?);
    }
    let mut answer = serde_json::Map::new();
    for user in users {
        let info = if services.users.is_local(&user) {
            Some(crate::users::account_validity::user_info(&services, &user)?)
        } else {
            crate::users::account_validity::remote_user_info(&services, &user).await
        };
        if let Some(info) = info {
            answer.insert(user.to_string(), info);
        }
    }
    Ok(Json(serde_json::Value::Object(answer)).into_response())
}

/// `GET /_matrix/client/{r0,v3}/user/{userId}/info` (Tchap's): `{"expired", "deactivated"}` of
/// a user of this node, or of another node as it answers the federation query; `404
/// M_NOT_FOUND` when that node cannot say (as a Synapse without the query answers).
async fn user_info(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let user = ruma::UserId::parse(&user_id).map_err(|_| Error::invalid_param("not a user id"))?;
    let info = if services.users.is_local(&user) {
        crate::users::account_validity::user_info(&services, &user)?
    } else {
        crate::users::account_validity::remote_user_info(&services, &user)
            .await
            .ok_or_else(|| Error::not_found(format!("{} cannot say", user.server_name())))?
    };
    Ok(Json(info).into_response())
}

/// `POST …/send_mail`: a renewal email to the caller's addresses, now.
async fn send_mail(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let owner = authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    if services.account_validity.expiry_of(&owner.user_id)?.is_none() {
        return Err(Error::BadState(format!("{} has no expiration time", owner.user_id)).into());
    }
    send_renewal_mail(&services, &owner.user_id).await?;
    Ok(Json(json!({})).into_response())
}

/// `GET …/validity`: whether the caller's account is valid, and until when.
async fn validity(State(services): State<Arc<Services>>, request: Request) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let owner = authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let expiration_ts = services.account_validity.expiry_of(&owner.user_id)?;
    let valid = !services.account_validity.is_expired(&owner.user_id)?;
    Ok(Json(json!({ "valid": valid, "expiration_ts": expiration_ts })).into_response())
}

#[derive(Deserialize)]
struct RenewQuery {
    token: Option<String>,
}

fn page(status: StatusCode, french: &str, english: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Compte / Account</title></head>\
         <body><p>{french}</p><p lang=\"en\">{english}</p></body></html>"
    );
    (status, Html(body)).into_response()
}

/// `GET …/renew?token=…`: the emailed link. Renewed (200), already used (200, the expiry it
/// gave), or unknown (400, as Tchap's module answers): a page for the browser that opened it.
///
/// With `send_links = false` the emailed token is an 8-digit code the client sends here with the
/// account's own access token (an expired account's token works); without it, or with another
/// account's, the code is unknown.
async fn renew(
    State(services): State<Arc<Services>>,
    Query(query): Query<RenewQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(token) = query.token.filter(|t| !t.is_empty()) else {
        return Err(Error::MissingParam("token is required".into()).into());
    };
    let (parts, _) = request.into_parts();
    let requester = match services.account_validity.sends_links() {
        true => None,
        false => authenticate(&parts, &services, TokenUse::Optional)?.map(|owner| owner.user_id),
    };
    let when = |ms: u64| crate::users::account_validity::format_utc(ms);
    Ok(match services.account_validity.renew_with_token(&token, requester.as_deref()).await? {
        Renewal::Renewed(ts) => page(
            StatusCode::OK,
            &format!("Votre compte est renouvelé jusqu'au {}.", when(ts)),
            &format!("Your account has been renewed until {}.", when(ts)),
        ),
        Renewal::AlreadyUsed(ts) => page(
            StatusCode::OK,
            &format!("Ce lien a déjà servi : votre compte est valable jusqu'au {}.", when(ts)),
            &format!("This link was used already: your account is valid until {}.", when(ts)),
        ),
        Renewal::Invalid => page(
            StatusCode::BAD_REQUEST,
            "Ce lien n'est pas (ou plus) valable ; demandez un nouvel email depuis votre application.",
            "This link is not (or no longer) valid; ask for a new email from your app.",
        ),
    })
}
