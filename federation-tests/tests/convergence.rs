//! Every node of a room agrees on its state once each has every event, without waiting for a
//! later event to merge the branches. Forks are made for certain (one node down while the other
//! changes state, then the other way round), not hoped for from timing. Agreement alone would
//! not do (every node could be wrong the same way): each node's state is also compared with one
//! state resolution the test computes itself, with ruma's algorithm, over the union of every
//! node's events read as PDUs over federation.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use hemicycle::{db::Database, server_keys::ServerKeys};
use hemicycle_federation_tests::{enc, shared_room, Node, Rng, SYNC_WAIT};
use reqwest::Method;
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet, StateMap},
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomId, RoomVersionId, UserId,
};
use serde_json::{json, value::RawValue, Value};

/// A room's current state as `(type, state_key) → event id`.
fn state_map(events: &[Value]) -> BTreeMap<(String, String), String> {
    events
        .iter()
        .map(|e| {
            let key = (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
            );
            (key, e["event_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Reads a room's events as servers exchange them — whole PDUs with their prev and auth events,
/// which the client API does not show — over the federation API of every node (Synapse's too),
/// signing as one Hemicycle node of the run, whose key the test reads from its database while
/// it is stopped: a server in the room may read its events.
struct Signer {
    origin: String,
    keys: ServerKeys,
    http: reqwest::Client,
}

impl Signer {
    /// Stops `node`, reads its signing key, starts it again (no event is sent).
    async fn of(node: &mut Node) -> Signer {
        let origin = node.server_name();
        node.stop().await;
        let keys = {
            let db = Arc::new(Database::open(&node.dir().join("db")).expect("the node's database"));
            let name = OwnedServerName::try_from(origin.as_str()).expect("a server name");
            ServerKeys::load_or_generate(&db, name).expect("the node's signing key")
        };
        node.restart().await;
        let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("HTTP client");
        Signer { origin, keys, http }
    }

    /// A signed federation request to `node`; answers the status and the JSON body.
    async fn call(&self, node: &Node, method: Method, uri: &str, body: Option<&Value>) -> (u16, Value) {
        let destination = node.server_name();
        let mut request =
            json!({ "method": method.as_str(), "uri": uri, "origin": self.origin, "destination": destination });
        if let Some(body) = body {
            request["content"] = body.clone();
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(request).expect("canonical JSON");
        self.keys.sign_json(&mut object).expect("sign the request");
        let signatures = serde_json::to_value(&object["signatures"]).expect("signatures");
        let sig = signatures[&self.origin][&self.keys.key_id()].as_str().expect("our signature").to_owned();
        let auth = format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"{}\",sig=\"{sig}\"",
            self.origin,
            self.keys.key_id()
        );
        let mut request =
            self.http.request(method, format!("{}{uri}", node.federation_url())).header("Authorization", auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{} {uri}: {e}", node.server_name()));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// One PDU as `node` serves it (`GET /event`), if it holds it.
    async fn pdu(&self, node: &Node, id: &str) -> Option<Value> {
        let (status, answer) =
            self.call(node, Method::GET, &format!("/_matrix/federation/v1/event/{}", enc(id)), None).await;
        (status == 200).then(|| answer["pdus"][0].clone())
    }
}

/// A PDU as the test reads it: what the authorization rules and state resolution look at,
/// parsed here rather than by the server's code, so that the check does not share its mistakes.
#[derive(Debug)]
struct Pdu {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    /// Failed the authorization rules against its auth events or the state before it.
    rejected: bool,
}

impl Pdu {
    /// Parses a PDU and checks that `id` is its reference hash (no node can answer another event).
    fn parse(id: &str, value: &Value, rules: &RoomVersionRules) -> Pdu {
        let object: CanonicalJsonObject = serde_json::from_value(value.clone()).expect("a PDU is canonical JSON");
        let hash = ruma::signatures::reference_hash(&object, rules).expect("reference hash");
        assert_eq!(format!("${hash}"), id, "the PDU served for {id} is another event: {value}");
        let ids = |field: &str| -> Vec<OwnedEventId> {
            let list = value[field].as_array().unwrap_or_else(|| panic!("{id}: no {field}"));
            list.iter()
                .map(|e| OwnedEventId::try_from(e.as_str().expect("an event id")).expect("an event id"))
                .collect()
        };
        Pdu {
            event_id: OwnedEventId::try_from(id).expect("an event id"),
            room_id: value["room_id"].as_str().map(|r| OwnedRoomId::try_from(r).expect("a room id")),
            sender: OwnedUserId::try_from(value["sender"].as_str().expect("a sender")).expect("a user id"),
            origin_server_ts: serde_json::from_value(value["origin_server_ts"].clone()).expect("a timestamp"),
            kind: TimelineEventType::from(value["type"].as_str().expect("a type")),
            content: serde_json::value::to_raw_value(&value["content"]).expect("content"),
            state_key: value["state_key"].as_str().map(str::to_owned),
            prev_events: ids("prev_events"),
            auth_events: ids("auth_events"),
            redacts: value["redacts"].as_str().map(|r| OwnedEventId::try_from(r).expect("an event id")),
            rejected: false,
        }
    }

    fn key(&self) -> Option<(StateEventType, String)> {
        self.state_key.as_ref().map(|k| (StateEventType::from(self.kind.to_string()), k.clone()))
    }
}

impl state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&OwnedEventId> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

type Events = HashMap<OwnedEventId, Pdu>;

/// Every event of the room that any node holds: the seeds (each node's timeline, newest to
/// oldest through `/messages`, and its current state), then, recursively, every prev and auth
/// event they name, each read from the first node that serves it.
async fn union_of_events(signer: &Signer, nodes: &[(&Node, &str)], room: &str, rules: &RoomVersionRules) -> Events {
    let mut todo: Vec<String> = Vec::new();
    for (node, token) in nodes {
        let mut from: Option<String> = None;
        loop {
            let page = node.messages(token, room, "b", from.as_deref(), 500).await;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            todo.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        todo.extend(node.get_state(token, room).await.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
    }
    let mut events = Events::new();
    let mut seen = HashSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let mut found = None;
        for (node, _) in nodes {
            if let Some(pdu) = signer.pdu(node, &id).await {
                found = Some(pdu);
                break;
            }
        }
        let value = found.unwrap_or_else(|| panic!("no node serves {id}"));
        let pdu = Pdu::parse(&id, &value, rules);
        todo.extend(pdu.prev_events.iter().chain(&pdu.auth_events).map(|e| e.to_string()));
        events.insert(pdu.event_id.clone(), pdu);
    }
    events
}

/// The events of `ids` and, recursively, their auth events (a state's "full auth chain", the
/// state's own events included, as Synapse computes the auth difference).
fn auth_closure<'a>(events: &'a Events, ids: impl IntoIterator<Item = &'a OwnedEventId>) -> HashSet<&'a OwnedEventId> {
    let mut seen = HashSet::new();
    let mut todo: Vec<&OwnedEventId> = ids.into_iter().collect();
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            if let Some(pdu) = events.get(id) {
                todo.extend(pdu.auth_events.iter());
            }
        }
    }
    seen
}

/// The spec's conflicted state subgraph (state resolution v2.1): the events that are both an
/// auth ancestor of a conflicted event and an auth descendant of one, the conflicted events
/// themselves included.
fn conflicted_subgraph(events: &Events, conflicted: &StateMap<Vec<OwnedEventId>>) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    let ancestors = auth_closure(events, conflicted.iter().copied());
    fn reaches<'a>(
        id: &'a OwnedEventId,
        events: &'a Events,
        conflicted: &HashSet<&OwnedEventId>,
        memo: &mut HashMap<&'a OwnedEventId, bool>,
    ) -> bool {
        if let Some(known) = memo.get(id) {
            return *known;
        }
        memo.insert(id, false);
        let auth = events.get(id).map(|p| p.auth_events.as_slice()).unwrap_or_default();
        let found = auth.iter().any(|a| conflicted.contains(a) || reaches(a, events, conflicted, memo));
        memo.insert(id, found);
        found
    }
    let mut memo = HashMap::new();
    let mut set = EventIdSet::new();
    for id in ancestors {
        if conflicted.contains(id) || reaches(id, events, &conflicted, &mut memo) {
            set.insert(id.clone());
        }
    }
    set
}

/// State resolution (the room version's algorithm, ruma's implementation) of `states`.
fn resolve(rules: &RoomVersionRules, events: &Events, states: &[&StateMap<OwnedEventId>]) -> StateMap<OwnedEventId> {
    let mut distinct: Vec<&StateMap<OwnedEventId>> = Vec::new();
    for state in states {
        if !distinct.contains(state) {
            distinct.push(state);
        }
    }
    if distinct.len() == 1 {
        return distinct[0].clone();
    }
    let chains = distinct
        .iter()
        .map(|state| {
            let mut set = EventIdSet::new();
            for id in auth_closure(events, state.values()) {
                set.insert(id.clone());
            }
            set
        })
        .collect();
    let v2 = rules.state_res.v2_rules().expect("a room version with state resolution v2");
    state_res::resolve(
        &rules.authorization,
        v2,
        distinct.iter().copied(),
        chains,
        |id: &EventId| events.get(id),
        |conflicted: &StateMap<Vec<OwnedEventId>>| Some(conflicted_subgraph(events, conflicted)),
    )
    .expect("state resolution")
}

/// Whether `pdu` passes the authorization rules against its own auth events and against the
/// state before it (the checks on receipt of a PDU that reject an event).
fn authorize(
    rules: &RoomVersionRules,
    events: &Events,
    pdu: &Pdu,
    before: &StateMap<OwnedEventId>,
) -> Result<(), String> {
    let rules = &rules.authorization;
    state_res::check_state_independent_auth_rules(rules, pdu, |id: &EventId| events.get(id))?;
    let mut own: HashMap<(StateEventType, String), &Pdu> = HashMap::new();
    for auth in pdu.auth_events.iter().filter_map(|id| events.get(id)) {
        if let Some(key) = auth.key() {
            own.insert(key, auth);
        }
    }
    // Room version 12 events do not list the create event, whose id the room id carries.
    if let (true, Some(room)) = (rules.room_create_event_id_as_room_id, &pdu.room_id) {
        let create = OwnedEventId::try_from(format!("${}", &room.as_str()[1..])).expect("a create event id");
        if let Some(create) = events.get(&create) {
            own.insert((StateEventType::RoomCreate, String::new()), create);
        }
    }
    state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &StateEventType, key: &str| {
        own.get(&(kind.clone(), key.to_owned())).copied()
    })?;
    state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &StateEventType, key: &str| {
        before.get(&(kind.clone(), key.to_owned())).and_then(|id| events.get(id))
    })
}

/// The room's state computed from its DAG alone, as the spec defines it: walking from the create
/// event (each event after its prev and auth events), the state before an event is the
/// resolution of the states after its prev events; an event that fails the authorization rules
/// is rejected (the state after it is the state before it), a state event that passes is added;
/// the room's state is the resolution of the states after its forward extremities (the events no
/// accepted event names as a prev event). Answers that state and the number of rejected events.
fn dag_state(rules: &RoomVersionRules, events: &mut Events) -> (BTreeMap<(String, String), String>, usize) {
    // Kahn's algorithm over prev and auth edges.
    let mut waiting: HashMap<OwnedEventId, usize> = HashMap::new();
    let mut children: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    for (id, pdu) in events.iter() {
        let parents: HashSet<&OwnedEventId> = pdu.prev_events.iter().chain(&pdu.auth_events).collect();
        for parent in &parents {
            assert!(events.contains_key(*parent), "{id} names {parent}, which no node holds");
            children.entry((*parent).clone()).or_default().push(id.clone());
        }
        waiting.insert(id.clone(), parents.len());
    }
    let mut ready: Vec<OwnedEventId> = waiting.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id.clone()).collect();
    let mut after: HashMap<OwnedEventId, Arc<StateMap<OwnedEventId>>> = HashMap::new();
    let mut rejected = 0;
    while let Some(id) = ready.pop() {
        let pdu = &events[&id];
        let prev_states: Vec<&StateMap<OwnedEventId>> = pdu.prev_events.iter().map(|p| &*after[p]).collect();
        let before = match prev_states.len() {
            0 => StateMap::new(),
            1 => prev_states[0].clone(),
            _ => resolve(rules, events, &prev_states),
        };
        let verdict = authorize(rules, events, pdu, &before);
        let mut state = before;
        match verdict {
            Ok(()) => {
                if let Some(key) = pdu.key() {
                    state.insert(key, id.clone());
                }
            }
            Err(reason) => {
                println!("rejected {id}: {reason}");
                rejected += 1;
                events.get_mut(&id).expect("held").rejected = true;
            }
        }
        after.insert(id.clone(), Arc::new(state));
        for child in children.remove(&id).unwrap_or_default() {
            let n = waiting.get_mut(&child).expect("counted");
            *n -= 1;
            if *n == 0 {
                ready.push(child);
            }
        }
    }
    assert_eq!(after.len(), events.len(), "the events' prev and auth edges have a cycle");
    let named: HashSet<&OwnedEventId> =
        events.values().filter(|p| !p.rejected).flat_map(|p| p.prev_events.iter()).collect();
    let extremities: Vec<&StateMap<OwnedEventId>> =
        events.values().filter(|p| !p.rejected && !named.contains(&p.event_id)).map(|p| &*after[&p.event_id]).collect();
    let state = resolve(rules, events, &extremities);
    let state = state.into_iter().map(|((kind, key), id)| ((kind.to_string(), key), id.to_string())).collect();
    (state, rejected)
}

/// Asserts that each node's current state (`states`, in the order of `nodes`) is the state of
/// the room's DAG over the union of every node's events ([`dag_state`]).
async fn assert_dag_state(
    signer: &Signer,
    nodes: &[(&Node, &str)],
    room: &str,
    states: &[BTreeMap<(String, String), String>],
    context: &str,
) {
    let create = nodes[0].0.state_event(nodes[0].1, room, "m.room.create", "").await;
    let version = RoomVersionId::try_from(create["room_version"].as_str().unwrap_or("1")).expect("a room version");
    let rules = version.rules().expect("known room version rules");
    let mut events = union_of_events(signer, nodes, room, &rules).await;
    let count = events.len();
    let (expected, rejected) = dag_state(&rules, &mut events);
    for ((node, _), state) in nodes.iter().zip(states) {
        let diff: Vec<_> = expected
            .iter()
            .filter(|(k, v)| state.get(*k) != Some(*v))
            .map(|(k, v)| (k, Some(v), state.get(k)))
            .chain(state.iter().filter(|(k, _)| !expected.contains_key(*k)).map(|(k, v)| (k, None, Some(v))))
            .collect();
        assert!(
            diff.is_empty(),
            "{context}: {}'s state is not the resolution over the union of {count} events \
             ((key, expected, found)): {diff:?}",
            node.server_name()
        );
    }
    println!("{count} events ({rejected} rejected): every node's state is the DAG's");
}

#[tokio::test]
async fn a_fork_is_resolved_on_both_sides_without_a_later_event() {
    let (mut a, mut b) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]));
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;
    let (a_since, b_since) = (a.sync_token(&at).await, b.sync_token(&bt).await);

    // A changes the topic while B is down; then B renames bob while A is down: two branches.
    b.kill().await;
    let topic = a.put_state(&at, &room, "m.room.topic", "", json!({ "topic": "ordre du jour" })).await;
    a.kill().await;
    b.restart().await;
    let mut member = b.state_event(&bt, &room, "m.room.member", &bob).await;
    member["displayname"] = json!("Bob (DINUM)");
    let renamed = b.put_state(&bt, &room, "m.room.member", &bob, member).await;
    a.restart().await;

    // Each receives the other's branch; nothing else is sent.
    a.wait_for_timeline(&at, &room, Some(&a_since), |e| e["event_id"] == renamed.as_str(), SYNC_WAIT).await;
    b.wait_for_timeline(&bt, &room, Some(&b_since), |e| e["event_id"] == topic.as_str(), SYNC_WAIT).await;
    let state_a = state_map(&a.get_state(&at, &room).await);
    let state_b = state_map(&b.get_state(&bt, &room).await);
    let topic_key = ("m.room.topic".to_owned(), String::new());
    let member_key = ("m.room.member".to_owned(), bob.clone());
    assert_eq!(state_a.get(&topic_key), Some(&topic), "A keeps its topic: {state_a:?}");
    assert_eq!(state_a.get(&member_key), Some(&renamed), "A has bob's new name: {state_a:?}");
    assert_eq!(state_b.get(&topic_key), Some(&topic), "B has the topic: {state_b:?}");
    assert_eq!(state_b.get(&member_key), Some(&renamed), "B keeps bob's new name: {state_b:?}");
    assert_eq!(state_a, state_b, "the same state on both nodes");
    let signer = Signer::of(&mut b).await;
    assert_dag_state(&signer, &[(&a, &at), (&b, &bt)], &room, &[state_a, state_b], "the forced fork").await;
}

