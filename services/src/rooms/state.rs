//! Room state without copies: every distinct state is a snapshot stored as a delta against its
//! parent, with `(event type, state key)` pairs interned as short numbers. A message event shares
//! its room's current snapshot; a state event adds one small delta. Chains are cut with a full
//! snapshot every [`MAX_CHAIN`] deltas so a lookup reads a bounded number of records, and recently
//! used full states are cached in memory.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use ruma::{events::StateEventType, OwnedEventId};

use super::overlay::Pending;
pub use super::tables::Snapshot;
use crate::{
    db::{
        codec::{Be64, Json},
        Batch, Database,
    },
    error::{Error, Result},
};

/// A full state: short state key → event id.
pub type StateMap = BTreeMap<u64, OwnedEventId>;

/// Deltas at most this deep before a full snapshot is written.
const MAX_CHAIN: u32 = 32;
const CACHE_ENTRIES: usize = 4096;
/// State keys kept in memory by short number before that cache starts over.
const NAME_CACHE_ENTRIES: usize = 262_144;

pub struct StateStore {
    db: Arc<Database>,
    /// Snapshots queued for writing but not yet durable.
    pending: Arc<Mutex<Pending>>,
    cache: Mutex<HashMap<u64, Arc<StateMap>>>,
    /// `(type, state key)` by short number: state resolution names every entry of every state
    /// it resolves (50,000 for 50 forks of a 1,000-member room), and a short number never
    /// changes meaning, so they are read from the store once.
    names: Mutex<HashMap<u64, (StateEventType, String)>>,
    /// Short numbers by `(type, state key)`, the other way: every local event looks up its
    /// auth events' keys twice (to pick them, then in the auth rules), and a number, once
    /// interned, never changes nor goes away.
    shorts: Mutex<HashMap<StateEventType, HashMap<String, u64>>>,
    /// Serializes interning of new short keys.
    intern_lock: Mutex<()>,
}

impl StateStore {
    pub fn new(db: Arc<Database>, pending: Arc<Mutex<Pending>>) -> Self {
        Self {
            db,
            pending,
            cache: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            shorts: Mutex::new(HashMap::new()),
            intern_lock: Mutex::new(()),
        }
    }

    fn snapshot(&self, id: u64) -> Result<Snapshot> {
        if let Some(s) = self.pending.lock().expect("pending overlay").snapshots.get(&id) {
            return Ok(s.clone());
        }
        let Json(snapshot) = self
            .db
            .tables
            .rooms
            .snapshotid_snapshot
            .get(&Be64(id))?
            .ok_or_else(|| Error::Internal(format!("missing state snapshot {id}")))?;
        Ok(snapshot)
    }

    /// The short number of a state key, if it was ever used.
    pub fn short_key(&self, kind: &StateEventType, state_key: &str) -> Result<Option<u64>> {
        if let Some(n) = self.shorts.lock().expect("short keys").get(kind).and_then(|keys| keys.get(state_key)) {
            return Ok(Some(*n));
        }
        let found = self.db.tables.rooms.statekey_short.get(&(kind.to_string(), state_key.to_owned()))?;
        let found = found.map(|Be64(n)| n);
        if let Some(n) = found {
            self.remember_short(kind, state_key, n);
        }
        Ok(found)
    }

    fn remember_short(&self, kind: &StateEventType, state_key: &str, n: u64) {
        let mut shorts = self.shorts.lock().expect("short keys");
        if shorts.values().map(HashMap::len).sum::<usize>() >= NAME_CACHE_ENTRIES {
            shorts.clear();
        }
        shorts.entry(kind.clone()).or_default().insert(state_key.to_owned(), n);
    }

    /// The short number of a state key, allocating it the first time. The allocation is committed
    /// at once (numbers are shared by every room, so one must never be handed out twice).
    pub fn intern(&self, kind: &StateEventType, state_key: &str) -> Result<u64> {
        if let Some(n) = self.short_key(kind, state_key)? {
            return Ok(n);
        }
        let key = (kind.to_string(), state_key.to_owned());
        let _guard = self.intern_lock.lock().expect("intern lock");
        if let Some(Be64(n)) = self.db.tables.rooms.statekey_short.get(&key)? {
            return Ok(n);
        }
        let mut batch = Batch::new();
        let n = self.db.next_count(&mut batch);
        self.db.tables.rooms.statekey_short.insert(&mut batch, &key, &Be64(n));
        self.db.tables.rooms.short_statekey.insert(&mut batch, &Be64(n), &Json(key));
        // Not synced here (this runs under the room's lock): the event that uses the number is
        // written after it to the same write-ahead log and synced, which makes this durable too.
        self.db.write_unsynced(batch)?;
        self.remember_short(kind, state_key, n);
        Ok(n)
    }

