//! Measures state resolution where a room makes it cost most: `--members` members (default
//! 1,000) and `--forks` forward extremities (default 50). The forks are events of other servers —
//! each a member on a server of its own renaming themselves on top of the same event, as servers
//! cut off from each other do — taken in through the write path federation uses
//! (`Rooms::append_remote_deferred`, the call a received transaction makes for each PDU, timed
//! without the fsync it then waits for). The homeserver's services run in this process on a
//! temp database; no network, no signatures (the rooms layer trusts its caller to have checked
//! them).
//!
//! ```sh
//! cargo run --release -p hemicycle --example stateres_bench -- [--members 1000] [--forks 50] [--repeat 20]
//! cargo run -p hemicycle --example stateres_bench -- --smoke   # tiny sizes: the checks only
//! ```
//!
//! Steps, each timed per event (mean, min, max), each with its check:
//! - `forks`: the renames, one after another; the k-th leaves k extremities whose states are
//!   resolved (the first covers the event they all build on: nothing to resolve);
//! - `message on a fork`: a message on top of one fork (`--repeat` times, a different fork each
//!   time): the extremities change, the states at them do not, nor does the room's state;
//! - `rename on a fork`: a state event on top of one fork (`--repeat` times): a new state;
//! - `event on every fork`: one event naming every extremity as a prev event (the state before
//!   it is the resolution of all of them), after which the room has one extremity.
//!
//! After each step the room's current state must equal a resolution of the states at its forward
//! extremities made afresh (`Rooms::resolve`), and the extremities must be those expected; the
//! messages and the event on every fork must run no resolution (the cache has them).

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::StreamExt;
use hemicycle::{
    config::Config,
    rooms::{create::CreateRoom, remote::Accepted, NewEvent, Rooms},
    services::Services,
};
use ruma::{
    events::{StateEventType, TimelineEventType},
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Value};

struct Args {
    members: usize,
    forks: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut out = Args { members: 1_000, forks: 50, repeat: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--smoke" {
            out = Args { members: 30, forks: 5, repeat: 3 };
            continue;
        }
        let value: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--members" => out.members = value,
            "--forks" => out.forks = value,
            "--repeat" => out.repeat = value,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(out.forks >= 2 && out.members > out.forks, "--members must exceed --forks (at least 2)");
    out
}

/// A PDU of a remote user on top of `prev`, with the auth events the room version selects from
/// the state snapshot `state` (the state before it); its id is its reference hash.
fn remote_event(
    rooms: &Rooms,
    room: &RoomId,
    sender: &UserId,
    (kind, state_key, content): (&str, Option<&str>, Value),
    prev: &[OwnedEventId],
    state: u64,
) -> (OwnedEventId, CanonicalJsonObject) {
    let rules = RoomVersionId::V12.rules().expect("rules");
    let raw = serde_json::value::to_raw_value(&content).expect("content");
    let types = ruma::state_res::auth_types_for_event(
        &TimelineEventType::from(kind),
        sender,
        state_key,
        &raw,
        &rules.authorization,
    )
    .expect("auth types");
    let mut auth_events = Vec::new();
    for (auth_kind, key) in types {
        if let Some(id) = rooms.state_event_id_in(state, &auth_kind, &key).expect("read") {
            if !auth_events.contains(&id) {
                auth_events.push(id);
            }
        }
    }
    let depth = prev.iter().map(|p| u64::from(rooms.pdu(p).expect("read").expect("held").depth)).max().unwrap_or(0) + 1;
    let mut event = json!({
        "room_id": room, "sender": sender, "type": kind, "content": content,
        "origin_server_ts": 1_800_000_000_000u64 + depth, "prev_events": prev, "auth_events": auth_events, "depth": depth,
    });
    if let Some(key) = state_key {
        event["state_key"] = json!(key);
    }
    let object: CanonicalJsonObject = serde_json::from_value(event).expect("canonical JSON");
    let id = format!("${}", ruma::signatures::reference_hash(&object, &rules).expect("reference hash"));
    (OwnedEventId::try_from(id).expect("event id"), object)
}