/// One node of the run and its users: an admin (power 100, never leaves), a member who renames
/// herself, leaves and comes back, and a "victim" who only ever is banned and unbanned by others
/// (so no right is taken away concurrently with its use, as the spec's soft-fail case needs).
struct Site {
    node: Node,
    admin: (String, String),
    member: (String, String),
    member_joined: bool,
}

/// A change a node's users make in one round.
#[derive(Debug, Clone)]
enum Change {
    Name(String),
    Topic(String),
    Custom(String, String),
    Displayname(String),
    MemberLeaves,
    MemberJoins,
    /// Power level 1–49 (a level nothing needs) for a user: only the first node's admin does this,
    /// so concurrent power level events never take a level away from someone using it.
    Cosmetic(String, u64),
    Ban(String),
    Unban(String),
}

fn pick_change(rng: &mut Rng, member_joined: bool, first: bool, victims: &[String], all_users: &[String]) -> Change {
    let word = |rng: &mut Rng| format!("v{}", rng.below(1000));
    loop {
        return match rng.below(9) {
            0 => Change::Name(word(rng)),
            1 => Change::Topic(word(rng)),
            2 => Change::Custom(format!("k{}", rng.below(3)), word(rng)),
            3 if member_joined => Change::Displayname(word(rng)),
            4 if member_joined => Change::MemberLeaves,
            5 if !member_joined => Change::MemberJoins,
            6 if first => Change::Cosmetic(all_users[rng.below(all_users.len())].clone(), 1 + rng.below(49) as u64),
            7 => Change::Ban(victims[rng.below(victims.len())].clone()),
            8 => Change::Unban(victims[rng.below(victims.len())].clone()),
            _ => continue,
        };
    }
}

