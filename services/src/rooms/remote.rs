//! Events of other servers entering the one write path: a remote PDU is authorized against its
//! auth events, the state before it and the room's current state (soft-fail), forks are resolved
//! with state resolution v2, and the event is persisted by [`Rooms::persist`] like a local one.
//! Fetching what is missing (prev events, state, auth events) is the federation layer's job; this
//! module only decides with what the store holds.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    events::StateEventType,
    state_res::{utils::event_id_set::EventIdSet, StateMap as ResStateMap},
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
};

use super::{pdu::Pdu, rules_of, state, visibility::VisibilityChange, OutlierMeta, Plan, Rooms};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
    stream::wait_durable,
};

/// Resolutions remembered before the cache starts over (a key is a few snapshot ids).
const RESOLUTION_CACHE_ENTRIES: usize = 4096;

/// Resolves once a write is durable (see [`crate::stream::wait_durable`]).
pub type Durable = tokio::sync::oneshot::Receiver<std::result::Result<(), String>>;

/// What became of a remote event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Persisted in the room's timeline.
    Timeline,
    /// Already held (in the timeline, or decided before).
    Duplicate,
    /// Failed the authorization rules against its auth events or the state before it.
    Rejected(String),
    /// Authorized by its own state but not by the room's current state: kept, not shown.
    SoftFailed(String),
}

/// A state given by `(type, state_key)`, as servers exchange it.
pub type TypedState = HashMap<(StateEventType, String), OwnedEventId>;

/// A batch of history older than what we hold, as a server answered it (verified PDUs), with
/// the state before each of its events whose prev events we lack (from the same server).
#[derive(Debug, Default)]
pub struct OlderHistory {
    pub events: Vec<(OwnedEventId, CanonicalJsonObject)>,
    pub roots: HashMap<OwnedEventId, TypedState>,
}

impl Rooms {
    /// Whether the event is held here at all (timeline or outlier), without reading it: every
    /// auth event of every PDU received is asked about.
    pub fn knows_event(&self, event: &EventId) -> Result<bool> {
        if self.pending.lock().expect("pending overlay").pdus.contains_key(event) {
            return Ok(true);
        }
        Ok(self.db.tables.rooms.eventid_pdu.contains(&event.to_owned())?)
    }

    /// Whether the event is in a timeline here (so it has a state snapshot).
    pub fn in_timeline(&self, event: &EventId) -> Result<bool> {
        Ok(self.meta(event)?.is_some())
    }

    pub fn outlier(&self, event: &EventId) -> Result<Option<OutlierMeta>> {
        Ok(self.db.tables.rooms.eventid_outlier.get(&event.to_owned())?.map(|Json(m)| m))
    }

    /// Stores a verified event outside any timeline (a state or auth event of a remote room),
    /// deciding first whether it passes the authorization rules against its own auth events,
    /// which must be held already and not rejected (callers store auth events first, deepest
    /// first). One that fails is kept as rejected, so it never counts as an auth event or as
    /// state: the server that sent it does not get to decide our view of the room. Returns
    /// whether the event is accepted.
    pub fn store_outlier(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        event_id: &EventId,
        object: &CanonicalJsonObject,
    ) -> Result<bool> {
        if self.knows_event(event_id)? {
            return Ok(!self.outlier(event_id)?.is_some_and(|o| o.rejected));
        }
        let json = serde_json::to_vec(object).map_err(|e| Error::Internal(e.to_string()))?;
        let verdict = match Pdu::from_json(event_id.to_owned(), &json) {
            Ok(pdu) => self.check_by_own_auth_events(room, version, &pdu, None)?,
            Err(e) => Err(format!("not a valid PDU: {e}")),
        };
        if let Err(reason) = &verdict {
            tracing::info!(%event_id, %room, %reason, "a state or auth event is rejected");
        }
        let mut batch = Batch::new();
        self.db.tables.rooms.eventid_pdu.insert(&mut batch, &event_id.to_owned(), &json);
        self.db.tables.rooms.eventid_outlier.insert(
            &mut batch,
            &event_id.to_owned(),
            &Json(OutlierMeta {
                room_id: room.to_owned(),
                rejected: verdict.is_err(),
                soft_failed: false,
                state_after: None,
            }),
        );
        self.db.commit(batch)?;
        self.forget_recent([&event_id.to_owned()]);
        Ok(verdict.is_ok())
    }

    /// Stores the state and auth chain a resident server answered, checked like any PDU: each
    /// event against its own auth events, auth events first; what fails is rejected and is not
    /// part of any state. Storing again what is held changes nothing.
    pub fn store_outliers(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        state_events: &[(OwnedEventId, CanonicalJsonObject)],
        auth_chain: &[(OwnedEventId, CanonicalJsonObject)],
    ) -> Result<()> {
        for (id, object) in auth_first(auth_chain.iter().chain(state_events)) {
            self.store_outlier(room, version, id, object)?;
        }
        Ok(())
    }

    /// Whether an event is held and was not rejected.
    pub fn held_and_accepted(&self, event: &EventId) -> Result<bool> {
        Ok(self.knows_event(event)? && !self.outlier(event)?.is_some_and(|o| o.rejected))
    }

    /// Holds an event outside every timeline: rejected (`state_after` is `None`), or soft-failed
    /// with the snapshot of the state after it in its branch.
    fn mark_outlier(
        &self,
        room: &RoomId,
        event_id: &EventId,
        json: &[u8],
        rejected: bool,
        state_after: Option<u64>,
    ) -> Result<()> {
        let mut batch = Batch::new();
        self.db.tables.rooms.eventid_pdu.insert(&mut batch, &event_id.to_owned(), &json.to_vec());
        let meta = OutlierMeta { room_id: room.to_owned(), rejected, soft_failed: !rejected, state_after };
        self.db.tables.rooms.eventid_outlier.insert(&mut batch, &event_id.to_owned(), &Json(meta));
        self.db.commit(batch)?;
        self.forget_recent([&event_id.to_owned()]);
        Ok(())
    }

    /// The snapshot of the state after an event in its branch of the DAG: a timeline event's, or
    /// a soft-failed event's (which is in the DAG though no timeline shows it). `None` for events
    /// not held, rejected, or held only as state or auth events.
    pub fn dag_state_of(&self, event: &EventId) -> Result<Option<u64>> {
        if let Some(meta) = self.meta(event)? {
            return Ok(Some(meta.dag_snapshot()));
        }
        Ok(self.outlier(event)?.filter(|o| o.soft_failed).and_then(|o| o.state_after))
    }

