//! Users (search, create, deactivate, reset password, devices and their sessions) and
//! registration tokens (list, create, delete).

use std::sync::Arc;

use axum::{
    extract::State,
    routing::{get, post},
    Router,
};
use maud::html;
use serde_json::json;

use super::{button_form, done, link, page, pager, when, Change, Failure, Page, Query, Session, BASE, PAGE_SIZE};
use crate::{
    api::admin::{existing_user, tokens, users},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/users"), get(list))
        .route(&format!("{BASE}/users/view"), get(view))
        .route(&format!("{BASE}/users/create"), post(create))
        .route(&format!("{BASE}/users/deactivate"), post(deactivate))
        .route(&format!("{BASE}/users/password"), post(reset_password))
        .route(&format!("{BASE}/users/devices/delete"), post(delete_device))
        .route(&format!("{BASE}/tokens"), get(tokens_page))
        .route(&format!("{BASE}/tokens/create"), post(create_token))
        .route(&format!("{BASE}/tokens/delete"), post(delete_token))
}

/// `GET /users?q=&deactivated=on`: accounts whose id or display name contains `q`.
async fn list(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let term = query.get("q");
    let needle = term.map(str::to_lowercase);
    let with_deactivated = query.get("deactivated").is_some();
    let mut rows = Vec::new();
    for (user, account) in services.users.list()? {
        if account.deactivated && !with_deactivated {
            continue;
        }
        let row = users::user_json(&services, &user, &account, false)?;
        if needle.as_deref().is_some_and(|n| !users::name_matches(&user, &row, n)) {
            continue;
        }
        rows.push((user, account, row));
    }
    let total = rows.len();
    let from = query.from()?;
    let (rows, next) = crate::api::admin::paginate(rows, from, PAGE_SIZE);
    let mut params: Vec<(&str, &str)> = term.map(|t| vec![("q", t)]).unwrap_or_default();
    if with_deactivated {
        params.push(("deactivated", "on"));
    }
    let server = services.config.server_name.as_str();
    let content = html! {
        form.search method="get" action=(format!("{BASE}/users")) role="search" {
            label for="q" { "Search users (id or display name)" }
            input #q name="q" type="search" value=[term];
            div.check {
                input #deactivated type="checkbox" name="deactivated" checked[with_deactivated];
                label for="deactivated" { "Include deactivated accounts" }
            }
            button type="submit" { "Search" }
        }
        p { (total) " accounts." }
        div.scroll {
            table {
                caption { "Accounts of this node" }
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Display name" } th scope="col" { "Admin" }
                    th scope="col" { "Status" } th scope="col" { "Created" }
                } }
                tbody {
                    @for (user, account, row) in &rows {
                        tr {
                            th scope="row" { a href=(link("/users/view", &[("id", user.as_str())])) { (user.as_str()) } }
                            td { (row["displayname"].as_str().unwrap_or("")) }
                            td { @if account.admin { "admin" } @else { "—" } }
                            td {
                                @if account.deactivated { span.bad { "deactivated" } }
                                @else if account.locked { "locked" }
                                @else { "active" }
                                @if account.directory.is_some() { " (directory)" }
                            }
                            td { (when(Some(account.created_ts))) }
                        }
                    }
                }
            }
        }
        (pager("User list pages", "/users", &params, from, PAGE_SIZE, next))
        section aria-labelledby="create" {
            h2 #create { "Create an account" }
            form.stack method="post" action=(format!("{BASE}/users/create")) {
                (session.csrf_field())
                label for="new-localpart" { "User name (the part before :" (server) ")" }
                input #new-localpart name="localpart" type="text" required autocomplete="off";
                label for="new-password" { "Password" }
                input #new-password name="password" type="password" required autocomplete="new-password";
                div.check {
                    input #new-admin type="checkbox" name="admin";
                    label for="new-admin" { "Server admin" }
                }
                button type="submit" { "Create the account" }
            }
        }
    };
    page(&session, "/users", "Users", query.notice(&session), content)
}