/// Takes in a remote event; answers how long the call took (the fsync it then waits for is not
/// counted: a transaction of many PDUs waits for one at its end).
async fn take(rooms: &Rooms, room: &RoomId, (id, object): &(OwnedEventId, CanonicalJsonObject)) -> Duration {
    let started = Instant::now();
    let (accepted, durable) = rooms.append_remote_deferred(room, id, object, None).await.expect("append");
    let elapsed = started.elapsed();
    assert_eq!(accepted, Accepted::Timeline, "{id}");
    if let Some(durable) = durable {
        durable.await.expect("writer").expect("durable");
    }
    elapsed
}

/// Asserts that the room's current state is a resolution made afresh of the states at its
/// forward extremities; answers the extremities.
fn check_state(rooms: &Rooms, room: &RoomId, step: &str) -> Vec<OwnedEventId> {
    let record = rooms.room(room).expect("read").expect("room");
    let mut states = Vec::new();
    for extremity in &record.extremities {
        let snapshot = rooms.dag_state_of(extremity).expect("read").expect("a state at each extremity");
        states.push((*rooms.state.load(snapshot).expect("load")).clone());
    }
    let fresh = rooms.resolve(&record.version, &states, None).expect("resolution");
    let current = rooms.state.load(record.snapshot).expect("load");
    assert!(*current == fresh, "{step}: the room's state is not the resolution of its extremities' states");
    record.extremities
}

/// State resolutions run and found in the cache so far (see `Rooms::resolutions_counted`).
fn counted(rooms: &Rooms) -> (u64, u64) {
    let counts = &rooms.resolutions_counted;
    (counts.computed.load(Ordering::Relaxed), counts.cached.load(Ordering::Relaxed))
}