/// Applies a change; returns the event it made, if the server took it (a ban of someone banned
/// already, say, is refused and makes none).
async fn apply(site: &mut Site, room: &str, change: &Change) -> Option<String> {
    let (admin_token, member_token) = (site.admin.1.clone(), site.member.1.clone());
    let node = &site.node;
    let put = |kind: &str, key: &str, content: Value, token: String| {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(kind), enc(key));
        async move { node.call(Method::PUT, Some(&token), &path, Some(&content)).await }
    };
    let (status, answer) = match change {
        Change::Name(name) => put("m.room.name", "", json!({ "name": name }), admin_token).await,
        Change::Topic(topic) => put("m.room.topic", "", json!({ "topic": topic }), admin_token).await,
        Change::Custom(key, value) => {
            put("org.hemicycle.convergence", key, json!({ "value": value }), admin_token).await
        }
        Change::Displayname(name) => {
            let content = json!({ "membership": "join", "displayname": name });
            put("m.room.member", &site.member.0, content, member_token).await
        }
        Change::MemberLeaves => node.room_action(&member_token, room, "leave", json!({})).await,
        Change::MemberJoins => node.try_join(&member_token, room, &[]).await,
        Change::Cosmetic(user, level) => {
            let mut levels = node.state_event(&admin_token, room, "m.room.power_levels", "").await;
            if levels["users"][user].as_u64().is_some_and(|l| l >= 50) {
                return None;
            }
            levels["users"][user] = json!(level);
            put("m.room.power_levels", "", levels, admin_token).await
        }
        Change::Ban(user) => node.room_action(&admin_token, room, "ban", json!({ "user_id": user })).await,
        Change::Unban(user) => node.room_action(&admin_token, room, "unban", json!({ "user_id": user })).await,
    };
    match change {
        Change::MemberLeaves if status == 200 => site.member_joined = false,
        Change::MemberJoins if status == 200 => site.member_joined = true,
        _ => {}
    }
    if status != 200 {
        return None;
    }
    // Membership actions answer no event id: the member event is read back.
    match answer["event_id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => {
            let target = match change {
                Change::Ban(u) | Change::Unban(u) => u.clone(),
                _ => site.member.0.clone(),
            };
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(&target));
            let (_, event) = node.call(Method::GET, Some(&site.admin.1), &format!("{path}?format=event"), None).await;
            event["event_id"].as_str().map(str::to_owned)
        }
    }
}

