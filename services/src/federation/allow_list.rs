//! The allow-list at runtime. `federation.allow` is where it starts; an admin adds a server to
//! it or takes one off (in the console, with a second factor, or by approving another node's
//! proposal), and the change is kept in `servername_allowentry`, overriding the configuration for
//! that server from then on, across restarts. Every check of whom we federate with
//! ([`super::Federation::allowed`]: each inbound request, each send, each PDU's signatures)
//! reads the list in memory, which the call that writes a change updates before it returns.
//!
//! A node whose configured list is empty federates with every server: it has no list to change,
//! and changes are refused there (one server added would close the node to all the others).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, RwLock},
};

use ruma::{OwnedServerName, ServerName};

pub use super::tables::AllowEntry;
use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

/// The longest reason kept with an entry (a proposal's reason, with who proposed it).
const MAX_REASON: usize = 2048;

/// The runtime entries and the list they make with the configured one.
#[derive(Default)]
struct Lists {
    entries: BTreeMap<OwnedServerName, AllowEntry>,
    effective: BTreeSet<OwnedServerName>,
}

pub struct AllowList {
    db: Arc<Database>,
    configured: BTreeSet<OwnedServerName>,
    lists: RwLock<Lists>,
    /// Changes one at a time: each rewrites the effective list from the entries.
    write: Mutex<()>,
}

impl AllowList {
    /// The configured list with the entries admins made at runtime.
    pub fn load(db: Arc<Database>, configured: &[OwnedServerName]) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for entry in db.tables.federation.servername_allowentry.iter() {
            let (server, Json(entry)) = entry?;
            entries.insert(server, entry);
        }
        let list = Self {
            db,
            configured: configured.iter().cloned().collect(),
            lists: RwLock::new(Lists::default()),
            write: Mutex::new(()),
        };
        list.install(entries);
        Ok(list)
    }

    fn install(&self, entries: BTreeMap<OwnedServerName, AllowEntry>) {
        let mut effective = self.configured.clone();
        for (server, entry) in &entries {
            if entry.allowed {
                effective.insert(server.clone());
            } else {
                effective.remove(server);
            }
        }
        *self.lists.write().expect("allow-list") = Lists { entries, effective };
    }

    /// Whether the node federates with every server (the configured list is empty).
    pub fn open(&self) -> bool {
        self.configured.is_empty()
    }

    /// Whether `server` is on the list (always, on an open node).
    pub fn contains(&self, server: &ServerName) -> bool {
        self.open() || self.lists.read().expect("allow-list").effective.contains(server)
    }

    /// The servers on the list; `None` on an open node.
    pub fn servers(&self) -> Option<Vec<OwnedServerName>> {
        (!self.open()).then(|| self.lists.read().expect("allow-list").effective.iter().cloned().collect())
    }

    /// Whether the configuration lists `server`.
    pub fn configured(&self, server: &ServerName) -> bool {
        self.configured.contains(server)
    }

    /// The changes admins made at runtime, by server.
    pub fn entries(&self) -> Vec<(OwnedServerName, AllowEntry)> {
        self.lists.read().expect("allow-list").entries.iter().map(|(s, e)| (s.clone(), e.clone())).collect()
    }

    /// Puts `server` on the list (`allowed`) or takes it off, as the admin `by` decided; answers
    /// whether that changed anything. A change back to what the configuration says drops the
    /// entry, so the configuration speaks for that server again. `own` (this node) is never
    /// changed: it is always on its own list.
    pub fn set(&self, own: &ServerName, server: &ServerName, allowed: bool, by: &str, reason: &str) -> Result<bool> {
        if self.open() {
            return Err(Error::forbidden(
                "this node federates with every server (federation.allow is empty): there is no allow-list to change",
            ));
        }
        if server == own {
            return Err(Error::invalid_param("this node is always on its own allow-list"));
        }
        if reason.len() > MAX_REASON {
            return Err(Error::invalid_param(format!("a reason is at most {MAX_REASON} bytes")));
        }
        let _guard = self.write.lock().expect("allow-list writes");
        let was = self.contains(server);
        let mut entries = self.lists.read().expect("allow-list").entries.clone();
        let mut batch = Batch::new();
        let table = &self.db.tables.federation.servername_allowentry;
        if allowed == self.configured(server) {
            table.remove(&mut batch, &server.to_owned());
            entries.remove(server);
        } else {
            let entry = AllowEntry { allowed, by: by.to_owned(), ts: now_ms(), reason: reason.to_owned() };
            table.insert(&mut batch, &server.to_owned(), &Json(entry.clone()));
            entries.insert(server.to_owned(), entry);
        }
        self.db.commit(batch)?;
        self.install(entries);
        Ok(was != allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_override_the_configuration_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let own = ruma::server_name!("own.example");
        let (friend, other) = (ruma::server_name!("friend.example"), ruma::server_name!("other.example"));
        let configured = [own.to_owned(), friend.to_owned()];
        let list = AllowList::load(db.clone(), &configured).unwrap();
        assert!(list.contains(friend) && !list.contains(other));
        assert!(list.set(own, other, true, "@root:own.example", "new ministry").unwrap());
        assert!(list.set(own, friend, false, "@root:own.example", "closed").unwrap());
        assert!(!list.set(own, friend, false, "@root:own.example", "again").unwrap(), "no change");
        assert!(list.set(own, own, false, "@root:own.example", "").is_err(), "never off its own list");
        let reloaded = AllowList::load(db.clone(), &configured).unwrap();
        assert!(reloaded.contains(other) && !reloaded.contains(friend));
        assert_eq!(reloaded.entries().len(), 2);
        // Back to what the configuration says: the entry goes.
        assert!(reloaded.set(own, friend, true, "@root:own.example", "reopened").unwrap());
        assert_eq!(reloaded.entries().len(), 1);
        assert_eq!(AllowList::load(db.clone(), &configured).unwrap().entries().len(), 1);
        let open = AllowList::load(db, &[]).unwrap();
        assert!(open.contains(other) && open.servers().is_none());
        assert!(open.set(own, other, false, "@root:own.example", "").is_err(), "an open node has no list");
    }
}