    /// The `(type, state_key)` behind a short number.
    pub fn state_key_of(&self, short: u64) -> Result<(StateEventType, String)> {
        if let Some(name) = self.names.lock().expect("state key names").get(&short) {
            return Ok(name.clone());
        }
        let Json((kind, key)) = self
            .db
            .tables
            .rooms
            .short_statekey
            .get(&Be64(short))?
            .ok_or_else(|| Error::Internal(format!("unknown short state key {short}")))?;
        let name: (StateEventType, String) = (kind.into(), key);
        let mut names = self.names.lock().expect("state key names");
        if names.len() >= NAME_CACHE_ENTRIES {
            names.clear();
        }
        names.insert(short, name.clone());
        Ok(name)
    }

    /// The full state of a snapshot.
    pub fn load(&self, id: u64) -> Result<Arc<StateMap>> {
        if let Some(state) = self.cache.lock().expect("state cache").get(&id) {
            return Ok(state.clone());
        }
        let mut chain = Vec::new();
        let mut next = Some(id);
        let mut base = StateMap::new();
        while let Some(current) = next {
            if current != id {
                if let Some(state) = self.cache.lock().expect("state cache").get(&current) {
                    base = (**state).clone();
                    break;
                }
            }
            let snapshot = self.snapshot(current)?;
            next = snapshot.parent;
            chain.push(snapshot);
        }
        for snapshot in chain.iter().rev() {
            for removed in &snapshot.removed {
                base.remove(removed);
            }
            for (key, event) in &snapshot.added {
                base.insert(*key, event.clone());
            }
        }
        let state = Arc::new(base);
        let mut cache = self.cache.lock().expect("state cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(id, state.clone());
        Ok(state)
    }

    /// Writes a new snapshot `parent + changes - removed` into `batch` and returns its id.
    pub fn derive(
        &self,
        batch: &mut Batch,
        parent: Option<u64>,
        changes: &[(u64, OwnedEventId)],
        removed: &[u64],
    ) -> Result<u64> {
        let id = self.db.next_count(batch);
        let parent_chain = match parent {
            Some(p) => self.snapshot(p)?.chain,
            None => 0,
        };
        let snapshot = match parent {
            Some(p) if parent_chain < MAX_CHAIN => Snapshot {
                parent: Some(p),
                chain: parent_chain + 1,
                added: changes.to_vec(),
                removed: removed.to_vec(),
            },
            _ => {
                let mut full = match parent {
                    Some(p) => (*self.load(p)?).clone(),
                    None => StateMap::new(),
                };
                for key in removed {
                    full.remove(key);
                }
                for (k, v) in changes {
                    full.insert(*k, v.clone());
                }
                Snapshot { parent: None, chain: 0, added: full.into_iter().collect(), removed: Vec::new() }
            }
        };
        self.db.tables.rooms.snapshotid_snapshot.insert(batch, &Be64(id), &Json(snapshot.clone()));
        self.pending.lock().expect("pending overlay").snapshots.insert(id, snapshot);
        Ok(id)
    }

    /// Writes a full state as a snapshot of its own, committed at once (for states received from
    /// other servers, which no event of ours derives from yet).
    pub fn write_full(&self, state: &StateMap) -> Result<u64> {
        let mut batch = Batch::new();
        let id = self.db.next_count(&mut batch);
        let snapshot = Snapshot {
            parent: None,
            chain: 0,
            added: state.iter().map(|(k, v)| (*k, v.clone())).collect(),
            removed: Vec::new(),
        };
        self.db.tables.rooms.snapshotid_snapshot.insert(&mut batch, &Be64(id), &Json(snapshot));
        self.db.commit(batch)?;
        self.cache.lock().expect("state cache").insert(id, Arc::new(state.clone()));
        Ok(id)
    }
}