/// Waits until `site`'s node holds every event of `events` (see [`wait_for_events`]).
async fn wait_for_all(site: &Site, room: &str, events: &[String], limit: std::time::Duration) {
    wait_for_events(&site.node, &site.admin.1, room, events, limit).await;
}

/// Waits until `node` shows every event of `events` to the holder of `token`: each missing event
/// is waited for on a `/sync` long-poll (which returns as soon as anything arrives), up to
/// `limit` in all.
async fn wait_for_events(node: &Node, token: &str, room: &str, events: &[String], limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut since = node.sync_token(token).await;
    for id in events {
        loop {
            let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id));
            let (status, _) = node.call(Method::GET, Some(token), &path, None).await;
            if status == 200 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}: {id} never arrived", node.server_name());
            let sync = node.sync(token, Some(&since), 5_000).await;
            since = hemicycle_federation_tests::next_batch(&sync);
        }
    }
}

/// A node back from a cut asks every other node for its room directory: a signed request that
/// tells them it is up (servers then send what they held for it at once instead of after their
/// backoff, Synapse's 10 minutes among them). No event is sent.
async fn hello(node: &Node, token: &str, others: &[&Node]) {
    for other in others {
        let path = format!("/_matrix/client/v3/publicRooms?server={}", enc(&other.server_name()));
        let (status, answer) = node.call(Method::GET, Some(token), &path, None).await;
        assert_eq!(status, 200, "{} asks {}: {answer}", node.server_name(), other.server_name());
    }
}

