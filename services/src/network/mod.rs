//! A ministry network as the French state runs one (Tchap): ministry nodes and one node for
//! people outside the administration, which every node tells apart by server name; room access
//! rules every node enforces alike; an email-domain map saying which node each address belongs to.
//! `docs/network.md` describes the rules and the configuration (`[network]`).

pub mod access_rules;
pub mod domains;
pub mod last_admin;
pub mod links;
pub mod notices;
pub mod proposals;
pub mod state;
pub mod status;
pub mod tables;

use std::collections::HashSet;

use ruma::{ServerName, UserId};

use crate::{
    config::{NetworkConfig, NetworkRole},
    error::{Error, Result},
};

/// The network's settings as the services use them.
pub struct Network {
    server_name: String,
    role: NetworkRole,
    access_rules: bool,
    external_servers: HashSet<String>,
    bypass: HashSet<String>,
    external_users_create_rooms: bool,
    domains: Option<domains::DomainsFile>,
    non_shadow_ranges: Vec<crate::config::Cidr>,
    invite_lifetime_ms: u64,
}

impl Network {
    pub fn new(server_name: &ServerName, config: &NetworkConfig) -> Result<Network> {
        let domains = match &config.domains_file {
            Some(path) => Some(
                domains::DomainsFile::open(path).map_err(|e| Error::Internal(format!("network.domains_file: {e}")))?,
            ),
            None => None,
        };
        Ok(Network {
            server_name: server_name.as_str().to_ascii_lowercase(),
            role: config.role,
            access_rules: config.access_rules_enabled(),
            external_servers: config.external_servers.iter().map(|s| s.as_str().to_ascii_lowercase()).collect(),
            bypass: config.access_rules_bypass.iter().map(|u| u.to_string()).collect(),
            external_users_create_rooms: config.external_users_create_rooms,
            domains,
            non_shadow_ranges: config.non_shadow_ranges.clone(),
            invite_lifetime_ms: config.third_party_invite_lifetime_ms(),
        })
    }

    /// No network: every server is a peer like any other, no rule applies.
    pub fn none(server_name: &ServerName) -> Network {
        Network::new(server_name, &NetworkConfig::default()).expect("an empty network section is valid")
    }

    /// Whether the room access rules are enforced on this node.
    pub fn access_rules(&self) -> bool {
        self.access_rules
    }

    pub fn is_external_server(&self, server: &str) -> bool {
        self.external_servers.contains(&server.to_ascii_lowercase())
    }

    pub fn is_external_user(&self, user: &UserId) -> bool {
        self.is_external_server(user.server_name().as_str())
    }

    /// How long a third-party invite stays pending, in milliseconds.
    pub fn invite_lifetime_ms(&self) -> u64 {
        self.invite_lifetime_ms
    }

    /// Whether `server` is a node of the network: an externals' node, or one the domain map
    /// sends addresses to. Only these are told about, or asked about, invited addresses.
    pub fn is_network_server(&self, server: &str) -> bool {
        if self.is_external_server(server) {
            return true;
        }
        let Some(file) = &self.domains else { return false };
        file.current().is_ok_and(|map| map.names(server))
    }

    /// Whether this node is the externals' node.
    pub fn is_external_node(&self) -> bool {
        self.role == NetworkRole::External
    }

    /// Whether `user` is on the network's bypass list (server admins are exempt too, which the
    /// caller knows for its own users only).
    pub fn in_bypass_list(&self, user: &str) -> bool {
        self.bypass.contains(user)
    }

    /// Whether a user of this node may create rooms: the externals' users may not, unless the
    /// configuration says so.
    pub fn may_create_rooms(&self, user: &UserId) -> bool {
        self.external_users_create_rooms || !(self.is_external_node() && self.is_external_user(user))
    }

    /// The node an email address belongs to, from the domain map (`None` without a map or when
    /// the map names none).
    pub fn server_of_address(&self, address: &str) -> Result<Option<String>> {
        let Some(file) = &self.domains else {
            return Ok(None);
        };
        let map = file.current().map_err(Error::Internal)?;
        Ok(map.server_of(address).map(str::to_owned))
    }

    /// The shadow name of `server` in the domain map.
    fn shadow_of(&self, server: &str) -> Result<Option<String>> {
        let Some(file) = &self.domains else {
            return Ok(None);
        };
        let map = file.current().map_err(Error::Internal)?;
        Ok(map.shadow_of(server).map(str::to_owned))
    }

    /// Whether this node keeps the domain map (and answers the identity `info` endpoints).
    pub fn has_domain_map(&self) -> bool {
        self.domains.is_some()
    }

    /// This node's server name, lower-cased, as the map names nodes.
    pub fn own_server(&self) -> &str {
        &self.server_name
    }

    /// What Tchap's identity service answers about an address (`/_matrix/identity/api/v1/info`):
    /// `hs`, the node the map sends it to; when the address is already bound to an account of
    /// another node (`bound`), `hs` is that node (the agent keeps their account) and `new_hs`
    /// the map's; `requires_invite` when the map sends it to the externals' node, `invited`
    /// whether someone invited it (a third-party invite this node keeps, as the caller found).
    /// `internal` keeps `requires_invite`, which only homeservers are told. An address the map
    /// does not know is `{}` with `invited`.
    ///
    /// A caller of the public variant from outside `non_shadow_ranges` (`caller`: its address,
    /// `None` when unknown) is told the map's shadow name of the node, when it has one, as
    /// Tchap's identity service answers with `shadow_hs`: clients on the internet reach the
    /// network through other names than those inside it.
    pub fn info(
        &self,
        address: &str,
        bound: Option<&str>,
        internal: bool,
        invited: bool,
        caller: Option<std::net::IpAddr>,
    ) -> Result<serde_json::Value> {
        let mut info = serde_json::Map::new();
        if let Some(mut server) = self.server_of_address(address)? {
            let inside = caller.is_some_and(|ip| self.non_shadow_ranges.iter().any(|range| range.contains(ip)));
            if !internal && !inside {
                if let Some(shadow) = self.shadow_of(&server)? {
                    server = shadow;
                }
            }
            info.insert("requires_invite".into(), self.is_external_server(&server).into());
            match bound.map(str::to_ascii_lowercase) {
                Some(current) if current != server => {
                    info.insert("hs".into(), current.into());
                    info.insert("new_hs".into(), server.into());
                }
                _ => {
                    info.insert("hs".into(), server.into());
                }
            }
            if !internal {
                info.remove("requires_invite");
            }
        }
        info.insert("invited".into(), invited.into());
        Ok(serde_json::Value::Object(info))
    }

    /// Whether an email address may be bound to an account of this node (as Tchap's
    /// `synapse-3pid-checker` decides): the map must send it here, and an address of the
    /// externals' node needs an invite (`invited`: a third-party invite of it is pending here).
    /// Without a map every address may.
    pub fn may_bind(&self, address: &str, invited: bool) -> Result<bool> {
        if !self.has_domain_map() {
            return Ok(true);
        }
        let info = self.info(address, None, true, invited, None)?;
        let here = info.get("hs").and_then(serde_json::Value::as_str) == Some(self.own_server());
        let requires_invite = info.get("requires_invite").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let invited = info.get("invited").and_then(serde_json::Value::as_bool).unwrap_or(false);
        Ok(here && (!requires_invite || invited))
    }
}
