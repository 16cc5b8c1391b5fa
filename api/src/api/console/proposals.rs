//! Proposals and server notices. An admin proposes an action on another node (a notice to its
//! agents, deactivating or locking one of its accounts); the other node's admins approve or
//! refuse it in their console, and only their approval, with their second factor, makes it
//! happen there (network/proposals.rs). Server notices to every account of this node or to
//! chosen ones go out in batches whose progress shows here.

use std::sync::Arc;

use axum::{extract::State, routing::post, Router};
use maud::html;
use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::json;

use super::{done, page, when, Change, Failure, Page, Query, Session, BASE};
use crate::{
    api::admin::{existing_user, users},
    network::{
        notices,
        proposals::{self, Proposal, ProposalState, ProposedAction},
        status,
    },
    services::Services,
    time::now_ms,
    users::Restriction,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/proposals"), axum::routing::get(overview))
        .route(&format!("{BASE}/proposals/new"), post(propose))
        .route(&format!("{BASE}/proposals/decide"), post(decide))
        .route(&format!("{BASE}/notices/send"), post(send_notice))
}

fn state_text(state: &ProposalState) -> String {
    match state {
        ProposalState::Pending => "waiting for an admin of the node".to_owned(),
        ProposalState::Approved { by, ts, outcome } => format!("approved by {by} at {}: {outcome}", when(Some(*ts))),
        ProposalState::Refused { by, ts } => format!("refused by {by} at {}", when(Some(*ts))),
    }
}

/// `GET /proposals`.
async fn overview(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let incoming = proposals::incoming(&services)?;
    let outgoing = proposals::outgoing(&services)?;
    let peers = status::peers(&services)?;
    let batches = notices::batches(&services);
    let row = |p: &Proposal, node: &ServerName| {
        html! {
            th scope="row" { code { (node.as_str()) } }
            td { (p.proposer.as_str()) }
            td { (proposals::describe(&p.action)) }
            td { (p.reason) }
            td { (when(Some(p.created_ts))) }
        }
    };
    let content = html! {
        section aria-labelledby="incoming" {
            h2 #incoming { "Proposed to this node" }
            p { "Other nodes' admins propose; nothing happens here until an admin of this node approves." }
            @if incoming.is_empty() { p { "No proposal." } } @else {
                div.scroll { table {
                    caption { "Proposals from other nodes, newest first" }
                    thead { tr {
                        th scope="col" { "From" } th scope="col" { "Proposer" } th scope="col" { "Action" }
                        th scope="col" { "Reason" } th scope="col" { "Proposed" } th scope="col" { "Decision" }
                    } }
                    tbody { @for p in &incoming { tr {
                        (row(p, &p.from))
                        td {
                            @if p.state == ProposalState::Pending {
                                form.stack method="post" action=(format!("{BASE}/proposals/decide")) data-confirm="Carry out this action on this node?" {
                                    (session.csrf_field())
                                    input type="hidden" name="origin" value=(p.from.as_str());
                                    input type="hidden" name="id" value=(p.id);
                                    input type="hidden" name="decision" value="approve";
                                    (super::totp_field(&format!("approve-{}", p.id)))
                                    button.danger type="submit" { "Approve" }
                                }
                                form.inline method="post" action=(format!("{BASE}/proposals/decide")) {
                                    (session.csrf_field())
                                    input type="hidden" name="origin" value=(p.from.as_str());
                                    input type="hidden" name="id" value=(p.id);
                                    input type="hidden" name="decision" value="refuse";
                                    button type="submit" { "Refuse" }
                                }
                            } @else { (state_text(&p.state)) }
                        }
                    } } }
                } }
            }
        }
        section aria-labelledby="propose" {
            h2 #propose { "Propose an action to another node" }
            form.stack method="post" action=(format!("{BASE}/proposals/new")) {
                (session.csrf_field())
                label for="proposal-node" { "Node" }
                select #proposal-node name="node" required {
                    @for peer in &peers { option value=(peer.as_str()) { (peer.as_str()) } }
                }
                label for="proposal-kind" { "Action" }
                select #proposal-kind name="kind" {
                    option value="server_notice" { "Server notice to every account of the node" }
                    option value="deactivate" { "Deactivate an account of the node" }
                    option value="lock" { "Lock an account of the node" }
                }
                label for="proposal-user" { "Account (to deactivate or lock)" }
                input #proposal-user name="user" type="text" placeholder="@agent:node";
                label for="proposal-text" { "Notice (for a server notice)" }
                textarea #proposal-text name="text" maxlength=(proposals::MAX_TEXT) {}
                label for="proposal-reason" { "Reason" }
                input #proposal-reason name="reason" type="text" required;
                button type="submit" { "Propose" }
            }
            @if !outgoing.is_empty() {
                div.scroll { table {
                    caption { "Proposals this node made, newest first" }
                    thead { tr {
                        th scope="col" { "To" } th scope="col" { "Proposer" } th scope="col" { "Action" }
                        th scope="col" { "Reason" } th scope="col" { "Proposed" } th scope="col" { "Decision" }
                    } }
                    tbody { @for p in &outgoing { tr { (row(p, &p.to)) td { (state_text(&p.state)) } } } }
                } }
            }
        }
        section aria-labelledby="notices" {
            h2 #notices { "Server notices" }
            p { "A message from the server, in each recipient's server notices room. To another node's agents, propose it to that node above." }
            form.stack method="post" action=(format!("{BASE}/notices/send")) {
                (session.csrf_field())
                label for="notice-to" { "To (one account per line; empty: every account of this node)" }
                textarea #notice-to name="to" {}
                label for="notice-text" { "Message" }
                textarea #notice-text name="text" required maxlength=(proposals::MAX_TEXT) {}
                button type="submit" { "Send" }
            }
            @if !batches.is_empty() {
                div.scroll { table {
                    caption { "Notices sent since start-up, newest first" }
                    thead { tr {
                        th scope="col" { "Started" } th scope="col" { "By" } th scope="col" { "To" }
                        th scope="col" { "Progress" }
                    } }
                    tbody { @for b in &batches { tr {
                        th scope="row" { (when(Some(b.started_ts))) }
                        td { (b.by) }
                        td { (b.audience) }
                        td {
                            progress max=(b.total.max(1)) value=(b.sent + b.failed) { (b.sent + b.failed) " of " (b.total) }
                            " " (b.sent) " sent, " (b.failed) " failed of " (b.total)
                            @if let Some(done) = b.finished_ts { " — finished " (when(Some(done))) }
                        }
                    } } }
                } }
            }
        }
    };
    page(&session, "/proposals", "Proposals and notices", query.notice(&session), content)
}