    /// The events `prev_events` cover: themselves and, through soft-failed events (which are not
    /// forward extremities), what those name as prev events, recursively — as Synapse does, so
    /// that an event built on a soft-failed one does not leave the events behind it as
    /// extremities. The walk is bounded: a chain of soft-failed events is short in any honest room.
    fn covered_by(&self, prev_events: &[OwnedEventId]) -> Result<HashSet<OwnedEventId>> {
        let mut covered = HashSet::new();
        let mut todo: Vec<OwnedEventId> = prev_events.to_vec();
        while let Some(id) = todo.pop() {
            if !covered.insert(id.clone()) || covered.len() > 1_000 {
                continue;
            }
            if self.outlier(&id)?.is_some_and(|o| o.soft_failed) {
                if let Some(pdu) = self.auth_pdu(&id) {
                    todo.extend(pdu.prev_events.iter().cloned());
                }
            }
        }
        Ok(covered)
    }

    /// Interns a typed state and writes it as a full snapshot of its own (committed at once; an
    /// unused snapshot left by a crash is harmless). Returns the snapshot id and the short map.
    fn write_state(&self, typed: &TypedState) -> Result<(u64, state::StateMap)> {
        let mut map = state::StateMap::new();
        for ((kind, key), id) in typed {
            map.insert(self.state.intern(kind, key)?, id.clone());
        }
        let id = self.state.write_full(&map)?;
        Ok((id, map))
    }

    fn typed(&self, map: &state::StateMap) -> Result<ResStateMap<OwnedEventId>> {
        map.iter().map(|(short, id)| Ok((self.state.state_key_of(*short)?, id.clone()))).collect()
    }