/// [`hello`] from the node of `sites[back]` to all the others.
async fn say_hello(sites: &[Site], back: usize) {
    let others: Vec<&Node> = sites.iter().enumerate().filter(|(i, _)| *i != back).map(|(_, s)| &s.node).collect();
    hello(&sites[back].node, &sites[back].admin.1, &others).await;
}

/// Rounds of concurrent state changes on three nodes (the third a Synapse when `synapse`), with a
/// random node cut off (killed, its queue held by the others) during some rounds; then every
/// node's `/state` must be the same, event for event, with no event sent to merge the branches.
async fn converge(synapse: bool, default_rounds: usize) {
    let seed: u64 = std::env::var("CONVERGENCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos() as u64
    });
    let rounds: usize = std::env::var("CONVERGENCE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_rounds);
    println!("CONVERGENCE_SEED={seed} CONVERGENCE_ROUNDS={rounds}");
    let mut rng = Rng(seed | 1);
    let third = async {
        if synapse {
            Node::start_synapse("c").await
        } else {
            Node::start("c", &[]).await
        }
    };
    let (a, b, c) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]), third);
    let mut sites = Vec::new();
    for node in [a, b, c] {
        let admin = node.register("admin").await;
        let member = node.register("member").await;
        let victim = node.register("victim").await;
        sites.push((node, admin, member, victim));
    }
    let (a_admin, a_token) = (sites[0].1 .0.clone(), sites[0].1 .1.clone());
    let room = sites[0].0.create_room(&a_token, json!({ "preset": "public_chat" })).await;
    let a_server = sites[0].0.server_name();
    let mut all_users = Vec::new();
    for (i, (node, admin, member, victim)) in sites.iter().enumerate() {
        for (user, token) in [admin, member, victim] {
            if i > 0 || user != &a_admin {
                node.join(token, &room, std::slice::from_ref(&a_server)).await;
            }
            all_users.push(user.clone());
        }
    }
    // Every node's admin gets power 100 (from A's admin, before any fork).
    let mut levels = sites[0].0.state_event(&a_token, &room, "m.room.power_levels", "").await;
    // (In room version 12 the creator's level is above every level and may not be listed.)
    for (_, admin, _, _) in sites.iter().skip(1) {
        levels["users"][&admin.0] = json!(100);
    }
    all_users.retain(|u| *u != a_admin);
    let promoted = sites[0].0.put_state(&a_token, &room, "m.room.power_levels", "", levels).await;
    let victims: Vec<String> = sites.iter().map(|(_, _, _, v)| v.0.clone()).collect();
    let mut sites: Vec<Site> =
        sites.into_iter().map(|(node, admin, member, _)| Site { node, admin, member, member_joined: true }).collect();
    let made = vec![promoted];
    for site in &sites {
        wait_for_all(site, &room, &made, SYNC_WAIT).await;
    }

    let mut changes = 0;
    for round in 0..rounds {
        // Sometimes one node is cut off for the round: the others queue for it, it queues for them.
        let cut = (rng.below(3) == 0).then(|| rng.below(sites.len()));
        if let Some(i) = cut {
            sites[i].node.kill().await;
        }
        let plans: Vec<Vec<Change>> = sites
            .iter()
            .enumerate()
            .map(|(i, site)| {
                if Some(i) == cut {
                    return Vec::new();
                }
                let mut member_joined = site.member_joined;
                let mut plan = Vec::new();
                for _ in 0..=rng.below(3) {
                    let change = pick_change(&mut rng, member_joined, i == 0, &victims, &all_users);
                    match change {
                        Change::MemberLeaves => member_joined = false,
                        Change::MemberJoins => member_joined = true,
                        _ => {}
                    }
                    plan.push(change);
                }
                plan
            })
            .collect();
        println!("round {round}: cut {cut:?}, changes {plans:?}");
        let results = futures::future::join_all(sites.iter_mut().zip(&plans).map(|(site, plan)| {
            let room = room.clone();
            async move {
                let mut out = Vec::new();
                for change in plan {
                    let made = apply(site, &room, change).await;
                    println!("  {}: {change:?} -> {made:?}", site.node.server_name());
                    out.extend(made);
                }
                out
            }
        }))
        .await;
        changes += results.iter().map(Vec::len).sum::<usize>();
        if let Some(i) = cut {
            sites[i].node.restart().await;
            say_hello(&sites, i).await;
        }
    }

    // Quiescence: the nodes agree and nothing more arrives anywhere for a while. An event may
    // reach a node only as an outlier (fetched as part of a state, as Synapse does too), so
    // "every node shows every event" is no barrier; agreement on the state is the property.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut tokens = Vec::new();
    for site in &sites {
        tokens.push(site.node.sync_token(&site.admin.1).await);
    }
    let states = loop {
        let states: Vec<BTreeMap<(String, String), String>> = futures::future::join_all(
            sites.iter().map(|site| async { state_map(&site.node.get_state(&site.admin.1, &room).await) }),
        )
        .await;
        let agree = states.iter().all(|s| *s == states[0]);
        let mut quiet = true;
        for (site, token) in sites.iter().zip(tokens.iter_mut()) {
            let wait = if agree { 3_000 } else { 5_000 };
            let sync = site.node.sync(&site.admin.1, Some(token), wait).await;
            let next = hemicycle_federation_tests::next_batch(&sync);
            quiet &= sync["rooms"]["join"][&room]["timeline"]["events"].as_array().is_none_or(Vec::is_empty)
                && sync["rooms"]["join"][&room]["state"]["events"].as_array().is_none_or(Vec::is_empty);
            *token = next;
        }
        if (agree && quiet) || tokio::time::Instant::now() > deadline {
            break states;
        }
    };
    for (site, state) in sites.iter().zip(&states).skip(1) {
        let diff: Vec<_> = state
            .iter()
            .filter(|(k, v)| states[0].get(*k) != Some(*v))
            .chain(states[0].iter().filter(|(k, _)| !state.contains_key(*k)))
            .collect();
        assert!(
            diff.is_empty(),
            "seed {seed}: {} and {} disagree after {rounds} rounds ({changes} changes): {diff:?}",
            sites[0].node.server_name(),
            site.node.server_name()
        );
    }
    // Agreement is not enough: every node must hold the one state the DAG of all events gives.
    let signer = Signer::of(&mut sites[1].node).await;
    let nodes: Vec<(&Node, &str)> = sites.iter().map(|s| (&s.node, s.admin.1.as_str())).collect();
    assert_dag_state(&signer, &nodes, &room, &states, &format!("seed {seed}")).await;
    println!("converged: seed {seed}, {rounds} rounds, {changes} changes, {} nodes, divergences: 0", sites.len());
}

