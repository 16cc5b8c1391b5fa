//! Proposals and server notices. An admin proposes an action on another node (a notice to its
//! agents, deactivating or locking one of its accounts, changing an entry of its allow-list);
//! the other node's admins approve or refuse it in their console, and only their approval, with
//! their second factor, makes it happen there (network/proposals.rs). Server notices to every
//! account of this node, to chosen ones, or to chosen nodes (a proposal to each) go out in
//! batches whose progress shows here.

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
    let own = services.federation.server_name().to_owned();
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
                    option value="allow_server" { "Add a server to the node's allow-list" }
                    option value="remove_server" { "Remove a server from the node's allow-list" }
                }
                label for="proposal-user" { "Account (to deactivate or lock)" }
                input #proposal-user name="user" type="text" placeholder="@agent:node";
                label for="proposal-server" { "Server (for an allow-list change)" }
                input #proposal-server name="server" type="text" placeholder="ministere.gouv.example";
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
            p { "A message from the server, in each recipient's server notices room: to every account of this node, to chosen accounts, or to chosen nodes, where it goes as a proposal their admins approve. It is sent in batches; the progress shows below (reload to follow it)." }
            form.stack method="post" action=(format!("{BASE}/notices/send")) {
                (session.csrf_field())
                fieldset {
                    legend { "To" }
                    div.check {
                        input #notice-all type="radio" name="audience" value="all" checked;
                        label for="notice-all" { "Every account of this node" }
                    }
                    div.check {
                        input #notice-users type="radio" name="audience" value="users";
                        label for="notice-users" { "The accounts listed below" }
                    }
                    div.check {
                        input #notice-servers type="radio" name="audience" value="servers";
                        label for="notice-servers" { "Every account of the nodes ticked below (a proposal to each)" }
                    }
                }
                label for="notice-to" { "Accounts of this node (one per line)" }
                textarea #notice-to name="to" {}
                @if !peers.is_empty() {
                    fieldset {
                        legend { "Nodes" }
                        @for peer in std::iter::once(&own).chain(&peers) {
                            div.check {
                                input id=(format!("notice-server-{peer}")) type="checkbox" name=(format!("server:{peer}"));
                                label for=(format!("notice-server-{peer}")) { code { (peer.as_str()) } }
                            }
                        }
                    }
                }
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
        "allow_server" | "remove_server" => ProposedAction::AllowListEntry {
            server: OwnedServerName::try_from(change.required("server", "The server")?)
                .map_err(|e| Failure::bad_request(format!("Not a server name: {e}")))?,
            allowed: change.field("kind") == Some("allow_server"),
        },
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
                ProposedAction::AllowListEntry { server, allowed } => {
                    let reason = format!("proposed by {} of {origin}: {}", proposal.proposer, proposal.reason);
                    let changed = services.federation.set_allowed(server, *allowed, &by, &reason)?;
                    let details = json!({ "allowed": allowed, "changed": changed, "proposal": target });
                    admin.audit(&services, "federation.allow_list", server.as_str(), details)?;
                    match (*allowed, changed) {
                        (true, true) => format!("{server} added to the allow-list"),
                        (false, true) => format!("{server} removed from the allow-list"),
                        _ => format!("the allow-list had it so already ({server})"),
                    }
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

/// `POST /notices/send`: `text`, and `audience`: `all` (every account of this node), `users`
/// (`to`: accounts of this node, one per line) or `servers` (the ticked `server:<name>` boxes: a
/// proposal of the notice to each, which their admins approve; this node among them gets it at
/// once).
async fn send_notice(State(services): State<Arc<Services>>, change: Change) -> Page {
    let text = change.required("text", "The message")?;
    if text.len() > proposals::MAX_TEXT {
        return Err(Failure::bad_request(format!("A notice is at most {} bytes.", proposals::MAX_TEXT)));
    }
    // Forms from before the audience choice name accounts in `to`, or none for everyone.
    let audience = change.field("audience").unwrap_or(if change.field("to").is_some() { "users" } else { "all" });
    let (targets, audience) = match audience {
        "all" => (proposals::local_accounts(&services)?, "every account".to_owned()),
        "users" => {
            let list = change.required("to", "The list of accounts")?;
            let mut targets = Vec::new();
            for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                targets.push(existing_user(&services, line)?.0);
            }
            let audience = format!("{} chosen accounts", targets.len());
            (targets, audience)
        }
        "servers" => return notice_to_servers(&services, &change, text).await,
        other => return Err(Failure::bad_request(format!("Unknown audience {other}."))),
    };
    let count = targets.len();
    let id = notices::start(services.clone(), &change.session.user_id, audience.clone(), targets, text.to_owned());
    change.admin().audit(&services, "server_notice.batch", &id, json!({ "to": audience, "count": count }))?;
    done(&change.session, "/proposals", vec![], &format!("Sending the notice to {count} accounts."))
}

/// A notice to every account of the chosen nodes: proposed to each (its admins decide), sent at
/// once to this node's own accounts when it is among them. Every node is tried even if one
/// cannot be reached; the answer names those that could not.
async fn notice_to_servers(services: &Arc<Services>, change: &Change, text: &str) -> Page {
    let chosen = change.ticked_with_prefix("server:");
    if chosen.is_empty() {
        return Err(Failure::bad_request("Tick at least one node."));
    }
    let own = services.federation.server_name();
    let reason = format!("a server notice from the admins of {own}");
    let (mut proposed, mut failed) = (Vec::new(), Vec::new());
    for raw in chosen {
        let node =
            OwnedServerName::try_from(raw).map_err(|e| Failure::bad_request(format!("Not a server name: {e}")))?;
        if node.as_str() == own.as_str() {
            let targets = proposals::local_accounts(services)?;
            let count = targets.len();
            let id = notices::start(
                services.clone(),
                &change.session.user_id,
                "every account".into(),
                targets,
                text.to_owned(),
            );
            change.admin().audit(
                services,
                "server_notice.batch",
                &id,
                json!({ "to": "every account", "count": count }),
            )?;
            proposed.push(node.to_string());
            continue;
        }
        let action = ProposedAction::ServerNotice { text: text.to_owned() };
        match proposals::propose(services, &change.session.user_id, &node, action, &reason).await {
            Ok(proposal) => {
                change.admin().audit(
                    services,
                    "proposal.propose",
                    &format!("{node}/{}", proposal.id),
                    json!({ "action": proposal.action, "reason": proposal.reason }),
                )?;
                proposed.push(node.to_string());
            }
            Err(error) => failed.push(format!("{node} ({error})")),
        }
    }
    if proposed.is_empty() {
        let message = format!("No node could be reached: {}.", failed.join(", "));
        return Err(Failure::new(http::StatusCode::BAD_GATEWAY, message));
    }
    let mut message = format!("Notice proposed to {}: each node's admins approve it.", proposed.join(", "));
    if !failed.is_empty() {
        message = format!("{message} Not reached: {}.", failed.join(", "));
    }
    done(&change.session, "/proposals", vec![], &message)
}
