//! Application services (spec: Application Service API): registrations loaded at start-up, the
//! namespaces they hold, and who an `as_token` acts for.
//!
//! A registration is a Synapse-format YAML file named in `appservices.registrations`, so a bridge
//! or bot registers the same way with Hemicycle as with Synapse. Everything an appservice does
//! goes through the ordinary client API with its `as_token` (masquerading as its users with
//! `user_id`); what the server sends it (transactions, queries, pings) is in [`sender`].

pub mod sender;
pub mod tables;

use std::{collections::HashMap, path::Path, sync::Arc};

use regex::Regex;
use ruma::{OwnedDeviceId, OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};
use serde::Deserialize;

use crate::{
    db::{
        codec::{Be64, Json},
        Batch, Database,
    },
    error::Error,
    keys::KeyCountWatch,
    users::token_hash,
};

/// One namespace entry of a registration.
#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceEntry {
    #[serde(default)]
    pub exclusive: bool,
    pub regex: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<NamespaceEntry>,
    #[serde(default)]
    pub aliases: Vec<NamespaceEntry>,
    #[serde(default)]
    pub rooms: Vec<NamespaceEntry>,
}

/// A registration file as Synapse reads it. Unknown keys are ignored, as Synapse does (bridges
/// write their own extensions into the file).
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    pub id: String,
    /// `null` (or absent) for an appservice that takes no traffic.
    #[serde(default)]
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Whether its users are rate limited; its sender never is.
    #[serde(default)]
    pub rate_limited: Option<bool>,
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Typing notifications and receipts in its transactions (MSC2409, and its unstable names).
    #[serde(default, alias = "de.sorunome.msc2409.push_ephemeral", alias = "push_ephemeral")]
    pub receive_ephemeral: bool,
    /// Device list changes, and the one-time key counts and unused fallback key types of its
    /// users' devices, in its transactions (MSC3202, under Synapse's name for the opt-in): an
    /// appservice holding its users' devices, which does not sync for them, needs them for
    /// end-to-end encryption.
    #[serde(default, rename = "org.matrix.msc3202")]
    pub msc3202: bool,
}

/// A compiled namespace: matches the whole string (regexes are anchored at both ends).
#[derive(Debug, Clone)]
struct Namespace {
    regex: Regex,
    source: String,
    exclusive: bool,
}

impl Namespace {
    fn compile(entries: &[NamespaceEntry], field: &str) -> Result<Vec<Self>, String> {
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let regex = Regex::new(&format!("^(?:{})$", entry.regex))
                    .map_err(|e| format!("namespaces.{field}[{i}].regex is not a valid regex: {e}"))?;
                Ok(Self { regex, source: entry.regex.clone(), exclusive: entry.exclusive })
            })
            .collect()
    }
}

/// A loaded appservice.
#[derive(Debug, Clone)]
pub struct Appservice {
    pub registration: Registration,
    /// The appservice's own user (`sender_localpart` on this server).
    pub sender: OwnedUserId,
    users: Vec<Namespace>,
    aliases: Vec<Namespace>,
    rooms: Vec<Namespace>,
}

impl Appservice {
    /// Whether `user` is the appservice's sender or in its user namespaces.
    pub fn claims_user(&self, user: &UserId) -> bool {
        user == self.sender || self.users.iter().any(|n| n.regex.is_match(user.as_str()))
    }

    fn exclusive_user(&self, user: &UserId) -> bool {
        user == self.sender || self.users.iter().any(|n| n.exclusive && n.regex.is_match(user.as_str()))
    }

    pub fn claims_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|n| n.regex.is_match(alias.as_str()))
    }

    fn exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|n| n.exclusive && n.regex.is_match(alias.as_str()))
    }

    pub fn claims_room(&self, room: &RoomId) -> bool {
        self.rooms.iter().any(|n| n.regex.is_match(room.as_str()))
    }

    /// Whether its masqueraded users are exempt from rate limits.
    pub fn exempt_from_rate_limits(&self) -> bool {
        self.registration.rate_limited == Some(false)
    }
}

/// The appservices of this server, fixed at start-up.
#[derive(Debug, Default)]
pub struct Registry {
    services: Vec<Appservice>,
    /// Hash of each `as_token` → index in `services` (tokens are looked up by hash, like
    /// access tokens, so a lookup takes the same path whatever the token).
    by_token: HashMap<Vec<u8>, usize>,
}

impl Registry {
    /// Reads and checks every registration file. A bad file stops the start-up with a message
    /// naming the file and the field; so do two appservices claiming the same exclusive
    /// namespace, the same id or the same token.
    pub fn load(paths: &[std::path::PathBuf], server_name: &ServerName) -> Result<Self, Error> {
        let mut registry = Self::default();
        for path in paths {
            let service = load_one(path, server_name)
                .map_err(|reason| Error::Internal(format!("appservice registration {}: {reason}", path.display())))?;
            registry.add(service, path)?;
        }
        Ok(registry)
    }

