//! Other servers' signing keys: fetched from the server itself (`/_matrix/key/v2/server`), checked
//! against its own signature, cached in memory and in `servername_serverkeys` until their
//! `valid_until_ts`, and turned into the public key maps that request and event verification use.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use ruma::{
    api::federation::discovery::{get_server_keys, ServerSigningKeys},
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
    CanonicalJsonObject, OwnedServerName, ServerName,
};

use super::client::FederationClient;
pub use super::tables::RemoteKeySet;
use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    server_keys::ServerKeys,
    time::now_ms,
};

/// What a key is asked to verify: a retired key (`old_verify_keys`) signs nothing new, so it is
/// good only for events older than its retirement, and never for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// An inbound request's X-Matrix signature: keys the server publishes now.
    Request,
    /// An event sent at this `origin_server_ts` (ms).
    Event(u64),
}

impl RemoteKeySet {
    fn public_keys(&self, usage: KeyUse) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        for (id, key) in &self.verify_keys {
            if let Ok(key) = Base64::parse(key) {
                set.insert(id.clone(), key);
            }
        }
        if let KeyUse::Event(ts) = usage {
            for (id, (key, expired_ts)) in &self.old_verify_keys {
                if ts < *expired_ts {
                    if let Ok(key) = Base64::parse(key) {
                        set.entry(id.clone()).or_insert(key);
                    }
                }
            }
        }
        set
    }

    fn has_key(&self, key_id: &str) -> bool {
        self.verify_keys.contains_key(key_id) || self.old_verify_keys.contains_key(key_id)
    }
}

