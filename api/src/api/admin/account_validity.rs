//! `POST /_synapse/admin/v1/account_validity/validity` (Synapse's admin API; also at
//! `/_synapse/client/email_account_validity/admin`, where Tchap's module serves it): an admin sets
//! an account's expiry, or renews it for a period from now.

use std::sync::Arc;

use axum::{extract::State, routing::post, Router};
use serde::Deserialize;
use serde_json::json;

use super::{existing_user, ok, Admin, Answer, Body};
use crate::{error::Error, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/account_validity/validity", post(set_validity))
        .route("/_synapse/client/email_account_validity/admin", post(set_validity))
}

#[derive(Deserialize)]
struct SetValidity {
    user_id: String,
    /// The new expiry (ms); absent: now plus a period.
    expiration_ts: Option<u64>,
    /// `false`: no renewal email for this period.
    #[serde(default = "yes")]
    enable_renewal_emails: bool,
}

fn yes() -> bool {
    true
}

async fn set_validity(State(services): State<Arc<Services>>, admin: Admin, Body(body): Body<SetValidity>) -> Answer {
    let (user, account) = existing_user(&services, &body.user_id)?;
    if account.deactivated {
        return Err(Error::BadState("the account is deactivated".into()).into());
    }
    let expiration_ts = services.account_validity.set(&user, body.expiration_ts, body.enable_renewal_emails).await?;
    admin.audit(
        &services,
        "user.set_validity",
        user.as_str(),
        json!({ "expiration_ts": expiration_ts, "enable_renewal_emails": body.enable_renewal_emails }),
    )?;
    ok(json!({ "expiration_ts": expiration_ts }))
}