/// `GET /users/view?id=`: one account, its devices (sessions) and actions.
async fn view(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let raw = query.get("id").ok_or_else(|| Failure::bad_request("Which user? The id parameter is missing."))?;
    let (user, account) = existing_user(&services, raw)?;
    let row = users::user_json(&services, &user, &account, true)?;
    let devices = services.users.devices(&user)?;
    // The OAuth 2.0 client each session was granted to (the others signed in with /login).
    let clients: std::collections::HashMap<ruma::OwnedDeviceId, String> = services
        .oauth
        .sessions(&services.users, &user)?
        .into_iter()
        .map(|(_, grant)| {
            let client = services.oauth.client(&grant.client_id).ok().flatten();
            let name = client.map(|c| c.client_name.unwrap_or(c.client_uri)).unwrap_or(grant.client_id);
            (grant.device_id, name)
        })
        .collect();
    let rooms = services.rooms.rooms_of(&user, "join")?;
    let id = user.as_str();
    let content = html! {
        dl.facts {
            dt { "Display name" } dd { (row["displayname"].as_str().unwrap_or("")) }
            dt { "Server admin" } dd { @if account.admin { "yes" } @else { "no" } }
            dt { "Status" } dd { @if account.deactivated { span.bad { "deactivated" } } @else { "active" } }
            dt { "Created" } dd { (when(Some(account.created_ts))) }
            dt { "Directory entry" } dd { (account.directory.as_ref().map(|d| d.dn.as_str()).unwrap_or("none (local account)")) }
            dt { "Joined rooms" } dd { (rooms.len()) }
        }
        (super::validity::section(&services, &session, &user, account.deactivated)?)
        section aria-labelledby="sessions" {
            h2 #sessions { "Devices and sessions" }
            @if devices.is_empty() {
                p { "No device: this user is signed in nowhere." }
            } @else {
                div.scroll {
                    table {
                        caption { "Devices of " (id) " (each holds one session)" }
                        thead { tr {
                            th scope="col" { "Device" } th scope="col" { "Name" } th scope="col" { "Last seen" }
                            th scope="col" { "Last address" } th scope="col" { "OAuth client" } th scope="col" { "Action" }
                        } }
                        tbody {
                            @for (device_id, device) in &devices {
                                tr {
                                    th scope="row" { code { (device_id.as_str()) } }
                                    td { (device.display_name.as_deref().unwrap_or("")) }
                                    td { (when(device.last_seen_ts)) }
                                    td { (device.last_seen_ip.as_deref().unwrap_or("")) }
                                    td { (clients.get(device_id).map(String::as_str).unwrap_or("—")) }
                                    td { (button_form(&session, "/users/devices/delete", &[("user", id), ("device", device_id.as_str())], "End session", Some("End this session? The device is signed out."))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !account.deactivated {
            section aria-labelledby="password" {
                h2 #password { "Reset the password" }
                @if account.directory.is_some() {
                    p { "This account's password is kept by the directory (LDAP)." }
                } @else {
                    form.stack method="post" action=(format!("{BASE}/users/password")) {
                        (session.csrf_field())
                        input type="hidden" name="user" value=(id);
                        label for="reset-password" { "New password" }
                        input #reset-password name="password" type="password" required autocomplete="new-password";
                        div.check {
                            input #reset-logout type="checkbox" name="logout" checked;
                            label for="reset-logout" { "Sign the user out everywhere" }
                        }
                        button type="submit" { "Set the password" }
                    }
                }
            }
            section aria-labelledby="deactivate" {
                h2 #deactivate { "Deactivate" }
                form.stack method="post" action=(format!("{BASE}/users/deactivate")) data-confirm="Deactivate this account? It leaves every room and is signed out." {
                    (session.csrf_field())
                    input type="hidden" name="user" value=(id);
                    div.check {
                        input #deactivate-erase type="checkbox" name="erase";
                        label for="deactivate-erase" { "Also erase the profile (display name, avatar)" }
                    }
                    (super::totp_field("deactivate-totp"))
                    button.danger type="submit" { "Deactivate the account" }
                }
            }
        }
    };
    page(&session, "/users", id, query.notice(&session), content)
}

/// `POST /users/create`: `localpart`, `password`, `admin` ticked or not.
async fn create(State(services): State<Arc<Services>>, change: Change) -> Page {
    let localpart = change.required("localpart", "The user name")?.to_lowercase();
    let password = change.raw("password").ok_or_else(|| Failure::bad_request("The password is required."))?;
    let admin_flag = change.ticked("admin");
    let user = services.users.create(&localpart, Some(password.to_owned()), admin_flag).await?;
    let fields = if admin_flag { json!(["created", "admin"]) } else { json!(["created"]) };
    change.admin().audit(&services, "user.create", user.as_str(), json!({ "fields": fields }))?;
    done(&change.session, "/users/view", vec![("id", user.as_str())], &format!("{user} created."))
}

/// `POST /users/deactivate`: `user`, `erase` ticked or not.
async fn deactivate(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (user, _) = existing_user(&services, change.required("user", "The user")?)?;
    if user == change.session.user_id {
        return Err(Failure::bad_request("You cannot deactivate your own account from the console."));
    }
    change.second_factor(&services)?;
    users::deactivate_account(&services, &change.admin(), &user, change.ticked("erase")).await?;
    done(&change.session, "/users/view", vec![("id", user.as_str())], &format!("{user} is deactivated."))
}

/// `POST /users/password`: `user`, `password`, `logout` ticked or not.
async fn reset_password(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (user, _) = existing_user(&services, change.required("user", "The user")?)?;
    let password = change.raw("password").ok_or_else(|| Failure::bad_request("The new password is required."))?;
    users::reset_password_of(&services, &change.admin(), &user, password.to_owned(), change.ticked("logout")).await?;
    done(&change.session, "/users/view", vec![("id", user.as_str())], &format!("The password of {user} is changed."))
}

/// `POST /users/devices/delete`: `user`, `device`.
async fn delete_device(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (user, _) = existing_user(&services, change.required("user", "The user")?)?;
    let device: ruma::OwnedDeviceId = change.required("device", "The device")?.into();
    if services.users.device(&user, &device)?.is_none() {
        return Err(Failure::new(http::StatusCode::NOT_FOUND, "No such device."));
    }
    users::remove_device_of(&services, &change.admin(), &user, &device).await?;
    done(&change.session, "/users/view", vec![("id", user.as_str())], &format!("Session {device} ended."))
}

/// `GET /tokens`.
async fn tokens_page(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let all = services.registration_tokens.list(None)?;
    let content = html! {
        @if !services.config.registration.open {
            p { "Registration is closed: only holders of a valid token below can register." }
        }
        div.scroll {
            table {
                caption { "Registration tokens" }
                thead { tr {
                    th scope="col" { "Token" } th scope="col" { "Uses" } th scope="col" { "Expires" } th scope="col" { "Action" }
                } }
                tbody {
                    @for (token, record) in &all {
                        tr {
                            th scope="row" { code { (token) } }
                            td { (record.completed) " of " @match record.uses_allowed { Some(n) => (n), None => "unlimited" } }
                            td { @match record.expiry_time { Some(t) => (when(Some(t))), None => "never" } }
                            td { (button_form(&session, "/tokens/delete", &[("token", token)], "Delete", Some("Delete this token?"))) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="new-token" {
            h2 #new-token { "Create a token" }
            form.stack method="post" action=(format!("{BASE}/tokens/create")) {
                (session.csrf_field())
                label for="token-value" { "Token (leave empty for a random one)" }
                input #token-value name="token" type="text" autocomplete="off" pattern="[A-Za-z0-9._~-]{1,64}";
                label for="token-uses" { "Uses allowed (empty: unlimited)" }
                input #token-uses name="uses_allowed" type="number" min="0" inputmode="numeric";
                label for="token-days" { "Valid for how many days (empty: no expiry)" }
                input #token-days name="days" type="number" min="1" inputmode="numeric";
                button type="submit" { "Create the token" }
            }
        }
    };
    page(&session, "/tokens", "Registration tokens", query.notice(&session), content)
}

/// `POST /tokens/create`: `token` (optional), `uses_allowed`, `days`.
async fn create_token(State(services): State<Arc<Services>>, change: Change) -> Page {
    let uses = change.number("uses_allowed", "Uses allowed")?;
    let expiry = change
        .number("days", "The number of days")?
        .map(|days| crate::time::now_ms().saturating_add(days.saturating_mul(86_400_000)));
    let given = change.field("token").map(str::to_owned);
    let (token, _) = tokens::create_token(&services, &change.admin(), given, None, uses, expiry)?;
    done(&change.session, "/tokens", vec![], &format!("Token {token} created."))
}

/// `POST /tokens/delete`: `token`.
async fn delete_token(State(services): State<Arc<Services>>, change: Change) -> Page {
    let token = change.required("token", "The token")?;
    tokens::delete_token(&services, &change.admin(), token)?;
    done(&change.session, "/tokens", vec![], &format!("Token {token} deleted."))
}
