//! Finding another node's agent by email address in the user directory. The discovery room gives
//! every node the agents of the others by id and name, but member events carry no address, and
//! each node knows only the addresses bound to its own accounts. Tchap answers this with one
//! identity service holding every binding of the network; here each node is its own identity
//! service, so the node of the searcher asks the address's node — the one the network's domain
//! map names for it, the same node the address would be bound on — with the federation query
//! [`QUERY`], signed like every federation request.
//!
//! The answering node speaks only to nodes of the network (the domain map names them, or they
//! are its externals' servers), only for addresses the map sends to it, within a rate per asking
//! node, and only of agents a search may show: active, not hidden (`im.vector.hide_profile`),
//! not expired, not an application service's user. Everything else — an address bound to no
//! one, to a hidden or expired account, or to a deactivated one — gets the same `404`, so the
//! query tells no one whether such an account exists.

use std::time::Duration;

use ruma::{api::federation::query::get_custom_information, OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    ratelimit::Action,
    rooms::directory::UserHit,
    services::Services,
    users::threepid::canonical_email,
};

/// The federation query type (`GET /_matrix/federation/v1/query/{queryType}?address=…`).
pub const QUERY: &str = "org.hemicycle.email_lookup";

/// How long a search waits for the address's node: the search box waits on it, so a node away
/// costs a moment, not the default federation timeout.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest display name or avatar URL taken from the answer (the spec's profile fields are
/// bounded by the event size; a hostile node's are bounded here).
const MAX_FIELD_LEN: usize = 1024;

/// The one answer for every address that has no agent to show, whatever the reason.
fn no_agent() -> Error {
    Error::not_found("no agent of this node has that address")
}

/// The search term as a whole email address, if it is one.
pub fn as_address(term: &str) -> Option<String> {
    if term.starts_with('@') || !term.contains('@') {
        return None;
    }
    canonical_email(term).ok()
}

/// The node the domain map sends `address` to, when that is another node of the network this
/// node may talk to.
fn home_elsewhere(services: &Services, address: &str) -> Result<Option<OwnedServerName>> {
    let Some(home) = services.network.server_of_address(address)? else { return Ok(None) };
    let Ok(home) = OwnedServerName::try_from(home) else { return Ok(None) };
    let usable = home != services.federation.server_name()
        && services.network.is_network_server(home.as_str())
        && services.federation.allowed(&home);
    Ok(usable.then_some(home))
}

/// The agent of another node an address belongs to, with their profile, asked of the node the
/// domain map names for it. `None` when there is none to show, when the map names this node or
/// no node, when that node cannot say (away, a Synapse node, a refusal), and when `searcher`
/// asked too often (the search then answers with what this node knows).
pub async fn remote(services: &Services, searcher: &UserId, address: &str) -> Result<Option<UserHit>> {
    let Some(home) = home_elsewhere(services, address)? else { return Ok(None) };
    if services.rate_limiter.check(Action::EmailLookup, searcher.as_str()).is_err() {
        tracing::debug!(%searcher, "email lookups across the network: rate exceeded, this search asks no node");
        return Ok(None);
    }
    let params = [("address".to_owned(), address.to_owned())].into();
    let request = get_custom_information::v1::Request::new(QUERY.to_owned(), params);
    let answer = match services.federation.send_with_timeout(&home, request, LOOKUP_TIMEOUT).await {
        Ok(answer) => answer.body,
        Err(error) => {
            tracing::debug!(%home, %error, "an email lookup was not answered");
            return Ok(None);
        }
    };
    Ok(hit_from(&home, &answer))
}

/// The answer of `home`, taken only for a user of `home` itself: a node answers for its own
/// agents, never names another server's.
fn hit_from(home: &ServerName, answer: &Value) -> Option<UserHit> {
    let user = answer.get("user_id").and_then(Value::as_str).and_then(|u| OwnedUserId::try_from(u).ok())?;
    if user.server_name() != home {
        tracing::info!(%home, %user, "an email lookup answered with another server's user: ignored");
        return None;
    }
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_FIELD_LEN)
            .map(str::to_owned)
    };
    Some((user, field("displayname"), field("avatar_url")))
}

/// [`QUERY`] asked by `origin`: the agent of this node `address` is bound to, with their
/// profile, when the asker is a node of the network and the agent may be shown.
pub fn answer(
    services: &Services,
    origin: &ServerName,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<Value> {
    if !services.network.has_domain_map() || !services.network.is_network_server(origin.as_str()) {
        return Err(Error::forbidden("email lookups are answered to nodes of the network only"));
    }
    services.rate_limiter.check(Action::FederationEmailLookup, origin.as_str())?;
    let address = params.get("address").ok_or_else(|| Error::MissingParam("address is required".into()))?;
    let address = canonical_email(address)?;
    if services.network.server_of_address(&address)?.as_deref() != Some(services.network.own_server()) {
        return Err(no_agent());
    }
    let Some(owner) = services.threepids.owner("email", &address)? else { return Err(no_agent()) };
    if !crate::users::discovery::belongs(services, &owner)? {
        return Err(no_agent());
    }
    let (name, avatar) = services.rooms.profile_of(&owner)?;
    let mut body = json!({ "user_id": owner });
    if let Some(name) = name {
        body["displayname"] = json!(name);
    }
    if let Some(avatar) = avatar {
        body["avatar_url"] = json!(avatar);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_addresses_are_looked_up() {
        assert_eq!(as_address("Jean.Dupont@Interieur.gouv.fr").as_deref(), Some("jean.dupont@interieur.gouv.fr"));
        for term in ["jean", "@jean:interieur.example", "jean@interieur", "jean@", "@interieur.gouv.fr", "a b@c.fr"] {
            assert_eq!(as_address(term), None, "{term}");
        }
    }

    #[test]
    fn a_node_answers_only_for_its_own_users() {
        let home = ServerName::parse("finances.example").unwrap();
        let own = json!({ "user_id": "@alice:finances.example", "displayname": "Alice", "avatar_url": "" });
        let hit = hit_from(&home, &own).expect("its own user");
        assert_eq!((hit.0.as_str(), hit.1.as_deref(), hit.2), ("@alice:finances.example", Some("Alice"), None));
        assert!(hit_from(&home, &json!({ "user_id": "@alice:interieur.example" })).is_none());
        assert!(hit_from(&home, &json!({ "user_id": "not a user" })).is_none());
        let long = json!({ "user_id": "@alice:finances.example", "displayname": "x".repeat(MAX_FIELD_LEN + 1) });
        assert_eq!(hit_from(&home, &long).expect("the user, without the name").1, None);
    }
}