#[tokio::test]
async fn random_concurrent_state_changes_converge_on_three_nodes() {
    converge(false, 6).await;
}

#[tokio::test]
async fn random_concurrent_state_changes_converge_with_synapse_among_them() {
    converge(true, 4).await;
}

/// The id of the current member event of `user` (membership actions answer no event id).
async fn member_event_id(node: &Node, token: &str, room: &str, user: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}?format=event", enc(room), enc(user));
    let event = node.get(token, &path).await;
    event["event_id"].as_str().unwrap_or_else(|| panic!("no event id in {event}")).to_owned()
}

/// Every event id of the room's timeline as `node` shows it (`/messages`, newest to oldest).
async fn timeline_ids(node: &Node, token: &str, room: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut from: Option<String> = None;
    loop {
        let page = node.messages(token, room, "b", from.as_deref(), 500).await;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        ids.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids
}

/// The prev events of a join template (`make_join`) from `node`: the forward extremities its
/// next event would be built on.
async fn template_prev_events(signer: &Signer, node: &Node, room: &str) -> Vec<String> {
    let user = format!("@newcomer:{}", signer.origin);
    let uri = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", enc(room), enc(&user));
    let (status, answer) = signer.call(node, Method::GET, &uri, None).await;
    assert_eq!(status, 200, "{}: make_join: {answer}", node.server_name());
    let mut prev: Vec<String> = answer["event"]["prev_events"]
        .as_array()
        .unwrap_or_else(|| panic!("no prev_events in {answer}"))
        .iter()
        .map(|e| e.as_str().expect("an event id").to_owned())
        .collect();
    prev.sort();
    prev
}

/// The spec's soft failure, beside Synapse. Mallory is banned on A while B, cut off, does not
/// know it: bob (B) writes, then mallory writes a message and renames herself on top of it; A
/// and the Synapse S both hold the ban when these arrive, so both must soft-fail mallory's two
/// events (they pass against the state before them, not against the current state): kept, never
/// shown, not forward extremities. Then bob writes again on top of mallory's rename and the ban:
/// an event naming soft-failed events as prev events, taken in with the state through them
/// (soft-failed events take part in state resolution when later events reference them), and
/// covering what they covered. A and S must agree event for event: what each timeline shows,
/// the state, what `/event` answers for a soft-failed event, and the extremities each builds on.
#[tokio::test]
async fn a_banned_members_concurrent_events_are_soft_failed_as_synapse_does() {
    let (mut a, mut b, s) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]), Node::start_synapse("s"));
    let (_, at) = a.register("alice").await;
    let (mallory, mt) = b.register("mallory").await;
    let (_, bt) = b.register("bob").await;
    let (sam, st) = s.register("sam").await;
    let room = a.create_room(&at, json!({ "preset": "public_chat" })).await;
    for (node, token) in [(&b, &mt), (&b, &bt), (&s, &st)] {
        node.join(token, &room, &[a.server_name()]).await;
    }
    // S joined last (the others' joins came with the room's state); B must see S's join.
    let sam_joined = member_event_id(&a, &at, &room, &sam).await;
    wait_for_events(&b, &bt, &room, &[sam_joined], SYNC_WAIT).await;

    // B is cut off while alice bans mallory: A and S hold the ban, B does not.
    b.kill().await;
    let (status, answer) = a.room_action(&at, &room, "ban", json!({ "user_id": mallory })).await;
    assert_eq!(status, 200, "{answer}");
    let ban = member_event_id(&a, &at, &room, &mallory).await;
    wait_for_events(&s, &st, &room, std::slice::from_ref(&ban), SYNC_WAIT).await;

    // A is down and B back, unaware of the ban: bob writes, mallory writes and renames herself.
    a.kill().await;
    b.restart().await;
    let before_ban = b.send_text(&bt, &room, "bob, avant de savoir").await;
    let message = b.send_text(&mt, &room, "mallory, bannie sans le savoir").await;
    let mut member = b.state_event(&mt, &room, "m.room.member", &mallory).await;
    member["displayname"] = json!("Mallory (bannie)");
    let rename = b.put_state(&mt, &room, "m.room.member", &mallory, member).await;

    // A comes back: B sends it bob's and mallory's events, A sends B the ban.
    a.restart().await;
    hello(&a, &at, &[&b, &s]).await;
    wait_for_events(&a, &at, &room, std::slice::from_ref(&before_ban), SYNC_WAIT).await;
    wait_for_events(&b, &bt, &room, std::slice::from_ref(&ban), SYNC_WAIT).await;

    // Bob writes again, on top of mallory's rename and the ban (B's forward extremities).
    let after_ban = b.send_text(&bt, &room, "bob, après le bannissement").await;
    for (node, token) in [(&a, &at), (&s, &st)] {
        wait_for_events(node, token, &room, std::slice::from_ref(&after_ban), SYNC_WAIT).await;
    }

    let events = [
        ("bob's message before he knew", &before_ban),
        ("the ban", &ban),
        ("mallory's message", &message),
        ("mallory's rename", &rename),
        ("bob's message after the ban", &after_ban),
    ];
    let (timeline_a, timeline_s) = tokio::join!(timeline_ids(&a, &at, &room), timeline_ids(&s, &st, &room));
    let mut shown = Vec::new();
    for (what, id) in events {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
        let ((status_a, _), (status_s, _)) =
            tokio::join!(a.call(Method::GET, Some(&at), &path, None), s.call(Method::GET, Some(&st), &path, None));
        println!(
            "{what} {id}: in A's timeline {}, S's {}; /event {status_a} on A, {status_s} on S",
            timeline_a.contains(id.as_str()),
            timeline_s.contains(id.as_str())
        );
        shown.push((what, timeline_a.contains(id.as_str()), timeline_s.contains(id.as_str()), status_a, status_s));
    }
    for (what, in_a, in_s, status_a, status_s) in &shown {
        assert_eq!(in_a, in_s, "{what}: shown in A's timeline {in_a}, in Synapse's {in_s}");
        assert_eq!(status_a, status_s, "{what}: /event answers {status_a} on A, {status_s} on Synapse");
    }
    let hidden: Vec<&str> = shown.iter().filter(|(_, in_a, ..)| !in_a).map(|(what, ..)| *what).collect();
    assert_eq!(hidden, ["mallory's message", "mallory's rename"], "only mallory's events are soft-failed");

    let (state_a, state_b, state_s) =
        tokio::join!(a.get_state(&at, &room), b.get_state(&bt, &room), s.get_state(&st, &room));
    let (state_a, state_b, state_s) = (state_map(&state_a), state_map(&state_b), state_map(&state_s));
    let mallory_key = ("m.room.member".to_owned(), mallory.clone());
    assert_eq!(state_a.get(&mallory_key), Some(&ban), "mallory is banned on A, not renamed");
    assert_eq!(state_a, state_s, "A and Synapse hold the same state");
    assert_eq!(state_a, state_b, "and so does B, where mallory's events were local");

    // The DAG each server builds on: no soft-failed event, nothing behind them.
    let signer = Signer::of(&mut b).await;
    let (prev_a, prev_s) =
        tokio::join!(template_prev_events(&signer, &a, &room), template_prev_events(&signer, &s, &room));
    assert_eq!(prev_a, prev_s, "A and Synapse build on the same forward extremities");
    assert_eq!(prev_a, std::slice::from_ref(&after_ban), "bob's last message covers the rest");
    let nodes = [(&a, at.as_str()), (&b, bt.as_str()), (&s, st.as_str())];
    assert_dag_state(&signer, &nodes, &room, &[state_a, state_b, state_s], "soft failure").await;
}
