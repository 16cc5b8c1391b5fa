//! Rooms (search, members by server, state, block, purge history, delete), media (an
//! uploader's files, quarantine, delete) and event reports (list, delete).

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, routing::get, routing::post, Router};
use maud::html;
use serde_json::Value;

use super::{button_form, done, link, page, pager, when, Change, Failure, Page, Query, Session, BASE, PAGE_SIZE};
use crate::{
    api::admin::{media, reports, room_actions, rooms},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/rooms"), get(list))
        .route(&format!("{BASE}/rooms/view"), get(view))
        .route(&format!("{BASE}/rooms/block"), post(block))
        .route(&format!("{BASE}/rooms/delete"), post(delete))
        .route(&format!("{BASE}/rooms/purge"), post(purge_history))
        .route(&format!("{BASE}/media"), get(media_page))
        .route(&format!("{BASE}/media/quarantine"), post(quarantine))
        .route(&format!("{BASE}/media/delete"), post(delete_media))
        .route(&format!("{BASE}/reports"), get(reports_page))
        .route(&format!("{BASE}/reports/delete"), post(delete_report))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// `GET /rooms?q=`: every room, or those whose name, alias or id contains `q`.
async fn list(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let term = query.get("q");
    let from = query.from()?;
    let mut found = rooms::search_rooms(&services, term)?;
    found.sort_by(|a, b| b["joined_members"].as_u64().cmp(&a["joined_members"].as_u64()));
    let total = found.len();
    let (found, next) = crate::api::admin::paginate(found, from, PAGE_SIZE);
    let params: Vec<(&str, &str)> = term.map(|t| vec![("q", t)]).unwrap_or_default();
    let content = html! {
        form.search method="get" action=(format!("{BASE}/rooms")) role="search" {
            label for="q" { "Search rooms (name, alias or id)" }
            input #q name="q" type="search" value=[term];
            button type="submit" { "Search" }
        }
        p { (total) " rooms." }
        div.scroll {
            table {
                caption { "Rooms on this node, most members first" }
                thead { tr {
                    th scope="col" { "Room" } th scope="col" { "Alias" } th scope="col" { "Members" }
                    th scope="col" { "Local members" } th scope="col" { "Version" } th scope="col" { "Public" }
                } }
                tbody {
                    @for room in &found {
                        tr {
                            th scope="row" {
                                a href=(link("/rooms/view", &[("id", text(&room["room_id"]))])) {
                                    @if room["name"].is_string() { (text(&room["name"])) } @else { code { (text(&room["room_id"])) } }
                                }
                            }
                            td { (text(&room["canonical_alias"])) }
                            td { (room["joined_members"]) }
                            td { (room["joined_local_members"]) }
                            td { (text(&room["version"])) }
                            td { @if room["public"] == Value::Bool(true) { "yes" } @else { "no" } }
                        }
                    }
                }
            }
        }
        (pager("Room list pages", "/rooms", &params, from, PAGE_SIZE, next))
    };
    page(&session, "/rooms", "Rooms", query.notice(&session), content)
}

/// `GET /rooms/view?id=`: one room: facts, members grouped by server, current state, actions.
async fn view(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let raw = query.get("id").ok_or_else(|| Failure::bad_request("Which room? The id parameter is missing."))?;
    let room = rooms::known_room(&services, raw)?;
    let facts = rooms::room_json(&services, &room)?;
    let mut by_server: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (user, record) in services.rooms.members(&room)? {
        by_server.entry(user.server_name().to_string()).or_default().push((user.to_string(), record.membership));
    }
    let record =
        services.rooms.room(&room)?.ok_or_else(|| Failure::new(http::StatusCode::NOT_FOUND, "Room not found"))?;
    let mut state = Vec::new();
    for ((kind, key), event_id) in services.rooms.full_state(record.snapshot)? {
        let pdu = services.rooms.pdu(&event_id)?;
        let content = pdu.as_ref().map(|p| p.content.get().to_owned()).unwrap_or_default();
        let sender = pdu.map(|p| p.sender.to_string()).unwrap_or_default();
        state.push((kind.to_string(), key, sender, content));
    }
    let blocked = services.rooms.blocked_by(&room)?;
    let title = facts["name"].as_str().map(str::to_owned).unwrap_or_else(|| room.to_string());
    let room_id = room.as_str();
    let content = html! {
        dl.facts {
            dt { "Room id" } dd { code { (room_id) } }
            dt { "Alias" } dd { (text(&facts["canonical_alias"])) }
            dt { "Version" } dd { (text(&facts["version"])) }
            dt { "Creator" } dd { (text(&facts["creator"])) }
            dt { "Joined members" } dd { (facts["joined_members"]) " (" (facts["joined_local_members"]) " local)" }
            dt { "Encryption" } dd { @if facts["encryption"].is_string() { (text(&facts["encryption"])) } @else { "none" } }
            dt { "Blocked" } dd { @match &blocked { Some(by) => { "yes, by " (by) }, None => "no" } }
        }
        section aria-labelledby="actions" {
            h2 #actions { "Actions" }
            @if blocked.is_some() {
                (button_form(&session, "/rooms/block", &[("room", room_id)], "Unblock the room", None))
            } @else {
                (button_form(&session, "/rooms/block", &[("room", room_id), ("block", "on")], "Block the room", Some("Block this room? Local users will no longer be able to join it.")))
            }
            form.stack method="post" action=(format!("{BASE}/rooms/purge")) data-confirm="Delete this room's older messages for good?" {
                (session.csrf_field())
                input type="hidden" name="room" value=(room_id);
                label for="purge-days" { "Delete messages older than (days)" }
                input #purge-days name="days" type="number" min="0" inputmode="numeric" required;
                div.check {
                    input #purge-local type="checkbox" name="local";
                    label for="purge-local" { "Also this node's users' messages (else only other servers')" }
                }
                (super::totp_field("purge-totp"))
                button.danger type="submit" { "Purge the history" }
            }
            form.stack method="post" action=(format!("{BASE}/rooms/delete")) data-confirm="Delete this room? Every local member leaves it." {
                (session.csrf_field())
                input type="hidden" name="room" value=(room_id);
                div.check {
                    input #delete-block type="checkbox" name="block" checked;
                    label for="delete-block" { "Also block it, so nobody here joins it again" }
                }
                (super::totp_field("delete-totp"))
                button.danger type="submit" { "Delete the room" }
            }
        }
        section aria-labelledby="members" {
            h2 #members { "Members by server" }
            @for (server, members) in &by_server {
                h3 { code { (server) } " (" (members.len()) ")" }
                ul.members { @for (user, membership) in members { li { (user) " — " (membership) } } }
            }
        }
        section aria-labelledby="state" {
            h2 #state { "Current state" }
            div.scroll {
                table {
                    caption { "State events of the room" }
                    thead { tr { th scope="col" { "Type" } th scope="col" { "State key" } th scope="col" { "Sender" } th scope="col" { "Content" } } }
                    tbody {
                        @for (kind, key, sender, content) in &state {
                            tr { th scope="row" { code { (kind) } } td { (key) } td { (sender) } td { code.json { (content) } } }
                        }
                    }
                }
            }
        }
    };
    page(&session, "/rooms", &title, query.notice(&session), content)
}

/// `POST /rooms/block`: `room`, `block` ticked or not.
async fn block(State(services): State<Arc<Services>>, change: Change) -> Page {
    let raw = change.required("room", "The room")?;
    let on = change.ticked("block");
    let room = rooms::set_block(&services, &change.admin(), raw, on)?;
    let message = if on { format!("{room} is blocked.") } else { format!("{room} is unblocked.") };
    done(&change.session, "/rooms/view", vec![("id", room.as_str())], &message)
}

/// `POST /rooms/delete`: shuts the room down (members leave, forgotten; `block` blocks it).
async fn delete(State(services): State<Arc<Services>>, change: Change) -> Page {
    let room = rooms::known_room(&services, change.required("room", "The room")?)?;
    change.second_factor(&services)?;
    let report = room_actions::shut_down(&services, &change.admin(), &room, change.ticked("block"), true, None).await?;
    let message = format!("{room} deleted: {} local members left it.", report.kicked_users.len());
    done(&change.session, "/rooms", vec![], &message)
}

/// `POST /rooms/purge`: `room`, `days`, `local` ticked or not: deletes the timeline events
/// older than `days` (state events stay), in the background, as the admin API's
/// `purge_history` does.
async fn purge_history(State(services): State<Arc<Services>>, change: Change) -> Page {
    let room = rooms::known_room(&services, change.required("room", "The room")?)?;
    let days = change
        .number("days", "The number of days")?
        .ok_or_else(|| Failure::bad_request("The number of days is required."))?;
    change.second_factor(&services)?;
    let until = crate::time::now_ms().saturating_sub(days.saturating_mul(86_400_000));
    let before = room_actions::position_at(&services, &room, until)?;
    let id = room_actions::start_history_purge(
        services.clone(),
        &change.admin(),
        room.clone(),
        before,
        change.ticked("local"),
    )?;
    let message = format!("Purging the history of {room} older than {days} days (purge {id}).");
    done(&change.session, "/rooms/view", vec![("id", room.as_str())], &message)
}

/// `GET /media?user=`: the files a local user uploaded, with quarantine and delete.
async fn media_page(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let user = query.get("user");
    let files = match user {
        Some(raw) => {
            let (user, _) = crate::api::admin::existing_user(&services, raw)?;
            services.media.uploaded_by(&user)?
        }
        None => Vec::new(),
    };
    let server = services.config.server_name.as_str();
    let content = html! {
        form.search method="get" action=(format!("{BASE}/media")) role="search" {
            label for="user" { "Uploader (Matrix ID)" }
            input #user name="user" type="text" value=[user] placeholder=(format!("@name:{server}"));
            button type="submit" { "Show their media" }
        }
        @if let Some(user) = user {
            p { (files.len()) " files uploaded by " (user) "." }
            div.scroll {
                table {
                    caption { "Media of " (user) }
                    thead { tr {
                        th scope="col" { "Media" } th scope="col" { "Type" } th scope="col" { "Size" }
                        th scope="col" { "Uploaded" } th scope="col" { "Quarantined" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for (id, record) in &files {
                            tr {
                                th scope="row" { code { "mxc://" (server) "/" (id) } " " (record.filename.as_deref().unwrap_or("")) }
                                td { (record.content_type.as_deref().unwrap_or("")) }
                                td { (record.file.as_ref().map_or(0, |f| f.size)) " B" }
                                td { (when(Some(record.created_ts))) }
                                td { (record.quarantined_by.as_deref().unwrap_or("no")) }
                                td {
                                    @if record.quarantined_by.is_some() {
                                        (button_form(&session, "/media/quarantine", &[("server", server), ("media", id), ("user", user)], "Release", None))
                                    } @else {
                                        (button_form(&session, "/media/quarantine", &[("server", server), ("media", id), ("user", user), ("quarantine", "on")], "Quarantine", None))
                                    }
                                    (button_form(&session, "/media/delete", &[("server", server), ("media", id), ("user", user)], "Delete", Some("Delete this file for good?")))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="by-id" {
            h2 #by-id { "Quarantine a file by its address" }
            form.stack method="post" action=(format!("{BASE}/media/quarantine")) {
                (session.csrf_field())
                input type="hidden" name="quarantine" value="on";
                label for="mxc" { "Media address (mxc://server/id)" }
                input #mxc name="mxc" type="text" required placeholder=(format!("mxc://{server}/…"));
                button type="submit" { "Quarantine" }
            }
        }
    };
    page(&session, "/media", "Media", query.notice(&session), content)
}

/// The (server, media id) a media form names: `server` and `media`, or an `mxc` address.
fn media_target(change: &Change) -> Result<(String, String), Failure> {
    if let Some(mxc) = change.field("mxc") {
        let rest =
            mxc.strip_prefix("mxc://").ok_or_else(|| Failure::bad_request("A media address starts with mxc://"))?;
        let (server, id) = rest
            .split_once('/')
            .filter(|(s, i)| !s.is_empty() && !i.is_empty() && !i.contains('/'))
            .ok_or_else(|| Failure::bad_request("A media address is mxc://server/id"))?;
        return Ok((server.to_owned(), id.to_owned()));
    }
    Ok((change.required("server", "The server")?.to_owned(), change.required("media", "The media id")?.to_owned()))
}

/// Back to the uploader's list when the form came from it.
fn back_to_media(change: &Change) -> Vec<(&str, &str)> {
    change.field("user").map(|u| vec![("user", u)]).unwrap_or_default()
}

/// `POST /media/quarantine`: `quarantine` ticked quarantines, else releases.
async fn quarantine(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (server, id) = media_target(&change)?;
    let on = change.ticked("quarantine");
    media::set_quarantine(&services, &change.admin(), &server, &id, on)?;
    let message =
        if on { format!("mxc://{server}/{id} is quarantined.") } else { format!("mxc://{server}/{id} is released.") };
    done(&change.session, "/media", back_to_media(&change), &message)
}

/// `POST /media/delete`: deletes a local file.
async fn delete_media(State(services): State<Arc<Services>>, change: Change) -> Page {
    let (server, id) = media_target(&change)?;
    media::delete_local(&services, &change.admin(), &server, &id).await?;
    done(&change.session, "/media", back_to_media(&change), &format!("mxc://{server}/{id} is deleted."))
}

/// `GET /reports`: event reports, newest first.
async fn reports_page(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let mut rows = reports::event_reports(&services)?;
    rows.reverse();
    let content = html! {
        p { (rows.len()) " reports." }
        div.scroll {
            table {
                caption { "Events users reported, newest first" }
                thead { tr {
                    th scope="col" { "Report" } th scope="col" { "Received" } th scope="col" { "Room" }
                    th scope="col" { "Event" } th scope="col" { "Sender" } th scope="col" { "Reporter" }
                    th scope="col" { "Reason" } th scope="col" { "Action" }
                } }
                tbody {
                    @for row in &rows {
                        @let id = row["id"].to_string();
                        tr {
                            th scope="row" { (id) }
                            td { (when(row["received_ts"].as_u64())) }
                            td { a href=(link("/rooms/view", &[("id", text(&row["room_id"]))])) { (row["name"].as_str().unwrap_or(text(&row["room_id"]))) } }
                            td { code { (text(&row["event_id"])) } }
                            td { (text(&row["sender"])) }
                            td { (text(&row["user_id"])) }
                            td { (text(&row["reason"])) }
                            td { (button_form(&session, "/reports/delete", &[("report", &id)], "Delete", Some("Delete this report?"))) }
                        }
                    }
                }
            }
        }
    };
    page(&session, "/reports", "Event reports", query.notice(&session), content)
}

/// `POST /reports/delete`: `report` (its id).
async fn delete_report(State(services): State<Arc<Services>>, change: Change) -> Page {
    let id = reports::report_id(change.required("report", "The report")?)?;
    reports::delete_report(&services, &change.admin(), id)?;
    done(&change.session, "/reports", vec![], &format!("Report {id} deleted."))
}