/// `POST /proposals/new`: `node`, `kind`, `user` or `text`, `reason`.
async fn propose(State(services): State<Arc<Services>>, change: Change) -> Page {
    let node = OwnedServerName::try_from(change.required("node", "The node")?)
        .map_err(|e| Failure::bad_request(format!("Not a server name: {e}")))?;
    let user = || -> Result<ruma::OwnedUserId, Failure> {
        UserId::parse(change.required("user", "The account")?)
            .map_err(|e| Failure::bad_request(format!("Not a user id: {e}")))
    };
    let action = match change.required("kind", "The action")? {
        "server_notice" => ProposedAction::ServerNotice { text: change.required("text", "The notice")?.to_owned() },
        "deactivate" => ProposedAction::Deactivate { user_id: user()? },
        "lock" => ProposedAction::Lock { user_id: user()? },
        other => return Err(Failure::bad_request(format!("Unknown action {other}."))),
    };
    let reason = change.required("reason", "The reason")?;
    let proposal = proposals::propose(&services, &change.session.user_id, &node, action, reason).await?;
    change.admin().audit(
        &services,
        "proposal.propose",
        &format!("{node}/{}", proposal.id),
        json!({ "action": proposal.action, "reason": proposal.reason }),
    )?;
    done(&change.session, "/proposals", vec![], &format!("Proposed to {node}: its admins decide."))
}

/// `POST /proposals/decide`: `origin`, `id`, `decision` (`approve` with the admin's one-time
/// code, or `refuse`).
async fn decide(State(services): State<Arc<Services>>, change: Change) -> Page {
    let origin = OwnedServerName::try_from(change.required("origin", "The node")?)
        .map_err(|e| Failure::bad_request(format!("Not a server name: {e}")))?;
    let proposal = proposals::pending(&services, &origin, change.required("id", "The proposal")?)?;
    let admin = change.admin();
    let by = change.session.user_id.to_string();
    let target = format!("{origin}/{}", proposal.id);
    let details = json!({ "action": proposal.action, "proposer": proposal.proposer, "reason": proposal.reason });
    match change.required("decision", "The decision")? {
        "refuse" => {
            proposals::record_decision(&services, proposal, ProposalState::Refused { by, ts: now_ms() })?;
            admin.audit(&services, "proposal.refuse", &target, details)?;
            done(&change.session, "/proposals", vec![], "Refused: nothing was done.")
        }
        "approve" => {
            change.second_factor(&services)?;
            let outcome = match &proposal.action {
                ProposedAction::ServerNotice { text } => {
                    let targets = proposals::local_accounts(&services)?;
                    let count = targets.len();
                    let audience = format!("every account (proposed by {origin})");
                    let id = notices::start(services.clone(), &change.session.user_id, audience, targets, text.clone());
                    format!("notice batch {id} to {count} accounts")
                }
                ProposedAction::Deactivate { user_id } => {
                    let (user, _) = existing_user(&services, user_id.as_str())?;
                    users::deactivate_account(&services, &admin, &user, false).await?;
                    format!("{user} deactivated")
                }
                ProposedAction::Lock { user_id } => {
                    let (user, _) = existing_user(&services, user_id.as_str())?;
                    services.users.set_restriction(&user, Restriction::Locked, true).await?;
                    admin.audit(&services, "user.lock", user.as_str(), json!({ "proposal": target }))?;
                    format!("{user} locked")
                }
            };
            admin.audit(&services, "proposal.approve", &target, details)?;
            let message = format!("Approved: {outcome}.");
            proposals::record_decision(&services, proposal, ProposalState::Approved { by, ts: now_ms(), outcome })?;
            done(&change.session, "/proposals", vec![], &message)
        }
        other => Err(Failure::bad_request(format!("Unknown decision {other}."))),
    }
}

/// `POST /notices/send`: `text`, and `to` (accounts, one per line; empty: every account).
async fn send_notice(State(services): State<Arc<Services>>, change: Change) -> Page {
    let text = change.required("text", "The message")?;
    if text.len() > proposals::MAX_TEXT {
        return Err(Failure::bad_request(format!("A notice is at most {} bytes.", proposals::MAX_TEXT)));
    }
    let (targets, audience) = match change.field("to") {
        None => (proposals::local_accounts(&services)?, "every account".to_owned()),
        Some(list) => {
            let mut targets = Vec::new();
            for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                targets.push(existing_user(&services, line)?.0);
            }
            let audience = format!("{} chosen accounts", targets.len());
            (targets, audience)
        }
    };
    let count = targets.len();
    let id = notices::start(services.clone(), &change.session.user_id, audience.clone(), targets, text.to_owned());
    change.admin().audit(&services, "server_notice.batch", &id, json!({ "to": audience, "count": count }))?;
    done(&change.session, "/proposals", vec![], &format!("Sending the notice to {count} accounts."))
}