    /// The full auth chain of an event (every auth event, recursively), from what is stored.
    pub fn auth_chain(&self, start: &[OwnedEventId]) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for id in start {
            if let Some(pdu) = self.auth_pdu(id) {
                todo.extend(pdu.auth_events.iter().cloned());
            }
        }
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(pdu) = self.auth_pdu(&id) {
                todo.extend(pdu.auth_events.iter().filter(|a| !seen.contains(*a)).cloned());
            }
        }
        Ok(seen)
    }

    /// The snapshot of a resolution of the states `snapshots` (sorted, without duplicates) made
    /// before, if any. Resolutions are remembered by the set of snapshots resolved, not by the
    /// forward extremities: a message on one fork changes the extremities but not the states at
    /// them, and the room's state stays what it was without resolving again; an event naming
    /// every extremity as a prev event finds the room's current state here. A snapshot never
    /// changes once written, so an entry stays true; the few things that change what the
    /// algorithm reads (a redacted state event, a purged room) empty the cache.
    pub(crate) fn cached_resolution(&self, snapshots: &[u64]) -> Option<u64> {
        let found = self.resolutions.lock().expect("resolution cache").get(snapshots).copied();
        if found.is_some() {
            self.resolutions_counted.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }

    /// Remembers that the states `snapshots` (sorted, without duplicates) resolve to `resolved`.
    fn remember_resolution(&self, snapshots: Vec<u64>, resolved: u64) {
        if snapshots.len() < 2 {
            return;
        }
        let mut cache = self.resolutions.lock().expect("resolution cache");
        if cache.len() >= RESOLUTION_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(snapshots, resolved);
    }

    /// Empties what was derived from the stored form of state events, which a redaction or a
    /// purge changes: the resolution cache (see [`Self::cached_resolution`]) and the auth
    /// outcomes (see [`Self::check_auth`]).
    pub(crate) fn forget_derived_from_state(&self) {
        self.resolutions.lock().expect("resolution cache").clear();
        self.auth_outcomes.lock().expect("auth outcomes").clear();
    }

    /// Resolves forked states with the room version's state resolution algorithm. `pending` is
    /// an event that is part of one of the states but not stored yet (the event being taken
    /// in): the algorithm must see it like any other, or it silently drops it.
    pub fn resolve(
        &self,
        version: &RoomVersionId,
        states: &[state::StateMap],
        pending: Option<&Pdu>,
    ) -> Result<state::StateMap> {
        let states: Vec<&state::StateMap> = states.iter().collect();
        self.resolve_states(version, &states, pending)
    }

    /// [`Self::resolve`] of borrowed states (the stored ones are shared, not copied).
    fn resolve_states(
        &self,
        version: &RoomVersionId,
        states: &[&state::StateMap],
        pending: Option<&Pdu>,
    ) -> Result<state::StateMap> {
        // No state to resolve (an event none of whose prev events has a state here): the
        // empty state, as the algorithm gives for no input.
        match states {
            [] => return Ok(state::StateMap::new()),
            [one] => return Ok((*one).clone()),
            _ => {}
        }
        self.resolutions_counted.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rules = rules_of(version)?;
        let Some(res_rules) = rules.state_res.v2_rules() else {
            return Err(Error::UnsupportedRoomVersion(format!("room version {version} uses state resolution v1")));
        };
        let fetch = |id: &EventId| match pending {
            Some(p) if p.event_id == id => Some(Arc::new(p.clone())),
            _ => self.auth_pdu(id),
        };
        let auth_of = |id: &EventId| match pending {
            Some(p) if p.event_id == id => Some(p.auth_events.clone()),
            _ => self.auth_events_of(id),
        };
        // Split on short keys first (integers, no names): the entries every state shares, and
        // the keys in conflict.
        let mut common = state::StateMap::new();
        let mut conflicted_keys = std::collections::BTreeSet::new();
        for (key, id) in states[0].iter() {
            if states[1..].iter().all(|s| s.get(key) == Some(id)) {
                common.insert(*key, id.clone());
            } else {
                conflicted_keys.insert(*key);
            }
        }
        for state in &states[1..] {
            conflicted_keys.extend(state.keys().filter(|k| !common.contains_key(*k)));
        }
        if conflicted_keys.is_empty() {
            return Ok(common);
        }
        // From state resolution v2.1 on, the iterative auth checks begin with an empty state,
        // not the unconflicted one: the shared entries are then read by nothing but the last
        // step, which puts them back over the result. The algorithm is given the keys in
        // conflict only — for one renamed member among 50 forks of a 1,000-member room, 50
        // entries instead of 50,000 to name and hash — and the shared entries are put back
        // here, as it would. Before v2.1 the unconflicted state is where the checks begin, so
        // the states go whole.
        let typed: Vec<ResStateMap<OwnedEventId>> = if res_rules.begin_iterative_auth_checks_with_empty_state_map {
            let names: Vec<(u64, (StateEventType, String))> = conflicted_keys
                .iter()
                .map(|short| Ok((*short, self.state.state_key_of(*short)?)))
                .collect::<Result<_>>()?;
            states
                .iter()
                .map(|state| {
                    names
                        .iter()
                        .filter_map(|(short, name)| state.get(short).map(|id| (name.clone(), id.clone())))
                        .collect()
                })
                .collect()
        } else {
            states.iter().map(|s| self.typed(s)).collect::<Result<_>>()?
        };
        // Each state's full auth chain (its events and their auth events, recursively). The
        // events every state shares bring the same events to every chain, and what is in every
        // chain is no part of the auth difference the algorithm takes from them: their chain is
        // walked once, and a chain keeps of it only what the other events' chains reach too
        // (so that an event in every chain is still in every one). This is what keeps 50 forks
        // of a 1,000-member room from walking 50,000 events.
        let shared_chain = auth_closure(common.values(), &auth_of);
        let own_chains: Vec<HashSet<OwnedEventId>> = states
            .iter()
            .map(|state| {
                auth_closure(state.iter().filter(|(k, _)| !common.contains_key(*k)).map(|(_, id)| id), &auth_of)
            })
            .collect();
        let reached: HashSet<&OwnedEventId> =
            own_chains.iter().flatten().filter(|id| shared_chain.contains(*id)).collect();
        let chains = own_chains
            .iter()
            .map(|own| {
                let mut set = EventIdSet::new();
                for id in own.iter().chain(reached.iter().copied()) {
                    set.insert(id.clone());
                }
                set
            })
            .collect();
        let subgraph = |conflicted: &ResStateMap<Vec<OwnedEventId>>| {
            let conflicted: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
            let mut set = EventIdSet::new();
            for id in self.conflicted_subgraph(&conflicted, &fetch) {
                set.insert(id);
            }
            Some(set)
        };
        let resolved =
            ruma::state_res::resolve(&rules.authorization, res_rules, typed.iter(), chains, &fetch, subgraph)
                .map_err(|e| Error::Internal(format!("state resolution failed: {e}")))?;
        // Back to short keys: the shared entries stay, the keys in conflict take what the
        // algorithm chose (or go).
        let mut out = common;
        for short in conflicted_keys {
            if let Some(id) = resolved.get(&self.state.state_key_of(short)?) {
                out.insert(short, id.clone());
            }
        }
        Ok(out)
    }

    /// The events on auth paths from one conflicted event to another (state resolution v2.1).
    fn conflicted_subgraph(
        &self,
        conflicted: &HashSet<OwnedEventId>,
        fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
    ) -> HashSet<OwnedEventId> {
        let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
        fn walk(
            fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
            id: &OwnedEventId,
            conflicted: &HashSet<OwnedEventId>,
            reaches: &mut HashMap<OwnedEventId, bool>,
            depth: usize,
        ) -> bool {
            if let Some(r) = reaches.get(id) {
                return *r;
            }
            reaches.insert(id.clone(), false);
            let mut result = false;
            if depth < 10_000 {
                if let Some(pdu) = fetch(id) {
                    for auth in &pdu.auth_events {
                        let hit = conflicted.contains(auth) || walk(fetch, auth, conflicted, reaches, depth + 1);
                        result |= hit;
                    }
                }
            }
            reaches.insert(id.clone(), result);
            result
        }
        let mut out: HashSet<OwnedEventId> = conflicted.clone();
        for id in conflicted {
            walk(fetch, id, conflicted, &mut reaches, 0);
        }
        out.extend(reaches.into_iter().filter(|(_, r)| *r).map(|(id, _)| id));
        out
    }

    /// The state before an event whose prev events all have a state here (timeline events, and
    /// soft-failed ones: see [`Self::dag_state_of`]).
    fn state_before(&self, version: &RoomVersionId, pdu: &Pdu) -> Result<Option<(u64, state::StateMap)>> {
        let mut snapshots = Vec::new();
        for prev in &pdu.prev_events {
            match self.dag_state_of(prev)? {
                Some(snapshot) => snapshots.push(snapshot),
                None => return Ok(None),
            }
        }
        snapshots.sort_unstable();
        snapshots.dedup();
        if snapshots.len() == 1 {
            return Ok(Some((snapshots[0], (*self.state.load(snapshots[0])?).clone())));
        }
        if let Some(id) = self.cached_resolution(&snapshots) {
            return Ok(Some((id, (*self.state.load(id)?).clone())));
        }
        let states: Vec<Arc<state::StateMap>> = snapshots.iter().map(|s| self.state.load(*s)).collect::<Result<_>>()?;
        let states: Vec<&state::StateMap> = states.iter().map(|s| &**s).collect();
        let resolved = self.resolve_states(version, &states, None)?;
        let id = self.state.write_full(&resolved)?;
        self.remember_resolution(snapshots, id);
        Ok(Some((id, resolved)))
    }

    /// The prev events of a PDU that have no state here (neither in a timeline nor soft-failed),
    /// read off the object's `prev_events` (the whole PDU is parsed once, by the append).
    pub fn missing_prev_events(&self, object: &CanonicalJsonObject) -> Result<Vec<OwnedEventId>> {
        let mut missing = Vec::new();
        for prev in event_ids_in(object, "prev_events") {
            if self.dag_state_of(&prev)?.is_none() {
                missing.push(prev);
            }
        }
        Ok(missing)
    }

    /// The auth rules against the event's own auth events, which must be held (the federation
    /// layer fetched them) and not rejected. `Ok(Err(reason))` when the event fails them.
    /// Room version 12 does not list the create event among auth events (its id is the room's):
    /// it is taken from `create`, else derived from the room id.
    fn check_by_own_auth_events(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        pdu: &Pdu,
        create: Option<&OwnedEventId>,
    ) -> Result<std::result::Result<(), String>> {
        if pdu.room_id.as_deref().is_some_and(|r| r != room) {
            return Ok(Err(format!("{} is an event of another room", pdu.event_id)));
        }
        let rules = rules_of(version)?;
        let mut map = state::StateMap::new();
        for auth in &pdu.auth_events {
            if !self.held_and_accepted(auth)? {
                return Ok(Err(format!("auth event {auth} is unknown or rejected")));
            }
            if let Some(a) = self.auth_pdu(auth) {
                if a.room_id.as_deref().is_some_and(|r| r != room) {
                    return Ok(Err(format!("auth event {auth} is of another room")));
                }
                if let Some(key) = &a.state_key {
                    map.insert(self.state.intern(&a.kind.to_string().into(), key)?, auth.clone());
                }
            }
        }
        let create_key = self.state.intern(&StateEventType::RoomCreate, "")?;
        if let std::collections::btree_map::Entry::Vacant(entry) = map.entry(create_key) {
            let derived =
                room.as_str().strip_prefix('!').and_then(|hash| OwnedEventId::try_from(format!("${hash}")).ok());
            if let Some(id) = create.cloned().or(derived) {
                if self.held_and_accepted(&id)? {
                    entry.insert(id);
                }
            }
        }
        Ok(self.check_auth(&rules, pdu, Some(&map)))
    }

    /// [`Self::check_by_own_auth_events`] for an event of a room we are in.
    fn check_by_auth_events(
        &self,
        record: &super::RoomRecord,
        room: &RoomId,
        pdu: &Pdu,
    ) -> Result<std::result::Result<(), String>> {
        let create_key = self.state.intern(&StateEventType::RoomCreate, "")?;
        let create = self.state.load(record.snapshot)?.get(&create_key).cloned();
        self.check_by_own_auth_events(room, &record.version, pdu, create.as_ref())
    }

    /// Decides which events of a batch of older history (ancestors of what we hold, fetched with
    /// a join or by backfill) may enter the timeline: each must pass the authorization rules
    /// against its own auth events *and* against the state before it. That state is rolled
    /// forward through the batch in causal order (prev events first): the state after each prev
    /// event, resolved when they differ; for an event whose prev events we do not hold, the state
    /// `roots` gives (what a server's `/state_ids` answered, each event of it checked already).
    /// An event whose state cannot be known is left out, not guessed: a server that knows it was
    /// banned must not get its messages in by pointing their auth events at its old join.
    /// Every decided event is held as an outlier at once (rejected or not), so that forks later
    /// in the batch resolve with it. Returns the accepted events, causal order, with their JSON.
    fn check_history(
        &self,
        room: &RoomId,
        version: &RoomVersionId,
        create: Option<&OwnedEventId>,
        events: &[(OwnedEventId, CanonicalJsonObject)],
        roots: &HashMap<OwnedEventId, TypedState>,
    ) -> Result<Vec<(OwnedEventId, Pdu, Vec<u8>)>> {
        let rules = rules_of(version)?;
        let mut after: HashMap<OwnedEventId, Arc<state::StateMap>> = HashMap::new();
        let mut accepted = Vec::new();
        for (id, object) in causal_order(events) {
            if self.in_timeline(id)? {
                continue;
            }
            let json = serde_json::to_vec(object).map_err(|e| Error::Internal(e.to_string()))?;
            let mut pdu = parse(object)?;
            pdu.event_id = id.clone();
            let before = match roots.get(id) {
                Some(typed) => {
                    let mut map = state::StateMap::new();
                    for ((kind, key), state_id) in typed {
                        map.insert(self.state.intern(kind, key)?, state_id.clone());
                    }
                    Some(Arc::new(map))
                }
                None => self.state_from_prev_events(version, &pdu, &after)?,
            };
            let Some(before) = before else {
                tracing::info!(event_id = %id, %room, "older history whose state before it is unknown is left out");
                continue;
            };
            let verdict = match self.check_by_own_auth_events(room, version, &pdu, create)? {
                Ok(()) => self.check_auth(&rules, &pdu, Some(&before)),
                Err(reason) => Err(reason),
            };
            let state_after = match (&verdict, &pdu.state_key) {
                (Ok(()), Some(key)) => {
                    let mut map = (*before).clone();
                    map.insert(self.state.intern(&pdu.kind.to_string().into(), key)?, id.clone());
                    Arc::new(map)
                }
                _ => before,
            };
            after.insert(id.clone(), state_after);
            let mut batch = Batch::new();
            self.db.tables.rooms.eventid_pdu.insert(&mut batch, id, &json);
            self.db.tables.rooms.eventid_outlier.insert(
                &mut batch,
                id,
                &Json(OutlierMeta {
                    room_id: room.to_owned(),
                    rejected: verdict.is_err(),
                    soft_failed: false,
                    state_after: None,
                }),
            );
            self.db.commit(batch)?;
            self.forget_recent([id]);
            match verdict {
                Ok(()) => accepted.push((id.clone(), pdu, json)),
                Err(reason) => tracing::info!(event_id = %id, %room, %reason, "older history rejected"),
            }
        }
        Ok(accepted)
    }

    /// The state before an event from the states after its prev events (those decided earlier in
    /// the batch, or in a timeline here), resolved when they differ; `None` when one of them is
    /// unknown. The create event alone has no prev events, and nothing before it.
    fn state_from_prev_events(
        &self,
        version: &RoomVersionId,
        pdu: &Pdu,
        decided: &HashMap<OwnedEventId, Arc<state::StateMap>>,
    ) -> Result<Option<Arc<state::StateMap>>> {
        let mut states: Vec<Arc<state::StateMap>> = Vec::new();
        for prev in &pdu.prev_events {
            let state = match decided.get(prev) {
                Some(state) => state.clone(),
                None => match self.meta(prev)? {
                    Some(meta) => self.state.load(meta.dag_snapshot())?,
                    None => return Ok(None),
                },
            };
            if !states.iter().any(|s| **s == *state) {
                states.push(state);
            }
        }
        Ok(match states.len() {
            0 if pdu.kind == ruma::events::TimelineEventType::RoomCreate => Some(Arc::default()),
            0 => None,
            1 => states.pop(),
            _ => {
                let states: Vec<state::StateMap> = states.iter().map(|s| (**s).clone()).collect();
                Some(Arc::new(self.resolve(version, &states, None)?))
            }
        })
    }

    /// Takes in history fetched after the join (a client paged `/messages` past what we held):
    /// the events of `events` that lead to the room's oldest event, each checked against its
    /// auth events and the state before it ([`Self::check_history`], with the states the server
    /// gave for the events whose prev events we lack), stored in causal order at
    /// positions below the room's oldest ([`crate::db::Database::backfill_positions`]) so that
    /// `/messages` pages into them. They are not on the stream (no sync sees them as new) and do
    /// not change the room's current state. Returns how many were stored.
    pub async fn append_backfilled(&self, room: &RoomId, history: &OlderHistory) -> Result<usize> {
        use crate::db::codec::{prefix, Be64};
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let record = self.room(room)?.ok_or_else(|| Error::not_found("this server is not in the room"))?;
        let tables = &self.db.tables;
        let Some(oldest) = tables.rooms.roomidpos_eventid.scan_prefix(prefix(&room.to_owned())).next() else {
            return Ok(0);
        };
        let ((_, Be64(oldest_pos)), oldest_id) = oldest?;
        let snapshot = self.meta(&oldest_id)?.map(|m| m.snapshot).unwrap_or(record.snapshot);
        let events = ancestors_of(self.backward_extremities(room)?, &history.events);
        let create_key = self.state.intern(&StateEventType::RoomCreate, "")?;
        let create = self.state.load(record.snapshot)?.get(&create_key).cloned();
        let accepted = self.check_history(room, &record.version, create.as_ref(), &events, &history.roots)?;
        let mut batch = crate::db::Batch::new();
        let Some(first) = self.db.backfill_positions(&mut batch, accepted.len() as u64, oldest_pos) else {
            return Ok(0);
        };
        for (i, (id, _, json)) in accepted.iter().enumerate() {
            let pos = first + i as u64;
            let meta = super::EventMeta {
                room_id: room.to_owned(),
                pos,
                snapshot,
                redacted_because: None,
                state_after: None,
                replaces: None,
            };
            tables.rooms.eventid_pdu.insert(&mut batch, id, json);
            tables.rooms.eventid_meta.insert(&mut batch, id, &Json(meta));
            tables.rooms.eventid_outlier.remove(&mut batch, id);
            tables.rooms.roomidpos_eventid.insert(&mut batch, &(room.to_owned(), Be64(pos)), id);
            tables.rooms.backfillpos_eventid.insert(&mut batch, &Be64(pos), id);
        }
        self.db.commit(batch)?;
        self.forget_recent(accepted.iter().map(|(id, _, _)| id));
        if !accepted.is_empty() {
            self.backfilled.send_if_modified(|lowest| {
                let lower = first < *lowest;
                *lowest = (*lowest).min(first);
                lower
            });
        }
        Ok(accepted.len())
    }

    /// The events of a batch of older history whose prev events are neither in the batch nor in
    /// a timeline here: the state before them must come from the server that sent the batch.
    pub fn history_roots(&self, events: &[(OwnedEventId, CanonicalJsonObject)]) -> Result<Vec<OwnedEventId>> {
        let ids: HashSet<&OwnedEventId> = events.iter().map(|(id, _)| id).collect();
        let mut roots = Vec::new();
        for (id, object) in events {
            let mut missing = false;
            for prev in event_ids_in(object, "prev_events") {
                if !ids.contains(&prev) && !self.in_timeline(&prev)? {
                    missing = true;
                    break;
                }
            }
            if missing && !self.in_timeline(id)? {
                roots.push(id.clone());
            }
        }
        Ok(roots)
    }

    /// The prev events of the room's oldest held event that we do not hold: where history
    /// continues on other servers. Empty once the room's creation is reached.
    pub fn backward_extremities(&self, room: &RoomId) -> Result<Vec<OwnedEventId>> {
        use crate::db::codec::prefix;
        let Some(oldest) = self.db.tables.rooms.roomidpos_eventid.scan_prefix(prefix(&room.to_owned())).next() else {
            return Ok(Vec::new());
        };
        let (_, oldest_id) = oldest?;
        let Some(pdu) = self.pdu(&oldest_id)? else { return Ok(Vec::new()) };
        let mut missing = Vec::new();
        for prev in &pdu.prev_events {
            if !self.in_timeline(prev)? {
                missing.push(prev.clone());
            }
        }
        Ok(missing)
    }

    /// Takes in a remote event and waits until it is durable.
    pub async fn append_remote(
        &self,
        room: &RoomId,
        event_id: &EventId,
        object: &CanonicalJsonObject,
        given_state: Option<&TypedState>,
    ) -> Result<Accepted> {
        let (accepted, durable) = self.append_remote_deferred(room, event_id, object, given_state).await?;
        if let Some(durable) = durable {
            wait_durable(durable).await?;
        }
        Ok(accepted)
    }

    /// Takes in a remote event (auth against its auth events, the state before it, the current
    /// state; resolution of forks; then [`Rooms::persist`]). The event is visible to what comes
    /// next at once; the returned receiver says when it is durable, so a transaction of many
    /// PDUs waits for one fsync at its end, not one per PDU.
    #[tracing::instrument(name = "rooms.append_remote", skip_all, fields(room = %room, event_id = %event_id))]
    pub async fn append_remote_deferred(
        &self,
        room: &RoomId,
        event_id: &EventId,
        object: &CanonicalJsonObject,
        given_state: Option<&TypedState>,
    ) -> Result<(Accepted, Option<Durable>)> {
        let lock = self.lock(room);
        let guard = lock.lock().await;
        if self.in_timeline(event_id)? || self.outlier(event_id)?.is_some_and(|o| o.rejected || o.soft_failed) {
            return Ok((Accepted::Duplicate, None));
        }
        let record = self.room(room)?.ok_or_else(|| Error::not_found("this server is not in the room"))?;
        let rules = rules_of(&record.version)?;
        let json = serde_json::to_vec(object).map_err(|e| Error::Internal(e.to_string()))?;
        let pdu =
            Pdu::from_json(event_id.to_owned(), &json).map_err(|e| Error::BadJson(format!("not a valid PDU: {e}")))?;
        if pdu.room_id.as_deref().is_some_and(|r| r != room) {
            return Err(Error::BadJson(format!("{event_id} is not an event of {room}")));
        }
        if let Err(reason) = self.check_by_auth_events(&record, room, &pdu)? {
            self.mark_outlier(room, event_id, &json, true, None)?;
            return Ok((Accepted::Rejected(reason), None));
        }
        let (before, before_map) = match given_state {
            Some(typed) => self.write_state(typed)?,
            None => match self.state_before(&record.version, &pdu)? {
                Some(found) => found,
                None => return Err(Error::Internal(format!("the prev events of {event_id} are not held"))),
            },
        };
        // The network's access rules count as auth rules here: every node of the network judges
        // every event alike, so what one refuses none takes in.
        let verdict = self.check_auth(&rules, &pdu, Some(&before_map)).and_then(|()| {
            self.check_access_rules(room, &pdu, &before_map).map_err(|r| format!("room access rules: {r}"))
        });
        if let Err(reason) = verdict {
            self.mark_outlier(room, event_id, &json, true, None)?;
            return Ok((Accepted::Rejected(reason), None));
        }
        if record.snapshot != before {
            let current = self.state.load(record.snapshot)?;
            let verdict = self.check_auth(&rules, &pdu, Some(&current)).and_then(|()| {
                self.check_access_rules(room, &pdu, &current).map_err(|r| format!("room access rules: {r}"))
            });
            if let Err(reason) = verdict {
                // Kept with the state after it in its branch: not shown, not an extremity, but
                // part of the DAG for the events that name it later.
                let after = match &pdu.state_key {
                    Some(key) => {
                        let mut after = before_map;
                        after.insert(self.state.intern(&pdu.kind.to_string().into(), key)?, event_id.to_owned());
                        self.state.write_full(&after)?
                    }
                    None => before,
                };
                self.mark_outlier(room, event_id, &json, false, Some(after))?;
                return Ok((Accepted::SoftFailed(reason), None));
            }
        }
        let covered = self.covered_by(&pdu.prev_events)?;
        let covers_extremities = record.extremities.iter().all(|e| covered.contains(e));
        let mut extremities: Vec<OwnedEventId> =
            record.extremities.iter().filter(|e| !covered.contains(*e)).cloned().collect();
        extremities.push(event_id.to_owned());
        // The room's state is the resolution of the states at all of its forward extremities:
        // this event's, and those of the extremities it does not cover.
        let mut others = Vec::new();
        let resolved = if covers_extremities {
            None
        } else {
            for extremity in extremities.iter().filter(|e| *e != event_id) {
                others.extend(self.dag_state_of(extremity)?);
            }
            // A message's state after it is the state before it, already stored: the same set
            // of states as an earlier resolution is found in the cache.
            let known = match &pdu.state_key {
                Some(_) => None,
                None => self.cached_resolution(&sorted_set(others.iter().copied().chain([before]))),
            };
            match known {
                Some(id) => Some(super::Resolved::Snapshot(id)),
                None => {
                    let mut after = before_map.clone();
                    if let Some(key) = &pdu.state_key {
                        after.insert(self.state.intern(&pdu.kind.to_string().into(), key)?, event_id.to_owned());
                    }
                    let snapshots = sorted_set(others.iter().copied());
                    let loaded: Vec<Arc<state::StateMap>> =
                        snapshots.iter().map(|s| self.state.load(*s)).collect::<Result<_>>()?;
                    let mut states: Vec<&state::StateMap> = loaded.iter().map(|s| &**s).collect();
                    states.push(&after);
                    Some(super::Resolved::Map(self.resolve_states(&record.version, &states, Some(&pdu))?))
                }
            }
        };
        let newly_resolved = matches!(resolved, Some(super::Resolved::Map(_)));
        let depth = u64::from(pdu.depth);
        let durable = self.persist(
            room,
            Plan {
                version: record.version.clone(),
                event_id: event_id.to_owned(),
                json,
                pdu,
                before: Some(before),
                resolved,
                old_current: Some(record.snapshot),
                extremities,
                depth,
                txn: None,
                historical: false,
                extra_visibility: Vec::new(),
                extra_members: Vec::new(),
                built_here: false,
            },
        )?;
        if newly_resolved {
            // The room's new state is the resolution of the states at its new extremities.
            if let (Some(meta), Some(record)) = (self.meta(event_id)?, self.room(room)?) {
                self.remember_resolution(sorted_set(others.into_iter().chain([meta.dag_snapshot()])), record.snapshot);
            }
        }
        drop(guard);
        Ok((Accepted::Timeline, Some(durable)))
    }

    /// Enters a room this server joins over federation: the state and auth chain the resident
    /// server sent (verified by the caller) are stored as outliers, history fetched with the join
    /// is checked like backfill ([`Self::check_history`]) and put in the timeline before the join, then our join event is persisted on
    /// the state before it. The room record exists from then on.
    pub async fn enter_remote_room(
        &self,
        room: &RoomId,
        version: RoomVersionId,
        state_events: &[(OwnedEventId, CanonicalJsonObject)],
        auth_chain: &[(OwnedEventId, CanonicalJsonObject)],
        history: &OlderHistory,
        join: (OwnedEventId, CanonicalJsonObject),
    ) -> Result<OwnedEventId> {
        let lock = self.lock(room);
        let guard = lock.lock().await;
        self.store_outliers(room, &version, state_events, auth_chain)?;
        let mut typed = TypedState::new();
        for (id, object) in state_events {
            let pdu = parse(object)?;
            if let Some(key) = pdu.state_key {
                if self.held_and_accepted(id)? {
                    typed.insert((pdu.kind.to_string().into(), key), id.clone());
                }
            }
        }
        let create = typed.get(&(StateEventType::RoomCreate, String::new())).cloned();
        let Some(create) = create else {
            return Err(Error::RemoteUnreachable("the room's state has no valid create event".into()));
        };
        let create_room = self.pdu(&create)?.and_then(|p| p.room_id);
        let derived = room.as_str().strip_prefix('!').map(|hash| format!("${hash}"));
        if create_room.as_deref() != Some(room) && derived.as_deref() != Some(create.as_str()) {
            return Err(Error::RemoteUnreachable("the room's state has the create event of another room".into()));
        }
        let (before, before_map) = self.write_state(&typed)?;
        // What the visibility rules need to know of the room as it stands: every member's
        // membership and the history visibility, recorded at the first position we write.
        let mut seed = Vec::new();
        let mut members = Vec::new();
        for id in before_map.values() {
            if let Some(pdu) = self.auth_pdu(id) {
                seed.extend(VisibilityChange::of(&pdu));
                if pdu.kind == ruma::events::TimelineEventType::RoomMember {
                    if let Some(user) = pdu.state_key.as_deref().and_then(|k| ruma::UserId::parse(k).ok()) {
                        let content: serde_json::Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
                        let membership = content["membership"].as_str().unwrap_or("leave").to_owned();
                        members.push((user, membership, id.clone()));
                    }
                }
            }
        }
        let rules = rules_of(&version)?;
        let mut pending = Vec::new();
        for (id, pdu, json) in self.check_history(room, &version, Some(&create), &history.events, &history.roots)? {
            let depth = u64::from(pdu.depth);
            pending.push(self.persist(
                room,
                Plan {
                    version: version.clone(),
                    event_id: id.clone(),
                    json,
                    pdu,
                    before: Some(before),
                    resolved: None,
                    old_current: Some(before),
                    extremities: Vec::new(),
                    depth,
                    txn: None,
                    historical: true,
                    extra_visibility: std::mem::take(&mut seed),
                    extra_members: std::mem::take(&mut members),
                    built_here: false,
                },
            )?);
        }
        let (join_id, join_object) = join;
        let json = serde_json::to_vec(&join_object).map_err(|e| Error::Internal(e.to_string()))?;
        let mut pdu = parse(&join_object)?;
        pdu.event_id = join_id.clone();
        if let Err(reason) = self.check_auth(&rules, &pdu, Some(&before_map)) {
            return Err(Error::Forbidden(format!("the room's state does not allow the join: {reason}")));
        }
        self.enforce_access_rules(room, &pdu, &before_map)?;
        let depth = u64::from(pdu.depth);
        let extremities = vec![join_id.clone()];
        pending.push(self.persist(
            room,
            Plan {
                version,
                event_id: join_id.clone(),
                json,
                pdu,
                before: Some(before),
                resolved: None,
                old_current: Some(before),
                extremities,
                depth,
                txn: None,
                historical: false,
                extra_visibility: seed,
                extra_members: members,
                built_here: false,
            },
        )?);
        drop(guard);
        for durable in pending {
            wait_durable(durable).await?;
        }
        Ok(join_id)
    }

    /// Builds and signs a membership event of a local user for `target` without persisting it
    /// (an invite another server must sign too); it is checked against the current state.
    pub async fn sign_local_event(
        &self,
        room: &RoomId,
        sender: &ruma::UserId,
        target: &str,
        content: serde_json::Value,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let record = self.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let rules = rules_of(&record.version)?;
        let event = super::NewEvent::state(StateEventType::RoomMember, target, content);
        let auth_events = self.auth_events_for(&record, &rules, sender, &event)?;
        let (event_id, object, json) = self.build(
            &rules,
            Some(room),
            sender,
            &event,
            super::Links {
                prev_events: &record.extremities,
                auth_events: &auth_events,
                depth: super::pdu::next_depth(record.depth),
            },
            true,
        )?;
        let pdu = Pdu::from_json(event_id, &json).map_err(|e| Error::Internal(e.to_string()))?;
        let state = self.state.load(record.snapshot)?;
        self.check_auth(&rules, &pdu, Some(&state)).map_err(Error::Forbidden)?;
        self.enforce_access_rules(room, &pdu, &state)?;
        Ok((record.version, object))
    }

    /// Records a local user's membership of a room this server is not in (an invite received
    /// from another server, or the leave that rejects it): the event is kept as an outlier and the
    /// membership gets a stream position, so the user's sync shows it.
    pub async fn record_remote_membership(
        &self,
        room: &RoomId,
        user: &ruma::UserId,
        event_id: &EventId,
        object: &CanonicalJsonObject,
        membership: &str,
    ) -> Result<()> {
        let json = serde_json::to_vec(object).map_err(|e| Error::Internal(e.to_string()))?;
        let tables = &self.db.tables;
        let durable = self.writer.submit(&self.db, |batch, pos| {
            tables.rooms.eventid_pdu.insert(batch, &event_id.to_owned(), &json);
            tables.rooms.eventid_outlier.insert(
                batch,
                &event_id.to_owned(),
                &Json(OutlierMeta { room_id: room.to_owned(), rejected: false, soft_failed: false, state_after: None }),
            );
            let record = Json(super::MembershipRecord {
                membership: membership.to_owned(),
                event_id: event_id.to_owned(),
                pos,
                joined_since: None,
            });
            tables.rooms.useridroomid_membership.insert(batch, &(user.to_owned(), room.to_owned()), &record);
            Ok(crate::stream::Cleanup { wake: crate::stream::Audience::User(user.to_owned()), ..Default::default() })
        })?;
        wait_durable(durable).await
    }

    /// Timeline entries of a room before `pos` (exclusive), newest first, at most `max`.
    pub fn timeline_before(&self, room: &RoomId, pos: u64, max: usize) -> Result<Vec<(u64, OwnedEventId)>> {
        use crate::db::codec::{prefix, Be64, Codec};
        let start = (room.to_owned(), Be64(pos.saturating_sub(1))).encode();
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.roomidpos_eventid.scan_from(prefix(&room.to_owned()), start, false) {
            let ((_, Be64(p)), id) = entry?;
            if p >= pos {
                continue;
            }
            out.push((p, id));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The room a stored event belongs to (timeline or outlier).
    pub fn room_of_event(&self, event: &EventId) -> Result<Option<OwnedRoomId>> {
        if let Some(meta) = self.meta(event)? {
            return Ok(Some(meta.room_id));
        }
        Ok(self.outlier(event)?.map(|o| o.room_id))
    }

    /// The state before an event as `(type, state_key) → event id`, for `/state_ids` and
    /// `/state`: the state after its prev events in their DAG branch (for a timeline event or a
    /// soft-failed one, which other servers may hold in their timelines).
    pub fn state_before_event(&self, event: &EventId) -> Result<Option<Vec<OwnedEventId>>> {
        let Some(pdu) = self.pdu(event)? else { return Ok(None) };
        let (Some(snapshot), Some(room)) = (self.dag_state_of(event)?, self.room_of_event(event)?) else {
            return Ok(None);
        };
        let mut after = (*self.state.load(snapshot)?).clone();
        if let Some(key) = &pdu.state_key {
            // The state after a state event holds the event itself; before it, what it replaced.
            let short = self.state.intern(&pdu.kind.to_string().into(), key)?;
            let room = self.room(&room)?;
            let version = room.map(|r| r.version).unwrap_or(RoomVersionId::V10);
            match self.state_before(&version, &pdu)? {
                Some((_, before)) => after = before,
                None => {
                    after.remove(&short);
                }
            }
        }
        Ok(Some(after.into_values().collect()))
    }
}

/// The events of `events` that are ancestors of `frontier` through `prev_events`: the history a
/// server answers is taken only where events we hold name it. Event ids are hashes of the events
/// (room version 3 and later), so a server cannot make up "older history" that way; events of
/// another branch or of nothing are dropped.
pub fn ancestors_of(
    frontier: Vec<OwnedEventId>,
    events: &[(OwnedEventId, CanonicalJsonObject)],
) -> Vec<(OwnedEventId, CanonicalJsonObject)> {
    let by_id: HashMap<&OwnedEventId, &CanonicalJsonObject> = events.iter().map(|(id, o)| (id, o)).collect();
    let mut wanted: Vec<OwnedEventId> = frontier;
    let mut taken: HashSet<OwnedEventId> = HashSet::new();
    let mut out = Vec::new();
    while let Some(id) = wanted.pop() {
        if taken.contains(&id) {
            continue;
        }
        let Some(object) = by_id.get(&id) else { continue };
        taken.insert(id.clone());
        wanted.extend(event_ids_in(object, "prev_events"));
        out.push((id, (*object).clone()));
    }
    let dropped = events.len().saturating_sub(out.len());
    if dropped > 0 {
        tracing::info!(dropped, "events of a history answer that no held event leads to are dropped");
    }
    out
}

/// The events of `start` and their auth events, recursively, as `auth_of` gives them.
fn auth_closure<'a>(
    start: impl Iterator<Item = &'a OwnedEventId>,
    auth_of: &dyn Fn(&EventId) -> Option<Vec<OwnedEventId>>,
) -> HashSet<OwnedEventId> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut todo: Vec<OwnedEventId> = start.cloned().collect();
    while let Some(id) = todo.pop() {
        if seen.contains(&id) {
            continue;
        }
        if let Some(auth) = auth_of(&id) {
            todo.extend(auth.into_iter().filter(|a| !seen.contains(a)));
        }
        seen.insert(id);
    }
    seen
}

