//! Peers: every server this node federates with, how sending to it goes (the sender's backoff),
//! what waits for it, its signing keys, the rooms shared; the allow-list (`federation.allow` with
//! the changes admins made here, each asking their second factor) and the servers it refuses;
//! "reset connection".

use std::{collections::BTreeSet, sync::Arc};

use axum::{extract::State, routing::post, Router};
use maud::html;
use ruma::OwnedServerName;
use serde_json::json;

use super::{button_form, done, duration, page, when, Change, Failure, Page, Query, Session, BASE};
use crate::{
    api::admin::destinations,
    db::codec::{prefix, Be64},
    error::Error,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/peers"), axum::routing::get(list))
        .route(&format!("{BASE}/peers/reset"), post(reset))
        .route(&format!("{BASE}/peers/allow"), post(change_allow_list))
}

/// How many EDUs (receipts, to-device, device list updates…) wait for a destination.
fn queued(services: &Services, server: &OwnedServerName) -> Result<usize, Error> {
    let mut count = 0;
    for entry in services.db.tables.federation.servernamepos_edu.scan_prefix(prefix(server)) {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// The most stream events counted behind a destination, so the page stays cheap.
const BACKLOG_CAP: usize = 10_000;

/// How many events the stream holds past what a destination has received: an upper bound of the
/// PDUs waiting for it (events of rooms it is not in are skipped when the sender scans them).
fn backlog(services: &Services, sent: u64) -> Result<usize, Error> {
    let mut count = 0;
    let start = Be64(sent.saturating_add(1)).0.to_be_bytes().to_vec();
    for entry in services.db.tables.rooms.pos_eventid.scan_from(Vec::new(), start, true).take(BACKLOG_CAP) {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// The servers of members of our rooms that `federation.allow` keeps out.
fn refused(services: &Services) -> Result<BTreeSet<OwnedServerName>, Error> {
    let mut out = BTreeSet::new();
    if services.federation.allow_list.open() && services.config.federation.enabled {
        return Ok(out);
    }
    for entry in services.db.tables.rooms.roomid_room.iter() {
        let (room, _) = entry?;
        for (user, _) in services.rooms.members(&room)? {
            let server = user.server_name();
            if !services.users.is_local(&user) && !services.federation.allowed(server) {
                out.insert(server.to_owned());
            }
        }
    }
    Ok(out)
}

/// `GET /peers`.
async fn list(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let mut rows = Vec::new();
    for (server, sent) in destinations::known(&services)? {
        let health = services.federation.client.health(&server);
        let keys = services.federation.keys.known(&server)?;
        let shared = destinations::shared_rooms(&services, &server)?.len();
        let queue = (queued(&services, &server)?, backlog(&services, sent)?);
        rows.push((server, health, keys, shared, queue));
    }
    let federation = &services.config.federation;
    let allowed = services.federation.allow_list.servers();
    let entries = services.federation.allow_list.entries();
    let refused = refused(&services)?;
    let pinned = services.federation.keys.pinned_servers();
    let key_refusals = services.federation.keys.refusals();
    let content = html! {
        section aria-labelledby="allow" {
            h2 #allow { "Allow-list" }
            @if !federation.enabled {
                p { "Federation is disabled (" code { "federation.enabled = false" } "): every other server is refused." }
            } @else if let Some(servers) = &allowed {
                p { "Only these servers are let in (" code { "federation.allow" } ", with the changes made here):" }
                ul.allowed { @for server in servers { li { code { (server.as_str()) } } } }
                @if !entries.is_empty() {
                    div.scroll { table {
                        caption { "Changes made at runtime (they override the configuration for these servers)" }
                        thead { tr {
                            th scope="col" { "Server" } th scope="col" { "Change" } th scope="col" { "By" }
                            th scope="col" { "When" } th scope="col" { "Reason" }
                        } }
                        tbody { @for (server, entry) in &entries { tr {
                            th scope="row" { code { (server.as_str()) } }
                            td { @if entry.allowed { "added" } @else { "removed" } }
                            td { (entry.by) }
                            td { (when(Some(entry.ts))) }
                            td { (entry.reason) }
                        } } }
                    } }
                }
                form.stack method="post" action=(format!("{BASE}/peers/allow")) data-confirm="Change the allow-list? Requests from and to this server change at once." {
                    (session.csrf_field())
                    label for="allow-server" { "Server" }
                    input #allow-server name="server" type="text" required placeholder="ministere.gouv.example";
                    label for="allow-change" { "Change" }
                    select #allow-change name="change" {
                        option value="add" { "Add to the allow-list" }
                        option value="remove" { "Remove from the allow-list" }
                    }
                    label for="allow-reason" { "Reason" }
                    input #allow-reason name="reason" type="text" required;
                    (super::totp_field("allow-totp"))
                    button.danger type="submit" { "Change the allow-list" }
                }
            } @else {
                p { code { "federation.allow" } " is empty: this node federates with every server (an allow-list is started in the configuration, then changed here)." }
            }
            @if !refused.is_empty() {
                p { "Servers with members in our rooms that are refused:" }
                ul.refused { @for server in &refused { li { code { (server.as_str()) } } } }
            }
        }
        @if !pinned.is_empty() {
            section aria-labelledby="pinned" {
                h2 #pinned { "Pinned keys" }
                p { code { "federation.pinned" } " is set: only these servers, with these keys, are federated with. No key is ever fetched." }
                ul { @for (server, ids) in &pinned { li { code { (server.as_str()) } " — " (ids.join(", ")) } } }
                @if !key_refusals.is_empty() {
                    p.bad { "Refused for want of a pinned key:" }
                    ul.refused {
                        @for (server, (at, why)) in &key_refusals {
                            li { code { (server.as_str()) } " at " (when(Some(*at))) ": " (why) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="destinations" {
            h2 #destinations { "Destinations" }
            @if rows.is_empty() {
                p { "This node has not sent anything to another server yet." }
            } @else {
                div.scroll {
                    table {
                        caption { "Servers this node sends to" }
                        thead { tr {
                            th scope="col" { "Server" }
                            th scope="col" { "Reachable" }
                            th scope="col" { "Last success" }
                            th scope="col" { "Last failure" }
                            th scope="col" { "Backoff" }
                            th scope="col" { "Queue" }
                            th scope="col" { "Keys valid until" }
                            th scope="col" { "Rooms shared" }
                            th scope="col" { "Action" }
                        } }
                        tbody {
                            @for (server, health, keys, shared, (edus, events)) in &rows {
                                tr {
                                    th scope="row" { code { (server.as_str()) } }
                                    td {
                                        @if health.failures > 0 { span.bad { "no (" (health.failures) " failures since " (when(health.first_failure_ms)) ")" } }
                                        @else if health.last_success_ms.is_some() { span.good { "yes" } }
                                        @else { "not tried since the last reset" }
                                    }
                                    td { (when(health.last_success_ms)) }
                                    td {
                                        (when(health.last_failure_ms))
                                        @if let Some(error) = &health.last_error { br; span.detail { (error) } }
                                    }
                                    td { @if health.retry_interval_ms > 0 { (duration(health.retry_interval_ms)) } @else { "none" } }
                                    td {
                                        (edus) " EDUs; "
                                        @if *events >= BACKLOG_CAP { "over " }
                                        (events) " newer events to go through"
                                    }
                                    td {
                                        @match keys {
                                            Some(keys) => (when(Some(keys.valid_until_ts))),
                                            None => "not fetched",
                                        }
                                    }
                                    td { (shared) }
                                    td { (button_form(&session, "/peers/reset", &[("destination", server.as_str())], "Reset connection", None)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&session, "/peers", "Peers", query.notice(&session), content)
}

/// `POST /peers/reset`: ends the destination's backoff and sends what waits at once.
async fn reset(State(services): State<Arc<Services>>, change: Change) -> Page {
    let destination = change.required("destination", "The destination")?;
    let server = destinations::reset_connection(&services, &change.admin(), destination)?;
    done(&change.session, "/peers", vec![], &format!("Connection to {server} reset: sending again now."))
}

/// `POST /peers/allow`: `server`, `change` (`add` or `remove`), `reason`, and the admin's
/// one-time code. Takes effect on the next request from or to that server.
async fn change_allow_list(State(services): State<Arc<Services>>, change: Change) -> Page {
    let server = OwnedServerName::try_from(change.required("server", "The server")?)
        .map_err(|e| Failure::bad_request(format!("Not a server name: {e}")))?;
    let allowed = match change.required("change", "The change")? {
        "add" => true,
        "remove" => false,
        other => return Err(Failure::bad_request(format!("Unknown change {other}."))),
    };
    let reason = change.required("reason", "The reason")?;
    change.second_factor(&services)?;
    let by = change.session.user_id.as_str();
    let changed = services.federation.set_allowed(&server, allowed, by, reason)?;
    change.admin().audit(
        &services,
        "federation.allow_list",
        server.as_str(),
        json!({ "allowed": allowed, "changed": changed, "reason": reason }),
    )?;
    let message = match (allowed, changed) {
        (true, true) => format!("{server} is on the allow-list."),
        (false, true) => format!("{server} is off the allow-list: it is refused from now on."),
        (true, false) => format!("{server} was on the allow-list already."),
        (false, false) => format!("{server} was not on the allow-list."),
    };
    done(&change.session, "/peers", vec![], &message)
}
