//! Proposals with consent: an admin of node A proposes an action on node B (a server notice to
//! B's agents, deactivating or locking one of B's accounts, changing an entry of B's
//! allow-list); B keeps it as pending and its admins
//! approve or refuse it in B's console. Nothing happens on B without one of B's admins: this
//! module only stores and forwards; the action runs in B's console handler, as B's admin, after
//! B's second factor, through the same functions as B's own admin API.
//!
//! Every node may be hostile: what comes is bounded (ids, texts, how many pending per node),
//! must target B's own accounts, and a decision is taken only from the node the proposal went to.

use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};

pub use super::tables::{Proposal, ProposalState, ProposedAction};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
    services::Services,
    time::now_ms,
};

/// `PUT /_matrix/federation/unstable/org.hemicycle.proposal/{id}`: a proposal to the receiver.
pub mod propose_endpoint {
    use ruma::api::{federation::authentication::ServerSignatures, metadata, request, response};

    use super::ProposedAction;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/unstable/org.hemicycle.proposal/{id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub id: String,
        pub proposer: ruma::OwnedUserId,
        pub action: ProposedAction,
        pub reason: String,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

/// `PUT /_matrix/federation/unstable/org.hemicycle.proposal_decision/{id}`: the receiver's
/// answer, back to the node that proposed.
pub mod decision_endpoint {
    use ruma::api::{federation::authentication::ServerSignatures, metadata, request, response};

    use super::ProposalState;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/unstable/org.hemicycle.proposal_decision/{id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub id: String,
        pub decision: ProposalState,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

/// The longest notice text and reason.
pub const MAX_TEXT: usize = 4096;
const MAX_REASON: usize = 1024;
/// Pending proposals one node may have with us at once.
pub const MAX_PENDING_PER_NODE: usize = 20;
/// The most proposals listed in the console.
const LIST_CAP: usize = 500;

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Error::invalid_param("a proposal id is 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

/// Checks an action against the node it is meant for: the accounts it names are that node's.
fn check_action(action: &ProposedAction, target: &ServerName) -> Result<()> {
    match action {
        ProposedAction::ServerNotice { text } => {
            if text.trim().is_empty() || text.len() > MAX_TEXT {
                return Err(Error::invalid_param(format!("a notice is 1 to {MAX_TEXT} bytes")));
            }
        }
        ProposedAction::Deactivate { user_id } | ProposedAction::Lock { user_id } => {
            if user_id.server_name() != target {
                return Err(Error::invalid_param(format!("{user_id} is not an account of {target}")));
            }
        }
        ProposedAction::AllowListEntry { server, .. } => {
            if server == target {
                return Err(Error::invalid_param(format!("{target} is always on its own allow-list")));
            }
        }
    }
    Ok(())
}

/// Words for an action, for the console and the audit log.
pub fn describe(action: &ProposedAction) -> String {
    match action {
        ProposedAction::ServerNotice { text } => format!("server notice to every account: {text}"),
        ProposedAction::Deactivate { user_id } => format!("deactivate {user_id}"),
        ProposedAction::Lock { user_id } => format!("lock {user_id}"),
        ProposedAction::AllowListEntry { server, allowed: true } => format!("add {server} to the allow-list"),
        ProposedAction::AllowListEntry { server, allowed: false } => {
            format!("remove {server} from the allow-list")
        }
    }
}

/// A proposal from `origin` (its X-Matrix signature checked): kept as pending, nothing done. The
/// same id sent again with the same content is accepted again (a retry); with other content,
/// refused.
pub fn receive(services: &Services, origin: &ServerName, request: propose_endpoint::Request) -> Result<()> {
    check_id(&request.id)?;
    if request.proposer.server_name() != origin {
        return Err(Error::forbidden("the proposer must be an account of the proposing server"));
    }
    if request.reason.len() > MAX_REASON {
        return Err(Error::invalid_param(format!("a reason is at most {MAX_REASON} bytes")));
    }
    let own = services.federation.server_name();
    check_action(&request.action, own)?;
    let table = &services.db.tables.network.originid_proposal;
    let key = (origin.to_owned(), request.id.clone());
    if let Some(Json(existing)) = table.get(&key)? {
        return if existing.proposer == request.proposer
            && existing.action == request.action
            && existing.reason == request.reason
        {
            Ok(())
        } else {
            Err(Error::forbidden("a different proposal with this id exists"))
        };
    }
    let pending = incoming(services)?.iter().filter(|p| p.from == origin && p.state == ProposalState::Pending).count();
    if pending >= MAX_PENDING_PER_NODE {
        return Err(Error::LimitExceeded { retry_after: std::time::Duration::from_secs(3600) });
    }
    let proposal = Proposal {
        id: request.id,
        from: origin.to_owned(),
        to: own.to_owned(),
        proposer: request.proposer,
        action: request.action,
        reason: request.reason,
        created_ts: now_ms(),
        state: ProposalState::Pending,
    };
    let mut batch = Batch::new();
    table.insert(&mut batch, &key, &Json(proposal));
    services.db.commit(batch)?;
    Ok(())
}

/// Sends a proposal of our admin `proposer` to `target`; kept once `target` has it.
pub async fn propose(
    services: &Services,
    proposer: &UserId,
    target: &ServerName,
    action: ProposedAction,
    reason: &str,
) -> Result<Proposal> {
    if target == services.federation.server_name() {
        return Err(Error::invalid_param("a proposal goes to another node: act on this one directly"));
    }
    check_action(&action, target)?;
    if reason.len() > MAX_REASON {
        return Err(Error::invalid_param(format!("a reason is at most {MAX_REASON} bytes")));
    }
    let id = crate::users::random_password().chars().filter(char::is_ascii_alphanumeric).take(16).collect::<String>();
    let request = propose_endpoint::Request {
        id: id.clone(),
        proposer: proposer.to_owned(),
        action: action.clone(),
        reason: reason.to_owned(),
    };
    services.federation.send_bounded(target, request, 16 * 1024).await?;
    let proposal = Proposal {
        id: id.clone(),
        from: services.federation.server_name().to_owned(),
        to: target.to_owned(),
        proposer: proposer.to_owned(),
        action,
        reason: reason.to_owned(),
        created_ts: now_ms(),
        state: ProposalState::Pending,
    };
    let mut batch = Batch::new();
    services.db.tables.network.targetid_proposal.insert(&mut batch, &(target.to_owned(), id), &Json(proposal.clone()));
    services.db.commit(batch)?;
    Ok(proposal)
}

/// A pending proposal from `origin`: 404 when there is none, 400 when it was decided already.
pub fn pending(services: &Services, origin: &ServerName, id: &str) -> Result<Proposal> {
    let key = (origin.to_owned(), id.to_owned());
    let Json(proposal) =
        services.db.tables.network.originid_proposal.get(&key)?.ok_or_else(|| Error::not_found("no such proposal"))?;
    if proposal.state != ProposalState::Pending {
        return Err(Error::invalid_param("this proposal was decided already"));
    }
    Ok(proposal)
}

/// Records our admin's decision on a proposal (after the action ran, when approved) and tells the
/// proposing node, in the background (it may be down: the decision stands here regardless).
pub fn record_decision(
    services: &std::sync::Arc<Services>,
    mut proposal: Proposal,
    state: ProposalState,
) -> Result<Proposal> {
    proposal.state = state.clone();
    let mut batch = Batch::new();
    services.db.tables.network.originid_proposal.insert(
        &mut batch,
        &(proposal.from.clone(), proposal.id.clone()),
        &Json(proposal.clone()),
    );
    services.db.commit(batch)?;
    let services = services.clone();
    let (origin, id) = (proposal.from.clone(), proposal.id.clone());
    tokio::spawn(async move {
        let request = decision_endpoint::Request { id, decision: state };
        if let Err(error) = services.federation.send_bounded(&origin, request, 16 * 1024).await {
            tracing::warn!(%origin, %error, "the proposing node was not told of the decision");
        }
    });
    Ok(proposal)
}

/// The decision on one of our proposals, from the node it went to (and only from it).
pub fn receive_decision(services: &Services, origin: &ServerName, request: decision_endpoint::Request) -> Result<()> {
    check_id(&request.id)?;
    let key = (origin.to_owned(), request.id);
    let table = &services.db.tables.network.targetid_proposal;
    let Json(mut proposal) = table.get(&key)?.ok_or_else(|| Error::not_found("no such proposal to your server"))?;
    if proposal.state != ProposalState::Pending {
        return Ok(());
    }
    let by_them = |by: &str| UserId::parse(by).is_ok_and(|u| u.server_name() == origin);
    let bounded = |text: &str| text.len() <= MAX_REASON;
    match &request.decision {
        ProposalState::Pending => return Err(Error::invalid_param("a decision approves or refuses")),
        ProposalState::Approved { by, outcome, .. } if by_them(by) && bounded(outcome) => {}
        ProposalState::Refused { by, .. } if by_them(by) => {}
        _ => return Err(Error::invalid_param("a decision is taken by an account of the server decided on")),
    }
    proposal.state = request.decision;
    let mut batch = Batch::new();
    table.insert(&mut batch, &key, &Json(proposal));
    services.db.commit(batch)?;
    Ok(())
}

fn list(table: &crate::db::Table<(OwnedServerName, String), Json<Proposal>>) -> Result<Vec<Proposal>> {
    let mut out = Vec::new();
    for entry in table.iter().take(LIST_CAP) {
        out.push(entry?.1 .0);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.created_ts));
    Ok(out)
}

/// Proposals other nodes made to us, newest first.
pub fn incoming(services: &Services) -> Result<Vec<Proposal>> {
    list(&services.db.tables.network.originid_proposal)
}

/// Proposals our admins made to other nodes, newest first.
pub fn outgoing(services: &Services) -> Result<Vec<Proposal>> {
    list(&services.db.tables.network.targetid_proposal)
}

/// Every active local account but the notices account, for a notice to all.
pub fn local_accounts(services: &Services) -> Result<Vec<OwnedUserId>> {
    let mut out = Vec::new();
    for entry in services.db.tables.users.userid_account.iter() {
        let (user, Json(account)) = entry?;
        let notices = user.localpart() == crate::rooms::notices::NOTICES_LOCALPART;
        if !account.deactivated && !notices && services.users.is_local(&user) {
            out.push(user);
        }
    }
    Ok(out)
}
