//! An account's expiry (`[account_validity]`) on its console page: shown, set to a date, or
//! renewed for a period from now — the console's form of `POST /_synapse/admin/v1/account_validity/validity`.

use std::sync::Arc;

use axum::{extract::State, routing::post, Router};
use maud::{html, Markup};
use ruma::UserId;
use serde_json::json;

use super::{done, when, Change, Failure, Page, Session, BASE};
use crate::{api::admin::existing_user, services::Services, users::account_validity};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(&format!("{BASE}/users/validity"), post(set))
}

/// The expiry and the form that changes it, for the user page (nothing when accounts do not
/// expire on this node, or for a deactivated account).
pub fn section(services: &Services, session: &Session, user: &UserId, deactivated: bool) -> Result<Markup, Failure> {
    if services.account_validity.config().is_none() || deactivated {
        return Ok(html! {});
    }
    let exempt = account_validity::exempt(services, user)?;
    let expiry = services.account_validity.expiry_of(user)?;
    let expired = services.account_validity.is_expired(user)?;
    let id = user.as_str();
    Ok(html! {
        section aria-labelledby="validity" {
            h2 #validity { "Expiry" }
            @if exempt {
                p { "This account never expires (excluded, an application service's, or kept by the directory)." }
            } @else {
                p #validity-state {
                    @match expiry {
                        Some(ts) if expired => { span.bad { "Expired since " (when(Some(ts))) "." } }
                        Some(ts) => { "Valid until " (when(Some(ts))) "." }
                        None => { "No expiry yet." }
                    }
                }
                form.stack method="post" action=(format!("{BASE}/users/validity")) {
                    (session.csrf_field())
                    input type="hidden" name="user" value=(id);
                    label for="validity-date" { "Valid until (UTC date; empty: one period from now)" }
                    input #validity-date name="date" type="date";
                    div.check {
                        input #validity-emails type="checkbox" name="emails" checked;
                        label for="validity-emails" { "Send renewal emails before that date" }
                    }
                    button type="submit" { "Set the expiry" }
                }
            }
        }
    })
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (what a date input sends) as the end of that day, UTC, in ms.
fn end_of_day(date: &str) -> Result<u64, Failure> {
    let bad = || Failure::bad_request("The date must read YYYY-MM-DD.");
    let mut parts = date.trim().splitn(3, '-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d);
    if days_from_civil(y, m, 1) + d - 1 != days || (m < 12 && days >= days_from_civil(y, m + 1, 1)) {
        return Err(bad());
    }
    Ok(((days + 1) * 86_400_000 - 1) as u64)
}

/// `POST /users/validity`: `user`, `date` (empty: a period from now), `emails` ticked or not.
async fn set(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (user, account) = existing_user(&services, change.required("user", "The user")?)?;
    if account.deactivated {
        return Err(Failure::bad_request("The account is deactivated."));
    }
    let expiration_ts = change.raw("date").filter(|d| !d.trim().is_empty()).map(end_of_day).transpose()?;
    let emails = change.ticked("emails");
    let ts = services.account_validity.set(&user, expiration_ts, emails).await?;
    change.admin().audit(
        &services,
        "user.set_validity",
        user.as_str(),
        json!({ "expiration_ts": ts, "enable_renewal_emails": emails }),
    )?;
    done(
        &change.session,
        "/users/view",
        vec![("id", user.as_str())],
        &format!("{user} is valid until {}.", when(Some(ts))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_read_as_the_end_of_the_day() {
        assert_eq!(end_of_day("1970-01-01").unwrap(), 86_400_000 - 1);
        assert_eq!(end_of_day("2026-12-06").unwrap(), 1_796_601_600_000 - 1);
        assert!(end_of_day("2026-02-30").is_err());
        assert!(end_of_day("2026-13-01").is_err());
        assert!(end_of_day("yesterday").is_err());
    }
}
