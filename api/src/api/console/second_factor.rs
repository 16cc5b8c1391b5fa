//! The admin's second factor: enrolling a TOTP secret (RFC 6238, any authenticator app), which
//! dangerous changes then ask a one-time code of (users/totp.rs), and removing it with a code.

use std::sync::Arc;

use axum::{extract::State, routing::post, Router};
use maud::html;
use serde_json::json;

use super::{done, page, Change, Page, Query, Session, BASE};
use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/second-factor"), axum::routing::get(overview))
        .route(&format!("{BASE}/second-factor/begin"), post(begin))
        .route(&format!("{BASE}/second-factor/confirm"), post(confirm))
        .route(&format!("{BASE}/second-factor/remove"), post(remove))
}

/// `GET /second-factor`.
async fn overview(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let enrolled = services.totp.enrolled(&session.user_id)?;
    let content = html! {
        p {
            "Dangerous changes (deactivating an account, deleting a room, approving another node's proposal) ask for a one-time code "
            "once you have enrolled a second factor"
            @if services.config.console.require_second_factor { ", and are refused until you have (" code { "console.require_second_factor" } ")" }
            ". Any TOTP authenticator app works (RFC 6238: 30-second codes of 6 digits). A code is good once."
        }
        @if enrolled {
            p.good { "A second factor is enrolled." }
            form.stack method="post" action=(format!("{BASE}/second-factor/remove")) data-confirm="Remove your second factor?" {
                (session.csrf_field())
                (super::totp_field("remove-totp"))
                button.danger type="submit" { "Remove the second factor" }
            }
        } @else {
            p { "No second factor is enrolled." }
            form.stack method="post" action=(format!("{BASE}/second-factor/begin")) {
                (session.csrf_field())
                button type="submit" { "Enrol a second factor" }
            }
        }
    };
    page(&session, "/second-factor", "Second factor", query.notice(&session), content)
}

/// `POST /second-factor/begin`: a new pending secret, shown once (this answer is not stored
/// by the browser: `Cache-Control: no-store`), with the form that confirms it.
async fn begin(State(services): State<Arc<Services>>, change: Change) -> Page {
    let secret = services.totp.begin(&change.session.user_id)?;
    let user = change.session.user_id.as_str();
    let issuer = services.config.server_name.as_str();
    let uri = format!(
        "otpauth://totp/{}?secret={secret}&issuer={}&algorithm=SHA1&digits=6&period=30",
        form_urlencoded::byte_serialize(format!("{issuer}:{user}").as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(issuer.as_bytes()).collect::<String>(),
    );
    let content = html! {
        p { "Add this secret to your authenticator app, then type the code it shows to finish." }
        dl {
            dt { "Secret" } dd { code #totp-secret { (secret) } }
            dt { "Or as a link" } dd { code { (uri) } }
        }
        form.stack method="post" action=(format!("{BASE}/second-factor/confirm")) {
            (change.session.csrf_field())
            label for="confirm-totp" { "Code from the app" }
            input #confirm-totp name="totp" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required;
            button type="submit" { "Confirm" }
        }
    };
    page(&change.session, "/second-factor", "Enrol a second factor", None, content)
}

/// `POST /second-factor/confirm`: the first code, which proves the app holds the secret.
async fn confirm(State(services): State<Arc<Services>>, change: Change) -> Page {
    let code = change.required("totp", "The code")?;
    services.totp.confirm(&change.session.user_id, code)?;
    change.admin().audit(&services, "console.second_factor.enrol", change.session.user_id.as_str(), json!({}))?;
    done(&change.session, "/second-factor", vec![], "Second factor enrolled: dangerous changes now ask for a code.")
}

/// `POST /second-factor/remove`: needs a code of the factor removed.
async fn remove(State(services): State<Arc<Services>>, change: Change) -> Page {
    let code = change.required("totp", "The code")?;
    services.totp.check(&change.session.user_id, code)?;
    services.totp.remove(&change.session.user_id)?;
    change.admin().audit(&services, "console.second_factor.remove", change.session.user_id.as_str(), json!({}))?;
    done(&change.session, "/second-factor", vec![], "Second factor removed.")
}