pub struct RemoteKeys {
    db: Arc<Database>,
    /// A closed federation's pinned keys (`federation.pinned`): when not empty, the only keys.
    pinned: HashMap<OwnedServerName, RemoteKeySet>,
    /// The last refusal for want of a pinned key, per server (when, why): the console shows them.
    refusals: Mutex<BTreeMap<OwnedServerName, (u64, String)>>,
    cache: Mutex<HashMap<OwnedServerName, RemoteKeySet>>,
    /// One fetch per server at a time.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

/// Checks a key document: it names the server and carries the server's signature made with one of
/// the keys it lists. Returns what to cache.
pub fn verify_key_document(server: &ServerName, document: &CanonicalJsonObject) -> Result<RemoteKeySet> {
    let keys: ServerSigningKeys = serde_json::from_value(serde_json::to_value(document).unwrap_or_default())
        .map_err(|e| Error::Forbidden(format!("the key document of {server} is malformed: {e}")))?;
    if keys.server_name != server {
        return Err(Error::Forbidden(format!("the key document of {server} names {}", keys.server_name)));
    }
    let mut set = RemoteKeySet {
        verify_keys: keys.verify_keys.iter().map(|(id, k)| (id.to_string(), k.key.encode())).collect(),
        old_verify_keys: keys
            .old_verify_keys
            .iter()
            .map(|(id, k)| (id.to_string(), (k.key.encode(), k.expired_ts.get().into())))
            .collect(),
        valid_until_ts: keys.valid_until_ts.get().into(),
        document: serde_json::to_value(document).ok(),
    };
    let mut own = PublicKeySet::new();
    for (id, key) in &set.verify_keys {
        own.insert(id.clone(), Base64::parse(key).map_err(|e| Error::Forbidden(format!("bad key {id}: {e}")))?);
    }
    let mut map = PublicKeyMap::new();
    map.insert(server.to_string(), own);
    ruma::signatures::verify_json(&map, document)
        .map_err(|e| Error::Forbidden(format!("the key document of {server} is not signed by its keys: {e}")))?;
    // Never trust a validity beyond 7 days (the spec's cap for room versions 5 and later).
    set.valid_until_ts = set.valid_until_ts.min(now_ms() + 7 * 24 * 3600 * 1000);
    Ok(set)
}

impl RemoteKeys {
    pub fn new(db: Arc<Database>, pinned: &BTreeMap<OwnedServerName, crate::config::PinnedServer>) -> Self {
        let pinned = pinned
            .iter()
            .map(|(server, p)| {
                let set = RemoteKeySet {
                    verify_keys: p.verify_keys.clone(),
                    old_verify_keys: BTreeMap::new(),
                    valid_until_ts: u64::MAX,
                    document: None,
                };
                (server.clone(), set)
            })
            .collect();
        Self {
            db,
            pinned,
            refusals: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Whether keys are pinned (a closed federation): no key is ever fetched then.
    pub fn pinning(&self) -> bool {
        !self.pinned.is_empty()
    }

    /// A pinned server's keys; a key id it was not pinned with is refused loudly, since it means
    /// a rotation nobody configured or somebody else speaking under its name.
    fn pinned_keys(&self, server: &ServerName, key_id: Option<&str>) -> Result<RemoteKeySet> {
        let refuse = |reason: String| {
            tracing::error!(%server, %reason, "refused: a key that is not pinned (federation.pinned)");
            self.refusals.lock().expect("key refusals").insert(server.to_owned(), (now_ms(), reason.clone()));
            Err(Error::Forbidden(reason))
        };
        let Some(set) = self.pinned.get(server) else {
            return refuse(format!("{server} has no pinned keys here"));
        };
        if let Some(id) = key_id.filter(|id| !set.verify_keys.contains_key(*id)) {
            return refuse(format!("{server}'s key {id} is not pinned here"));
        }
        Ok(set.clone())
    }

    /// The pinned servers and their key ids.
    pub fn pinned_servers(&self) -> BTreeMap<OwnedServerName, Vec<String>> {
        self.pinned.iter().map(|(s, set)| (s.clone(), set.verify_keys.keys().cloned().collect())).collect()
    }

    /// The last refusal of each server for want of a pinned key: (when, why).
    pub fn refusals(&self) -> BTreeMap<OwnedServerName, (u64, String)> {
        self.refusals.lock().expect("key refusals").clone()
    }

    fn cached(&self, server: &ServerName) -> Result<Option<RemoteKeySet>> {
        if let Some(set) = self.cache.lock().expect("key cache").get(server) {
            return Ok(Some(set.clone()));
        }
        let stored = self.db.tables.federation.servername_serverkeys.get(&server.to_owned())?.map(|Json(s)| s);
        if let Some(set) = &stored {
            self.cache.lock().expect("key cache").insert(server.to_owned(), set.clone());
        }
        Ok(stored)
    }

    /// The keys we hold for a server right now, without fetching (for the notary endpoints).
    pub fn known(&self, server: &ServerName) -> Result<Option<RemoteKeySet>> {
        if self.pinning() {
            return Ok(None);
        }
        self.cached(server)
    }

    fn store(&self, server: &ServerName, mut set: RemoteKeySet) -> Result<RemoteKeySet> {
        // Keys we knew and the server no longer lists stay usable for what they signed before.
        if let Some(old) = self.cached(server)? {
            for (id, key) in old.verify_keys {
                if !set.verify_keys.contains_key(&id) {
                    set.old_verify_keys.entry(id).or_insert((key, now_ms()));
                }
            }
            for (id, entry) in old.old_verify_keys {
                set.old_verify_keys.entry(id).or_insert(entry);
            }
        }
        let mut batch = Batch::new();
        self.db.tables.federation.servername_serverkeys.insert(&mut batch, &server.to_owned(), &Json(set.clone()));
        self.db.commit(batch)?;
        self.cache.lock().expect("key cache").insert(server.to_owned(), set.clone());
        Ok(set)
    }

    /// The keys of `server`, fetched when we hold none that are still valid or when `key_id` is
    /// one we have not seen.
    pub async fn keys_of(
        &self,
        client: &FederationClient,
        own: &ServerKeys,
        server: &ServerName,
        key_id: Option<&str>,
    ) -> Result<RemoteKeySet> {
        if self.pinning() {
            return self.pinned_keys(server, key_id);
        }
        let fresh = |set: &RemoteKeySet| set.valid_until_ts > now_ms() && key_id.is_none_or(|id| set.has_key(id));
        if let Some(set) = self.cached(server)? {
            if fresh(&set) {
                return Ok(set);
            }
        }
        let lock = self.fetching.lock().expect("key fetch locks").entry(server.to_owned()).or_default().clone();
        let _guard = lock.lock().await;
        if let Some(set) = self.cached(server)? {
            if fresh(&set) {
                return Ok(set);
            }
        }
        let fetched = async {
            let response = client.send(own, server, get_server_keys::v2::Request::new()).await?;
            let document: CanonicalJsonObject = serde_json::from_str(response.server_key.json().get())
                .map_err(|e| Error::Forbidden(format!("the key document of {server} is not canonical JSON: {e}")))?;
            verify_key_document(server, &document)
        }
        .await;
        match fetched {
            Ok(set) => self.store(server, set),
            // A server that cannot be reached right now: keys we already hold still verify what
            // they signed (an expired validity only means we should ask again).
            Err(error) => match self.cached(server)? {
                Some(set) if key_id.is_none_or(|id| set.has_key(id)) => Ok(set),
                _ => Err(error),
            },
        }
    }

    /// A public key map for the given servers, with the keys good for `usage`.
    pub async fn key_map(
        &self,
        client: &FederationClient,
        own: &ServerKeys,
        servers: impl IntoIterator<Item = (OwnedServerName, Option<String>)>,
        usage: KeyUse,
    ) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for (server, key_id) in servers {
            if server == own.server_name() {
                map.insert(server.to_string(), own.public_key_set());
                continue;
            }
            let set = self.keys_of(client, own, &server, key_id.as_deref()).await?;
            map.insert(server.to_string(), set.public_keys(usage));
        }
        Ok(map)
    }
}