    fn add(&mut self, service: Appservice, path: &Path) -> Result<(), Error> {
        let fail = |reason: String| Error::Internal(format!("appservice registration {}: {reason}", path.display()));
        let reg = &service.registration;
        for other in &self.services {
            let theirs = &other.registration;
            if theirs.id == reg.id {
                return Err(fail(format!("id: `{}` is already used by another registration", reg.id)));
            }
            if theirs.as_token == reg.as_token || theirs.hs_token == reg.hs_token {
                return Err(fail(format!("as_token/hs_token: the same token as appservice `{}`", theirs.id)));
            }
            if other.claims_user(&service.sender) || service.claims_user(&other.sender) {
                return Err(fail(format!("sender_localpart: clashes with appservice `{}`", theirs.id)));
            }
            for (kind, mine, others) in [
                ("users", &service.users, &other.users),
                ("aliases", &service.aliases, &other.aliases),
                ("rooms", &service.rooms, &other.rooms),
            ] {
                for namespace in mine {
                    let clash =
                        others.iter().find(|o| o.source == namespace.source && (o.exclusive || namespace.exclusive));
                    if let Some(clash) = clash {
                        return Err(fail(format!(
                            "namespaces.{kind}: `{}` is held exclusively by appservice `{}` too",
                            clash.source, theirs.id
                        )));
                    }
                }
            }
        }
        self.by_token.insert(token_hash(&reg.as_token), self.services.len());
        self.services.push(service);
        Ok(())
    }

    pub fn all(&self) -> &[Appservice] {
        &self.services
    }

    pub fn get(&self, id: &str) -> Option<&Appservice> {
        self.services.iter().find(|s| s.registration.id == id)
    }

    /// The appservice whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<&Appservice> {
        if self.services.is_empty() {
            return None;
        }
        self.by_token.get(&token_hash(token)).map(|&i| &self.services[i])
    }

    /// Whether a request skips the per-user rate limits: an appservice's sender always does, the
    /// users it masquerades as when its registration says `rate_limited: false`.
    pub fn exempt_from_rate_limits(&self, owner: &crate::users::TokenOwner) -> bool {
        let Some(service) = owner.appservice.as_deref().and_then(|id| self.get(id)) else { return false };
        owner.user_id == service.sender || service.exempt_from_rate_limits()
    }

    /// The appservice holding `user` exclusively, if any: no one else may register it.
    pub fn exclusive_owner_of_user(&self, user: &UserId) -> Option<&Appservice> {
        self.services.iter().find(|s| s.exclusive_user(user))
    }

    /// The appservices with a URL that asked for device lists and key counts (MSC3202).
    fn wanting_keys(&self) -> impl Iterator<Item = &Appservice> {
        self.services.iter().filter(|s| s.registration.msc3202 && s.registration.url.is_some())
    }

    /// What the key server tells of key count changes (see [`KeyCountWatch`]): each appservice
    /// wanting them queues the devices of its users (`appserviceidpos_keycounts`) for its next
    /// transaction. `None` when no appservice wants them.
    pub fn key_count_watch(&self, db: Arc<Database>) -> Option<KeyCountWatch> {
        let wanting: Vec<Appservice> = self.wanting_keys().cloned().collect();
        if wanting.is_empty() {
            return None;
        }
        Some(Arc::new(move |batch: &mut Batch, pos: u64, devices: &[(OwnedUserId, OwnedDeviceId)]| {
            for service in &wanting {
                let theirs: Vec<_> = devices.iter().filter(|(user, _)| service.claims_user(user)).cloned().collect();
                if !theirs.is_empty() {
                    let key = (service.registration.id.clone(), Be64(pos));
                    db.tables.appservice.appserviceidpos_keycounts.insert(batch, &key, &Json(theirs));
                }
            }
        }))
    }

    /// The lowest position the appservices wanting device lists have been sent up to: the
    /// device list stream (`pos_keychange`) is kept past it for them (`crate::retention`).
    pub fn device_lists_delivered(&self, db: &Database) -> Result<Option<u64>, Error> {
        let mut lowest = None;
        for service in self.wanting_keys() {
            if let Some(Be64(pos)) = db.tables.meta.get(&pos_key(&service.registration.id))? {
                lowest = Some(lowest.map_or(pos, |l: u64| l.min(pos)));
            }
        }
        Ok(lowest)
    }

    /// The appservice holding `alias` exclusively, if any: no one else may create it.
    pub fn exclusive_owner_of_alias(&self, alias: &RoomAliasId) -> Option<&Appservice> {
        self.services.iter().find(|s| s.exclusive_alias(alias))
    }
}

/// `meta` key of the stream position an appservice has been sent everything up to.
fn pos_key(id: &str) -> String {
    format!("appservice_pos:{id}")
}

fn load_one(path: &Path, server_name: &ServerName) -> Result<Appservice, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let registration: Registration = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    if registration.id.is_empty() {
        return Err("id: must not be empty".into());
    }
    if registration.as_token.is_empty() {
        return Err("as_token: must not be empty".into());
    }
    if registration.hs_token.is_empty() {
        return Err("hs_token: must not be empty".into());
    }
    if let Some(url) = &registration.url {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: `{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("url: `{url}` is not an http(s) URL"));
        }
    }
    let sender = UserId::parse(format!("@{}:{server_name}", registration.sender_localpart))
        .map_err(|e| format!("sender_localpart: `{}` is not a valid localpart: {e}", registration.sender_localpart))?;
    let users = Namespace::compile(&registration.namespaces.users, "users")?;
    let aliases = Namespace::compile(&registration.namespaces.aliases, "aliases")?;
    let rooms = Namespace::compile(&registration.namespaces.rooms, "rooms")?;
    Ok(Appservice { registration, sender, users, aliases, rooms })
}