/// One line of the table: the step's timings, and the resolutions it ran / found in the cache
/// (counted from `since`, before the step's checks run resolutions of their own).
fn row(step: &str, times: &[Duration], rooms: &Rooms, since: (u64, u64)) {
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    let min = times.iter().copied().min().map(ms).unwrap_or_default();
    let max = times.iter().copied().max().map(ms).unwrap_or_default();
    let (computed, cached) = counted(rooms);
    println!(
        "| {step} | {} | {mean:.2} | {min:.2} | {max:.2} | {} / {} |",
        times.len(),
        computed - since.0,
        cached - since.1
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    let services: Arc<Services> = Services::open(config).expect("services");
    let rooms = &services.rooms;
    let alice = services.users.create("alice", None, false).await.expect("alice");
    let room: OwnedRoomId = rooms
        .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &RoomVersionId::V12)
        .await
        .expect("room");

    // Members: local ones joined as clients would (concurrently, one write path), then one
    // member per fork on a server of its own.
    let started = Instant::now();
    let locals = args.members - args.forks - 1;
    let joined = futures::stream::iter(0..locals)
        .map(|i| {
            let room = room.clone();
            async move {
                let user = OwnedUserId::try_from(format!("@member{i}:localhost")).expect("user id");
                let join = NewEvent::state(StateEventType::RoomMember, user.as_str(), json!({ "membership": "join" }));
                rooms.append(&room, &user, join, None).await.expect("join");
            }
        })
        .buffer_unordered(32)
        .count()
        .await;
    assert_eq!(joined, locals);
    let forkers: Vec<OwnedUserId> =
        (0..args.forks).map(|i| OwnedUserId::try_from(format!("@forker:s{i}.example")).expect("user id")).collect();
    for user in &forkers {
        let record = rooms.room(&room).expect("read").expect("room");
        let join = json!({ "membership": "join" });
        let event = remote_event(
            rooms,
            &room,
            user,
            ("m.room.member", Some(user.as_str()), join),
            &record.extremities,
            record.snapshot,
        );
        take(rooms, &room, &event).await;
    }
    let members = rooms.members(&room).expect("members").iter().filter(|(_, m)| m.membership == "join").count();
    assert_eq!(members, args.members, "every member joined");
    println!(
        "room of {members} members ready in {:.1} s; {} forks, {} repeats",
        started.elapsed().as_secs_f64(),
        args.forks,
        args.repeat
    );
    println!();
    println!("| step | events | mean ms | min ms | max ms | resolutions run / from cache |");
    println!("|---|---|---|---|---|---|");

    // The forks: every forker renames themselves on top of the same event.
    let base = rooms.room(&room).expect("read").expect("room");
    let mut tips = Vec::new();
    let mut times = Vec::new();
    let since = counted(rooms);
    for (i, user) in forkers.iter().enumerate() {
        let rename = json!({ "membership": "join", "displayname": format!("fork {i}") });
        let event = remote_event(
            rooms,
            &room,
            user,
            ("m.room.member", Some(user.as_str()), rename),
            &base.extremities,
            base.snapshot,
        );
        times.push(take(rooms, &room, &event).await);
        tips.push(event.0);
    }
    row(&format!("fork (the k-th of {} resolves k states; the first, none)", args.forks), &times, rooms, since);
    let mut extremities = check_state(rooms, &room, "forks");
    extremities.sort();
    let mut expected = tips.clone();
    expected.sort();
    assert_eq!(extremities, expected, "one extremity per fork");

    // A message on one fork: new extremities, the same states at them.
    let before = rooms.room(&room).expect("read").expect("room").snapshot;
    let before_state = rooms.state.load(before).expect("load");
    let mut times = Vec::new();
    let since = counted(rooms);
    for r in 0..args.repeat {
        let i = r % args.forks;
        let tip = rooms.dag_state_of(&tips[i]).expect("read").expect("state");
        let text = json!({ "msgtype": "m.text", "body": format!("message {r}") });
        let event = remote_event(rooms, &room, &forkers[i], ("m.room.message", None, text), &tips[i..=i], tip);
        times.push(take(rooms, &room, &event).await);
        tips[i] = event.0;
    }
    row("message on a fork", &times, rooms, since);
    assert_eq!(counted(rooms).0, since.0, "a message on a fork resolves nothing");
    let extremities = check_state(rooms, &room, "messages");
    assert_eq!(extremities.len(), args.forks, "a message replaces its fork's extremity");
    let after = rooms.room(&room).expect("read").expect("room").snapshot;
    assert!(*rooms.state.load(after).expect("load") == *before_state, "messages change no state");

    // A rename on one fork: a new state to resolve with the others.
    let mut times = Vec::new();
    let since = counted(rooms);
    for r in 0..args.repeat {
        let i = r % args.forks;
        let tip = rooms.dag_state_of(&tips[i]).expect("read").expect("state");
        let rename = json!({ "membership": "join", "displayname": format!("rename {r}") });
        let user = &forkers[i];
        let event = remote_event(rooms, &room, user, ("m.room.member", Some(user.as_str()), rename), &tips[i..=i], tip);
        times.push(take(rooms, &room, &event).await);
        tips[i] = event.0;
    }
    row("rename on a fork", &times, rooms, since);
    let extremities = check_state(rooms, &room, "renames");
    assert_eq!(extremities.len(), args.forks);

    // One event on every fork: the state before it is the room's current state.
    let record = rooms.room(&room).expect("read").expect("room");
    let text = json!({ "msgtype": "m.text", "body": "on every fork" });
    let event =
        remote_event(rooms, &room, &forkers[0], ("m.room.message", None, text), &record.extremities, record.snapshot);
    let since = counted(rooms);
    let time = take(rooms, &room, &event).await;
    row("event on every fork", &[time], rooms, since);
    assert_eq!(counted(rooms).0, since.0, "the state before an event on every fork is the room's, known");
    let extremities = check_state(rooms, &room, "merge");
    assert_eq!(extremities, [event.0], "one extremity left");
    assert!(
        *rooms.state.load(rooms.room(&room).expect("read").expect("room").snapshot).expect("load")
            == *rooms.state.load(record.snapshot).expect("load"),
        "a message on every fork keeps the resolved state"
    );

    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    println!();
    println!("peak RSS: {} MiB; every check held", rss / 1024);
}