/// Snapshot ids sorted, without duplicates: a key of the resolution cache.
fn sorted_set(ids: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut ids: Vec<u64> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Events ordered so that each comes after its prev events that are among them (Kahn's
/// algorithm; ties by depth then id, so the order does not depend on how a server listed them).
/// Event ids are hashes, so an honest batch has no cycle; events on one are left out.
fn causal_order(events: &[(OwnedEventId, CanonicalJsonObject)]) -> Vec<&(OwnedEventId, CanonicalJsonObject)> {
    let mut seen = HashSet::new();
    let events: Vec<&(OwnedEventId, CanonicalJsonObject)> = events.iter().filter(|(id, _)| seen.insert(id)).collect();
    let index: HashMap<&OwnedEventId, usize> = events.iter().enumerate().map(|(i, (id, _))| (id, i)).collect();
    let mut waiting = vec![0usize; events.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    for (i, (_, object)) in events.iter().enumerate() {
        let mut prevs = event_ids_in(object, "prev_events");
        prevs.sort();
        prevs.dedup();
        for prev in prevs {
            if let Some(&j) = index.get(&prev) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let depth = |i: usize| events[i].1.get("depth").and_then(|d| d.as_integer()).map(i64::from).unwrap_or(0);
    let mut ready: std::collections::BTreeSet<(i64, &OwnedEventId, usize)> =
        (0..events.len()).filter(|i| waiting[*i] == 0).map(|i| (depth(i), &events[i].0, i)).collect();
    let mut out = Vec::with_capacity(events.len());
    while let Some(next) = ready.pop_first() {
        let i = next.2;
        out.push(events[i]);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert((depth(d), &events[d].0, d));
            }
        }
    }
    out
}

/// Events ordered so that each comes after the auth events of it that are among them (a
/// topological order of the auth graph, shallowest auth first); events on a cycle, which no
/// honest room has, come last and fail their checks.
fn auth_first<'a>(
    events: impl Iterator<Item = &'a (OwnedEventId, CanonicalJsonObject)>,
) -> Vec<&'a (OwnedEventId, CanonicalJsonObject)> {
    let mut seen = HashSet::new();
    let events: Vec<&(OwnedEventId, CanonicalJsonObject)> = events.filter(|(id, _)| seen.insert(id.clone())).collect();
    let index: HashMap<&OwnedEventId, usize> = events.iter().enumerate().map(|(i, (id, _))| (id, i)).collect();
    let mut waiting = vec![0usize; events.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    for (i, (_, object)) in events.iter().enumerate() {
        let mut auths = event_ids_in(object, "auth_events");
        auths.sort();
        auths.dedup();
        for auth in auths {
            if let Some(&j) = index.get(&auth) {
                if j != i {
                    waiting[i] += 1;
                    dependents[j].push(i);
                }
            }
        }
    }
    // Create events first: room version 12 events do not list the create event among their
    // auth events, yet every check needs it.
    let mut ready: Vec<usize> = (0..events.len()).filter(|i| waiting[*i] == 0).collect();
    ready.sort_by_key(|i| events[*i].1.get("type").and_then(|t| t.as_str()) == Some("m.room.create"));
    let mut placed = vec![false; events.len()];
    let mut out = Vec::with_capacity(events.len());
    while let Some(i) = ready.pop() {
        if std::mem::replace(&mut placed[i], true) {
            continue;
        }
        out.push(events[i]);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    out.extend(events.iter().enumerate().filter(|(i, _)| !placed[*i]).map(|(_, e)| *e));
    out
}

fn parse(object: &CanonicalJsonObject) -> Result<Pdu> {
    let json = serde_json::to_vec(object).map_err(|e| Error::Internal(e.to_string()))?;
    let placeholder = OwnedEventId::try_from("$placeholder").map_err(|e| Error::Internal(e.to_string()))?;
    Pdu::from_json(placeholder, &json).map_err(|e| Error::BadJson(format!("not a valid PDU: {e}")))
}

/// The event ids a PDU lists under `field` (`prev_events`, `auth_events`): plain ids, or the
/// `[id, hashes]` pairs of room versions 1 and 2.
pub fn event_ids_in(object: &CanonicalJsonObject, field: &str) -> Vec<OwnedEventId> {
    let Some(ruma::CanonicalJsonValue::Array(items)) = object.get(field) else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            ruma::CanonicalJsonValue::String(s) => OwnedEventId::try_from(s.as_str()).ok(),
            ruma::CanonicalJsonValue::Array(pair) => {
                pair.first()?.as_str().and_then(|s| OwnedEventId::try_from(s).ok())
            }
            _ => None,
        })
        .collect()
}
