//! What an incremental `/sync` costs, counted in database reads rather than time: it must follow
//! what changed since the token, not the number of rooms the user is in, the size of a room or
//! the unread backlog. Each test builds a small and a large case that differ only in that size
//! and compares the reads of the same step; a step that went back to scanning fails here.

use std::sync::Arc;

use hemicycle::{
    config::Config,
    rooms::{create::CreateRoom, NewEvent},
    services::Services,
    sync::{SyncFilter, SyncParams, SyncToken},
};
use ruma::{events::TimelineEventType, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::json;

/// Reads one step may add when its case is larger: a few more for longer keys or one more
/// level of a snapshot chain, never one per room, member or unread event.
const SLACK: u64 = 12;

struct Case {
    services: Arc<Services>,
    _dir: tempfile::TempDir,
    reader: (OwnedUserId, OwnedDeviceId),
    sender: OwnedUserId,
    rooms: Vec<OwnedRoomId>,
}

impl Case {
    /// A reader in `rooms` rooms (the sender in them too), `members` more members in the first
    /// room, and `backlog` messages the reader has not read in it.
    async fn new(rooms: usize, members: usize, backlog: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.path = dir.path().join("db");
        let services = Services::open(config).unwrap();
        hemicycle::push::evaluate::start(services.clone());
        let reader = services.users.create("reader", None, false).await.unwrap();
        let sender = services.users.create("sender", None, false).await.unwrap();
        let device = services.users.login(&reader, None, None, None, None).await.unwrap().device_id;
        let mut ids = Vec::new();
        for i in 0..rooms {
            let request = CreateRoom { name: Some(format!("salle {i}")), ..Default::default() };
            let room = services.rooms.create_room(&sender, request, &RoomVersionId::V12).await.unwrap();
            services.rooms.set_membership(&room, &sender, &reader, "invite", None, Default::default()).await.unwrap();
            services.rooms.join(&room, &reader, None).await.unwrap();
            ids.push(room);
        }
        for m in 0..members {
            let member = services.users.create(&format!("member{m}"), None, false).await.unwrap();
            services.rooms.set_membership(&ids[0], &sender, &member, "invite", None, Default::default()).await.unwrap();
            services.rooms.join(&ids[0], &member, None).await.unwrap();
        }
        let case = Self { services, _dir: dir, reader: (reader, device), sender, rooms: ids };
        for n in 0..backlog {
            case.say(&format!("arriéré {n}")).await;
        }
        case
    }

    async fn say(&self, body: &str) {
        let message = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": body }));
        self.services.rooms.append(&self.rooms[0], &self.sender, message, None).await.unwrap();
    }

    async fn sync(&self, since: Option<&str>) -> hemicycle::sync::SyncResult {
        self.sync_with(since, SyncFilter::default()).await
    }

    async fn sync_with(&self, since: Option<&str>, filter: SyncFilter) -> hemicycle::sync::SyncResult {
        let params = SyncParams {
            user: self.reader.0.clone(),
            device: self.reader.1.clone(),
            set_presence: None,
            since: since.map(|s| SyncToken::parse(s).unwrap()),
            timeout: std::time::Duration::ZERO,
            full_state: false,
            filter,
        };
        hemicycle::sync::sync(&self.services, params).await.unwrap()
    }

    /// The reads of one incremental sync that finds one new message in the first room.
    async fn reads_for_one_message(&self) -> u64 {
        let token = self.sync(None).await.next_batch;
        self.say("nouveau").await;
        let head = *self.services.rooms.subscribe().borrow();
        self.services.push.caught_up(head).await;
        let before = self.services.db.reads();
        let result = self.sync(Some(&token)).await;
        let reads = self.services.db.reads() - before;
        // Cheap only counts if it is also right: the message is there, and only its room.
        let rooms: Vec<_> = result.join.keys().collect();
        assert_eq!(rooms, vec![&self.rooms[0]], "only the room with news");
        let bodies: Vec<_> =
            result.join[&self.rooms[0]].timeline.iter().map(|e| e["content"]["body"].clone()).collect();
        assert_eq!(bodies, vec![json!("nouveau")]);
        reads
    }

    /// The reads of an initial sync with lazy-loaded members and a short timeline (so the room's
    /// state comes in the `state` section), checking that the members it brings are the ones it
    /// must: the reader and the timeline's senders.
    async fn reads_for_lazy_initial_sync(&self) -> u64 {
        let filter = SyncFilter { timeline_limit: 3, lazy_load_members: true, ..SyncFilter::default() };
        // The push evaluator's reads of the backlog are not the sync's.
        let head = *self.services.rooms.subscribe().borrow();
        self.services.push.caught_up(head).await;
        let before = self.services.db.reads();
        let result = self.sync_with(None, filter).await;
        let reads = self.services.db.reads() - before;
        let room = &result.join[&self.rooms[0]];
        assert!(room.limited, "the backlog does not fit: the state section carries the room's state");
        let mut members: Vec<_> = room
            .state
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect();
        members.sort();
        assert_eq!(members, vec![self.reader.0.to_string(), self.sender.to_string()], "lazy members only");
        reads
    }

    /// The reads of an incremental sync that finds nothing new.
    async fn reads_for_nothing(&self) -> u64 {
        let token = self.sync(None).await.next_batch;
        let before = self.services.db.reads();
        let result = self.sync(Some(&token)).await;
        let reads = self.services.db.reads() - before;
        assert!(result.join.is_empty() && result.leave.is_empty(), "nothing new, nothing sent");
        reads
    }
}

fn assert_flat(step: &str, small: u64, large: u64) {
    assert!(large <= small + SLACK, "{step}: {small} reads in the small case, {large} in the large one");
}

/// The one read per room left: listing the user's memberships (one sequential scan step per
/// room, in one iterator). Rooms where nothing happened are not read beyond that.
#[tokio::test]
async fn sync_reads_do_not_grow_with_the_number_of_rooms() {
    let (few, many) = (Case::new(3, 0, 0).await, Case::new(60, 0, 0).await);
    let listing = (many.rooms.len() - few.rooms.len()) as u64;
    let (small, large) = (few.reads_for_one_message().await, many.reads_for_one_message().await);
    assert_flat("one new message", small + listing, large);
    let (small, large) = (few.reads_for_nothing().await, many.reads_for_nothing().await);
    assert_flat("nothing new", small + listing, large);
}

#[tokio::test]
async fn sync_reads_do_not_grow_with_the_size_of_a_room() {
    let (small, big) = (Case::new(1, 0, 0).await, Case::new(1, 60, 0).await);
    assert_flat("one new message in the room", small.reads_for_one_message().await, big.reads_for_one_message().await);
}

#[tokio::test]
async fn sync_reads_do_not_grow_with_the_unread_backlog() {
    let (none, backlog) = (Case::new(1, 0, 0).await, Case::new(1, 0, 300).await);
    assert_flat(
        "one new message after a backlog",
        none.reads_for_one_message().await,
        backlog.reads_for_one_message().await,
    );
}

/// A lazy-loading client's initial sync of a room of many members reads the member events it
/// sends, not every member event of the room's state. What an initial sync reads per member and
/// must: the entry of the state snapshot, the membership record counted in the summary, and the
/// presence of the users sharing the room (two) — four small records. Reading each member event
/// as well (the member events the filter then dropped) was two more per member.
#[tokio::test]
async fn lazy_initial_sync_reads_only_the_members_it_sends() {
    const MEMBERS: usize = 60;
    const PER_MEMBER: u64 = 4;
    let (small, big) = (Case::new(1, 0, 10).await, Case::new(1, MEMBERS, 10).await);
    assert_flat(
        "initial sync with lazy members",
        small.reads_for_lazy_initial_sync().await + PER_MEMBER * MEMBERS as u64,
        big.reads_for_lazy_initial_sync().await,
    );
}

/// The discovery room (`directory.discovery_room`) holds every agent of the network and no
/// client is shown it: a join, a leave or a member's presence there wakes no one's waiting sync
/// (each would find nothing to send, once per member of the network). A message in a room the
/// reader is shown still wakes them: the count is of real wake-ups.
#[tokio::test]
async fn discovery_room_changes_wake_no_sync() {
    const AGENTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    config.directory.discovery_room = Some("#discovery:localhost".to_owned());
    let services = Services::open(config).unwrap();
    let operator = services.users.create("operator", None, false).await.unwrap();
    let request = CreateRoom {
        preset: Some(hemicycle::rooms::create::Preset::PublicChat),
        alias_localpart: Some("discovery".to_owned()),
        ..Default::default()
    };
    let room = services.rooms.create_room(&operator, request, &RoomVersionId::V12).await.unwrap();
    let reader = services.users.create("reader", None, false).await.unwrap();
    let shown = services.rooms.create_room(&operator, CreateRoom::default(), &RoomVersionId::V12).await.unwrap();
    services.rooms.set_membership(&shown, &operator, &reader, "invite", None, Default::default()).await.unwrap();
    services.rooms.join(&shown, &reader, None).await.unwrap();
    hemicycle::users::discovery::start(services.clone());
    // The discovery task joins and leaves on its own, with nothing to wait on but the membership.
    let joined = |user: OwnedUserId, wanted: bool| {
        let (services, room) = (services.clone(), room.clone());
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while services.rooms.is_joined(&user, &room).unwrap() != wanted {
                assert!(std::time::Instant::now() < deadline, "{user} never settled in the discovery room");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    joined(reader.clone(), true).await;

    // The reader's sync waits (holds its wake-up handle) while agents join, show their
    // presence, and leave the room as they hide.
    let notifier = services.rooms.notifier().clone();
    let _waiting = notifier.subscribe(&reader);
    let before = notifier.woken();
    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let agent = services.users.create(&format!("agent{n}"), None, false).await.unwrap();
        joined(agent.clone(), true).await;
        agents.push(agent);
    }
    services.presence.set(&agents[0], "online", None).await.unwrap();
    for agent in &agents {
        services
            .account_data
            .set(agent, None, "im.vector.hide_profile", json!({ "hide_profile": true }))
            .await
            .unwrap();
        joined(agent.clone(), false).await;
    }
    assert_eq!(notifier.woken() - before, 0, "{AGENTS} joins and leaves of the discovery room woke the reader");

    let message = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": "réunion" }));
    services.rooms.append(&shown, &operator, message, None).await.unwrap();
    assert_eq!(notifier.woken() - before, 1, "a message in a room the reader is shown wakes them");
}
